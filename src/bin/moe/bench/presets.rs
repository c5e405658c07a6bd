//! The benchmark presets: real model shapes, as crate configs.

use clap::ValueEnum;
use moe_kernels::quant::CodeFormat;
use moe_kernels::{
    Activation, GroupScore, GroupedTopK, MoeConfig, RoutingConfig, ScoringFunc, SharedExpertConfig,
};

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
    /// GLM-4.5-Air: H 4096, I 1408, E 128, k 8, sigmoid with bias, one group, renormalised, one
    /// shared expert.
    #[value(name = "glm-4.5-air")]
    Glm45Air,
    /// Kimi-K2: H 7168, I 2048, E 384, k 8, sigmoid with bias, one group, scaling 2.827, one shared
    /// expert (FP8 as shipped, 17 GB of expert weights: a GPU preset).
    #[value(name = "kimi-k2")]
    KimiK2,
    /// Llama-4-Scout shapes: H 5120, I 8192, E 16, k 1, one shared expert (the model's sigmoid score
    /// scales the expert's input, which the crate does not express yet: timed as sigmoid top-1
    /// weighting the output, the same work).
    #[value(name = "llama4-scout")]
    Llama4Scout,
}

impl Preset {
    /// Every preset, in report order.
    pub const ALL: [Preset; 8] = [
        Preset::Mixtral8x7b,
        Preset::Qwen3_30bA3b,
        Preset::DeepseekV3,
        Preset::Olmoe1b7b,
        Preset::GptOss120b,
        Preset::Glm45Air,
        Preset::KimiK2,
        Preset::Llama4Scout,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Mixtral8x7b => "mixtral-8x7b",
            Preset::Qwen3_30bA3b => "qwen3-30b-a3b",
            Preset::DeepseekV3 => "deepseek-v3",
            Preset::Olmoe1b7b => "olmoe-1b-7b",
            Preset::GptOss120b => "gpt-oss-120b",
            Preset::Glm45Air => "glm-4.5-air",
            Preset::KimiK2 => "kimi-k2",
            Preset::Llama4Scout => "llama4-scout",
        }
    }

    /// How the model's checkpoint stores its experts: FP8 for DeepSeek-V3 and Kimi-K2, MXFP4 for
    /// gpt-oss, bf16 for the others.
    pub fn shipped_weights(self) -> Weights {
        match self {
            Preset::DeepseekV3 | Preset::KimiK2 => Weights::Fp8,
            Preset::GptOss120b => Weights::Mxfp4,
            Preset::Mixtral8x7b
            | Preset::Qwen3_30bA3b
            | Preset::Olmoe1b7b
            | Preset::Glm45Air
            | Preset::Llama4Scout => Weights::Bf16,
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
            Preset::Glm45Air => sigmoid_one_group(4096, 1408, 128, 1.0),
            Preset::KimiK2 => sigmoid_one_group(7168, 2048, 384, 2.827),
            Preset::Llama4Scout => MoeConfig {
                hidden_size: 5120,
                intermediate_size: 8192,
                routing: RoutingConfig {
                    scoring: ScoringFunc::Sigmoid,
                    ..RoutingConfig::softmax_topk(16, 1, false)
                },
                activation: Activation::SWIGLU,
                shared_experts: vec![shared(8192)],
            },
        }
    }
}

/// How a benchmark stores the expert matrices (routed and shared); the router stays bf16 and the
/// activations are bf16 in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Weights {
    /// bf16 values.
    Bf16,
    /// FP8 e4m3 codes with an `f32` scale per row and 128 columns (DeepSeek-V3's 128 x 128 blocks).
    Fp8,
    /// MXFP4 e2m1 codes, two a byte, with a power-of-two scale per row and 32 columns (gpt-oss).
    Mxfp4,
}

impl Weights {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Weights::Bf16 => "bf16",
            Weights::Fp8 => "fp8",
            Weights::Mxfp4 => "mxfp4",
        }
    }

    /// The code format and columns per scale of quantized weights; `None` for bf16.
    pub fn quantized(self) -> Option<(CodeFormat, usize)> {
        match self {
            Weights::Bf16 => None,
            Weights::Fp8 => Some((CodeFormat::Fp8E4M3, 128)),
            Weights::Mxfp4 => Some((CodeFormat::Mxfp4E2M1, 32)),
        }
    }

    /// Bytes of an `[n, k]` matrix as stored: bf16 values, or the codes and the `f32` scales the
    /// kernels read ([`QuantExperts`](moe_kernels::quant::QuantExperts)).
    pub fn matrix_bytes(self, n: usize, k: usize) -> usize {
        match self.quantized() {
            None => 2 * n * k,
            Some((format, group)) => n * (format.row_bytes(k) + 4 * k.div_ceil(group)),
        }
    }
}

/// An ungated shared expert of intermediate size `i`.
fn shared(i: usize) -> SharedExpertConfig {
    SharedExpertConfig {
        intermediate_size: i,
        sigmoid_gate: false,
    }
}

/// The DeepSeek-V3 block with one expert group (GLM-4.5, Kimi-K2): sigmoid scores with the
/// correction bias, top-8, renormalised, times `scale`, one shared expert of the experts' size.
fn sigmoid_one_group(h: usize, i: usize, e: usize, scale: f32) -> MoeConfig {
    MoeConfig {
        hidden_size: h,
        intermediate_size: i,
        routing: RoutingConfig {
            num_experts: e,
            top_k: 8,
            scoring: ScoringFunc::Sigmoid,
            correction_bias: true,
            grouping: Some(GroupedTopK {
                n_group: 1,
                topk_group: 1,
                score: GroupScore::SumTop2,
            }),
            renormalize: true,
            routed_scaling_factor: scale,
            scale_input: false,
        },
        activation: Activation::SWIGLU,
        shared_experts: vec![shared(i)],
    }
}
