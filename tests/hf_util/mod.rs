//! Tiny Hugging Face checkpoints built in the tests: a `config.json` per family, random weights under the
//! hub's key names (per-expert or fused experts), written unsharded or sharded with an index, and the
//! expected config and fused weights built independently of the crate's loader.
#![allow(dead_code)]

use half::{bf16, f16};
use moe_kernels::config::{
    Activation, ActivationKind, GroupScore, GroupedTopK, MoeConfig, RoutingConfig, ScoringFunc,
    SharedExpertConfig,
};
use moe_kernels::cpu::layer::{MoeBiases, MoeWeights, SharedExpertWeights};
use moe_kernels::hf::ModelFamily;
use moe_kernels::DType;
use rand::rngs::StdRng;
use rand::Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "moe-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Round `v` to what `dtype` stores, and back to f32.
pub fn round_to(dtype: DType, v: &[f32]) -> Vec<f32> {
    match dtype {
        DType::F32 => v.to_vec(),
        DType::BF16 => v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
        DType::F16 => v.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
    }
}

/// Little-endian bytes of `v` stored as `dtype`.
pub fn to_bytes(dtype: DType, v: &[f32]) -> Vec<u8> {
    match dtype {
        DType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::BF16 => v
            .iter()
            .flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes())
            .collect(),
        DType::F16 => v
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_bits().to_le_bytes())
            .collect(),
    }
}

pub fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::BF16 => Dtype::BF16,
        DType::F16 => Dtype::F16,
    }
}

/// One stored tensor.
#[derive(Clone, Debug)]
pub struct Stored {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Stored {
    pub fn float(dtype: DType, shape: Vec<usize>, v: &[f32]) -> Self {
        assert_eq!(shape.iter().product::<usize>(), v.len());
        Stored {
            dtype: st_dtype(dtype),
            shape,
            bytes: to_bytes(dtype, v),
        }
    }
}

/// Write `tensors` as one safetensors file.
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Stored>) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A tiny model of one family: its config, every tensor of its checkpoint, and the expected MoE blocks.
pub struct TinyModel {
    pub family: ModelFamily,
    pub dtype: DType,
    pub fused: bool,
    pub config: Value,
    pub tensors: BTreeMap<String, Stored>,
    /// The expected MoE config, written from the family's documented semantics.
    pub moe: MoeConfig,
    /// The expected fused weights (stored values, widened to f32) of every MoE layer.
    pub layers: BTreeMap<usize, MoeWeights<f32>>,
    pub num_layers: usize,
    /// A dense layer, when the family has one.
    pub dense_layer: Option<usize>,
}

/// The FP8 scale layouts of [`TinyModel::quantize_fp8`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fp8Scheme {
    /// One scale per `[rows, cols]` block (partial blocks at the edges when a size is not a multiple).
    Block([usize; 2]),
    /// One scale per output row.
    Channel,
    /// One scale per matrix.
    Tensor,
}

pub const H: usize = 24;
pub const I: usize = 16;
pub const E: usize = 8;

impl TinyModel {
    /// Random weights for `family`, stored as `dtype`, experts per-expert or `fused`.
    pub fn new(rng: &mut StdRng, family: ModelFamily, dtype: DType, fused: bool) -> Self {
        let sw = |is: usize, gate: bool| SharedExpertConfig {
            intermediate_size: is,
            sigmoid_gate: gate,
        };
        let (config, moe, num_layers, moe_layers): (Value, MoeConfig, usize, Vec<usize>) =
            match family {
                ModelFamily::Mixtral => (
                    json!({"model_type": "mixtral", "architectures": ["MixtralForCausalLM"],
                       "hidden_size": H, "intermediate_size": I, "num_local_experts": E,
                       "num_experts_per_tok": 2, "num_hidden_layers": 2, "hidden_act": "silu",
                       "torch_dtype": "bfloat16", "vocab_size": 32}),
                    MoeConfig {
                        hidden_size: H,
                        intermediate_size: I,
                        routing: RoutingConfig::softmax_topk(E, 2, true),
                        activation: Activation::SWIGLU,
                        shared_experts: vec![],
                    },
                    2,
                    vec![0, 1],
                ),
                ModelFamily::Qwen2Moe => (
                    json!({"model_type": "qwen2_moe", "hidden_size": H, "intermediate_size": 40,
                       "moe_intermediate_size": I, "shared_expert_intermediate_size": 20,
                       "num_experts": E, "num_experts_per_tok": 3, "norm_topk_prob": false,
                       "decoder_sparse_step": 1, "mlp_only_layers": [0], "num_hidden_layers": 3,
                       "hidden_act": "silu"}),
                    MoeConfig {
                        hidden_size: H,
                        intermediate_size: I,
                        routing: RoutingConfig::softmax_topk(E, 3, false),
                        activation: Activation::SWIGLU,
                        shared_experts: vec![sw(20, true)],
                    },
                    3,
                    vec![1, 2],
                ),
                ModelFamily::Qwen3Moe => (
                    json!({"model_type": "qwen3_moe", "hidden_size": H, "intermediate_size": 40,
                       "moe_intermediate_size": I, "num_experts": E, "num_experts_per_tok": 2,
                       "norm_topk_prob": true, "decoder_sparse_step": 2, "mlp_only_layers": [],
                       "num_hidden_layers": 4, "hidden_act": "silu"}),
                    MoeConfig {
                        hidden_size: H,
                        intermediate_size: I,
                        routing: RoutingConfig::softmax_topk(E, 2, true),
                        activation: Activation::SWIGLU,
                        shared_experts: vec![],
                    },
                    4,
                    vec![1, 3],
                ),
                ModelFamily::Olmoe => (
                    json!({"model_type": "olmoe", "hidden_size": H, "intermediate_size": I,
                       "num_experts": E, "num_experts_per_tok": 2, "norm_topk_prob": false,
                       "num_hidden_layers": 2, "hidden_act": "silu"}),
                    MoeConfig {
                        hidden_size: H,
                        intermediate_size: I,
                        routing: RoutingConfig::softmax_topk(E, 2, false),
                        activation: Activation::SWIGLU,
                        shared_experts: vec![],
                    },
                    2,
                    vec![0, 1],
                ),
                ModelFamily::DeepseekV2 => (
                    json!({"model_type": "deepseek_v2", "hidden_size": H, "intermediate_size": 40,
                       "moe_intermediate_size": I, "n_routed_experts": E, "n_shared_experts": 2,
                       "num_experts_per_tok": 3, "topk_method": "group_limited_greedy",
                       "n_group": 4, "topk_group": 2, "scoring_func": "softmax",
                       "norm_topk_prob": false, "routed_scaling_factor": 1.5,
                       "first_k_dense_replace": 1, "moe_layer_freq": 1, "num_hidden_layers": 3,
                       "hidden_act": "silu"}),
                    MoeConfig {
                        hidden_size: H,
                        intermediate_size: I,
                        routing: RoutingConfig {
                            num_experts: E,
                            top_k: 3,
                            scoring: ScoringFunc::Softmax,
                            correction_bias: false,
                            grouping: Some(GroupedTopK {
                                n_group: 4,
                                topk_group: 2,
                                score: GroupScore::Max,
                            }),
                            renormalize: false,
                            routed_scaling_factor: 1.5,
                            scale_input: false,
                        },
                        activation: Activation::SWIGLU,
                        shared_experts: vec![sw(2 * I, false)],
                    },
                    3,
                    vec![1, 2],
                ),
                ModelFamily::DeepseekV3 => (
                    json!({"model_type": "deepseek_v3", "hidden_size": H, "intermediate_size": 40,
                       "moe_intermediate_size": I, "n_routed_experts": E, "n_shared_experts": 1,
                       "num_experts_per_tok": 3, "topk_method": "noaux_tc", "n_group": 4,
                       "topk_group": 2, "scoring_func": "sigmoid", "norm_topk_prob": true,
                       "routed_scaling_factor": 2.5, "first_k_dense_replace": 1,
                       "moe_layer_freq": 1, "num_hidden_layers": 3, "hidden_act": "silu"}),
                    MoeConfig {
                        hidden_size: H,
                        intermediate_size: I,
                        routing: RoutingConfig {
                            num_experts: E,
                            top_k: 3,
                            scoring: ScoringFunc::Sigmoid,
                            correction_bias: true,
                            grouping: Some(GroupedTopK {
                                n_group: 4,
                                topk_group: 2,
                                score: GroupScore::SumTop2,
                            }),
                            renormalize: true,
                            routed_scaling_factor: 2.5,
                            scale_input: false,
                        },
                        activation: Activation::SWIGLU,
                        shared_experts: vec![sw(I, false)],
                    },
                    3,
                    vec![1, 2],
                ),
                ModelFamily::Ernie45Moe => (
                    // Layer 0 dense (start 1), the end written as -1 (the last layer).
                    json!({"model_type": "ernie4_5_moe", "hidden_size": H, "intermediate_size": 40,
                       "moe_intermediate_size": I, "moe_num_experts": E, "moe_k": 3,
                       "moe_num_shared_experts": 1, "moe_layer_start_index": 1,
                       "moe_layer_end_index": -1, "moe_layer_interval": 1, "use_bias": false,
                       "moe_norm_min": 1e-12, "num_hidden_layers": 3, "hidden_act": "silu"}),
                    MoeConfig {
                        hidden_size: H,
                        intermediate_size: I,
                        routing: RoutingConfig {
                            correction_bias: true,
                            ..RoutingConfig::softmax_topk(E, 3, true)
                        },
                        activation: Activation::SWIGLU,
                        shared_experts: vec![sw(I, false)],
                    },
                    3,
                    vec![1, 2],
                ),
                ModelFamily::HunyuanV1Moe => (
                    // A13B-style per-layer lists; the shared MLP has the experts' size.
                    json!({"model_type": "hunyuan_v1_moe", "hidden_size": H,
                       "intermediate_size": I, "moe_intermediate_size": [I, I], "num_experts": E,
                       "moe_topk": [3, 3], "num_shared_expert": [1, 1], "use_mixed_mlp_moe": true,
                       "num_hidden_layers": 2, "hidden_act": "silu"}),
                    MoeConfig {
                        hidden_size: H,
                        intermediate_size: I,
                        routing: RoutingConfig::softmax_topk(E, 3, true),
                        activation: Activation::SWIGLU,
                        shared_experts: vec![sw(I, false)],
                    },
                    2,
                    vec![0, 1],
                ),
                ModelFamily::GraniteMoe => (
                    json!({"model_type": "granitemoeshared", "hidden_size": H,
                       "intermediate_size": I, "num_local_experts": E, "num_experts_per_tok": 2,
                       "shared_intermediate_size": 20, "num_hidden_layers": 2,
                       "hidden_act": "silu", "residual_multiplier": 0.22}),
                    MoeConfig {
                        hidden_size: H,
                        intermediate_size: I,
                        routing: RoutingConfig::softmax_topk(E, 2, true),
                        activation: Activation::SWIGLU,
                        shared_experts: vec![sw(20, false)],
                    },
                    2,
                    vec![0, 1],
                ),
                ModelFamily::Llama4 => (
                    // The text-only spelling (Llama4ForCausalLM); tests wrap it as the hub's
                    // multimodal config with `into_multimodal`. moe_layers wins over the step.
                    json!({"model_type": "llama4_text", "hidden_size": H, "intermediate_size": I,
                       "intermediate_size_mlp": 40, "num_local_experts": E,
                       "num_experts_per_tok": 1, "moe_layers": [1, 3],
                       "interleave_moe_layer_step": 1, "num_hidden_layers": 4,
                       "hidden_act": "silu"}),
                    MoeConfig {
                        hidden_size: H,
                        intermediate_size: I,
                        routing: RoutingConfig {
                            scoring: ScoringFunc::Sigmoid,
                            scale_input: true,
                            ..RoutingConfig::softmax_topk(E, 1, false)
                        },
                        activation: Activation::SWIGLU,
                        shared_experts: vec![sw(I, false)],
                    },
                    4,
                    vec![1, 3],
                ),
                ModelFamily::Dbrx => (
                    json!({"model_type": "dbrx", "d_model": H, "n_layers": 2, "n_heads": 4,
                       "attn_config": {"kv_n_heads": 2, "rope_theta": 500000, "model_type": ""},
                       "ffn_config": {"ffn_hidden_size": I, "moe_num_experts": E,
                         "moe_top_k": 3, "moe_normalize_expert_weights": 1,
                         "moe_jitter_eps": 0, "ffn_act_fn": {"name": "silu"},
                         "model_type": ""}}),
                    MoeConfig {
                        hidden_size: H,
                        intermediate_size: I,
                        routing: RoutingConfig::softmax_topk(E, 3, true),
                        activation: Activation::SWIGLU,
                        shared_experts: vec![],
                    },
                    2,
                    vec![0, 1],
                ),
                ModelFamily::Phimoe => (
                    // A wide jitter so that several experts share each pick's softmax.
                    json!({"model_type": "phimoe", "hidden_size": H, "intermediate_size": I,
                       "num_local_experts": E, "num_experts_per_tok": 2, "num_hidden_layers": 2,
                       "hidden_act": "silu", "router_jitter_noise": 0.4,
                       "input_jitter_noise": 0.01}),
                    MoeConfig {
                        hidden_size: H,
                        intermediate_size: I,
                        routing: RoutingConfig {
                            scoring: ScoringFunc::SparseMixer { jitter_eps: 0.4 },
                            ..RoutingConfig::softmax_topk(E, 2, false)
                        },
                        activation: Activation::SWIGLU,
                        shared_experts: vec![],
                    },
                    2,
                    vec![0, 1],
                ),
                ModelFamily::GptOss => (
                    json!({"model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"],
                       "hidden_size": H, "intermediate_size": I, "num_local_experts": E,
                       "num_experts_per_tok": 2, "experts_per_token": 2, "num_hidden_layers": 2,
                       "swiglu_limit": 7.0, "hidden_act": "silu", "torch_dtype": "bfloat16"}),
                    MoeConfig {
                        hidden_size: H,
                        intermediate_size: I,
                        routing: RoutingConfig::softmax_topk(E, 2, true),
                        activation: Activation {
                            kind: ActivationKind::ClampedSilu {
                                alpha: 1.702,
                                limit: 7.0,
                            },
                            gated: true,
                        },
                        shared_experts: vec![],
                    },
                    2,
                    vec![0, 1],
                ),
                ModelFamily::MinimaxM2 => (
                    json!({"model_type": "minimax_m2", "hidden_size": H, "intermediate_size": I,
                       "num_local_experts": E, "num_experts_per_tok": 2, "num_hidden_layers": 2,
                       "hidden_act": "silu", "scoring_func": "sigmoid", "use_routing_bias": true,
                       "shared_intermediate_size": 0, "router_jitter_noise": 0.0}),
                    MoeConfig {
                        hidden_size: H,
                        intermediate_size: I,
                        routing: RoutingConfig {
                            num_experts: E,
                            top_k: 2,
                            scoring: ScoringFunc::Sigmoid,
                            correction_bias: true,
                            grouping: None,
                            renormalize: true,
                            routed_scaling_factor: 1.0,
                            scale_input: false,
                        },
                        activation: Activation::SWIGLU,
                        shared_experts: vec![],
                    },
                    2,
                    vec![0, 1],
                ),
            };

        // Granite and DBRX store their experts fused only (each its own way); Llama 4 per expert
        // only in its `for_llm_compressor` checkpoints (Linear orientation).
        // gpt-oss fused only, too.
        let fused = fused
            || matches!(
                family,
                ModelFamily::GraniteMoe | ModelFamily::Dbrx | ModelFamily::GptOss
            );
        let mut m = TinyModel {
            family,
            dtype,
            fused,
            config,
            tensors: BTreeMap::new(),
            moe,
            layers: BTreeMap::new(),
            num_layers,
            dense_layer: (0..num_layers).find(|l| !moe_layers.contains(l)),
        };
        m.put_f32(rng, "model.embed_tokens.weight", vec![32, H], 1.0);
        m.put_f32(rng, "model.norm.weight", vec![H], 1.0);
        for l in 0..num_layers {
            m.put_f32(
                rng,
                &format!("model.layers.{l}.input_layernorm.weight"),
                vec![H],
                1.0,
            );
            if moe_layers.contains(&l) {
                let w = m.moe_layer(rng, l);
                m.layers.insert(l, w);
            } else {
                for (n, s) in [
                    ("gate_proj", [40, H]),
                    ("up_proj", [40, H]),
                    ("down_proj", [H, 40]),
                ] {
                    m.put_f32(
                        rng,
                        &format!("model.layers.{l}.mlp.{n}.weight"),
                        s.to_vec(),
                        0.2,
                    );
                }
            }
        }
        m
    }

    /// Store random values of std `scale` under `key` (rounded to the model's dtype); return them.
    fn put_f32(&mut self, rng: &mut StdRng, key: &str, shape: Vec<usize>, scale: f32) -> Vec<f32> {
        let n = shape.iter().product();
        let a = scale * 3f32.sqrt();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-a..a)).collect();
        let v = round_to(self.dtype, &v);
        self.tensors
            .insert(key.to_string(), Stored::float(self.dtype, shape, &v));
        v
    }

    fn moe_layer(&mut self, rng: &mut StdRng, l: usize) -> MoeWeights<f32> {
        let fam = self.family;
        let prefix = self.prefix(l);
        let router_key = match fam {
            ModelFamily::GraniteMoe | ModelFamily::Dbrx => format!("{prefix}.router.layer.weight"),
            ModelFamily::Llama4 | ModelFamily::GptOss => format!("{prefix}.router.weight"),
            ModelFamily::HunyuanV1Moe => format!("{prefix}.gate.wg.weight"),
            _ => format!("{prefix}.gate.weight"),
        };
        let router = self.put_f32(rng, &router_key, vec![E, H], 0.5);
        let mut biases = None;
        // MiniMax-M2 keeps its bias beside the router, and a wide one, so that a bias left out of
        // the selection (or put into the weights) changes the result.
        let bias_at = match fam {
            ModelFamily::DeepseekV3 => {
                Some((format!("{prefix}.gate.e_score_correction_bias"), 0.1))
            }
            ModelFamily::MinimaxM2 => Some((format!("{prefix}.e_score_correction_bias"), 2.0)),
            ModelFamily::Ernie45Moe => {
                Some((format!("{prefix}.moe_statics.e_score_correction_bias"), 0.1))
            }
            _ => None,
        };
        // ERNIE stores it as [1, E].
        let bias_shape = match fam {
            ModelFamily::Ernie45Moe => vec![1, E],
            _ => vec![E],
        };
        let correction_bias = bias_at.map(|(key, spread)| {
            let b: Vec<f32> = (0..E).map(|_| rng.random_range(-spread..spread)).collect();
            self.tensors
                .insert(key, Stored::float(DType::F32, bias_shape, &b));
            b
        });
        let mut gate_up = Vec::with_capacity(E * 2 * I * H);
        let mut down = Vec::with_capacity(E * H * I);
        if self.fused {
            // Draw per expert, store stacked: gate rows then up rows of each expert.
            let a = 0.2 * 3f32.sqrt();
            let gu: Vec<f32> = (0..E * 2 * I * H)
                .map(|_| rng.random_range(-a..a))
                .collect();
            let dn: Vec<f32> = (0..E * H * I).map(|_| rng.random_range(-a..a)).collect();
            let (gu, dn) = (round_to(self.dtype, &gu), round_to(self.dtype, &dn));
            match fam {
                // Each expert's matrices transposed: [E, H, 2I] (gate columns first), [E, I, H].
                ModelFamily::Llama4 => {
                    let (gu_t, dn_t) = (
                        transpose_each(&gu, E, 2 * I, H),
                        transpose_each(&dn, E, H, I),
                    );
                    self.tensors.insert(
                        format!("{prefix}.experts.gate_up_proj"),
                        Stored::float(self.dtype, vec![E, H, 2 * I], &gu_t),
                    );
                    self.tensors.insert(
                        format!("{prefix}.experts.down_proj"),
                        Stored::float(self.dtype, vec![E, I, H], &dn_t),
                    );
                }
                // Transposed like Llama 4's, gate and up columns interleaved (column 2j gate j,
                // 2j + 1 up j), with biases: the router's wide enough to change the choice, the
                // gate-up's wide enough that both clamps of the activation bite.
                ModelFamily::GptOss => {
                    let interleave = |v: &[f32], k: usize| -> Vec<f32> {
                        v.chunks(2 * I * k)
                            .flat_map(|m| {
                                (0..2 * I).flat_map(move |r| {
                                    let src = if r % 2 == 0 { r / 2 } else { I + r / 2 };
                                    m[src * k..(src + 1) * k].to_vec()
                                })
                            })
                            .collect()
                    };
                    let gu_t = transpose_each(&interleave(&gu, H), E, 2 * I, H);
                    self.tensors.insert(
                        format!("{prefix}.experts.gate_up_proj"),
                        Stored::float(self.dtype, vec![E, H, 2 * I], &gu_t),
                    );
                    self.tensors.insert(
                        format!("{prefix}.experts.down_proj"),
                        Stored::float(self.dtype, vec![E, I, H], &transpose_each(&dn, E, H, I)),
                    );
                    let mut bias = |n: usize, spread: f32| {
                        let b: Vec<f32> =
                            (0..n).map(|_| rng.random_range(-spread..spread)).collect();
                        round_to(self.dtype, &b)
                    };
                    let (rb, gb, db) = (bias(E, 1.0), bias(E * 2 * I, 10.0), bias(E * H, 1.0));
                    for (key, shape, v) in [
                        ("router.bias", vec![E], rb.clone()),
                        (
                            "experts.gate_up_proj_bias",
                            vec![E, 2 * I],
                            interleave(&gb, 1),
                        ),
                        ("experts.down_proj_bias", vec![E, H], db.clone()),
                    ] {
                        self.tensors.insert(
                            format!("{prefix}.{key}"),
                            Stored::float(self.dtype, shape, &v),
                        );
                    }
                    biases = Some(MoeBiases {
                        router: rb,
                        gate_up: gb,
                        down: db,
                    });
                }
                // Every expert's I rows stacked: w1 (gate) and v1 (up) as they are, w2 each
                // expert's down projection transposed ([I, H]).
                ModelFamily::Dbrx => {
                    let rows = |part: usize| -> Vec<f32> {
                        gu.chunks(2 * I * H)
                            .flat_map(|e| e[part * I * H..(part + 1) * I * H].to_vec())
                            .collect()
                    };
                    for (name, v) in [
                        ("w1", rows(0)),
                        ("v1", rows(1)),
                        ("w2", transpose_each(&dn, E, H, I)),
                    ] {
                        self.tensors.insert(
                            format!("{prefix}.experts.mlp.{name}"),
                            Stored::float(self.dtype, vec![E * I, H], &v),
                        );
                    }
                }
                _ => {
                    let (gu_key, dn_key) = match fam {
                        ModelFamily::GraniteMoe => ("input_linear.weight", "output_linear.weight"),
                        _ => ("experts.gate_up_proj", "experts.down_proj"),
                    };
                    self.tensors.insert(
                        format!("{prefix}.{gu_key}"),
                        Stored::float(self.dtype, vec![E, 2 * I, H], &gu),
                    );
                    self.tensors.insert(
                        format!("{prefix}.{dn_key}"),
                        Stored::float(self.dtype, vec![E, H, I], &dn),
                    );
                }
            }
            gate_up = gu;
            down = dn;
        } else {
            let names = self.expert_names();
            for e in 0..E {
                let p = format!("{prefix}.experts.{e}");
                let g = self.put_f32(rng, &format!("{p}.{}.weight", names[0]), vec![I, H], 0.2);
                let u = self.put_f32(rng, &format!("{p}.{}.weight", names[1]), vec![I, H], 0.2);
                let d = self.put_f32(rng, &format!("{p}.{}.weight", names[2]), vec![H, I], 0.2);
                gate_up.extend_from_slice(&g);
                gate_up.extend_from_slice(&u);
                down.extend_from_slice(&d);
            }
        }
        let mut shared = vec![];
        let shared_prefix = self.shared_prefix(l);
        if fam == ModelFamily::GraniteMoe {
            // Granite's shared MLP sits beside the block, its gate and up fused in one matrix.
            let is = self.moe.shared_experts[0].intermediate_size;
            let sp = format!("model.layers.{l}.shared_mlp");
            let gu = self.put_f32(
                rng,
                &format!("{sp}.input_linear.weight"),
                vec![2 * is, H],
                0.2,
            );
            let d = self.put_f32(rng, &format!("{sp}.output_linear.weight"), vec![H, is], 0.2);
            shared.push(SharedExpertWeights {
                gate_up: gu,
                down: d,
                gate: None,
            });
        }
        if let Some(sp) = shared_prefix {
            let is = self.moe.shared_experts[0].intermediate_size;
            let g = self.put_f32(rng, &format!("{sp}.gate_proj.weight"), vec![is, H], 0.2);
            let u = self.put_f32(rng, &format!("{sp}.up_proj.weight"), vec![is, H], 0.2);
            let d = self.put_f32(rng, &format!("{sp}.down_proj.weight"), vec![H, is], 0.2);
            let gate = (fam == ModelFamily::Qwen2Moe).then(|| {
                self.put_f32(
                    rng,
                    &format!("{prefix}.shared_expert_gate.weight"),
                    vec![1, H],
                    0.3,
                )
            });
            shared.push(SharedExpertWeights {
                gate_up: [g, u].concat(),
                down: d,
                gate,
            });
        }
        MoeWeights {
            router,
            correction_bias,
            gate_up,
            down,
            shared,
            biases,
        }
    }

    /// The first MoE layer.
    pub fn moe_layer_no(&self) -> usize {
        *self.layers.keys().next().unwrap()
    }

    /// The per-expert gate, up and down projections' names.
    pub fn expert_names(&self) -> [&'static str; 3] {
        match self.family {
            ModelFamily::Mixtral | ModelFamily::MinimaxM2 | ModelFamily::Phimoe => {
                ["w1", "w3", "w2"]
            }
            _ => ["gate_proj", "up_proj", "down_proj"],
        }
    }

    /// The prefix of layer `l`'s shared expert inside the block, with separate `gate_proj`,
    /// `up_proj` and `down_proj`; `None` for families without one (and for Granite, whose fused
    /// `shared_mlp` sits beside the block).
    pub fn shared_prefix(&self, l: usize) -> Option<String> {
        let prefix = self.prefix(l);
        match self.family {
            ModelFamily::Qwen2Moe => Some(format!("{prefix}.shared_expert")),
            ModelFamily::DeepseekV2 | ModelFamily::DeepseekV3 | ModelFamily::Ernie45Moe => {
                Some(format!("{prefix}.shared_experts"))
            }
            ModelFamily::HunyuanV1Moe => Some(format!("{prefix}.shared_mlp")),
            ModelFamily::Llama4 => Some(format!("{prefix}.shared_expert")),
            _ => None,
        }
    }

    /// The key prefix of layer `l`'s MoE block in this checkpoint.
    pub fn prefix(&self, l: usize) -> String {
        match (self.family, self.fused) {
            (ModelFamily::Mixtral | ModelFamily::MinimaxM2 | ModelFamily::Phimoe, false)
            | (ModelFamily::GraniteMoe, _) => {
                format!("model.layers.{l}.block_sparse_moe")
            }
            (ModelFamily::Llama4, _) => format!("model.layers.{l}.feed_forward"),
            (ModelFamily::Dbrx, _) => format!("transformer.blocks.{l}.ffn"),
            _ => format!("model.layers.{l}.mlp"),
        }
    }

    /// Store every expert projection (routed and shared, per-expert layout) as FP8 e4m3 codes with
    /// scales of `scheme`, as the shipped checkpoints do: block scales in `weight_scale_inv` (F32)
    /// with `quant_method: fp8`, channel (BF16) or tensor (F32) scales in `weight_scale` with
    /// compressed-tensors; the config gets the matching `quantization_config`. The codes are random
    /// (|value| <= 3.75, never NaN), the scales random in [0.05, 0.2]; `self.layers` no longer
    /// describes the weights (tests dequantize the stored tensors themselves).
    pub fn quantize_fp8(&mut self, rng: &mut StdRng, scheme: Fp8Scheme) {
        assert!(
            !self.fused,
            "quantized checkpoints store one matrix per expert"
        );
        let keys: Vec<String> = self
            .tensors
            .iter()
            .filter(|(k, t)| {
                (k.contains(".experts.") || k.contains(".shared_expert"))
                    && k.ends_with(".weight")
                    && !k.contains("shared_expert_gate")
                    && t.shape.len() == 2
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let [n, k] = self.tensors[&key].shape[..] else {
                unreachable!()
            };
            let codes: Vec<u8> = (0..n * k)
                .map(|_| {
                    let (e, m): (u8, u8) = (rng.random_range(0..=8), rng.random_range(0..8));
                    (rng.random_bool(0.5) as u8) << 7 | e << 3 | m
                })
                .collect();
            self.tensors.insert(
                key.clone(),
                Stored {
                    dtype: Dtype::F8_E4M3,
                    shape: vec![n, k],
                    bytes: codes,
                },
            );
            let module = key.strip_suffix(".weight").unwrap();
            let (name, shape, dtype) = match scheme {
                Fp8Scheme::Block([br, bc]) => (
                    "weight_scale_inv",
                    vec![n.div_ceil(br), k.div_ceil(bc)],
                    DType::F32,
                ),
                Fp8Scheme::Channel => ("weight_scale", vec![n, 1], DType::BF16),
                Fp8Scheme::Tensor => ("weight_scale", vec![1], DType::F32),
            };
            let count = shape.iter().product::<usize>();
            let scales = round_to(
                dtype,
                &(0..count)
                    .map(|_| rng.random_range(0.05..0.2))
                    .collect::<Vec<f32>>(),
            );
            self.tensors.insert(
                format!("{module}.{name}"),
                Stored::float(dtype, shape, &scales),
            );
        }
        self.config["quantization_config"] = match scheme {
            Fp8Scheme::Block(b) => json!({"quant_method": "fp8", "fmt": "e4m3",
                "activation_scheme": "dynamic", "weight_block_size": b}),
            Fp8Scheme::Channel | Fp8Scheme::Tensor => json!({
                "quant_method": "compressed-tensors", "format": "float-quantized",
                "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                    "num_bits": 8, "type": "float", "symmetric": true,
                    "strategy": if scheme == Fp8Scheme::Channel { "channel" } else { "tensor" }}}}}),
        };
    }

    /// The same model as a multimodal checkpoint stores it: the config under `text_config` of a
    /// wrapper config (whose own `model_type` is not a family), and every `model.*` key moved under
    /// `lm_root` (`model.language_model.` or `language_model.model.`).
    pub fn into_multimodal(mut self, lm_root: &str) -> Self {
        self.config = json!({
            "model_type": "tiny_vl_moe",
            "torch_dtype": "bfloat16",
            "vision_config": {"hidden_size": 7, "num_hidden_layers": 1},
            "text_config": self.config,
        });
        self.tensors = std::mem::take(&mut self.tensors)
            .into_iter()
            .map(|(k, v)| match k.strip_prefix("model.") {
                Some(rest) => (format!("{lm_root}{rest}"), v),
                None => (k, v),
            })
            .collect();
        self.tensors.insert(
            "model.visual.patch_embed.weight".into(),
            Stored::float(DType::F32, vec![2, 2], &[0.5, -0.5, 0.25, 1.0]),
        );
        self
    }

    /// Write `config.json` and the checkpoint into `dir`: one file, or `shards` shards plus an index.
    pub fn write(&self, dir: &Path, shards: usize) {
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&self.config).unwrap(),
        )
        .unwrap();
        if shards <= 1 {
            write_safetensors(&dir.join("model.safetensors"), &self.tensors);
            return;
        }
        let mut parts: Vec<BTreeMap<String, Stored>> = vec![BTreeMap::new(); shards];
        let mut weight_map = serde_json::Map::new();
        for (n, (k, t)) in self.tensors.iter().enumerate() {
            let s = n % shards;
            parts[s].insert(k.clone(), t.clone());
            weight_map.insert(k.clone(), json!(shard_name(s, shards)));
        }
        for (s, part) in parts.iter().enumerate() {
            write_safetensors(&dir.join(shard_name(s, shards)), part);
        }
        let index = json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_string_pretty(&index).unwrap(),
        )
        .unwrap();
    }

    /// Build, write to a fresh directory, return it.
    pub fn write_temp(&self, tag: &str, shards: usize) -> TempDir {
        let d = TempDir::new(tag);
        self.write(d.path(), shards);
        d
    }
}

/// Each of the `e` matrices `[n, k]` of `v` transposed to `[k, n]`.
pub fn transpose_each(v: &[f32], e: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; e * n * k];
    for x in 0..e {
        for r in 0..n {
            for c in 0..k {
                out[x * n * k + c * n + r] = v[x * n * k + r * k + c];
            }
        }
    }
    out
}

pub fn shard_name(s: usize, n: usize) -> String {
    format!("model-{:05}-of-{:05}.safetensors", s + 1, n)
}

/// The float64 oracle's output `[T, H]` of a block of `cfg` with weights `w` on `x` `[T, H]`
/// (router bias added to the logits, routing from `crate::common::oracle`, experts, their biases
/// and shared experts from its layer oracle), or
/// `None` when a token's k-th and (k+1)-th choices are a near-tie that rounding may decide.
pub fn oracle_output(cfg: &MoeConfig, w: &MoeWeights<f32>, x: &[f64]) -> Option<Vec<f64>> {
    use crate::common::{self, oracle};
    let (h, e, k) = (cfg.hidden_size, cfg.routing.num_experts, cfg.routing.top_k);
    let route = oracle::Route::of(&cfg.routing, w.correction_bias.as_deref());
    let router = common::f64s(&w.router);
    let mut out = vec![];
    for xt in x.chunks(h) {
        let mut logits = oracle::matvec(&router, e, h, xt);
        if let Some(b) = &w.biases {
            logits
                .iter_mut()
                .zip(&b.router)
                .for_each(|(l, &b)| *l += b as f64);
        }
        let r = oracle::route_row(&route, &logits);
        let mut c = r.choice.clone();
        c.sort_by(|a, b| b.partial_cmp(a).unwrap());
        if r.fragile || k < e && (c[k - 1] - c[k]).abs() <= 1e-4 * c[k - 1].abs().max(1e-3) {
            return None;
        }
        out.extend(oracle::layer_token(cfg, w, xt, &r.ids, &r.weights, true));
    }
    Some(out)
}

/// `moe run --device <device> --dtype <dtype>` on layer `layer` of the model in `dir`, reading
/// `input` and writing `output`.
fn moe_run_command(
    device: &str,
    dtype: &str,
    dir: &Path,
    layer: usize,
    input: &Path,
    output: &Path,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_moe"));
    cmd.args(["run", "--device", device, "--dtype", dtype, "--model"])
        .arg(dir)
        .args(["--layer", &layer.to_string(), "--input"])
        .arg(input)
        .arg("--output")
        .arg(output);
    cmd
}

/// Run `moe run --device cpu --dtype <dtype>` on layer `layer` of the model in `dir` with `input`,
/// writing `output`; panics with its stderr when it fails. Returns the output's `hidden_states`.
pub fn moe_run_cpu(dir: &Path, layer: usize, dtype: &str, input: &Path, output: &Path) -> Vec<f64> {
    let out = moe_run_command("cpu", dtype, dir, layer, input, output)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "moe run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_hidden_states(output)
}

/// Run `moe run --device cuda --dtype bf16` on layer `layer` of the model in `dir` with `input`,
/// writing `output`, on the GPU the tests found (the emulated one when there is no real one; the
/// caller has checked that there is one); panics with its stderr when it fails or does not say it
/// ran on the GPU. Returns the output's `hidden_states`.
pub fn moe_run_gpu_bf16(dir: &Path, layer: usize, input: &Path, output: &Path) -> Vec<f64> {
    let cmd = moe_run_command("cuda", "bf16", dir, layer, input, output);
    let out = crate::common::backend::on_gpu(cmd)
        .expect("the GPU the tests found")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "moe run --device cuda: {stderr}");
    assert!(stderr.contains("on the GPU"), "{stderr}");
    read_hidden_states(output)
}

/// The `hidden_states` (F32) of a file `moe run` wrote.
pub fn read_hidden_states(output: &Path) -> Vec<f64> {
    let bytes = std::fs::read(output).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("hidden_states").unwrap();
    assert_eq!(t.dtype(), Dtype::F32);
    t.data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect()
}

/// Write `x` `[t, H]` as `moe run`'s input file (`hidden_states`, F32).
pub fn write_hidden_states(path: &Path, x: &[f32], t: usize) {
    write_safetensors(
        path,
        &[(
            "hidden_states".to_string(),
            Stored::float(DType::F32, vec![t, x.len() / t.max(1)], x),
        )]
        .into_iter()
        .collect(),
    );
}
