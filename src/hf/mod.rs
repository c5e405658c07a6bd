//! Hugging Face checkpoints: `config.json` parsing and memory-mapped loading of one layer's MoE block.
//!
//! The supported layouts are those of the `transformers` implementations of `mixtral`, `qwen2_moe`,
//! `qwen3_moe`, `olmoe`, `deepseek_v2`, `deepseek_v3`, `minimax_m2`, `granitemoe`, `hunyuan_v1_moe`
//! and `ernie4_5_moe` (plus the model types that reuse
//! one of them with their own rules, [`config::RELATED_MODEL_TYPES`], and any other model whose
//! family is named explicitly). Experts may be stored plain or FP8-quantized ([`WeightQuant`]).
//!
//! ```no_run
//! use moe_kernels::hf::HfModel;
//! use half::bf16;
//!
//! # fn main() -> moe_kernels::Result<()> {
//! let model = HfModel::open("/models/Qwen3-30B-A3B")?;
//! let layer = model.cpu_layer::<bf16>(3)?; // config + weights of layer 3's MoE block, bf16
//! # let _ = layer; Ok(()) }
//! ```
//!
//! - [`config`]: [`HfModelConfig`], the crate's [`MoeConfig`](crate::MoeConfig) plus which layers are
//!   MoE layers, from `config.json`;
//! - [`checkpoint`]: [`Checkpoint`], `model.safetensors` or a sharded checkpoint
//!   (`model.safetensors.index.json`), memory-mapped, read with dtype conversion;
//! - [`load`]: [`HfModel`] and [`load_moe_weights`], which find one layer's tensors under the hub's key
//!   names (per-expert or already-fused experts) and pack them into [`MoeWeights`](crate::cpu::layer::MoeWeights).

pub mod checkpoint;
pub mod config;
pub mod load;

pub use checkpoint::{Checkpoint, SafetensorsFile, TensorMeta};
pub use config::{HfModelConfig, LayerPlacement, ModelFamily, WeightQuant};
pub use load::{
    load_moe_layer, load_moe_weights, ExpertLayout, HfModel, LoadExperts, MoeBlockKeys,
};
