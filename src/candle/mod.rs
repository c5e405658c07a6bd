//! The MoE stages and the whole block on candle [`Tensor`](candle_core::Tensor)s (the `candle`
//! feature; CUDA tensors with `candle-cuda`).
//!
//! - [`route`]: router logits `[T, E]` to `topk_ids` `[T, k]` (`u32`) and `topk_weights` `[T, k]`
//!   (`f32`);
//! - [`permute`]: the ids sorted by expert, a [`Permutation`]; [`gather`]: the hidden states in that
//!   order;
//! - [`grouped_gemm`]: every expert's GEMM in one call, with the activation fused;
//! - [`combine`]: back to token order, weighted, plus the shared experts;
//! - [`MoeBlock`]: all of them as one op on `[..., H]`, a [`Module`](candle_core::Module) that can
//!   replace the sparse-MoE block of candle-transformers' Mixtral and Qwen3-MoE models.
//!
//! CPU tensors run the CPU path ([`cpu`](crate::cpu)), CUDA tensors the kernels ([`gpu`](crate::gpu))
//! on the candle device's own stream ([`gpu_device`]), so they are ordered with candle's work; both
//! follow one definition, and the ids agree. `gather`, `grouped_gemm`, `combine` and the block are
//! candle custom ops ([`CustomOp1`](candle_core::CustomOp1) and its kin, without backward); `route`
//! and `permute`, whose results are not one tensor, read the tensors' storage directly.
//!
//! Tensors must be contiguous (any start offset into their storage is fine: a `narrow` of the first
//! dimension needs no copy); any other layout is a [`MoeError::NonContiguous`](crate::MoeError). An
//! element type an operation does not take is a [`MoeError::CandleDType`](crate::MoeError), a wrong
//! shape a [`MoeError::ShapeMismatch`](crate::MoeError), arguments on different devices a
//! [`MoeError::Unsupported`](crate::MoeError); errors are [`MoeError`](crate::MoeError)s, never
//! panics, and convert into candle's error for `?` in candle code. Activations and weights may be
//! `f32`, `bf16` or `f16` on the CPU; the CUDA GEMMs (and so the CUDA block) take `bf16` or `f16`.
//!
//! On CUDA, [`route`] and [`permute`] wait for the device to report errors found by the kernels
//! (non-finite logits, ids out of range) like the CPU does; the other stages and the block's forward
//! only enqueue work.

mod error;
mod layer;
mod ops;
mod tensor;

#[cfg(feature = "candle-cuda")]
mod device;

#[cfg(feature = "candle-cuda")]
pub use device::gpu_device;
pub use layer::{CandleElement, MoeBlock};
pub use ops::{combine, gather, grouped_gemm, permute, route, Permutation};
