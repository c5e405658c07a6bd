//! # moe-kernels
//!
//! Hand-written CUDA kernels for the Mixture-of-Experts (MoE) block of large language models (Mixtral,
//! Qwen2/3-MoE, DeepSeek-V2/V3, OLMoE), with a plain-Rust CPU reference path that every GPU result is
//! checked against and that doubles as a usable CPU backend.
//!
//! The MoE forward is four stages, each public and callable alone:
//! 1. **routing** ([`cpu::routing`]): router logits, softmax or sigmoid scores, optional correction bias,
//!    grouped top-k, top-k, renormalisation, routed scaling;
//! 2. **permutation** ([`cpu::permute`]): rows sorted by expert, per-expert offsets, both index maps;
//! 3. **grouped expert GEMM** ([`cpu::gemm`]) with the gated activation ([`cpu::activation`]);
//! 4. **combine** ([`cpu::combine`]): weighted sum back to token order, plus shared experts.
//!
//! [`cpu::layer`] runs all of them from a [`MoeConfig`] and a weights struct.
//!
//! ## GPU
//! The CUDA kernels in `kernels/` are compiled by `build.rs` with nvcc and embedded in the library; the
//! [`gpu`] module loads them through cudarc (dynamically: no CUDA library is needed to build or to run
//! CPU code). A build without nvcc still succeeds; the GPU API then returns
//! [`MoeError::KernelsNotBuilt`].
//!
//! ## Crate features
//! The CPU path is always built, and the GPU path is always compiled in, loading the CUDA driver at
//! run time only when it is used. Optional parts:
//! - `cli` (default): the `moe` command; engines that link the library alone can turn it off.
//! - `candle`: the stages and the whole block on candle tensors (module `candle`), on the CPU.
//! - `candle-cuda`: the same on CUDA tensors; builds candle-core's CUDA backend (nvcc at build
//!   time, cuBLAS, cuRAND and NVRTC to link).

#![warn(missing_docs)]

#[cfg(feature = "candle")]
pub mod candle;
pub mod config;
pub mod cpu;
pub mod dtype;
pub mod error;
pub mod expert_map;
pub mod gpu;
pub mod hf;
#[doc(hidden)]
pub mod host_math;
pub mod quant;
pub mod raw;
pub mod tensor;
pub mod view;

pub use config::{
    Activation, ActivationKind, BlockParams, GroupScore, GroupedTopK, MoeConfig, RoutingConfig,
    ScoringFunc, SharedExpertConfig,
};
pub use dtype::{DType, Element};
pub use error::{MoeError, Result};
pub use expert_map::ExpertMap;
pub use tensor::{HostTensor, TensorData};
pub use view::{ExpertsRef, MatMut, MatRef};

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
