//! Stage 3 on the GPU: the grouped expert GEMM on tensor cores, every expert in one launch, with the
//! expert activation fused into the epilogue.
//!
//! The device twin of [`cpu::gemm::grouped_gemm`](crate::cpu::gemm::grouped_gemm) (and, with
//! [`GemmEpilogue::Activation`], of that followed by
//! [`cpu::activation::activation`](crate::cpu::activation::activation) on the `f32` accumulators,
//! rounded once). The kernels are in `kernels/grouped_gemm.cu`; which one runs is decided here by
//! [`plan_grouped_gemm`], a pure function of the shapes, so that every check and choice can be tested
//! without a GPU.
//!
//! The weights are of the activations' type ([`grouped_gemm`]), or FP8 e4m3 or MXFP4 e2m1 codes with
//! per-row group scales ([`grouped_gemm_quant`]: the weight-only quantized GEMM of decode, which moves
//! half (FP8) or about a quarter (MXFP4) of the bytes of bf16 weights), dequantised into the same
//! shared-memory tiles.

use super::abi::{self, MoeGemmParams};
use super::check_len;
use super::{Device, GpuElement};
use crate::config::{Activation, ActivationKind};
use crate::dtype::DType;
use crate::error::{MoeError, Result};
use crate::host_math;
use crate::quant::CodeFormat;
use crate::raw::{DevicePtr, RawMatrices, Stream};
use crate::view::checked_mul;
use cudarc::driver::{
    CudaView, CudaViewMut, DevicePtr as _, DevicePtrMut as _, DeviceRepr, LaunchConfig,
};
use half::{bf16, f16};
use std::ffi::c_void;

// SAFETY: `MoeGemmParams` is the `#[repr(C)]` mirror of the C struct in kernels/moe_abi.h, generated
// by bindgen together with compile-time assertions of its size, alignment and every field offset; it
// holds only integers and raw device pointers (no Rust references or drop glue), so its bytes are
// exactly the by-value kernel parameter the kernels declare.
unsafe impl DeviceRepr for MoeGemmParams {}

/// Kernel family (`kernels/grouped_gemm.cu`) of the grouped GEMM.
const FAMILY: &str = "grouped_gemm";

/// Average rows per expert up to which the decode tile (16 rows) is chosen: weight streaming
/// dominates there, and a taller tile would only multiply zeros.
const SMALL_TILE_MAX_AVG_ROWS: usize = 16;
/// Average rows per expert up to which the medium tile (64 rows) is chosen over the large one.
const MEDIUM_TILE_MAX_AVG_ROWS: usize = 64;

/// What the GEMM does with each `f32` accumulator tile before storing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GemmEpilogue {
    /// `out[r, n] = acc[r, n]`; `out` is `[rows, N]`.
    Store,
    /// The expert activation ([`Activation`]). Gated (`act.gated`): weight rows `[0, N/2)` are the
    /// gate and rows `[N/2, N)` the up projection (the crate's fused `[E, 2I, H]` layout, gate first),
    /// `N` must be even, and `out` is `[rows, N/2] = act(gate) * up`. Not gated: `out` is
    /// `[rows, N] = act(acc)`.
    Activation(Activation),
}

impl GemmEpilogue {
    /// Whether the epilogue pairs gate and up columns (and halves the output width).
    pub fn is_gated(self) -> bool {
        matches!(self, GemmEpilogue::Activation(a) if a.gated)
    }
}

/// The sizes of a grouped GEMM: `x` `[rows, k]`, weights `[num_experts, n, k]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupedGemmShape {
    /// Rows of `x` and of the output (all experts' segments together, padding included).
    pub rows: usize,
    /// Weight rows per expert (output features; `2I` for a fused gate-up projection).
    pub n: usize,
    /// Reduction length (input features).
    pub k: usize,
    /// Number of experts `E`.
    pub num_experts: usize,
}

impl GroupedGemmShape {
    /// Columns of the output under `epilogue`: `n / 2` gated, `n` otherwise.
    pub fn out_cols(&self, epilogue: GemmEpilogue) -> usize {
        if epilogue.is_gated() {
            self.n / 2
        } else {
            self.n
        }
    }
}

/// How the grouped GEMM's weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmWeights {
    /// Of the activations' type (`bf16` or `f16`).
    Input,
    /// FP8 e4m3 codes, one byte each, with `f32` scales `[E, N, ceil(K / group)]`: one per weight row
    /// and group of `group` columns, the layout of [`QuantExperts`](crate::quant::QuantExperts).
    /// Weight `[e, r, c]` is `e4m3(code) * scale[e, r, c / group]`, rounded to the activations' type.
    Fp8E4M3 {
        /// Columns per scale (>= 1).
        group: usize,
        /// Elements in the scales.
        scales_len: usize,
    },
    /// MXFP4: FP4 e2m1 codes two to a byte, low nibble first, each row `ceil(K / 2)` bytes (the
    /// layout of [`CodeFormat::Mxfp4E2M1`]), with e8m0 scale bytes `[E, N, ceil(K / group)]`, one
    /// per weight row and group of `group` columns. Weight `[e, r, c]` is
    /// `e2m1(code) * 2^(scale[e, r, c / group] - 127)`, rounded to the activations' type.
    Mxfp4E2M1 {
        /// Columns per scale (>= 1; 32 in gpt-oss).
        group: usize,
        /// Bytes in the scales.
        scales_len: usize,
    },
}

impl GemmWeights {
    /// The code format of quantized weights, `None` for weights of the input type.
    fn code_format(self) -> Option<CodeFormat> {
        match self {
            GemmWeights::Input => None,
            GemmWeights::Fp8E4M3 { .. } => Some(CodeFormat::Fp8E4M3),
            GemmWeights::Mxfp4E2M1 { .. } => Some(CodeFormat::Mxfp4E2M1),
        }
    }
}

/// FP8 e4m3 expert weights on the device, for [`grouped_gemm_fp8`]: the codes `[E, N, K]` and the
/// scales `[E, N, ceil(K / group)]` of [`GemmWeights::Fp8E4M3`].
#[derive(Clone, Copy, Debug)]
pub struct Fp8Weights<'a> {
    /// The codes, `K` contiguous.
    pub codes: &'a CudaView<'a, u8>,
    /// The scales, one per weight row and group of `group` columns.
    pub scales: &'a CudaView<'a, f32>,
    /// Columns per scale.
    pub group: usize,
}

/// MXFP4 expert weights on the device, for [`grouped_gemm_quant`]: the codes `[E, N, ceil(K / 2)]`
/// bytes and the e8m0 scale bytes `[E, N, ceil(K / group)]` of [`GemmWeights::Mxfp4E2M1`].
#[derive(Clone, Copy, Debug)]
pub struct Mxfp4Weights<'a> {
    /// The codes, two to a byte, low nibble first.
    pub codes: &'a CudaView<'a, u8>,
    /// The e8m0 scales (`2^(byte - 127)`; 255 is refused), one per weight row and group of `group`
    /// columns.
    pub scales: &'a CudaView<'a, u8>,
    /// Columns per scale.
    pub group: usize,
}

/// Quantized expert weights on the device, as [`grouped_gemm_quant`] takes them.
#[derive(Clone, Copy, Debug)]
pub enum QuantWeights<'a> {
    /// FP8 e4m3 codes with `f32` scales.
    Fp8E4M3(Fp8Weights<'a>),
    /// MXFP4 e2m1 codes with e8m0 scales.
    Mxfp4E2M1(Mxfp4Weights<'a>),
}

/// An element type with tensor-core support, the input type of [`grouped_gemm`]: `bf16` or `f16`.
///
/// Sealed: the kernels are compiled for exactly these types.
pub trait GemmElement: GpuElement + sealed::Input {}

impl GemmElement for bf16 {}
impl GemmElement for f16 {}

/// An output type of [`grouped_gemm`] with inputs `T`: `T` itself, or `f32` (router logits,
/// shared-expert sums). Both hold for every [`GemmElement`], so generic code needs no extra bounds.
///
/// Sealed: the kernels are compiled for exactly these pairs.
pub trait GemmOutput<T: GemmElement>: GpuElement + sealed::Output<T> {}

impl<T: GemmElement> GemmOutput<T> for T {}
impl<T: GemmElement> GemmOutput<T> for f32 {}

mod sealed {
    pub trait Input {}
    impl Input for half::bf16 {}
    impl Input for half::f16 {}

    pub trait Output<T> {}
    impl<T: super::GemmElement> Output<T> for T {}
    impl<T: super::GemmElement> Output<T> for f32 {}
}

/// The grouped expert GEMM: for every expert `e`, `out[rows of e] = epilogue(x[rows of e] @ w[e]^T)`,
/// accumulated in `f32` and rounded once to `O`, in one asynchronous launch on [`Device::stream`].
///
/// - `x`: activations `[rows, K]`, row-major;
/// - `expert_offsets`: `[E + 1]` segment starts on the device, expert `e` owning rows
///   `offsets[e]..offsets[e + 1]` (as written by the permutation, padded or not); `None` is one group
///   of all rows, and then `num_experts` must be 1. The host never reads them: each block of the
///   kernel derives the tile schedule from them on the device. Offsets that are not a valid
///   segmentation cannot cause an out-of-bounds access (they are clamped to `[0, rows]`, and a
///   decreasing segment is empty) but give unspecified results; rows that no segment covers (past
///   `offsets[E]`, for instance) are not written.
/// - `w`: expert weights `[E, N, K]`, `K` contiguous (a Hugging Face `Linear` weight per expert);
/// - `out`: `[rows, out_cols]` with `out_cols = shape.out_cols(epilogue)`.
///
/// Any `K` and any base alignment work: `K` a multiple of 8 with 16-byte aligned `x` and `w` takes the
/// `cp.async` fast path, anything else a slower element-wise loader. `rows = 0` (or no output
/// columns) launches nothing. Results are deterministic: each output element is one thread's
/// fixed-order sum, so repeated runs give identical bits.
///
/// Errors, before anything is enqueued: [`MoeError::ShapeMismatch`] for a buffer length that does not
/// match `shape`; [`MoeError::InvalidConfig`] for `num_experts = 0`, `None` offsets with more than one
/// expert, or an odd `N` with a gated epilogue; [`MoeError::SizeOverflow`]; [`MoeError::Unsupported`]
/// for a buffer from another CUDA context or `N` or `K` of 2^31 or more; [`MoeError::Cuda`] when the
/// driver rejects the launch.
pub fn grouped_gemm<T: GemmElement, O: GemmOutput<T>>(
    dev: &Device,
    x: &CudaView<'_, T>,
    expert_offsets: Option<&CudaView<'_, i64>>,
    w: &CudaView<'_, T>,
    shape: GroupedGemmShape,
    epilogue: GemmEpilogue,
    out: &mut CudaViewMut<'_, O>,
) -> Result<()> {
    dev.check_owns("expert weights", w)?;
    // The guard makes the stream wait for earlier writes of the weights and records this launch's
    // read when dropped, after the launch.
    let (w_ptr, _w_guard) = w.device_ptr(dev.stream());
    let weights = RawWeights {
        w: w_ptr,
        w_len: w.len(),
        format: GemmWeights::Input,
        scales: 0,
        bias: None,
    };
    launch_checked(dev, x, expert_offsets, weights, shape, epilogue, out)
}

/// [`grouped_gemm`] with a per-expert `f32` bias `[E, N]` (one entry per weight row) added to the
/// `f32` accumulators before the epilogue's activation and the rounding: `out[rows of e] =
/// epilogue(x[rows of e] @ w[e]^T + bias[e])`. Gated, the bias row's first `N/2` entries are the gate's
/// and the rest the up projection's (gpt-oss's expert biases, and its router bias with one group).
///
/// Errors as for [`grouped_gemm`], and [`MoeError::ShapeMismatch`] for a bias of the wrong length.
#[allow(clippy::too_many_arguments)]
pub fn grouped_gemm_biased<T: GemmElement, O: GemmOutput<T>>(
    dev: &Device,
    x: &CudaView<'_, T>,
    expert_offsets: Option<&CudaView<'_, i64>>,
    w: &CudaView<'_, T>,
    bias: &CudaView<'_, f32>,
    shape: GroupedGemmShape,
    epilogue: GemmEpilogue,
    out: &mut CudaViewMut<'_, O>,
) -> Result<()> {
    dev.check_owns("expert weights", w)?;
    dev.check_owns("expert bias", bias)?;
    // The guards make the stream wait for earlier writes of the weights and bias and record this
    // launch's reads when dropped, after the launch.
    let (w_ptr, _w_guard) = w.device_ptr(dev.stream());
    let (bias_ptr, _bias_guard) = bias.device_ptr(dev.stream());
    let weights = RawWeights {
        w: w_ptr,
        w_len: w.len(),
        format: GemmWeights::Input,
        scales: 0,
        bias: Some((bias_ptr, bias.len())),
    };
    launch_checked(dev, x, expert_offsets, weights, shape, epilogue, out)
}

/// [`grouped_gemm`] with quantized weights, dequantised in the kernel to the activations' type `T`
/// (`bf16` or `f16`): the weight-only quantized GEMM. [`QuantWeights::Fp8E4M3`] are FP8 e4m3 codes
/// `[E, N, K]` with `f32` scales `[E, N, ceil(K / group)]` ([`GemmWeights::Fp8E4M3`]);
/// [`QuantWeights::Mxfp4E2M1`] are MXFP4 e2m1 codes `[E, N, ceil(K / 2)]` bytes with e8m0 scale bytes
/// `[E, N, ceil(K / group)]` ([`GemmWeights::Mxfp4E2M1`]).
///
/// Errors as for [`grouped_gemm`], and [`MoeError::InvalidConfig`] for `group = 0`,
/// [`MoeError::ShapeMismatch`] for codes or scales of the wrong length. The scales are not read on
/// the host: the crate's [`QuantExperts`](crate::quant::QuantExperts) checks them when it is made
/// (and [`UploadExperts`](crate::gpu::UploadExperts) when it converts MXFP4 scales to e8m0 bytes);
/// an e8m0 byte of 255 decodes to infinity.
pub fn grouped_gemm_quant<T: GemmElement, O: GemmOutput<T>>(
    dev: &Device,
    x: &CudaView<'_, T>,
    expert_offsets: Option<&CudaView<'_, i64>>,
    w: QuantWeights<'_>,
    shape: GroupedGemmShape,
    epilogue: GemmEpilogue,
    out: &mut CudaViewMut<'_, O>,
) -> Result<()> {
    let stream = dev.stream();
    let (codes, (scales_ptr, _scales_guard), format) = match w {
        QuantWeights::Fp8E4M3(w) => {
            dev.check_owns("FP8 weight scales", w.scales)?;
            let format = GemmWeights::Fp8E4M3 {
                group: w.group,
                scales_len: w.scales.len(),
            };
            (w.codes, w.scales.device_ptr(stream), format)
        }
        QuantWeights::Mxfp4E2M1(w) => {
            dev.check_owns("MXFP4 weight scales", w.scales)?;
            let format = GemmWeights::Mxfp4E2M1 {
                group: w.group,
                scales_len: w.scales.len(),
            };
            (w.codes, w.scales.device_ptr(stream), format)
        }
    };
    dev.check_owns("quantized expert weights", codes)?;
    let (codes_ptr, _codes_guard) = codes.device_ptr(stream);
    let weights = RawWeights {
        w: codes_ptr,
        w_len: codes.len(),
        format,
        scales: scales_ptr,
        bias: None,
    };
    launch_checked(dev, x, expert_offsets, weights, shape, epilogue, out)
}

/// [`grouped_gemm_quant`] with FP8 e4m3 weights ([`Fp8Weights`]).
pub fn grouped_gemm_fp8<T: GemmElement, O: GemmOutput<T>>(
    dev: &Device,
    x: &CudaView<'_, T>,
    expert_offsets: Option<&CudaView<'_, i64>>,
    w: Fp8Weights<'_>,
    shape: GroupedGemmShape,
    epilogue: GemmEpilogue,
    out: &mut CudaViewMut<'_, O>,
) -> Result<()> {
    let w = QuantWeights::Fp8E4M3(w);
    grouped_gemm_quant(dev, x, expert_offsets, w, shape, epilogue, out)
}

/// Weights as the launcher takes them: the weights' (or codes') address and length, their format,
/// the scales' address (quantized weights; 0 otherwise), and the optional `f32` bias `[E, N]`
/// (address, length).
#[derive(Clone, Copy)]
struct RawWeights {
    w: DevicePtr,
    w_len: usize,
    format: GemmWeights,
    scales: DevicePtr,
    bias: Option<(DevicePtr, usize)>,
}

/// The safe GEMMs' common part: the other buffers' ownership and lengths checked, then the launch.
/// The caller holds the weights' stream guards until this returns.
fn launch_checked<T: GemmElement, O: GemmOutput<T>>(
    dev: &Device,
    x: &CudaView<'_, T>,
    expert_offsets: Option<&CudaView<'_, i64>>,
    weights: RawWeights,
    shape: GroupedGemmShape,
    epilogue: GemmEpilogue,
    out: &mut CudaViewMut<'_, O>,
) -> Result<()> {
    dev.check_owns("grouped GEMM activations", x)?;
    if let Some(o) = expert_offsets {
        dev.check_owns("expert offsets", o)?;
    }
    dev.check_owns("grouped GEMM output", out)?;

    let (x_len, out_len) = (x.len(), out.len());
    let stream = dev.stream();
    // Each guard makes the stream wait for earlier writes (and, for the output, reads) of its buffer,
    // and records this launch's access when dropped, after the launch below.
    let (x_ptr, _x_guard) = x.device_ptr(stream);
    let offsets_ptr = expert_offsets.map(|o| o.device_ptr(stream));
    let (out_ptr, _out_guard) = out.device_ptr_mut(stream);
    // The buffers' lengths against the shape.
    plan_grouped_gemm(&GemmRequest {
        input: T::DTYPE,
        output: O::DTYPE,
        weights: weights.format,
        shape,
        epilogue,
        x_len,
        w_len: weights.w_len,
        bias_len: weights.bias.map(|(_, len)| len),
        offsets_len: expert_offsets.map(|o| o.len()),
        out_len,
        x_addr: x_ptr,
        w_addr: weights.w,
        sm_count: dev.sm_count() as usize,
    })?;
    // SAFETY: the buffers are live buffers of this device's context whose lengths were just checked
    // against `shape` and the weights' format (x rows*K elements of T, w E*N*K elements of T or FP8
    // codes, FP8 scales E*N*ceil(K/group) f32, bias E*N f32, offsets E+1 i64, out rows*out_cols
    // elements of O), as
    // `launch_raw` needs; the guards held until after this call order the launch on the device's
    // stream against other accesses to them.
    unsafe {
        launch_raw(
            dev,
            dev.raw_stream(),
            T::DTYPE,
            O::DTYPE,
            x_ptr,
            offsets_ptr.as_ref().map(|(p, _)| *p),
            weights,
            shape,
            epilogue,
            out_ptr,
        )
    }
}

/// [`grouped_gemm`](crate::gpu::grouped_gemm) on raw device pointers and a raw stream: inputs of
/// `input` (`bf16` or `f16`), output of `output` (`input` or `f32`).
///
/// - `x`: `[rows, K]` elements of `input`; `w`: `[E, N, K]` elements of `input`;
/// - `expert_offsets`: `[E + 1]` `i64` segment starts, or `None` for one group (`E = 1`);
/// - `out`: `[rows, shape.out_cols(epilogue)]` elements of `output`.
///
/// Errors as for [`grouped_gemm`](crate::gpu::grouped_gemm), before anything is enqueued.
///
/// # Safety
///
/// Every pointer must be a device allocation of `dev`'s context holding at least the elements
/// listed, valid until the launch completes; `out` must not be accessed by other work while it
/// runs; `stream` must be a stream of `dev`'s context.
#[allow(clippy::too_many_arguments)]
pub unsafe fn grouped_gemm_raw(
    dev: &Device,
    stream: Stream,
    input: DType,
    output: DType,
    x: DevicePtr,
    expert_offsets: Option<DevicePtr>,
    w: DevicePtr,
    shape: GroupedGemmShape,
    epilogue: GemmEpilogue,
    out: DevicePtr,
) -> Result<()> {
    // SAFETY: the caller's contract is `grouped_gemm_stored_raw`'s for weights of the input type.
    unsafe {
        grouped_gemm_stored_raw(
            dev,
            stream,
            input,
            output,
            x,
            expert_offsets,
            RawMatrices::Plain(w),
            None,
            shape,
            epilogue,
            out,
        )
    }
}

/// [`grouped_gemm_fp8`](crate::gpu::grouped_gemm_fp8) on raw device pointers and a raw stream:
/// `codes` `[E, N, K]` FP8 e4m3 bytes, `scales` `[E, N, ceil(K / group)]` `f32`, the rest as for
/// [`grouped_gemm_raw`].
///
/// Errors as for [`grouped_gemm_fp8`](crate::gpu::grouped_gemm_fp8), before anything is enqueued.
///
/// # Safety
///
/// As for [`grouped_gemm_raw`], with `codes` and `scales` holding the elements listed.
#[allow(clippy::too_many_arguments)]
pub unsafe fn grouped_gemm_fp8_raw(
    dev: &Device,
    stream: Stream,
    input: DType,
    output: DType,
    x: DevicePtr,
    expert_offsets: Option<DevicePtr>,
    codes: DevicePtr,
    scales: DevicePtr,
    group: usize,
    shape: GroupedGemmShape,
    epilogue: GemmEpilogue,
    out: DevicePtr,
) -> Result<()> {
    let w = RawMatrices::Fp8E4M3 {
        codes,
        scales,
        group,
    };
    // SAFETY: the caller's contract is `grouped_gemm_stored_raw`'s for FP8 weights.
    unsafe {
        grouped_gemm_stored_raw(
            dev,
            stream,
            input,
            output,
            x,
            expert_offsets,
            w,
            None,
            shape,
            epilogue,
            out,
        )
    }
}

/// The grouped GEMM on raw device pointers with weights `w` as stored ([`RawMatrices`]: of the input
/// type, FP8 or MXFP4), the one raw entry behind [`grouped_gemm_raw`], [`grouped_gemm_fp8_raw`] and
/// the raw layer, with an optional `f32` bias `[E, N]` (see [`grouped_gemm_biased`]); the rest as
/// for [`grouped_gemm_raw`].
///
/// Errors as for [`grouped_gemm_quant`](crate::gpu::grouped_gemm_quant), before anything is
/// enqueued.
///
/// # Safety
///
/// As for [`grouped_gemm_raw`], with the weights holding what their [`RawMatrices`] variant lists
/// for `[E, N, K]` = `[shape.num_experts, shape.n, shape.k]`, and `bias` `E * N` `f32`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn grouped_gemm_stored_raw(
    dev: &Device,
    stream: Stream,
    input: DType,
    output: DType,
    x: DevicePtr,
    expert_offsets: Option<DevicePtr>,
    w: RawMatrices,
    bias: Option<DevicePtr>,
    shape: GroupedGemmShape,
    epilogue: GemmEpilogue,
    out: DevicePtr,
) -> Result<()> {
    // The lengths the pointers hold by contract; a product that overflows saturates, and the plan
    // then reports the overflow of that same product.
    let s = shape;
    let matrices = |row: usize| s.num_experts.saturating_mul(s.n).saturating_mul(row);
    let scales_len = |group: usize| matrices(s.k.div_ceil(group.max(1)));
    let bias = bias.map(|b| (b, s.num_experts.saturating_mul(s.n)));
    let weights = match w {
        RawMatrices::Plain(w) => RawWeights {
            w,
            w_len: matrices(s.k),
            format: GemmWeights::Input,
            scales: 0,
            bias,
        },
        RawMatrices::Fp8E4M3 {
            codes,
            scales,
            group,
        } => RawWeights {
            w: codes,
            w_len: matrices(s.k),
            format: GemmWeights::Fp8E4M3 {
                group,
                scales_len: scales_len(group),
            },
            scales,
            bias,
        },
        RawMatrices::Mxfp4E2M1 {
            codes,
            scales,
            group,
        } => RawWeights {
            w: codes,
            w_len: matrices(CodeFormat::Mxfp4E2M1.row_bytes(s.k)),
            format: GemmWeights::Mxfp4E2M1 {
                group,
                scales_len: scales_len(group),
            },
            scales,
            bias,
        },
    };
    // SAFETY: the caller's contract is `launch_raw`'s.
    unsafe {
        launch_raw(
            dev,
            stream,
            input,
            output,
            x,
            expert_offsets,
            weights,
            shape,
            epilogue,
            out,
        )
    }
}

/// Plans and enqueues one grouped GEMM.
///
/// # Safety
///
/// Every pointer must be a device allocation of `dev`'s context holding at least the elements the
/// shape and `weights.format` give (`x` rows*K of `input`, the weights E*N*K of `input` or FP8
/// bytes or E*N*ceil(K/2) MXFP4 bytes, scales E*N*ceil(K/group) f32 (FP8) or bytes (MXFP4),
/// bias E*N f32, offsets E+1 i64, `out` rows*out_cols of `output`), valid
/// until the launch completes; `out` must not be accessed by other work while it runs; `stream` must
/// be a stream of `dev`'s context.
#[allow(clippy::too_many_arguments)]
unsafe fn launch_raw(
    dev: &Device,
    stream: Stream,
    input: DType,
    output: DType,
    x: DevicePtr,
    expert_offsets: Option<DevicePtr>,
    weights: RawWeights,
    shape: GroupedGemmShape,
    epilogue: GemmEpilogue,
    out: DevicePtr,
) -> Result<()> {
    // The lengths the pointers hold by contract; a product that overflows saturates, and the plan
    // then reports the overflow of that same product.
    let s = shape;
    let request = GemmRequest {
        input,
        output,
        weights: weights.format,
        shape,
        epilogue,
        x_len: s.rows.saturating_mul(s.k),
        w_len: weights.w_len,
        bias_len: weights.bias.map(|(_, len)| len),
        offsets_len: expert_offsets.map(|_| s.num_experts.saturating_add(1)),
        out_len: s.rows.saturating_mul(s.out_cols(epilogue)),
        x_addr: x,
        w_addr: weights.w,
        sm_count: dev.sm_count() as usize,
    };
    let Some(plan) = plan_grouped_gemm(&request)? else {
        return Ok(());
    };

    let tile = plan.tile;
    let smem = tile.dynamic_smem_bytes();
    let (func, resident) = dev.prepared_function(FAMILY, plan.kernel, tile.threads(), smem)?;
    let resident = u64::from(resident);
    // Persistent grid: at most one block per tile, at most what the GPU holds at once (blocks loop
    // over further tiles), and at most i32::MAX blocks.
    let blocks = plan.max_tiles.min(resident).clamp(1, i32::MAX as u64) as u32;

    let (w_scales, w_scale_bytes) = match weights.format {
        GemmWeights::Input => (std::ptr::null(), std::ptr::null()),
        GemmWeights::Fp8E4M3 { .. } => (weights.scales as *const f32, std::ptr::null()),
        GemmWeights::Mxfp4E2M1 { .. } => (std::ptr::null(), weights.scales as *const u8),
    };
    let params = MoeGemmParams {
        x: x as *const c_void,
        w: weights.w as *const c_void,
        w_scales,
        w_scale_bytes,
        scale_group: plan.scale_group,
        scale_groups: plan.scale_groups,
        expert_offsets: expert_offsets.map_or(std::ptr::null(), |p| p as *const i64),
        out: out as *mut c_void,
        rows: plan.rows,
        n: plan.n,
        k: plan.k,
        num_experts: plan.num_experts,
        epilogue: plan.epilogue,
        activation: plan.activation,
        bias: weights
            .bias
            .map_or(std::ptr::null(), |(b, _)| b as *const f32),
        clamp_alpha: plan.clamp_alpha,
        clamp_limit: plan.clamp_limit,
    };
    let launch = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (tile.threads(), 1, 1),
        shared_mem_bytes: smem,
    };
    // SAFETY: `func` is a `moe_gemm_<tile>[_e4m3|_mxfp4]_<input>_<output>` kernel whose only parameter is a
    // `MoeGemmParams` by value (layout checked at compile time against the C header), and
    // `plan.kernel` was chosen for exactly these element types, this weight format and this tile's
    // launch shape (`tile.threads()` threads, `smem` bytes of dynamic shared memory, allowed by the
    // attribute that `prepared_function` set and checked against the device's limit). By the
    // caller's contract the pointers hold x = rows*K elements of the input type, w = E*N*K elements
    // of the input type or FP8 codes or E*N*ceil(K/2) MXFP4 bytes, scales = E*N*scale_groups f32
    // (FP8) or bytes (MXFP4), bias = E*N f32 (or null), offsets = E+1 i64 (or null
    // with E = 1), out = rows*out_cols elements of the output type, for the sizes the plan
    // validated. The kernel clamps every offset into [0, rows] and masks every row, column and K
    // index against those sizes (and reads a scale only for a weight it reads), so it stays inside
    // the buffers whatever the offsets hold; the fast path (16-byte copies, 8- or 4-byte code loads)
    // is only chosen for 16-byte aligned x and w with K % 8 == 0.
    unsafe { dev.launch(stream, &func, launch, &params) }
}

/// The kernels' tile configurations (`MOE_GEMM_*` in kernels/moe_abi.h).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmTileConfig {
    /// 16 x 64 tiles, 6-stage pipeline: decode, up to about 16 rows per expert.
    Small,
    /// 64 x 128 tiles: a few dozen rows per expert.
    Medium,
    /// 128 x 128 tiles: prefill.
    Large,
    /// The medium tile with the element-wise loader, for `K % 8 != 0` or unaligned operands.
    Generic,
}

impl GemmTileConfig {
    /// Rows per tile (BM).
    pub fn rows_per_tile(self) -> usize {
        let bm = match self {
            GemmTileConfig::Small => abi::MOE_GEMM_SMALL_BM,
            GemmTileConfig::Medium | GemmTileConfig::Generic => abi::MOE_GEMM_MEDIUM_BM,
            GemmTileConfig::Large => abi::MOE_GEMM_LARGE_BM,
        };
        bm as usize
    }

    /// Weight rows per tile (BN).
    pub fn weight_rows_per_tile(self) -> usize {
        let bn = match self {
            GemmTileConfig::Small => abi::MOE_GEMM_SMALL_BN,
            GemmTileConfig::Medium | GemmTileConfig::Generic => abi::MOE_GEMM_MEDIUM_BN,
            GemmTileConfig::Large => abi::MOE_GEMM_LARGE_BN,
        };
        bn as usize
    }

    /// Threads per block.
    pub fn threads(self) -> u32 {
        let threads = match self {
            GemmTileConfig::Small => abi::MOE_GEMM_SMALL_THREADS,
            GemmTileConfig::Medium | GemmTileConfig::Generic => abi::MOE_GEMM_MEDIUM_THREADS,
            GemmTileConfig::Large => abi::MOE_GEMM_LARGE_THREADS,
        };
        threads as u32
    }

    /// Dynamic shared memory per block in bytes (the cp.async pipeline).
    pub fn dynamic_smem_bytes(self) -> u32 {
        let bytes = match self {
            GemmTileConfig::Small => abi::MOE_GEMM_SMALL_SMEM_BYTES,
            GemmTileConfig::Medium | GemmTileConfig::Generic => abi::MOE_GEMM_MEDIUM_SMEM_BYTES,
            GemmTileConfig::Large => abi::MOE_GEMM_LARGE_SMEM_BYTES,
        };
        bytes as u32
    }
}

/// Everything [`plan_grouped_gemm`] decides from: element types, shape, epilogue, buffer lengths and
/// the device addresses of the operands (whose alignment selects the fast path).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmRequest {
    /// Element type of `x` (and of `w` for [`GemmWeights::Input`]).
    pub input: DType,
    /// Element type of the output.
    pub output: DType,
    /// How `w` is stored.
    pub weights: GemmWeights,
    /// The sizes.
    pub shape: GroupedGemmShape,
    /// The epilogue.
    pub epilogue: GemmEpilogue,
    /// Elements in `x`.
    pub x_len: usize,
    /// Elements in `w` (bytes for quantized codes).
    pub w_len: usize,
    /// Elements in the `f32` bias `[E, N]`, `None` when there is none.
    pub bias_len: Option<usize>,
    /// Elements in the expert offsets, `None` when there are none.
    pub offsets_len: Option<usize>,
    /// Elements in the output.
    pub out_len: usize,
    /// Device address of `x`.
    pub x_addr: u64,
    /// Device address of `w`.
    pub w_addr: u64,
    /// Streaming multiprocessors of the device (0 when unknown).
    pub sm_count: usize,
}

/// A validated grouped GEMM launch: the kernel, its tile, and the kernel's integer arguments.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmLaunchPlan {
    /// The tile configuration.
    pub tile: GemmTileConfig,
    /// The kernel's name in the `grouped_gemm` family.
    pub kernel: &'static str,
    /// An upper bound of the output tiles for any offsets content: the grid never needs more blocks.
    pub max_tiles: u64,
    rows: i64,
    n: i64,
    k: i64,
    num_experts: i64,
    epilogue: i32,
    activation: i32,
    clamp_alpha: f32,
    clamp_limit: f32,
    scale_group: i64,
    scale_groups: i64,
}

/// The input and output element types the kernels are compiled for.
#[derive(Clone, Copy)]
enum Types {
    Bf16Bf16,
    Bf16F32,
    F16F16,
    F16F32,
}

fn check_types(input: DType, output: DType) -> Result<Types> {
    match (input, output) {
        (DType::BF16, DType::BF16) => Ok(Types::Bf16Bf16),
        (DType::BF16, DType::F32) => Ok(Types::Bf16F32),
        (DType::F16, DType::F16) => Ok(Types::F16F16),
        (DType::F16, DType::F32) => Ok(Types::F16F32),
        (DType::F32, _) => Err(MoeError::Unsupported(
            "the grouped GEMM runs on tensor cores, which take bf16 or f16 inputs; convert f32 \
             activations and weights to bf16 or f16 (or use the CPU path)"
                .into(),
        )),
        (input, output) => Err(MoeError::Unsupported(format!(
            "the grouped GEMM writes its input type ({input}) or f32, not {output}"
        ))),
    }
}

/// `moe_gemm_<tile>_<input>_<output>`, `moe_gemm_<tile>_e4m3_<input>_<output>` for FP8 weights or
/// `moe_gemm_<tile>_mxfp4_<input>_<output>` for MXFP4 weights.
fn kernel_name(tile: GemmTileConfig, types: Types, codes: Option<CodeFormat>) -> &'static str {
    macro_rules! names {
        ($tile:literal, $weights:literal) => {
            match types {
                Types::Bf16Bf16 => concat!("moe_gemm_", $tile, $weights, "_bf16_bf16"),
                Types::Bf16F32 => concat!("moe_gemm_", $tile, $weights, "_bf16_f32"),
                Types::F16F16 => concat!("moe_gemm_", $tile, $weights, "_f16_f16"),
                Types::F16F32 => concat!("moe_gemm_", $tile, $weights, "_f16_f32"),
            }
        };
    }
    use CodeFormat::{Fp8E4M3, Mxfp4E2M1};
    match (tile, codes) {
        (GemmTileConfig::Small, None) => names!("small", ""),
        (GemmTileConfig::Medium, None) => names!("medium", ""),
        (GemmTileConfig::Large, None) => names!("large", ""),
        (GemmTileConfig::Generic, None) => names!("generic", ""),
        (GemmTileConfig::Small, Some(Fp8E4M3)) => names!("small", "_e4m3"),
        (GemmTileConfig::Medium, Some(Fp8E4M3)) => names!("medium", "_e4m3"),
        (GemmTileConfig::Large, Some(Fp8E4M3)) => names!("large", "_e4m3"),
        (GemmTileConfig::Generic, Some(Fp8E4M3)) => names!("generic", "_e4m3"),
        (GemmTileConfig::Small, Some(Mxfp4E2M1)) => names!("small", "_mxfp4"),
        (GemmTileConfig::Medium, Some(Mxfp4E2M1)) => names!("medium", "_mxfp4"),
        (GemmTileConfig::Large, Some(Mxfp4E2M1)) => names!("large", "_mxfp4"),
        (GemmTileConfig::Generic, Some(Mxfp4E2M1)) => names!("generic", "_mxfp4"),
    }
}

/// The ABI code of a nonlinearity (`MOE_ACTIVATION_*`).
pub(crate) fn activation_abi(kind: ActivationKind) -> i32 {
    match kind {
        ActivationKind::Silu => abi::MOE_ACTIVATION_SILU,
        ActivationKind::GeluTanh => abi::MOE_ACTIVATION_GELU_TANH,
        ActivationKind::ClampedSilu { .. } => abi::MOE_ACTIVATION_CLAMPED_SILU,
    }
}

/// The ABI codes of an epilogue: (`MOE_GEMM_EPILOGUE_*`, `MOE_ACTIVATION_*`, the clamped SwiGLU's
/// `alpha` and `limit`, zero for the other activations).
fn epilogue_abi(epilogue: GemmEpilogue) -> Result<(i32, i32, f32, f32)> {
    Ok(match epilogue {
        GemmEpilogue::Store => (
            abi::MOE_GEMM_EPILOGUE_STORE,
            abi::MOE_ACTIVATION_SILU,
            0.0,
            0.0,
        ),
        GemmEpilogue::Activation(a) => {
            a.validate()?;
            let (alpha, limit) = match a.kind {
                ActivationKind::ClampedSilu { alpha, limit } => (alpha, limit),
                _ => (0.0, 0.0),
            };
            let mode = if a.gated {
                abi::MOE_GEMM_EPILOGUE_GATED
            } else {
                abi::MOE_GEMM_EPILOGUE_ACTIVATION
            };
            (mode, activation_abi(a.kind), alpha, limit)
        }
    })
}

fn to_i64(v: usize, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| MoeError::SizeOverflow(format!("{what} = {v} past i64")))
}

/// Validate a grouped GEMM request and choose its kernel; `Ok(None)` when there is nothing to
/// compute (no rows or no output columns). Pure: no device is needed, so every check is testable
/// anywhere. See [`grouped_gemm`] for the errors.
///
/// Kernel choice: unaligned operands (K % 8 != 0, or `x`/`w` not 16-byte aligned) take the generic
/// tile; otherwise the average rows per expert pick the small (decode), medium or large tile, the
/// large one only when it yields at least one tile per SM.
#[doc(hidden)]
pub fn plan_grouped_gemm(req: &GemmRequest) -> Result<Option<GemmLaunchPlan>> {
    let types = check_types(req.input, req.output)?;
    let Some(v) = validate_gemm(&GemmBuffers {
        weights: req.weights,
        shape: req.shape,
        epilogue: req.epilogue,
        x_len: req.x_len,
        w_len: req.w_len,
        bias_len: req.bias_len,
        offsets_len: req.offsets_len,
        out_len: req.out_len,
    })?
    else {
        return Ok(None);
    };
    let s = req.shape;
    let gated = req.epilogue.is_gated();
    let aligned =
        s.k.is_multiple_of(8) && req.x_addr.is_multiple_of(16) && req.w_addr.is_multiple_of(16);
    let tile = if !aligned {
        GemmTileConfig::Generic
    } else {
        let avg_rows = s.rows.div_ceil(s.num_experts);
        if avg_rows <= SMALL_TILE_MAX_AVG_ROWS {
            GemmTileConfig::Small
        } else if avg_rows <= MEDIUM_TILE_MAX_AVG_ROWS
            || max_tiles(GemmTileConfig::Large, s, gated)? < req.sm_count as u64
        {
            GemmTileConfig::Medium
        } else {
            GemmTileConfig::Large
        }
    };
    Ok(Some(GemmLaunchPlan {
        tile,
        kernel: kernel_name(tile, types, v.codes),
        max_tiles: max_tiles(tile, s, gated)?,
        rows: v.rows,
        n: v.n,
        k: v.k,
        num_experts: v.num_experts,
        epilogue: v.epilogue,
        activation: v.activation,
        clamp_alpha: v.clamp_alpha,
        clamp_limit: v.clamp_limit,
        scale_group: v.scale_group,
        scale_groups: v.scale_groups,
    }))
}

/// A grouped GEMM's operands as the checks see them: the weights' format, the sizes, the epilogue
/// and every buffer's length (elements; bytes for FP8 codes).
#[derive(Clone, Copy)]
pub(crate) struct GemmBuffers {
    pub(crate) weights: GemmWeights,
    pub(crate) shape: GroupedGemmShape,
    pub(crate) epilogue: GemmEpilogue,
    pub(crate) x_len: usize,
    pub(crate) w_len: usize,
    /// Elements of the `f32` bias `[E, N]`, `None` without one.
    pub(crate) bias_len: Option<usize>,
    pub(crate) offsets_len: Option<usize>,
    pub(crate) out_len: usize,
}

/// The kernel arguments of a checked grouped GEMM (see [`validate_gemm`]).
#[derive(Clone, Copy)]
pub(crate) struct ValidGemm {
    pub(crate) rows: i64,
    pub(crate) n: i64,
    pub(crate) k: i64,
    pub(crate) num_experts: i64,
    pub(crate) epilogue: i32,
    pub(crate) activation: i32,
    /// The weights' code format; `None` for weights of the input type.
    pub(crate) codes: Option<CodeFormat>,
    /// The clamped SwiGLU's `alpha` and `limit` (zero for the other activations).
    pub(crate) clamp_alpha: f32,
    pub(crate) clamp_limit: f32,
    pub(crate) scale_group: i64,
    pub(crate) scale_groups: i64,
}

/// The checks every grouped GEMM kernel family shares, whatever its element types: the experts, the
/// offsets, the gated `N`, every buffer length against the shape, and the 32-bit limits of `N` and
/// `K`. `Ok(None)` when there is nothing to compute (no rows or no output columns). See
/// [`grouped_gemm`] for the errors.
pub(crate) fn validate_gemm(b: &GemmBuffers) -> Result<Option<ValidGemm>> {
    let s = b.shape;
    if s.num_experts == 0 {
        return Err(MoeError::InvalidConfig(
            "the grouped GEMM needs at least one expert (num_experts = 0)".into(),
        ));
    }
    if b.offsets_len.is_none() && s.num_experts != 1 {
        return Err(MoeError::InvalidConfig(format!(
            "without expert offsets all rows form one group, so num_experts must be 1, got {}",
            s.num_experts
        )));
    }
    let gated = b.epilogue.is_gated();
    if gated && !s.n.is_multiple_of(2) {
        return Err(MoeError::InvalidConfig(format!(
            "the gated epilogue pairs weight rows [0, N/2) (gate) with [N/2, N) (up), so N must be \
             even, got N = {}",
            s.n
        )));
    }
    let out_cols = s.out_cols(b.epilogue);
    check_len(
        "grouped GEMM activations [rows, K]",
        checked_mul(s.rows, s.k, "grouped GEMM activations")?,
        b.x_len,
    )?;
    let codes = b.weights.code_format();
    let (weights_what, row_len) = match codes {
        None => ("expert weights [E, N, K]", s.k),
        Some(CodeFormat::Fp8E4M3) => ("FP8 expert weights [E, N, K]", s.k),
        Some(CodeFormat::Mxfp4E2M1) => (
            "MXFP4 expert weights [E, N, ceil(K / 2)] bytes",
            CodeFormat::Mxfp4E2M1.row_bytes(s.k),
        ),
    };
    check_len(
        weights_what,
        checked_mul(
            checked_mul(s.num_experts, s.n, "expert weights")?,
            row_len,
            "expert weights",
        )?,
        b.w_len,
    )?;
    let (scale_group, scale_groups) = match b.weights {
        GemmWeights::Input => (0, 0),
        GemmWeights::Fp8E4M3 { group, scales_len }
        | GemmWeights::Mxfp4E2M1 { group, scales_len } => {
            let name = codes.map_or("", CodeFormat::name);
            if group == 0 {
                return Err(MoeError::InvalidConfig(format!(
                    "{name} weights with a scale group of 0 columns"
                )));
            }
            let groups = s.k.div_ceil(group);
            check_len(
                &format!("{name} weight scales [E, N, ceil(K / group)]"),
                checked_mul(
                    checked_mul(s.num_experts, s.n, "weight scales")?,
                    groups,
                    "weight scales",
                )?,
                scales_len,
            )?;
            // K < 2^31 is checked below, so both fit.
            (group.min(s.k.max(1)) as i64, groups as i64)
        }
    };
    if let Some(len) = b.offsets_len {
        let expected = s
            .num_experts
            .checked_add(1)
            .ok_or_else(|| MoeError::SizeOverflow("expert offsets (E + 1)".into()))?;
        check_len("expert offsets [E + 1]", expected, len)?;
    }
    if let Some(len) = b.bias_len {
        check_len(
            "expert bias [E, N]",
            checked_mul(s.num_experts, s.n, "expert bias")?,
            len,
        )?;
    }
    check_len(
        "grouped GEMM output [rows, out_cols]",
        checked_mul(s.rows, out_cols, "grouped GEMM output")?,
        b.out_len,
    )?;
    for (what, v) in [("N", s.n), ("K", s.k)] {
        if v > i32::MAX as usize {
            return Err(MoeError::Unsupported(format!(
                "the grouped GEMM kernels index {what} with 32 bits; {what} = {v} is 2^31 or more"
            )));
        }
    }
    let rows = to_i64(s.rows, "rows")?;
    let num_experts = to_i64(s.num_experts, "num_experts")?;
    if s.rows == 0 || out_cols == 0 {
        return Ok(None);
    }
    let (epilogue, activation, clamp_alpha, clamp_limit) = epilogue_abi(b.epilogue)?;
    Ok(Some(ValidGemm {
        rows,
        n: s.n as i64,
        k: s.k as i64,
        num_experts,
        epilogue,
        activation,
        codes,
        clamp_alpha,
        clamp_limit,
        scale_group,
        scale_groups,
    }))
}

/// The kernel's bound of its output tiles (kernels/gemm_schedule.cuh), for sizes already checked to
/// fit its integer types; the bound itself must fit the kernel's 64-bit tile numbers.
fn max_tiles(tile: GemmTileConfig, s: GroupedGemmShape, gated: bool) -> Result<u64> {
    max_tiles_of(tile.rows_per_tile(), tile.weight_rows_per_tile(), s, gated)
}

/// [`max_tiles`] for tiles of `bm` rows and `bn` weight rows, the bound of every kernel family on
/// the tile space of kernels/gemm_schedule.cuh.
pub(crate) fn max_tiles_of(bm: usize, bn: usize, s: GroupedGemmShape, gated: bool) -> Result<u64> {
    let row_tiles = host_math::max_row_tiles(s.rows, s.num_experts, bm);
    let col_tiles = host_math::n_tiles(s.n, bn, gated);
    row_tiles
        .checked_mul(col_tiles)
        .filter(|&t| t <= i64::MAX as u64)
        .ok_or_else(|| {
            MoeError::SizeOverflow(format!(
                "grouped GEMM tile count ({row_tiles} x {col_tiles})"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tile_type_pair_and_weight_format_has_its_own_kernel() {
        let tiles = [
            GemmTileConfig::Small,
            GemmTileConfig::Medium,
            GemmTileConfig::Large,
            GemmTileConfig::Generic,
        ];
        let types = [
            Types::Bf16Bf16,
            Types::Bf16F32,
            Types::F16F16,
            Types::F16F32,
        ];
        let mut names: Vec<&str> = tiles
            .iter()
            .flat_map(|&t| types.iter().map(move |&ty| (t, ty)))
            .flat_map(|(t, ty)| {
                [None, Some(CodeFormat::Fp8E4M3), Some(CodeFormat::Mxfp4E2M1)]
                    .map(|codes| kernel_name(t, ty, codes))
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 48);
        assert!(names.contains(&"moe_gemm_small_bf16_f32"));
        assert!(names.contains(&"moe_gemm_generic_e4m3_f16_f16"));
        assert!(names.contains(&"moe_gemm_large_mxfp4_bf16_f32"));
    }

    #[test]
    fn epilogue_codes() {
        assert_eq!(
            epilogue_abi(GemmEpilogue::Store).unwrap().0,
            abi::MOE_GEMM_EPILOGUE_STORE
        );
        assert_eq!(
            epilogue_abi(GemmEpilogue::Activation(Activation::GEGLU)).unwrap(),
            (
                abi::MOE_GEMM_EPILOGUE_GATED,
                abi::MOE_ACTIVATION_GELU_TANH,
                0.0,
                0.0
            )
        );
        let plain = Activation {
            kind: ActivationKind::Silu,
            gated: false,
        };
        assert_eq!(
            epilogue_abi(GemmEpilogue::Activation(plain)).unwrap(),
            (
                abi::MOE_GEMM_EPILOGUE_ACTIVATION,
                abi::MOE_ACTIVATION_SILU,
                0.0,
                0.0
            )
        );
        let clamped = |limit: f32| Activation {
            kind: ActivationKind::ClampedSilu {
                alpha: 1.702,
                limit,
            },
            gated: true,
        };
        assert_eq!(
            epilogue_abi(GemmEpilogue::Activation(clamped(7.0))).unwrap(),
            (
                abi::MOE_GEMM_EPILOGUE_GATED,
                abi::MOE_ACTIVATION_CLAMPED_SILU,
                1.702,
                7.0
            )
        );
        assert!(matches!(
            epilogue_abi(GemmEpilogue::Activation(clamped(-1.0))),
            Err(MoeError::InvalidConfig(_))
        ));
    }
}
