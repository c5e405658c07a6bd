//! The benchmark presets: real model shapes, as crate configs.

use clap::ValueEnum;
use moe_kernels::{Activation, MoeConfig, RoutingConfig};

/// A model whose MoE block shape the benchmark runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// Mixtral-8x7B: H 4096, I 14336, E 8, k 2.
    #[value(name = "mixtral-8x7b")]
    Mixtral8x7b,
    /// Qwen3-30B-A3B: H 2048, I 768, E 128, k 8.
    #[value(name = "qwen3-30b-a3b")]
    Qwen3_30bA3b,
    /// DeepSeek-V3: H 7168, I 2048, E 256, k 8, grouped 8/4, sigmoid with bias, scaling 2.5, one shared
    /// expert.
    #[value(name = "deepseek-v3")]
    DeepseekV3,
    /// OLMoE-1B-7B: H 2048, I 1024, E 64, k 8.
    #[value(name = "olmoe-1b-7b")]
    Olmoe1b7b,
    /// gpt-oss-120b shapes: H 2880, I 2880, E 128, k 4 (softmax top-k, renormalised, SwiGLU; the
    /// model's clamped activation and biases are not part of the shape).
    #[value(name = "gpt-oss-120b")]
    GptOss120b,
}

impl Preset {
    /// Every preset, in report order.
    pub const ALL: [Preset; 5] = [
        Preset::Mixtral8x7b,
        Preset::Qwen3_30bA3b,
        Preset::DeepseekV3,
        Preset::Olmoe1b7b,
        Preset::GptOss120b,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Mixtral8x7b => "mixtral-8x7b",
            Preset::Qwen3_30bA3b => "qwen3-30b-a3b",
            Preset::DeepseekV3 => "deepseek-v3",
            Preset::Olmoe1b7b => "olmoe-1b-7b",
            Preset::GptOss120b => "gpt-oss-120b",
        }
    }

    /// The MoE block configuration.
    pub fn config(self) -> MoeConfig {
        match self {
            Preset::Mixtral8x7b => MoeConfig::mixtral_8x7b(),
            Preset::Qwen3_30bA3b => MoeConfig::qwen3_30b_a3b(),
            Preset::DeepseekV3 => MoeConfig::deepseek_v3(),
            Preset::Olmoe1b7b => MoeConfig::olmoe_1b_7b(),
            Preset::GptOss120b => MoeConfig {
                hidden_size: 2880,
                intermediate_size: 2880,
                routing: RoutingConfig::softmax_topk(128, 4, true),
                activation: Activation::SWIGLU,
                shared_experts: vec![],
            },
        }
    }
}
