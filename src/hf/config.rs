//! `config.json` of a Hugging Face MoE model, parsed into the crate's [`MoeConfig`] plus which layers are
//! MoE layers.
//!
//! Field mapping, per family (defaults are those of the `transformers` config classes and, for DeepSeek,
//! of the models' own `configuration_deepseek.py`; fields marked *required* have no safe default):
//!
//! | setting | Mixtral | Qwen2-MoE | Qwen3-MoE | OLMoE | DeepSeek-V2 | DeepSeek-V3 |
//! |---|---|---|---|---|---|---|
//! | experts `E` (required) | `num_local_experts` or `num_experts` | `num_experts` or `num_local_experts` | as Qwen2-MoE | as Qwen2-MoE | `n_routed_experts`, `num_local_experts` or `num_experts` | as V2 |
//! | expert size `I` (required) | `intermediate_size` | `moe_intermediate_size` | `moe_intermediate_size` | `intermediate_size` | `moe_intermediate_size` | `moe_intermediate_size` |
//! | renormalise | always | `norm_topk_prob` (false) | `norm_topk_prob` (false) | `norm_topk_prob` (false) | `norm_topk_prob` (false) and `k > 1` | `norm_topk_prob` (false) and `k > 1` |
//! | scaling | 1 | 1 | 1 | 1 | `routed_scaling_factor` (1) when not renormalised, else 1 | `routed_scaling_factor` (1) |
//! | scoring | softmax | softmax | softmax | softmax | `scoring_func` (softmax) | `scoring_func` (sigmoid) |
//! | selection | top-k | top-k | top-k | top-k | `topk_method` (greedy) | `topk_method` (noaux_tc) |
//! | shared experts | none | one of `shared_expert_intermediate_size` (required; 0 = none), sigmoid-gated | none | none | `n_shared_experts` (none) folded into one of `n_shared_experts * I` | same as V2 |
//! | MoE layers | all | not in `mlp_only_layers` ([]) and `(l + 1) % decoder_sparse_step` (1) `== 0` | as Qwen2-MoE | all | `l >= first_k_dense_replace` (0) and `l % moe_layer_freq` (1) `== 0` | as V2 |
//!
//! `topk_method`: `greedy` is plain top-k; `group_limited_greedy` is grouped top-k with the group's best
//! score ([`GroupScore::Max`]); `noaux_tc` is grouped top-k over bias-corrected scores with the sum of the
//! group's top two ([`GroupScore::SumTop2`]) and the `e_score_correction_bias` tensor. The grouped methods
//! need `n_group` and `topk_group`.
//!
//! The DeepSeek weight rules follow the models' reference code (`modeling_deepseek.py`): V2 multiplies by
//! `routed_scaling_factor` only when it does not renormalise; V3 renormalises (when asked) and then always
//! scales. Both renormalise only when `k > 1`.
//!
//! The expert count's other names are the aliases of the config classes' `attribute_map`
//! (transformers 5 writes Qwen3-MoE's as `num_local_experts`); two names with different values are an
//! error. A multimodal config (Llama 4, Qwen3-VL-MoE, ...) keeps these settings under `text_config`,
//! which is read instead of the top level when present (its `model_type`, else the top level's, picks
//! the family).
//!
//! The later families:
//!
//! | setting | Llama 4 (`llama4`, `llama4_text`) | DBRX (`dbrx`) | Phi-3.5-MoE (`phimoe`) |
//! |---|---|---|---|
//! | experts `E` (required) | `num_local_experts` | `ffn_config.moe_num_experts` | `num_local_experts` |
//! | expert size `I` (required) | `intermediate_size` | `ffn_config.ffn_hidden_size` | `intermediate_size` |
//! | `k` (required) | `num_experts_per_tok` | `ffn_config.moe_top_k` | `num_experts_per_tok`, which must be 2 |
//! | width, layers | `hidden_size`, `num_hidden_layers` | `d_model` or `hidden_size`, `n_layers` or `num_hidden_layers` | as Llama 4 |
//! | routing | sigmoid of the logits, not renormalised, scaling the expert inputs | softmax top-k; renormalised when `ffn_config.moe_normalize_expert_weights` is 1 (the default), not when null; another `p` is refused | sparse mixer with `router_jitter_noise` (0.01) |
//! | activation | `hidden_act` | `ffn_config.ffn_act_fn.name` (silu) | `hidden_act` |
//! | shared experts | one of `intermediate_size`, ungated | none | none |
//! | MoE layers | `moe_layers`, else every `interleave_moe_layer_step`-th (1; 0: none) | all | all |
//!
//! Every other family also needs `hidden_size`, `num_experts_per_tok` and `num_hidden_layers`; `hidden_act`
//! defaults to `silu`. Activations: `silu`/`swish` are gated SiLU (SwiGLU); `gelu_pytorch_tanh`,
//! `gelu_new` and `gelu_fast` (all the tanh approximation) are gated GELU (GeGLU); anything else,
//! including the exact (erf) `gelu`, is [`MoeError::UnsupportedModel`].

use crate::config::{
    Activation, ActivationKind, GroupScore, GroupedTopK, MoeConfig, RoutingConfig, ScoringFunc,
    SharedExpertConfig,
};
use crate::error::{MoeError, Result};
use serde_json::{Map, Value};
use std::fmt;
use std::path::{Path, PathBuf};

/// The model types that use the block and key names of one of the six families, with their own
/// defaults and rules, from transformers' config and modeling code:
///
/// | model_type | block | differences from the family |
/// |---|---|---|
/// | `kimi_k2` | DeepSeek-V3 | none (the repository's remote code is DeepSeek-V3's) |
/// | `glm4_moe` | DeepSeek-V3 | `norm_topk_prob` defaults to true, renormalised for `k = 1` too; `n_group`/`topk_group` default to 1; MoE layers from `first_k_dense_replace` (default 1), `moe_layer_freq` ignored |
/// | `dots1` | DeepSeek-V3 | sigmoid and `noaux_tc` always (its `scoring_func`/`topk_method` are not read); `n_group`/`topk_group` default to 1; renormalised for `k = 1` too; `moe_layer_freq` ignored |
/// | `deepseek_v32` | DeepSeek-V3 | `norm_topk_prob` defaults to true, renormalised for `k = 1` too; MoE layers from `mlp_layer_types` (`"sparse"`) when given, else from `first_k_dense_replace`; `moe_layer_freq` ignored |
/// | `qwen3_next` | Qwen2-MoE | `norm_topk_prob` defaults to true |
/// | `qwen3_5_moe`, `qwen3_5_moe_text` | Qwen2-MoE | always renormalised; every layer is an MoE layer (`norm_topk_prob`, `decoder_sparse_step`, `mlp_only_layers` not read) |
pub const RELATED_MODEL_TYPES: [&str; 7] = [
    "kimi_k2",
    "glm4_moe",
    "dots1",
    "deepseek_v32",
    "qwen3_next",
    "qwen3_5_moe",
    "qwen3_5_moe_text",
];

/// The MoE block layouts (key names and routing rules) the loader knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelFamily {
    /// `mixtral`: `block_sparse_moe` with experts `w1` (gate), `w3` (up), `w2` (down).
    Mixtral,
    /// `qwen2_moe` (Qwen1.5-MoE, Qwen2-MoE): `mlp` experts plus a sigmoid-gated `shared_expert`.
    Qwen2Moe,
    /// `qwen3_moe`: `mlp` experts, no shared expert.
    Qwen3Moe,
    /// `olmoe`: `mlp` experts, no shared expert.
    Olmoe,
    /// `deepseek_v2`: `mlp` experts plus `shared_experts`, softmax routing, optional group-limited greedy.
    DeepseekV2,
    /// `deepseek_v3`: `mlp` experts plus `shared_experts`, sigmoid routing with `e_score_correction_bias`
    /// and grouped top-k (`noaux_tc`).
    DeepseekV3,
    /// `minimax_m2`: Mixtral's `block_sparse_moe` (`w1`, `w3`, `w2`) with sigmoid routing, an
    /// `e_score_correction_bias` beside the router, plain top-k, always renormalised.
    MinimaxM2,
    /// `ernie4_5_moe`: `mlp` experts, softmax scores with a correction bias for selection
    /// (`moe_statics.e_score_correction_bias` `[1, E]`), always renormalised, DeepSeek-style
    /// `shared_experts`, MoE layers from `moe_layer_start_index` to `moe_layer_end_index` every
    /// `moe_layer_interval`.
    Ernie45Moe,
    /// `hunyuan_v1_moe`: `mlp` experts with the router at `gate.wg`, softmax top-k always
    /// renormalised, an ungated `shared_mlp` of `intermediate_size` (routed experts too); `moe_topk`
    /// may be a per-layer list (of equal values).
    HunyuanV1Moe,
    /// `granitemoe` and `granitemoeshared`: `block_sparse_moe` with `router.layer`, the experts fused
    /// as `input_linear` `[E, 2I, H]` and `output_linear` `[E, H, I]`, softmax top-k renormalised; an
    /// ungated `shared_mlp` beside the block when `shared_intermediate_size > 0`.
    GraniteMoe,
    /// `llama4` (its `text_config`) and `llama4_text`: `feed_forward` with `router`, sigmoid top-k
    /// weights that scale the expert inputs, experts fused and transposed (`gate_up_proj`
    /// `[E, H, 2I]`, `down_proj` `[E, I, H]`), an ungated `shared_expert` of `intermediate_size`;
    /// MoE layers from `moe_layers` (else every `interleave_moe_layer_step`-th).
    Llama4,
    /// `dbrx`: settings under `ffn_config`, `transformer.blocks.{L}.ffn` with `router.layer`, the
    /// experts as 2-D `w1` (gate), `v1` (up) and `w2` (down, transposed) `[E * I, H]`; softmax top-k
    /// normalised by `moe_normalize_expert_weights` (1: by the sum; null: not at all).
    Dbrx,
    /// `phimoe` (Phi-3.5-MoE): Mixtral's keys with the sparse mixer router
    /// ([`ScoringFunc::SparseMixer`], `router_jitter_noise`), two experts per token.
    Phimoe,
    /// `gpt_oss`: `mlp` with `router.weight` and a router bias `router.bias` (added to the logits),
    /// top-k of the logits then a softmax over the chosen; the experts fused and transposed with
    /// gate and up columns interleaved (`experts.gate_up_proj` `[E, H, 2I]`, `down_proj`
    /// `[E, I, H]`), with biases, and the clamped SwiGLU ([`ActivationKind::ClampedSilu`],
    /// `swiglu_alpha` 1.702 and `swiglu_limit` 7.0 by default). The experts in bf16 or in MXFP4
    /// (`*_blocks`, `*_scales`).
    GptOss,
}

impl ModelFamily {
    /// Every family, in a fixed order.
    pub const ALL: [ModelFamily; 14] = [
        ModelFamily::Mixtral,
        ModelFamily::Qwen2Moe,
        ModelFamily::Qwen3Moe,
        ModelFamily::Olmoe,
        ModelFamily::DeepseekV2,
        ModelFamily::DeepseekV3,
        ModelFamily::MinimaxM2,
        ModelFamily::GraniteMoe,
        ModelFamily::HunyuanV1Moe,
        ModelFamily::Ernie45Moe,
        ModelFamily::Llama4,
        ModelFamily::Dbrx,
        ModelFamily::Phimoe,
        ModelFamily::GptOss,
    ];

    /// The `model_type` string of the family's reference model (`mixtral`, `qwen2_moe`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::Mixtral => "mixtral",
            ModelFamily::Qwen2Moe => "qwen2_moe",
            ModelFamily::Qwen3Moe => "qwen3_moe",
            ModelFamily::Olmoe => "olmoe",
            ModelFamily::DeepseekV2 => "deepseek_v2",
            ModelFamily::DeepseekV3 => "deepseek_v3",
            ModelFamily::MinimaxM2 => "minimax_m2",
            ModelFamily::GraniteMoe => "granitemoe",
            ModelFamily::HunyuanV1Moe => "hunyuan_v1_moe",
            ModelFamily::Ernie45Moe => "ernie4_5_moe",
            ModelFamily::Llama4 => "llama4",
            ModelFamily::Dbrx => "dbrx",
            ModelFamily::Phimoe => "phimoe",
            ModelFamily::GptOss => "gpt_oss",
        }
    }

    /// The family of a `config.json` `model_type`: the six family names, plus the model types that
    /// reuse one of their blocks and key names ([`RELATED_MODEL_TYPES`]), whose own defaults and rules
    /// the parser applies. `None` for anything else; such a model can still be loaded by naming its
    /// family explicitly ([`HfModelConfig::from_json_str_as`]).
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "mixtral" => Some(ModelFamily::Mixtral),
            "qwen2_moe" => Some(ModelFamily::Qwen2Moe),
            "qwen3_moe" => Some(ModelFamily::Qwen3Moe),
            "olmoe" => Some(ModelFamily::Olmoe),
            "deepseek_v2" => Some(ModelFamily::DeepseekV2),
            "deepseek_v3" | "kimi_k2" | "glm4_moe" | "dots1" | "deepseek_v32" => {
                Some(ModelFamily::DeepseekV3)
            }
            "qwen3_next" | "qwen3_5_moe" | "qwen3_5_moe_text" => Some(ModelFamily::Qwen2Moe),
            "minimax_m2" => Some(ModelFamily::MinimaxM2),
            "granitemoe" | "granitemoeshared" => Some(ModelFamily::GraniteMoe),
            "hunyuan_v1_moe" => Some(ModelFamily::HunyuanV1Moe),
            "ernie4_5_moe" => Some(ModelFamily::Ernie45Moe),
            "llama4" | "llama4_text" => Some(ModelFamily::Llama4),
            "dbrx" => Some(ModelFamily::Dbrx),
            "phimoe" => Some(ModelFamily::Phimoe),
            "gpt_oss" => Some(ModelFamily::GptOss),
            _ => None,
        }
    }

    /// The `config.json` names of the routed-expert count: the family's own first, then the aliases
    /// of its config class's `attribute_map` (transformers 5 writes `num_local_experts` for Qwen3-MoE,
    /// for one), all accepted.
    pub fn expert_count_keys(self) -> &'static [&'static str] {
        match self {
            ModelFamily::Mixtral | ModelFamily::MinimaxM2 | ModelFamily::GptOss => {
                &["num_local_experts", "num_experts"]
            }
            ModelFamily::GraniteMoe | ModelFamily::Llama4 | ModelFamily::Phimoe => {
                &["num_local_experts"]
            }
            ModelFamily::Dbrx => &["moe_num_experts"],
            ModelFamily::Ernie45Moe => &["moe_num_experts", "num_experts"],
            ModelFamily::Qwen2Moe
            | ModelFamily::Qwen3Moe
            | ModelFamily::Olmoe
            | ModelFamily::HunyuanV1Moe => &["num_experts", "num_local_experts"],
            ModelFamily::DeepseekV2 | ModelFamily::DeepseekV3 => {
                &["n_routed_experts", "num_local_experts", "num_experts"]
            }
        }
    }

    fn supported_list() -> String {
        Self::ALL.map(|f| f.name()).join(", ")
    }
}

impl fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ModelFamily {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        ModelFamily::from_model_type(s).ok_or_else(|| {
            format!(
                "unknown model family `{s}` (expected one of {})",
                ModelFamily::supported_list()
            )
        })
    }
}

/// Which decoder layers have an MoE block (the others have a dense MLP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerPlacement {
    /// Every layer (Mixtral, OLMoE).
    Every,
    /// Qwen-MoE: layer `l` is an MoE layer when it is not in `mlp_only_layers` and
    /// `(l + 1) % decoder_sparse_step == 0`.
    SparseStep {
        /// `decoder_sparse_step` (>= 1).
        decoder_sparse_step: usize,
        /// `mlp_only_layers`: layers forced dense.
        mlp_only_layers: Vec<usize>,
    },
    /// An explicit flag per layer (DeepSeek-V3.2 `mlp_layer_types`: `"sparse"` layers are MoE layers).
    List(Vec<bool>),
    /// The MoE layers listed (Llama 4 `moe_layers`, or when it is absent every layer `l` with
    /// `(l + 1) % interleave_moe_layer_step == 0`, none for a step of 0).
    Listed(Vec<usize>),
    /// ERNIE 4.5: layer `l` is an MoE layer when `start <= l <= end` and `(l + 1) % interval == 0`.
    Interval {
        /// `moe_layer_start_index`.
        start: usize,
        /// `moe_layer_end_index` (-1 in the file: the last layer).
        end: usize,
        /// `moe_layer_interval` (>= 1).
        interval: usize,
    },
    /// DeepSeek: layer `l` is an MoE layer when `l >= first_k_dense_replace` and `l % moe_layer_freq == 0`.
    FirstKDense {
        /// `first_k_dense_replace`: the first layers are dense.
        first_k_dense_replace: usize,
        /// `moe_layer_freq` (>= 1).
        moe_layer_freq: usize,
    },
}

impl LayerPlacement {
    /// Whether layer `layer` has an MoE block (ignoring the model's layer count).
    pub fn is_moe(&self, layer: usize) -> bool {
        self.dense_reason(layer).is_none()
    }

    /// Why layer `layer` is dense, naming the config setting; `None` for an MoE layer.
    pub fn dense_reason(&self, layer: usize) -> Option<String> {
        match self {
            LayerPlacement::Every => None,
            LayerPlacement::SparseStep {
                decoder_sparse_step: s,
                mlp_only_layers,
            } => {
                if mlp_only_layers.contains(&layer) {
                    Some(format!(
                        "it is listed in mlp_only_layers {mlp_only_layers:?}"
                    ))
                } else if !(layer + 1).is_multiple_of(*s) {
                    Some(format!(
                        "decoder_sparse_step = {s}: only layers l with (l + 1) divisible by {s} are MoE layers"
                    ))
                } else {
                    None
                }
            }
            LayerPlacement::Interval {
                start,
                end,
                interval,
            } => {
                if layer < *start || layer > *end {
                    Some(format!(
                        "moe_layer_start_index = {start}, moe_layer_end_index = {end}: only layers \
                         {start} to {end} are MoE layers"
                    ))
                } else if !(layer + 1).is_multiple_of(*interval) {
                    Some(format!(
                        "moe_layer_interval = {interval}: only layers l with (l + 1) divisible by \
                         {interval} are MoE layers"
                    ))
                } else {
                    None
                }
            }
            LayerPlacement::Listed(layers) => (!layers.contains(&layer))
                .then(|| format!("it is not one of the moe_layers {layers:?}")),
            LayerPlacement::List(sparse) => match sparse.get(layer) {
                Some(true) => None,
                Some(false) => Some(format!("mlp_layer_types[{layer}] is \"dense\"")),
                None => Some(format!(
                    "mlp_layer_types lists {} layers, not layer {layer}",
                    sparse.len()
                )),
            },
            LayerPlacement::FirstKDense {
                first_k_dense_replace: f,
                moe_layer_freq: q,
            } => {
                if layer < *f {
                    Some(format!(
                        "first_k_dense_replace = {f}: layers 0 to {} are dense",
                        f - 1
                    ))
                } else if !layer.is_multiple_of(*q) {
                    Some(format!(
                        "moe_layer_freq = {q}: only layers divisible by {q} are MoE layers"
                    ))
                } else {
                    None
                }
            }
        }
    }

    /// A one-line description of the rule, for display.
    pub fn describe(&self) -> String {
        match self {
            LayerPlacement::Every => "every layer".into(),
            LayerPlacement::SparseStep {
                decoder_sparse_step,
                mlp_only_layers,
            } => format!(
                "decoder_sparse_step = {decoder_sparse_step}, mlp_only_layers = {mlp_only_layers:?}"
            ),
            LayerPlacement::Interval {
                start,
                end,
                interval,
            } => format!(
                "moe_layer_start_index = {start}, moe_layer_end_index = {end}, moe_layer_interval = {interval}"
            ),
            LayerPlacement::Listed(layers) => format!("moe_layers = {layers:?}"),
            LayerPlacement::List(sparse) => format!(
                "mlp_layer_types: {} of {} layers sparse",
                sparse.iter().filter(|&&s| s).count(),
                sparse.len()
            ),
            LayerPlacement::FirstKDense {
                first_k_dense_replace,
                moe_layer_freq,
            } => format!(
                "first_k_dense_replace = {first_k_dense_replace}, moe_layer_freq = {moe_layer_freq}"
            ),
        }
    }
}

/// The MoE-relevant part of a Hugging Face model's `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct HfModelConfig {
    /// `model_type` as written in the file (empty when the file has none and the family was given).
    pub model_type: String,
    /// The block layout and routing rules used.
    pub family: ModelFamily,
    /// `num_hidden_layers`.
    pub num_hidden_layers: usize,
    /// The MoE block of every MoE layer.
    pub moe: MoeConfig,
    /// Which layers are MoE layers.
    pub placement: LayerPlacement,
    /// `hidden_act` as written (or the default `silu`).
    pub hidden_act: String,
    /// `torch_dtype` (or `dtype`) as written, when present.
    pub torch_dtype: Option<String>,
    /// How the expert weights are quantized (`quantization_config`), `None` for plain weights.
    pub quantization: Option<WeightQuant>,
}

/// Quantized expert weights, from `quantization_config`: which scales go with each FP8 weight.
///
/// - `quant_method: "fp8"` (DeepSeek-V3/R1, Kimi-K2, GLM-4.5 FP8, Qwen3-FP8, MiniMax-M2): `fmt`
///   `e4m3`, `weight_block_size` `[rows, cols]` (128 x 128), scales `<module>.weight_scale_inv`.
/// - `quant_method: "compressed-tensors"` with 8-bit `float` weights: `strategy` `tensor`, `channel`
///   or `block` (`block_structure`), scales `<module>.weight_scale`.
///
/// Either way `w = fp8(code) * scale`; the scale tensor's shape tells a block, channel or tensor
/// scale apart (see [`quant`](crate::quant)).
/// - `quant_method: "mxfp4"` (gpt-oss): the experts as e2m1 codes in `*_blocks` with e8m0 scales
///   in `*_scales`, one per 32 values along the input.
///
/// Activations stay in the layer's element type (a weight-only computation). Other methods
/// (GPTQ, AWQ, int4 compressed-tensors, ...) are [`MoeError::UnsupportedModel`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightQuant {
    /// `quant_method` as written.
    pub method: String,
    /// The scale tensor's name next to `weight` (`weight_scale_inv` or `weight_scale`).
    pub scale_name: &'static str,
    /// The scale block `[rows, cols]` of block-scaled weights.
    pub block: Option<[usize; 2]>,
}

impl WeightQuant {
    /// The scale tensor of the quantized weight `weight_key` (`<module>.weight` ->
    /// `<module>.<scale_name>`).
    pub fn scale_key(&self, weight_key: &str) -> String {
        match weight_key.strip_suffix(".weight") {
            Some(module) => format!("{module}.{}", self.scale_name),
            None => format!("{weight_key}_{}", self.scale_name),
        }
    }

    /// How the codes encode values: MXFP4 for `mxfp4`, FP8 e4m3 otherwise.
    pub fn format(&self) -> crate::quant::CodeFormat {
        match self.method.as_str() {
            "mxfp4" => crate::quant::CodeFormat::Mxfp4E2M1,
            _ => crate::quant::CodeFormat::Fp8E4M3,
        }
    }

    /// A one-line description: the method and the scale layout.
    pub fn describe(&self) -> String {
        if self.format() == crate::quant::CodeFormat::Mxfp4E2M1 {
            return format!(
                "{}, MXFP4 e2m1 codes (two per byte) with an e8m0 scale per 32 values",
                self.method
            );
        }
        match self.block {
            Some([r, c]) => format!("{}, FP8 e4m3 with {r} x {c} block scales", self.method),
            None => format!(
                "{}, FP8 e4m3 with per-channel or per-tensor scales",
                self.method
            ),
        }
    }
}

impl HfModelConfig {
    /// Parse `dir/config.json`, choosing the family from its `model_type`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(dir.as_ref().join("config.json"), None)
    }

    /// Parse the config file at `path`; `family` overrides the family implied by `model_type` (and
    /// allows a `model_type` the crate does not know).
    pub fn from_file(path: impl AsRef<Path>, family: Option<ModelFamily>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| MoeError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        parse(&text, path, family)
    }

    /// Parse a `config.json` text (errors name the file `config.json`).
    pub fn from_json_str(json: &str) -> Result<Self> {
        parse(json, Path::new("config.json"), None)
    }

    /// Parse a `config.json` text with an explicit family (for a model type that reuses a known block
    /// layout under another name).
    pub fn from_json_str_as(json: &str, family: Option<ModelFamily>) -> Result<Self> {
        parse(json, Path::new("config.json"), family)
    }

    /// The MoE layers, in increasing order.
    pub fn moe_layers(&self) -> Vec<usize> {
        (0..self.num_hidden_layers)
            .filter(|&l| self.placement.is_moe(l))
            .collect()
    }

    /// Whether `layer` exists and has an MoE block.
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        layer < self.num_hidden_layers && self.placement.is_moe(layer)
    }

    /// `Ok` when `layer` exists and has an MoE block; otherwise [`MoeError::LayerOutOfRange`] or
    /// [`MoeError::NotMoeLayer`] naming the setting that makes it dense.
    pub fn check_moe_layer(&self, layer: usize) -> Result<()> {
        if layer >= self.num_hidden_layers {
            return Err(MoeError::LayerOutOfRange {
                layer,
                num_layers: self.num_hidden_layers,
            });
        }
        match self.placement.dense_reason(layer) {
            None => Ok(()),
            Some(reason) => Err(MoeError::NotMoeLayer { layer, reason }),
        }
    }
}

/// Typed access to the fields of the config object, with errors naming the file and the field.
#[derive(Clone, Copy)]
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
    /// `text_config.` when the fields are those of a multimodal config's language model.
    scope: &'static str,
}

impl<'a> Fields<'a> {
    fn err(&self, field: &str, problem: impl fmt::Display) -> MoeError {
        MoeError::InvalidConfig(format!(
            "{}: `{}{field}` {problem}",
            self.path.display(),
            self.scope
        ))
    }

    /// The value of `field`, `None` when missing or `null`.
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    /// The object `field` as fields of their own, errors naming them `scope` (`ffn_config.`).
    fn object(&self, field: &str, scope: &'static str) -> Result<Option<Fields<'a>>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(obj)) => Ok(Some(Fields {
                obj,
                path: self.path,
                scope,
            })),
            Some(other) => Err(self.err(field, format!("must be an object, found {other}"))),
        }
    }

    fn usize_opt(&self, field: &str) -> Result<Option<usize>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.err(field, format!("must be a non-negative integer, found {v}"))
                }),
        }
    }

    fn usize_req(&self, field: &str) -> Result<usize> {
        self.usize_opt(field)?
            .ok_or_else(|| self.err(field, "is missing"))
    }

    /// A required integer that the family's config class also accepts under other names (its
    /// `attribute_map`; transformers 5 writes some fields under the mapped name): the first of
    /// `names` present, with the name it was found under. Two names with different values are an
    /// error, as is none of them.
    fn usize_req_any<'n>(&self, names: &[&'n str]) -> Result<(usize, &'n str)> {
        let mut found: Option<(usize, &str)> = None;
        for &name in names {
            if let Some(v) = self.usize_opt(name)? {
                match found {
                    Some((w, first)) if w != v => {
                        return Err(self.err(
                            name,
                            format!("is {v}, but its alias `{first}` is {w}: they must agree"),
                        ))
                    }
                    Some(_) => {}
                    None => found = Some((v, name)),
                }
            }
        }
        found.ok_or_else(|| {
            let aliases = names[1..]
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            if aliases.is_empty() {
                self.err(names[0], "is missing")
            } else {
                self.err(names[0], format!("is missing (nor is its alias {aliases})"))
            }
        })
    }

    fn f32_opt(&self, field: &str) -> Result<Option<f32>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|x| Some(x as f32))
                .ok_or_else(|| self.err(field, format!("must be a number, found {v}"))),
        }
    }

    fn bool_opt(&self, field: &str) -> Result<Option<bool>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("must be true or false, found {v}"))),
        }
    }

    fn str_opt(&self, field: &str) -> Result<Option<&str>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("must be a string, found {v}"))),
        }
    }

    fn usize_list_opt(&self, field: &str) -> Result<Option<Vec<usize>>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => {
                let bad = || self.err(field, format!("must be a list of layer indices, found {v}"));
                let arr = v.as_array().ok_or_else(bad)?;
                arr.iter()
                    .map(|x| {
                        x.as_u64()
                            .and_then(|n| usize::try_from(n).ok())
                            .ok_or_else(bad)
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Some)
            }
        }
    }

    /// A number that may be written once or once per layer (all layers equal): the first of `names`
    /// present; `None` when none is. Different per-layer values are [`MoeError::UnsupportedModel`].
    fn uniform_opt(&self, names: &[&str]) -> Result<Option<usize>> {
        for &name in names {
            let values = match self.get(name) {
                None => continue,
                Some(Value::Array(_)) => self.usize_list_opt(name)?.unwrap_or_default(),
                Some(_) => vec![self.usize_req(name)?],
            };
            return match values[..] {
                [] => Err(self.err(name, "is an empty list")),
                [first, ..] if values.iter().all(|&v| v == first) => Ok(Some(first)),
                _ => Err(MoeError::UnsupportedModel(format!(
                    "`{name}` differs between layers ({values:?}); one value for every layer is \
                     supported"
                ))),
            };
        }
        Ok(None)
    }

    /// [`Fields::uniform_opt`], required.
    fn uniform_req(&self, names: &[&str]) -> Result<usize> {
        self.uniform_opt(names)?
            .ok_or_else(|| self.err(names[0], "is missing"))
    }

    fn str_list_opt(&self, field: &str) -> Result<Option<Vec<&str>>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => {
                let bad = || self.err(field, format!("must be a list of strings, found {v}"));
                let arr = v.as_array().ok_or_else(bad)?;
                arr.iter()
                    .map(|x| x.as_str().ok_or_else(bad))
                    .collect::<Result<Vec<_>>>()
                    .map(Some)
            }
        }
    }

    /// A step or frequency: at least 1.
    fn step(&self, field: &str, default: usize) -> Result<usize> {
        let s = self.usize_opt(field)?.unwrap_or(default);
        if s == 0 {
            return Err(self.err(field, "must be at least 1, found 0"));
        }
        Ok(s)
    }
}

/// The activation named by `hidden_act`.
fn activation(name: &str) -> Result<Activation> {
    match name {
        "silu" | "swish" => Ok(Activation::SWIGLU),
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Activation {
            kind: ActivationKind::GeluTanh,
            gated: true,
        }),
        "gelu" => Err(MoeError::UnsupportedModel(
            "hidden_act `gelu` (the exact erf GELU) is not implemented; supported: silu, swish, \
             gelu_pytorch_tanh, gelu_new, gelu_fast"
                .into(),
        )),
        other => Err(MoeError::UnsupportedModel(format!(
            "hidden_act `{other}` is not supported (supported: silu, swish, gelu_pytorch_tanh, gelu_new, \
             gelu_fast)"
        ))),
    }
}

fn parse(text: &str, path: &Path, family_override: Option<ModelFamily>) -> Result<HfModelConfig> {
    let malformed = |message: String| MoeError::MalformedFile {
        path: PathBuf::from(path),
        message,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    let top = value
        .as_object()
        .ok_or_else(|| malformed("the top level is not a JSON object".into()))?;
    let top = Fields {
        obj: top,
        path,
        scope: "",
    };
    // A multimodal model (Llama 4, Qwen3-VL-MoE, ...) keeps its language model's settings, the MoE
    // blocks' included, under `text_config`; its `model_type` names the text model when present.
    let f = match top.get("text_config") {
        None => top,
        Some(Value::Object(obj)) => Fields {
            obj,
            path,
            scope: "text_config.",
        },
        Some(other) => {
            return Err(top.err("text_config", format!("must be an object, found {other}")))
        }
    };
    let model_type = match f.str_opt("model_type")? {
        Some(t) => t,
        None => top.str_opt("model_type")?.unwrap_or(""),
    }
    .to_string();
    let family = match family_override {
        Some(fam) => fam,
        None if model_type.is_empty() => {
            return Err(f.err(
                "model_type",
                "is missing (name the model family explicitly to load it anyway)",
            ))
        }
        None => ModelFamily::from_model_type(&model_type).ok_or_else(|| {
            MoeError::UnsupportedModel(format!(
                "model_type `{model_type}` is not supported (supported: {}, {}; a model with one of \
                 these MoE layouts can be loaded by naming its family)",
                ModelFamily::supported_list(),
                RELATED_MODEL_TYPES.join(", ")
            ))
        })?,
    };

    // DBRX spells the layer count and width its own way (transformers' `attribute_map` aliases them)
    // and keeps the MoE settings under `ffn_config`.
    let (num_hidden_layers, hidden_size, ffn) = if family == ModelFamily::Dbrx {
        (
            f.usize_req_any(&["n_layers", "num_hidden_layers"])?.0,
            f.usize_req_any(&["d_model", "hidden_size"])?.0,
            f.object("ffn_config", "ffn_config.")?
                .ok_or_else(|| f.err("ffn_config", "is missing"))?,
        )
    } else {
        (
            f.usize_req("num_hidden_layers")?,
            f.usize_req("hidden_size")?,
            f,
        )
    };
    let top_k = match family {
        // `moe_topk` (alias `num_experts_per_tok`), a number or one per layer.
        ModelFamily::HunyuanV1Moe => f.uniform_req(&["moe_topk", "num_experts_per_tok"])?,
        ModelFamily::Ernie45Moe => f.uniform_req(&["moe_k", "num_experts_per_tok"])?,
        ModelFamily::Dbrx => ffn.usize_req("moe_top_k")?,
        _ => f.usize_req("num_experts_per_tok")?,
    };
    let hidden_act = match family {
        ModelFamily::Dbrx => dbrx_activation(&ffn)?,
        _ => f.str_opt("hidden_act")?.unwrap_or("silu"),
    }
    .to_string();
    let act = match family {
        // The experts' activation is fixed (`hidden_act` is not used by them): the clamped SwiGLU.
        ModelFamily::GptOss => Activation {
            kind: ActivationKind::ClampedSilu {
                alpha: f.f32_opt("swiglu_alpha")?.unwrap_or(1.702),
                limit: f.f32_opt("swiglu_limit")?.unwrap_or(7.0),
            },
            gated: true,
        },
        _ => activation(&hidden_act)?,
    };
    let mut torch_dtype = None;
    for fields in [f, top] {
        for key in ["torch_dtype", "dtype"] {
            if torch_dtype.is_none() {
                torch_dtype = fields.str_opt(key)?.map(str::to_string);
            }
        }
    }

    let ((num_experts, experts_key), intermediate_size, routing_rest, shared_experts, placement) =
        match family {
            ModelFamily::Mixtral => (
                f.usize_req_any(family.expert_count_keys())?,
                f.usize_req("intermediate_size")?,
                Rest::softmax(true),
                vec![],
                LayerPlacement::Every,
            ),
            ModelFamily::Ernie45Moe => {
                if f.bool_opt("use_bias")? == Some(true) {
                    return Err(MoeError::UnsupportedModel(
                        "ernie4_5_moe with use_bias true (biased shared experts) is not supported"
                            .into(),
                    ));
                }
                let i = f.usize_req("moe_intermediate_size")?;
                let shared = match f.usize_opt("moe_num_shared_experts")?.unwrap_or(2) {
                    0 => vec![],
                    n => vec![SharedExpertConfig {
                        intermediate_size: n.checked_mul(i).ok_or_else(|| {
                            MoeError::SizeOverflow(format!(
                                "moe_num_shared_experts * moe_intermediate_size ({n} x {i})"
                            ))
                        })?,
                        sigmoid_gate: false,
                    }],
                };
                let end = match f.get("moe_layer_end_index").and_then(Value::as_i64) {
                    None | Some(-1) => num_hidden_layers.saturating_sub(1),
                    Some(_) => f.usize_req("moe_layer_end_index")?,
                };
                (
                    f.usize_req_any(family.expert_count_keys())?,
                    i,
                    Rest {
                        correction_bias: true,
                        ..Rest::softmax(true)
                    },
                    shared,
                    LayerPlacement::Interval {
                        start: f.usize_opt("moe_layer_start_index")?.unwrap_or(1),
                        end,
                        interval: f.step("moe_layer_interval", 1)?,
                    },
                )
            }
            ModelFamily::HunyuanV1Moe => {
                // transformers sizes the routed experts and the shared MLP by intermediate_size;
                // a per-layer moe_intermediate_size that says otherwise is refused, not guessed.
                let i = f.usize_req("intermediate_size")?;
                if let Some(mi) = f
                    .uniform_opt(&["moe_intermediate_size"])?
                    .filter(|&m| m != i)
                {
                    return Err(MoeError::UnsupportedModel(format!(
                        "hunyuan_v1_moe with moe_intermediate_size {mi} != intermediate_size {i}: \
                         transformers sizes the experts by intermediate_size"
                    )));
                }
                (
                    f.usize_req_any(family.expert_count_keys())?,
                    i,
                    Rest::softmax(true),
                    vec![SharedExpertConfig {
                        intermediate_size: i,
                        sigmoid_gate: false,
                    }],
                    LayerPlacement::Every,
                )
            }
            ModelFamily::GraniteMoe => (
                f.usize_req_any(family.expert_count_keys())?,
                f.usize_req("intermediate_size")?,
                // Top-k of the logits, then softmax over the chosen: softmax top-k, renormalised.
                Rest::softmax(true),
                match f.usize_opt("shared_intermediate_size")?.unwrap_or(0) {
                    0 => vec![],
                    is => vec![SharedExpertConfig {
                        intermediate_size: is,
                        sigmoid_gate: false,
                    }],
                },
                LayerPlacement::Every,
            ),
            ModelFamily::Llama4 => {
                // The routed experts and the shared expert both have intermediate_size
                // (intermediate_size_mlp sizes the dense layers).
                let i = f.usize_req("intermediate_size")?;
                let layers = match f.usize_list_opt("moe_layers")? {
                    Some(layers) => layers,
                    None => match f.usize_opt("interleave_moe_layer_step")?.unwrap_or(1) {
                        0 => vec![],
                        step => (0..num_hidden_layers)
                            .filter(|l| (l + 1) % step == 0)
                            .collect(),
                    },
                };
                (
                    f.usize_req_any(family.expert_count_keys())?,
                    i,
                    // Top-k of the logits (the same as of their sigmoids), weight sigmoid(logit),
                    // applied to the expert's input.
                    Rest {
                        scoring: ScoringFunc::Sigmoid,
                        scale_input: true,
                        ..Rest::softmax(false)
                    },
                    vec![SharedExpertConfig {
                        intermediate_size: i,
                        sigmoid_gate: false,
                    }],
                    LayerPlacement::Listed(layers),
                )
            }
            ModelFamily::Dbrx => (
                ffn.usize_req_any(family.expert_count_keys())?,
                ffn.usize_req("ffn_hidden_size")?,
                Rest::softmax(dbrx_normalize(&ffn)?),
                vec![],
                LayerPlacement::Every,
            ),
            ModelFamily::Phimoe => {
                // transformers' sparsemixer picks two experts whatever num_experts_per_tok says;
                // another value is refused rather than silently overridden.
                if top_k != 2 {
                    return Err(MoeError::UnsupportedModel(format!(
                        "phimoe with num_experts_per_tok = {top_k}: its sparse mixer router always \
                         chooses 2 experts"
                    )));
                }
                (
                    f.usize_req_any(family.expert_count_keys())?,
                    f.usize_req("intermediate_size")?,
                    Rest {
                        scoring: ScoringFunc::SparseMixer {
                            jitter_eps: f.f32_opt("router_jitter_noise")?.unwrap_or(0.01),
                        },
                        ..Rest::softmax(false)
                    },
                    vec![],
                    LayerPlacement::Every,
                )
            }
            ModelFamily::MinimaxM2 => (
                f.usize_req_any(family.expert_count_keys())?,
                f.usize_req("intermediate_size")?,
                minimax_routing(&f)?,
                vec![],
                LayerPlacement::Every,
            ),
            // Top-k of the (biased) logits, then a softmax over the chosen: softmax top-k,
            // renormalised.
            ModelFamily::GptOss => (
                f.usize_req_any(family.expert_count_keys())?,
                f.usize_req("intermediate_size")?,
                Rest::softmax(true),
                vec![],
                LayerPlacement::Every,
            ),
            ModelFamily::Olmoe => (
                f.usize_req_any(family.expert_count_keys())?,
                f.usize_req("intermediate_size")?,
                Rest::softmax(f.bool_opt("norm_topk_prob")?.unwrap_or(false)),
                vec![],
                LayerPlacement::Every,
            ),
            ModelFamily::Qwen2Moe | ModelFamily::Qwen3Moe => {
                let shared = if family == ModelFamily::Qwen2Moe {
                    match f.usize_req("shared_expert_intermediate_size")? {
                        0 => vec![],
                        is => vec![SharedExpertConfig {
                            intermediate_size: is,
                            sigmoid_gate: true,
                        }],
                    }
                } else {
                    vec![]
                };
                // Qwen3.5-MoE always renormalises and has an MoE block in every layer; Qwen3-Next
                // renormalises unless told otherwise.
                let (renormalize, placement) = if model_type.starts_with("qwen3_5_moe") {
                    (true, LayerPlacement::Every)
                } else {
                    let norm_default = model_type == "qwen3_next";
                    (
                        f.bool_opt("norm_topk_prob")?.unwrap_or(norm_default),
                        LayerPlacement::SparseStep {
                            decoder_sparse_step: f.step("decoder_sparse_step", 1)?,
                            mlp_only_layers: f
                                .usize_list_opt("mlp_only_layers")?
                                .unwrap_or_default(),
                        },
                    )
                };
                (
                    f.usize_req_any(family.expert_count_keys())?,
                    f.usize_req("moe_intermediate_size")?,
                    Rest::softmax(renormalize),
                    shared,
                    placement,
                )
            }
            ModelFamily::DeepseekV2 | ModelFamily::DeepseekV3 => {
                let i = f.usize_req("moe_intermediate_size")?;
                let shared = match f.usize_opt("n_shared_experts")? {
                    None | Some(0) => vec![],
                    Some(n) => vec![SharedExpertConfig {
                        intermediate_size: n.checked_mul(i).ok_or_else(|| {
                            MoeError::SizeOverflow(format!(
                                "n_shared_experts * moe_intermediate_size ({n} x {i})"
                            ))
                        })?,
                        sigmoid_gate: false,
                    }],
                };
                let native = NativeDeepseek::of(&model_type);
                let first_k = f
                    .usize_opt("first_k_dense_replace")?
                    .unwrap_or(if model_type == "glm4_moe" { 1 } else { 0 });
                let placement = match f.str_list_opt("mlp_layer_types")? {
                    Some(types) if model_type == "deepseek_v32" => {
                        LayerPlacement::List(layer_types(&f, &types)?)
                    }
                    _ => LayerPlacement::FirstKDense {
                        first_k_dense_replace: first_k,
                        moe_layer_freq: match native {
                            Some(_) => 1,
                            None => f.step("moe_layer_freq", 1)?,
                        },
                    },
                };
                (
                    f.usize_req_any(family.expert_count_keys())?,
                    i,
                    deepseek_routing(&f, family, top_k, native)?,
                    shared,
                    placement,
                )
            }
        };
    if num_experts == 0 {
        return Err(ffn.err(experts_key, "is 0: this model has no MoE layers"));
    }

    let moe = MoeConfig {
        hidden_size,
        intermediate_size,
        routing: RoutingConfig {
            num_experts,
            top_k,
            scoring: routing_rest.scoring,
            correction_bias: routing_rest.correction_bias,
            grouping: routing_rest.grouping,
            renormalize: routing_rest.renormalize,
            routed_scaling_factor: routing_rest.routed_scaling_factor,
            scale_input: routing_rest.scale_input,
        },
        activation: act,
        shared_experts,
    };
    moe.validate().map_err(|e| match e {
        MoeError::InvalidConfig(m) => MoeError::InvalidConfig(format!("{}: {m}", path.display())),
        other => other,
    })?;
    Ok(HfModelConfig {
        model_type,
        family,
        num_hidden_layers,
        moe,
        placement,
        hidden_act,
        torch_dtype,
        quantization: quantization(&top)?,
    })
}

/// `quantization_config` (at the top level, also for multimodal models).
fn quantization(top: &Fields<'_>) -> Result<Option<WeightQuant>> {
    let obj = match top.get("quantization_config") {
        None => return Ok(None),
        Some(Value::Object(obj)) => obj,
        Some(other) => {
            return Err(top.err(
                "quantization_config",
                format!("must be an object, found {other}"),
            ))
        }
    };
    let q = Fields {
        obj,
        path: top.path,
        scope: "quantization_config.",
    };
    let method = q.str_opt("quant_method")?.unwrap_or("");
    let unsupported = |what: String| {
        Err(MoeError::UnsupportedModel(format!(
            "{}: quantization {what} is not supported (supported: quant_method fp8 with fmt e4m3, \
             compressed-tensors with 8-bit float weights, and mxfp4)",
            top.path.display()
        )))
    };
    let block = |v: Option<&Value>, field: &str| -> Result<Option<[usize; 2]>> {
        match v.filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => {
                let bad = || q.err(field, format!("must be two positive integers, found {v}"));
                let a = v.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
                let n = |i: usize| {
                    a[i].as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|&n| n > 0)
                        .ok_or_else(bad)
                };
                Ok(Some([n(0)?, n(1)?]))
            }
        }
    };
    match method {
        "fp8" => {
            match q.str_opt("fmt")? {
                None | Some("e4m3") | Some("float8_e4m3fn") => {}
                Some(other) => return unsupported(format!("fp8 with fmt `{other}`")),
            }
            Ok(Some(WeightQuant {
                method: method.into(),
                scale_name: "weight_scale_inv",
                block: block(q.get("weight_block_size"), "weight_block_size")?,
            }))
        }
        "compressed-tensors" => {
            let groups = q
                .get("config_groups")
                .and_then(Value::as_object)
                .ok_or_else(|| q.err("config_groups", "is missing or not an object"))?;
            let mut found: Option<WeightQuant> = None;
            for (name, group) in groups {
                let w = group.get("weights").filter(|w| !w.is_null());
                let Some(w) = w.and_then(Value::as_object) else {
                    continue;
                };
                let field = |k: &str| w.get(k).filter(|v| !v.is_null());
                let bits = field("num_bits").and_then(Value::as_u64);
                let kind = field("type").and_then(Value::as_str);
                if bits != Some(8) || kind != Some("float") {
                    return unsupported(format!(
                        "compressed-tensors group `{name}` with {} {} weights",
                        bits.map_or("?".into(), |b| format!("{b}-bit")),
                        kind.unwrap_or("?")
                    ));
                }
                let strategy = field("strategy")
                    .and_then(Value::as_str)
                    .unwrap_or("tensor");
                let blk = match strategy {
                    "tensor" | "channel" => None,
                    "block" => block(field("block_structure"), "block_structure")?,
                    other => {
                        return unsupported(format!(
                            "compressed-tensors strategy `{other}` (group `{name}`)"
                        ))
                    }
                };
                let this = WeightQuant {
                    method: method.into(),
                    scale_name: "weight_scale",
                    block: blk,
                };
                if found.as_ref().is_some_and(|f| *f != this) {
                    return unsupported(
                        "compressed-tensors with groups of different schemes".into(),
                    );
                }
                found = Some(this);
            }
            match found {
                Some(f) => Ok(Some(f)),
                None => Err(q.err("config_groups", "has no group with `weights`")),
            }
        }
        "mxfp4" => Ok(Some(WeightQuant {
            method: method.into(),
            scale_name: "scales",
            block: None,
        })),
        "" => Err(q.err("quant_method", "is missing")),
        other => unsupported(format!("method `{other}`")),
    }
}

/// The routing settings other than `E` and `k`.
struct Rest {
    scoring: ScoringFunc,
    correction_bias: bool,
    grouping: Option<GroupedTopK>,
    renormalize: bool,
    routed_scaling_factor: f32,
    scale_input: bool,
}

impl Rest {
    fn softmax(renormalize: bool) -> Self {
        Rest {
            scoring: ScoringFunc::Softmax,
            correction_bias: false,
            grouping: None,
            renormalize,
            routed_scaling_factor: 1.0,
            scale_input: false,
        }
    }
}

/// DBRX's `ffn_config.ffn_act_fn`: an object whose `name` is the activation (`silu` when absent).
fn dbrx_activation<'a>(ffn: &Fields<'a>) -> Result<&'a str> {
    match ffn.get("ffn_act_fn") {
        None => Ok("silu"),
        Some(Value::Object(obj)) => match obj.get("name") {
            Some(Value::String(name)) => Ok(name),
            other => Err(ffn.err(
                "ffn_act_fn",
                format!("must have a string `name`, found {other:?}"),
            )),
        },
        Some(other) => Err(ffn.err(
            "ffn_act_fn",
            format!("must be an object with a `name`, found {other}"),
        )),
    }
}

/// DBRX's `ffn_config.moe_normalize_expert_weights`, the `p` of the p-norm the top-k weights are
/// divided by: 1 (also when absent, the class default) divides them by their sum (softmax weights
/// are positive); `null` leaves them as they are; another `p` is not supported.
fn dbrx_normalize(ffn: &Fields<'_>) -> Result<bool> {
    const KEY: &str = "moe_normalize_expert_weights";
    match ffn.obj.get(KEY) {
        None => Ok(true),
        Some(Value::Null) => Ok(false),
        Some(v) if v.as_f64() == Some(1.0) => Ok(true),
        Some(v) if v.is_number() => Err(MoeError::UnsupportedModel(format!(
            "`{}{KEY}` = {v}: only 1 (divide by the sum) and null (no normalisation) are \
             supported",
            ffn.scope
        ))),
        Some(v) => Err(ffn.err(KEY, format!("must be a number or null, found {v}"))),
    }
}

/// MiniMax-M2's routing, which transformers hard-wires: sigmoid scores, the correction bias for
/// selection, plain top-k, always renormalised. Its hub config also writes `scoring_func`,
/// `use_routing_bias` and `shared_intermediate_size`, which transformers does not read; any value
/// but the one its code implies is refused rather than ignored.
fn minimax_routing(f: &Fields<'_>) -> Result<Rest> {
    let refuse = |what: String| {
        Err(MoeError::UnsupportedModel(format!(
            "minimax_m2 with {what}: transformers' MiniMax-M2 always uses sigmoid scores, the \
             routing bias and no shared expert"
        )))
    };
    if let Some(s) = f.str_opt("scoring_func")?.filter(|&s| s != "sigmoid") {
        return refuse(format!("scoring_func `{s}`"));
    }
    if f.bool_opt("use_routing_bias")? == Some(false) {
        return refuse("use_routing_bias false".into());
    }
    if let Some(n) = f.usize_opt("shared_intermediate_size")?.filter(|&n| n != 0) {
        return refuse(format!("shared_intermediate_size {n}"));
    }
    Ok(Rest {
        scoring: ScoringFunc::Sigmoid,
        correction_bias: true,
        grouping: None,
        renormalize: true,
        routed_scaling_factor: 1.0,
        scale_input: false,
    })
}

/// The DeepSeek-V3-block model types that transformers runs with its own (native) code rather than
/// DeepSeek's remote code, and the rules that differ: renormalisation for `k = 1` too,
/// `moe_layer_freq` not read, and their own defaults (see [`RELATED_MODEL_TYPES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NativeDeepseek {
    Glm4Moe,
    Dots1,
    DeepseekV32,
}

impl NativeDeepseek {
    fn of(model_type: &str) -> Option<Self> {
        match model_type {
            "glm4_moe" => Some(NativeDeepseek::Glm4Moe),
            "dots1" => Some(NativeDeepseek::Dots1),
            "deepseek_v32" => Some(NativeDeepseek::DeepseekV32),
            _ => None,
        }
    }
}

/// `mlp_layer_types` (`"dense"` or `"sparse"` per layer) as MoE-layer flags.
fn layer_types(f: &Fields<'_>, types: &[&str]) -> Result<Vec<bool>> {
    types
        .iter()
        .map(|&t| match t {
            "sparse" => Ok(true),
            "dense" => Ok(false),
            other => Err(f.err(
                "mlp_layer_types",
                format!("holds `{other}`: each entry must be \"dense\" or \"sparse\""),
            )),
        })
        .collect()
}

fn deepseek_routing(
    f: &Fields<'_>,
    family: ModelFamily,
    top_k: usize,
    native: Option<NativeDeepseek>,
) -> Result<Rest> {
    let v3 = family == ModelFamily::DeepseekV3;
    if native == Some(NativeDeepseek::Dots1) || native == Some(NativeDeepseek::Glm4Moe) {
        // Sigmoid with the correction bias and top-2-sum groups, whatever the file says; the groups
        // default to one (a no-op).
        let group = |field: &str| f.usize_opt(field).map(|g| g.unwrap_or(1));
        return Ok(Rest {
            scoring: ScoringFunc::Sigmoid,
            correction_bias: true,
            grouping: Some(GroupedTopK {
                n_group: group("n_group")?,
                topk_group: group("topk_group")?,
                score: GroupScore::SumTop2,
            }),
            renormalize: f
                .bool_opt("norm_topk_prob")?
                .unwrap_or(native == Some(NativeDeepseek::Glm4Moe)),
            routed_scaling_factor: f.f32_opt("routed_scaling_factor")?.unwrap_or(1.0),
            scale_input: false,
        });
    }
    let scoring = match f.str_opt("scoring_func")? {
        None if v3 => ScoringFunc::Sigmoid,
        None => ScoringFunc::Softmax,
        Some("softmax") => ScoringFunc::Softmax,
        Some("sigmoid") => ScoringFunc::Sigmoid,
        Some(other) => {
            return Err(MoeError::UnsupportedModel(format!(
                "scoring_func `{other}` is not supported (supported: softmax, sigmoid)"
            )))
        }
    };
    let method = f
        .str_opt("topk_method")?
        .unwrap_or(if v3 { "noaux_tc" } else { "greedy" });
    let groups = |score: GroupScore| -> Result<Option<GroupedTopK>> {
        let need = |field: &str| {
            f.usize_opt(field)?.ok_or_else(|| {
                f.err(
                    field,
                    format!("is missing (topk_method `{method}` needs it)"),
                )
            })
        };
        Ok(Some(GroupedTopK {
            n_group: need("n_group")?,
            topk_group: need("topk_group")?,
            score,
        }))
    };
    let (grouping, correction_bias) = match method {
        "greedy" => (None, false),
        "group_limited_greedy" => (groups(GroupScore::Max)?, false),
        "noaux_tc" => (groups(GroupScore::SumTop2)?, true),
        other => {
            return Err(MoeError::UnsupportedModel(format!(
                "topk_method `{other}` is not supported (supported: greedy, group_limited_greedy, noaux_tc)"
            )))
        }
    };
    let norm = f.bool_opt("norm_topk_prob")?.unwrap_or(native.is_some());
    let rsf = f.f32_opt("routed_scaling_factor")?.unwrap_or(1.0);
    // DeepSeek's remote code renormalises only for k > 1; transformers' native code always.
    let renormalize = norm && (top_k > 1 || native.is_some());
    let routed_scaling_factor = if v3 || !renormalize { rsf } else { 1.0 };
    Ok(Rest {
        scoring,
        correction_bias,
        grouping,
        renormalize,
        routed_scaling_factor,
        scale_input: false,
    })
}
