//! The raw layer: every GPU stage and the whole layer forward on raw device pointers
//! ([`DevicePtr`], a `CUdeviceptr`) and a raw stream ([`Stream`], a `CUstream`), for engines that
//! own their memory and streams: with their own allocator, or on another cudarc version.
//!
//! Nothing here takes a cudarc type. A [`Device`](crate::gpu::Device) holds the loaded kernel
//! modules of one CUDA context (make it once with [`Device::new`](crate::gpu::Device::new), which
//! uses the device's primary context, the one cudarc and candle use); every function launches on
//! the stream it is given, which must belong to that context. The safe API of [`gpu`](crate::gpu)
//! is a thin layer on these functions: it checks its buffers and calls them.
//!
//! Every function validates its sizes and configuration before it enqueues anything and returns
//! the crate's typed error; none allocates or synchronises with the host (except
//! [`read_status`]), so a sequence of them can be captured in a CUDA graph.
//!
//! # Safety
//!
//! The functions are `unsafe` because the pointers cannot be checked: each must be a device
//! allocation of the device's context holding at least the elements its function lists, valid and
//! not accessed by other work until the launches that use it complete.

mod layer;

pub(crate) use layer::{forward_buffers, LayerBuffers};
pub use layer::{
    layer_forward, layer_workspace_bytes, read_status, reset_status, LayerWorkspaceLayout,
    RawBiases, RawExpertMap, RawLayerWeights, RawMatrices, RawSharedExpert, STATUS_BYTES,
};

pub use crate::gpu::combine::{
    combine_raw as combine, shared_expert_accumulate_raw as shared_expert_accumulate,
};
pub use crate::gpu::gemm::grouped_gemm_fp8_raw as grouped_gemm_fp8;
pub use crate::gpu::gemm::grouped_gemm_raw as grouped_gemm;
pub use crate::gpu::gemm::grouped_gemm_stored_raw as grouped_gemm_stored;
pub use crate::gpu::permute::{gather_raw as gather, permute_raw as permute, RawPermutation};
pub use crate::gpu::routing::route_raw as route;

/// A device address (`CUdeviceptr`).
pub type DevicePtr = u64;

/// A CUDA stream handle (`CUstream`); null is the legacy default stream.
pub type Stream = *mut std::ffi::c_void;
