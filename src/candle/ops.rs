//! The four stages on candle tensors: [`route`], [`permute`] and [`gather`], [`grouped_gemm`] with
//! the activation, [`combine`].
//!
//! [`gather`], [`grouped_gemm`] and [`combine`] are candle custom ops (one output tensor each);
//! [`route`] (two outputs) and [`permute`] (a [`Permutation`], not a tensor) read the tensors'
//! storage directly.

use super::error::ErrorSlot;
use super::tensor::{cpu_slice, dims, with_element};
use crate::config::{Activation, RoutingConfig};
use crate::cpu;
use crate::error::{MoeError, Result};
use crate::gpu::{GemmEpilogue, GroupedGemmShape};
use crate::view::{checked_mul, ExpertsRef, MatMut, MatRef};
use crate::Element;
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Device, Layout, Shape, Storage, Tensor, WithDType,
};

#[cfg(feature = "candle-cuda")]
use {
    super::device::gpu_device,
    super::tensor::{cuda_output, cuda_view, element_dtype},
    crate::gpu::{self, GemmElement, GpuElement, GpuPermutation},
    candle_core::backend::BackendDevice,
    candle_core::{cuda_backend::CudaDType, CudaDevice, CudaStorage},
    cudarc::driver::{CudaSlice, CudaView, ValidAsZeroBits},
};

/// The error for a tensor on a device that the operation (or this build) does not serve.
fn unsupported_device(what: &str, device: &Device) -> MoeError {
    let hint = if cfg!(feature = "candle-cuda") {
        ""
    } else {
        " (CUDA tensors need the `candle-cuda` feature)"
    };
    MoeError::Unsupported(format!(
        "{what} is on {:?}; moe-kernels' candle ops run on the CPU and on CUDA{hint}",
        device.location()
    ))
}

/// The error for arguments of one call on different devices.
fn device_mismatch(what: &str, found: &Device, expected: &Device) -> MoeError {
    MoeError::Unsupported(format!(
        "{what} is on {:?}, the other arguments on {:?}",
        found.location(),
        expected.location()
    ))
}

/// The host storage of an argument that must be on the CPU like the call's first one.
fn as_cpu<'a>(what: &str, storage: &'a Storage) -> Result<&'a CpuStorage> {
    match storage {
        Storage::Cpu(s) => Ok(s),
        other => Err(device_mismatch(what, &other.device(), &Device::Cpu)),
    }
}

/// The device storage of an argument that must be on `device` like the call's first one.
#[cfg(feature = "candle-cuda")]
fn as_cuda<'a>(what: &str, storage: &'a Storage, device: &CudaDevice) -> Result<&'a CudaStorage> {
    match storage {
        Storage::Cuda(s) if s.device.same_device(device) => Ok(s),
        other => Err(device_mismatch(
            what,
            &other.device(),
            &Device::Cuda(device.clone()),
        )),
    }
}

/// A tensor of `shape` over a whole device buffer.
#[cfg(feature = "candle-cuda")]
fn cuda_tensor<T: CudaDType>(
    slice: CudaSlice<T>,
    device: &CudaDevice,
    shape: impl Into<Shape>,
) -> Tensor {
    let storage = CudaStorage::wrap_cuda_slice(slice, device.clone());
    Tensor::from_storage(
        Storage::Cuda(storage),
        shape,
        candle_core::op::BackpropOp::none(),
        false,
    )
}

/// Route `T` tokens from their router logits `[T, E]` (`f32`, `bf16` or `f16`), with the score
/// correction bias `[E]` (`f32`) exactly when `cfg` uses one: returns `topk_ids` `[T, k]` (`u32`, each
/// row best expert first) and `topk_weights` `[T, k]` (`f32`), on the logits' device.
///
/// The semantics are those of [`cpu::routing::route`] (and [`gpu::route`](crate::gpu::route) on
/// CUDA, which gives the same ids). On CUDA this waits for the device: a non-finite logit or bias
/// is found by the kernel and reported here, like on the CPU, as [`MoeError::NonFinite`].
///
/// Errors: [`MoeError::CandleDType`], [`MoeError::NonContiguous`], [`MoeError::ShapeMismatch`] for
/// logits that are not `[T, E]` or a bias that is not `[E]`, [`MoeError::InvalidConfig`],
/// [`MoeError::NonFinite`], [`MoeError::Unsupported`] for tensors on another device (or on Metal).
pub fn route(
    logits: &Tensor,
    bias: Option<&Tensor>,
    cfg: &RoutingConfig,
) -> Result<(Tensor, Tensor)> {
    let (storage, layout) = logits.storage_and_layout();
    let bias = bias.map(Tensor::storage_and_layout);
    let bias = bias.as_ref().map(|(s, l)| (&**s, *l));
    match &*storage {
        Storage::Cpu(s) => route_cpu(cfg, s, layout, bias),
        #[cfg(feature = "candle-cuda")]
        Storage::Cuda(s) => route_cuda(cfg, s, layout, bias),
        other => Err(unsupported_device("router logits", &other.device())),
    }
}

/// The rank-1 check of a correction bias (its length is checked by the router).
fn check_bias(layout: &Layout) -> Result<()> {
    dims::<1>("correction bias", layout).map(|_| ())
}

fn route_cpu(
    cfg: &RoutingConfig,
    storage: &CpuStorage,
    layout: &Layout,
    bias: Option<(&Storage, &Layout)>,
) -> Result<(Tensor, Tensor)> {
    let [t, e] = dims("router logits", layout)?;
    let logits: Vec<f32> = with_element!("router logits", storage.dtype(), T => {
        let x = cpu_slice::<T>("router logits", storage, layout)?;
        x.iter().map(|v| v.to_f32()).collect()
    });
    let bias = match bias {
        Some((s, l)) => {
            check_bias(l)?;
            Some(cpu_slice::<f32>(
                "correction bias",
                as_cpu("correction bias", s)?,
                l,
            )?)
        }
        None => None,
    };
    let routing = cpu::routing::route(cfg, MatRef::new("router logits", &logits, t, e)?, bias)?;
    // The ids are in 0..E: the same bits as u32.
    let ids = routing.ids.iter().map(|&id| id as u32).collect();
    let k = routing.top_k;
    Ok((
        Tensor::from_vec(ids, (t, k), &Device::Cpu)?,
        Tensor::from_vec(routing.weights, (t, k), &Device::Cpu)?,
    ))
}

#[cfg(feature = "candle-cuda")]
fn route_cuda(
    cfg: &RoutingConfig,
    storage: &CudaStorage,
    layout: &Layout,
    bias: Option<(&Storage, &Layout)>,
) -> Result<(Tensor, Tensor)> {
    let [t, _] = dims("router logits", layout)?;
    cfg.validate()?;
    let k = cfg.top_k;
    let n = checked_mul(t, k, "topk_ids")?;
    let dev = gpu_device(&storage.device)?;
    let bias = match bias {
        Some((s, l)) => {
            check_bias(l)?;
            let s = as_cuda("correction bias", s, &storage.device)?;
            Some(cuda_view::<f32>("correction bias", s, l)?)
        }
        None => None,
    };
    let mut ids = cuda_output::<u32>(&dev, n)?;
    let mut weights = cuda_output::<f32>(&dev, n)?;
    let mut status = gpu::DeviceStatus::new(&dev)?;
    {
        // SAFETY: `u32` and `i32` have the same size and alignment and every bit pattern is a valid
        // value of both, so the router's `i32` ids can be written into the `u32` buffer (they are
        // in 0..E, the same bits as u32); the view covers n elements of a buffer of at least n.
        let ids = unsafe { ids.transmute_mut::<i32>(n) };
        let mut ids = ids.ok_or_else(|| {
            MoeError::Unsupported("topk_ids buffer shorter than T * k (internal error)".into())
        })?;
        with_element!("router logits", storage.dtype(), T => gpu::route::<T>(
            &dev,
            cfg,
            &cuda_view::<T>("router logits", storage, layout)?,
            t,
            bias.as_ref(),
            &mut ids,
            &mut weights.slice_mut(..n),
            &mut status,
        ))?;
    }
    status.check()?;
    Ok((
        cuda_tensor(ids, &storage.device, (t, k)),
        cuda_tensor(weights, &storage.device, (t, k)),
    ))
}

/// The routing decisions of `T` tokens sorted by expert (no padding), on the device of the ids it
/// was made from: the argument of [`gather`], [`grouped_gemm`] and [`combine`].
///
/// Expert `e` owns rows `expert_offsets[e]..expert_offsets[e + 1]` of the permuted layout, in
/// token order, then slot order ([`cpu::permute`]). On the CPU it holds a
/// [`cpu::permute::Permutation`], on CUDA a [`GpuPermutation`](crate::gpu::GpuPermutation).
#[derive(Debug)]
pub struct Permutation {
    data: PermutationData,
}

#[derive(Debug)]
enum PermutationData {
    Cpu(cpu::permute::Permutation),
    #[cfg(feature = "candle-cuda")]
    Cuda {
        perm: Box<GpuPermutation>,
        device: CudaDevice,
    },
}

impl Permutation {
    /// `(T, k, E, T * k)` of the permutation, wherever it lives.
    fn sizes(&self) -> (usize, usize, usize, usize) {
        match &self.data {
            PermutationData::Cpu(p) => (p.num_tokens(), p.top_k(), p.num_experts(), p.num_rows()),
            #[cfg(feature = "candle-cuda")]
            PermutationData::Cuda { perm, .. } => (
                perm.num_tokens(),
                perm.top_k(),
                perm.num_experts(),
                perm.num_rows_bound(),
            ),
        }
    }

    /// Tokens `T`.
    pub fn num_tokens(&self) -> usize {
        self.sizes().0
    }

    /// Experts per token `k`.
    pub fn top_k(&self) -> usize {
        self.sizes().1
    }

    /// Experts `E`.
    pub fn num_experts(&self) -> usize {
        self.sizes().2
    }

    /// Rows of the permuted layout, `T * k`.
    pub fn num_rows(&self) -> usize {
        self.sizes().3
    }

    /// The device it lives on.
    pub fn device(&self) -> Device {
        match &self.data {
            PermutationData::Cpu(_) => Device::Cpu,
            #[cfg(feature = "candle-cuda")]
            PermutationData::Cuda { device, .. } => Device::Cuda(device.clone()),
        }
    }

    /// `[E + 1]` segment starts (`i64`): expert `e` owns rows `offsets[e]..offsets[e + 1]`. A copy.
    pub fn expert_offsets(&self) -> Result<Tensor> {
        match &self.data {
            PermutationData::Cpu(p) => host_i64(p.expert_offsets().iter().map(|&o| o as i64)),
            #[cfg(feature = "candle-cuda")]
            PermutationData::Cuda { perm, device } => cuda_copy(perm.expert_offsets(), device),
        }
    }

    /// `[T * k]` flat (token, slot) index `token * k + slot` of each row (`i64`). A copy.
    pub fn row_source(&self) -> Result<Tensor> {
        match &self.data {
            PermutationData::Cpu(p) => {
                host_i64(p.row_source().iter().map(|s| s.map_or(-1, |f| f as i64)))
            }
            #[cfg(feature = "candle-cuda")]
            PermutationData::Cuda { perm, device } => cuda_copy(perm.row_source(), device),
        }
    }

    /// `[T * k]` row of each flat (token, slot) index, the inverse of
    /// [`row_source`](Self::row_source) (`i64`). A copy.
    pub fn slot_row(&self) -> Result<Tensor> {
        match &self.data {
            PermutationData::Cpu(p) => {
                host_i64(p.slot_row().iter().map(|r| r.map_or(-1, |r| r as i64)))
            }
            #[cfg(feature = "candle-cuda")]
            PermutationData::Cuda { perm, device } => cuda_copy(perm.slot_row(), device),
        }
    }

    /// The host permutation, for an operation on CPU tensors.
    fn on_cpu(&self) -> Result<&cpu::permute::Permutation> {
        match &self.data {
            PermutationData::Cpu(p) => Ok(p),
            #[cfg(feature = "candle-cuda")]
            PermutationData::Cuda { .. } => Err(device_mismatch(
                "the permutation",
                &self.device(),
                &Device::Cpu,
            )),
        }
    }

    /// The device permutation, for an operation on tensors of `device`.
    #[cfg(feature = "candle-cuda")]
    fn on_cuda(&self, device: &CudaDevice) -> Result<&GpuPermutation> {
        match &self.data {
            PermutationData::Cuda { perm, device: own } if own.same_device(device) => {
                Ok(perm.as_ref())
            }
            _ => Err(device_mismatch(
                "the permutation",
                &self.device(),
                &Device::Cuda(device.clone()),
            )),
        }
    }
}

/// A host `i64` tensor of `values`.
fn host_i64(values: impl Iterator<Item = i64>) -> Result<Tensor> {
    let v: Vec<i64> = values.collect();
    let n = v.len();
    Ok(Tensor::from_vec(v, n, &Device::Cpu)?)
}

/// A device `i64` tensor holding a copy of `view`.
#[cfg(feature = "candle-cuda")]
fn cuda_copy(view: CudaView<'_, i64>, device: &CudaDevice) -> Result<Tensor> {
    let dev = gpu_device(device)?;
    let len = view.len();
    let mut out = cuda_output::<i64>(&dev, len)?;
    if len > 0 {
        dev.stream().memcpy_dtod(&view, &mut out.slice_mut(..len))?;
    }
    Ok(cuda_tensor(out, device, len))
}

/// Sort the routing decisions `topk_ids` `[T, k]` (`u32`) by expert: the device twin of
/// [`cpu::permute::permute`] with no padding (block size 1).
///
/// On CUDA this waits for the device, so that an id out of range is reported here as on the CPU.
/// An id of 2^31 or more is read as the negative `i32` of the same bits, as the kernels read it.
///
/// Errors: [`MoeError::CandleDType`], [`MoeError::NonContiguous`], [`MoeError::ShapeMismatch`],
/// [`MoeError::InvalidConfig`] for `num_experts = 0`, [`MoeError::ExpertIdOutOfRange`],
/// [`MoeError::Unsupported`] for tensors on other devices.
pub fn permute(topk_ids: &Tensor, num_experts: usize) -> Result<Permutation> {
    let (storage, layout) = topk_ids.storage_and_layout();
    let [t, k] = dims("topk_ids", layout)?;
    let data = match &*storage {
        Storage::Cpu(s) => {
            let ids = cpu_slice::<u32>("topk_ids", s, layout)?;
            let ids: Vec<i32> = ids.iter().map(|&id| id as i32).collect();
            let ids = MatRef::new("topk_ids", &ids, t, k)?;
            PermutationData::Cpu(cpu::permute::permute(ids, num_experts, 1)?)
        }
        #[cfg(feature = "candle-cuda")]
        Storage::Cuda(s) => {
            let dev = gpu_device(&s.device)?;
            let ids = cuda_view::<u32>("topk_ids", s, layout)?;
            // SAFETY: `u32` and `i32` have the same size and alignment and every bit pattern is a
            // valid value of both; the view covers exactly the ids' elements.
            let ids = unsafe { ids.transmute::<i32>(ids.len()) };
            let ids = ids.ok_or_else(|| {
                MoeError::Unsupported("topk_ids view of the wrong length (internal error)".into())
            })?;
            let mut perm = GpuPermutation::new(&dev, t, k, num_experts, 1)?;
            let mut status = gpu::DeviceStatus::new(&dev)?;
            gpu::permute(&dev, &ids, t, num_experts, 1, &mut perm, &mut status)?;
            status.check()?;
            PermutationData::Cuda {
                perm: Box::new(perm),
                device: s.device.clone(),
            }
        }
        other => return Err(unsupported_device("topk_ids", &other.device())),
    };
    Ok(Permutation { data })
}

/// Gather the hidden states `x` `[T, H]` into the permuted order of `perm`: `out[r] = x[token of r]`,
/// `[T * k, H]`, of `x`'s element type (`f32`, `bf16` or `f16`). The twin of
/// [`cpu::permute::gather`] and [`gpu::gather`](crate::gpu::gather).
///
/// Errors: [`MoeError::CandleDType`], [`MoeError::NonContiguous`], [`MoeError::ShapeMismatch`] (`T`
/// other than the permutation's), [`MoeError::Unsupported`] for a permutation of another device.
pub fn gather(x: &Tensor, perm: &Permutation) -> Result<Tensor> {
    let op = GatherOp {
        perm,
        err: ErrorSlot::default(),
    };
    x.apply_op1_no_bwd(&op).map_err(|e| op.err.take(e))
}

/// [`gather`] as a candle custom op.
struct GatherOp<'a> {
    perm: &'a Permutation,
    err: ErrorSlot,
}

impl CustomOp1 for GatherOp<'_> {
    fn name(&self) -> &'static str {
        "moe-gather"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.err.keep(self.perm.on_cpu().and_then(
            |perm| with_element!("hidden states", s.dtype(), T => gather_cpu::<T>(perm, s, l)),
        ))
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        self.err.keep(self.perm.on_cuda(&s.device).and_then(
            |perm| with_element!("hidden states", s.dtype(), T => gather_cuda::<T>(perm, s, l)),
        ))
    }
}

fn gather_cpu<T: Element + WithDType>(
    perm: &cpu::permute::Permutation,
    s: &CpuStorage,
    l: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let [t, h] = dims("hidden states", l)?;
    let x = MatRef::new(
        "hidden states",
        cpu_slice::<T>("hidden states", s, l)?,
        t,
        h,
    )?;
    let rows = perm.num_rows();
    let mut out = vec![T::default(); checked_mul(rows, h, "gathered activations")?];
    cpu::permute::gather(
        x,
        perm,
        &mut MatMut::new("gathered activations", &mut out, rows, h)?,
    )?;
    Ok((T::to_cpu_storage_owned(out), Shape::from((rows, h))))
}

#[cfg(feature = "candle-cuda")]
fn gather_cuda<T: GpuElement + WithDType + CudaDType + ValidAsZeroBits>(
    perm: &GpuPermutation,
    s: &CudaStorage,
    l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let [_, h] = dims("hidden states", l)?;
    let dev = gpu_device(&s.device)?;
    let rows = perm.num_rows_bound();
    let len = checked_mul(rows, h, "gathered activations")?;
    let mut out = cuda_output::<T>(&dev, len)?;
    let x = cuda_view::<T>("hidden states", s, l)?;
    gpu::gather(&dev, &x, h, perm, &mut out.slice_mut(..len))?;
    let out = CudaStorage::wrap_cuda_slice(out, s.device.clone());
    Ok((out, Shape::from((rows, h))))
}

/// The grouped expert GEMM: for every expert `e`, `out[rows of e] = act(x[rows of e] @ w[e]^T)`,
/// accumulated in `f32` and rounded once, with the rows of each expert given by `perm`.
///
/// `x` is `[T * k, K]` in permuted order (the output of [`gather`], or of a previous GEMM), `w` is
/// `[E, N, K]` of the same element type (a Hugging Face `Linear` weight per expert). Without an
/// activation the output is `[T * k, N]`; with a gated one (SwiGLU, GeGLU), weight rows `[0, N/2)`
/// are the gate and `[N/2, N)` the up projection and the output is `[T * k, N/2] = act(gate) * up`;
/// with a plain one it is `[T * k, N] = act(x @ w^T)`. The twin of [`cpu::gemm::grouped_gemm`] and
/// [`cpu::gemm::grouped_gemm_activation`], and of [`gpu::grouped_gemm`](crate::gpu::grouped_gemm),
/// which takes `bf16` or `f16` only (tensor cores).
///
/// Errors: [`MoeError::CandleDType`], [`MoeError::NonContiguous`], [`MoeError::ShapeMismatch`],
/// [`MoeError::Unsupported`] for `f32` on CUDA or a permutation of another device, and the GEMMs'
/// errors.
pub fn grouped_gemm(
    x: &Tensor,
    w: &Tensor,
    perm: &Permutation,
    activation: Option<Activation>,
) -> Result<Tensor> {
    let op = GemmOp {
        perm,
        epilogue: activation.map_or(GemmEpilogue::Store, GemmEpilogue::Activation),
        err: ErrorSlot::default(),
    };
    x.apply_op2_no_bwd(w, &op).map_err(|e| op.err.take(e))
}

/// [`grouped_gemm`] as a candle custom op on `(x, w)`.
struct GemmOp<'a> {
    perm: &'a Permutation,
    epilogue: GemmEpilogue,
    err: ErrorSlot,
}

impl GemmOp<'_> {
    /// The GEMM's sizes from the operands' layouts, checked against each other and the permutation.
    fn shape(&self, x: &Layout, w: &Layout) -> Result<GroupedGemmShape> {
        let [rows, k] = dims("grouped GEMM activations", x)?;
        let [num_experts, n, wk] = dims("expert weights", w)?;
        if rows != self.perm.num_rows() {
            return Err(MoeError::shape(
                "grouped GEMM activations",
                format!(
                    "[{}, K] (the permutation's T * k rows)",
                    self.perm.num_rows()
                ),
                format!("{:?}", x.dims()),
            ));
        }
        if wk != k {
            return Err(MoeError::shape(
                "expert weights",
                format!("[E, N, {k}] (K of the activations)"),
                format!("{:?}", w.dims()),
            ));
        }
        Ok(GroupedGemmShape {
            rows,
            n,
            k,
            num_experts,
        })
    }
}

impl CustomOp2 for GemmOp<'_> {
    fn name(&self) -> &'static str {
        "moe-grouped-gemm"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let run = || {
            let perm = self.perm.on_cpu()?;
            let shape = self.shape(lx, lw)?;
            with_element!("grouped GEMM activations", sx.dtype(), T => {
                gemm_cpu::<T>(perm, shape, self.epilogue, (sx, lx), (sw, lw))
            })
        };
        self.err.keep(run())
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(
        &self,
        sx: &CudaStorage,
        lx: &Layout,
        sw: &CudaStorage,
        lw: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let run = || {
            let perm = self.perm.on_cuda(&sx.device)?;
            let shape = self.shape(lx, lw)?;
            let args = (perm, shape, self.epilogue, (sx, lx), (sw, lw));
            match element_dtype("grouped GEMM activations", sx.dtype())? {
                crate::DType::BF16 => gemm_cuda::<half::bf16>(args),
                crate::DType::F16 => gemm_cuda::<half::f16>(args),
                crate::DType::F32 => Err(MoeError::Unsupported(
                    "the CUDA grouped GEMM runs on tensor cores, which take bf16 or f16: convert \
                     f32 activations and weights to bf16 or f16"
                        .into(),
                )),
            }
        };
        self.err.keep(run())
    }
}

fn gemm_cpu<T: Element + WithDType>(
    perm: &cpu::permute::Permutation,
    shape: GroupedGemmShape,
    epilogue: GemmEpilogue,
    (sx, lx): (&CpuStorage, &Layout),
    (sw, lw): (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    let GroupedGemmShape {
        rows,
        n,
        k,
        num_experts,
    } = shape;
    let x = cpu_slice::<T>("grouped GEMM activations", sx, lx)?;
    let x = MatRef::new("grouped GEMM activations", x, rows, k)?;
    let w = cpu_slice::<T>("expert weights", sw, lw)?;
    let w = ExpertsRef::new("expert weights", w, num_experts, n, k)?;
    let cols = shape.out_cols(epilogue);
    let mut out = vec![T::default(); checked_mul(rows, cols, "grouped GEMM output")?];
    let mut view = MatMut::new("grouped GEMM output", &mut out, rows, cols)?;
    let offsets = perm.expert_offsets();
    match epilogue {
        GemmEpilogue::Store => cpu::gemm::grouped_gemm(x, offsets, w, &mut view)?,
        GemmEpilogue::Activation(act) => {
            cpu::gemm::grouped_gemm_activation(x, offsets, w, act, &mut view)?
        }
    }
    Ok((T::to_cpu_storage_owned(out), Shape::from((rows, cols))))
}

/// The arguments of [`gemm_cuda`].
#[cfg(feature = "candle-cuda")]
type CudaGemmArgs<'a> = (
    &'a GpuPermutation,
    GroupedGemmShape,
    GemmEpilogue,
    (&'a CudaStorage, &'a Layout),
    (&'a CudaStorage, &'a Layout),
);

#[cfg(feature = "candle-cuda")]
fn gemm_cuda<T: GemmElement + WithDType + CudaDType + ValidAsZeroBits>(
    (perm, shape, epilogue, (sx, lx), (sw, lw)): CudaGemmArgs<'_>,
) -> Result<(CudaStorage, Shape)> {
    let dev = gpu_device(&sx.device)?;
    let cols = shape.out_cols(epilogue);
    let len = checked_mul(shape.rows, cols, "grouped GEMM output")?;
    let mut out = cuda_output::<T>(&dev, len)?;
    gpu::grouped_gemm::<T, T>(
        &dev,
        &cuda_view::<T>("grouped GEMM activations", sx, lx)?,
        Some(&perm.expert_offsets()),
        &cuda_view::<T>("expert weights", sw, lw)?,
        shape,
        epilogue,
        &mut out.slice_mut(..len),
    )?;
    let out = CudaStorage::wrap_cuda_slice(out, sx.device.clone());
    Ok((out, Shape::from((shape.rows, cols))))
}

/// Each token's `k` expert outputs weighted and summed in slot order, plus the shared experts'
/// output: `out[t] = sum over s of topk_weights[t, s] * expert_out[row of (t, s)]  (+ shared[t])`,
/// accumulated in `f32` and rounded once.
///
/// `expert_out` is `[T * k, H]` in permuted order (`f32`, `bf16` or `f16`; the output `[T, H]` has
/// its type), `topk_weights` `[T, k]` (`f32`), `shared` `[T, H]` (on CUDA `f32` or the expert
/// outputs' type). The twin of [`cpu::combine::combine`] and [`gpu::combine`](crate::gpu::combine).
///
/// Errors: [`MoeError::CandleDType`], [`MoeError::NonContiguous`], [`MoeError::ShapeMismatch`],
/// [`MoeError::NonFinite`] for a non-finite weight (CPU; on CUDA the weights are not checked, which
/// would wait for the device, and a non-finite weight makes its token's output non-finite),
/// [`MoeError::Unsupported`] for another type combination on CUDA or a permutation of another
/// device.
pub fn combine(
    expert_out: &Tensor,
    perm: &Permutation,
    topk_weights: &Tensor,
    shared: Option<&Tensor>,
) -> Result<Tensor> {
    let op = CombineOp {
        perm,
        err: ErrorSlot::default(),
    };
    let out = match shared {
        None => expert_out.apply_op2_no_bwd(topk_weights, &op),
        Some(s) => expert_out.apply_op3_no_bwd(topk_weights, s, &op),
    };
    out.map_err(|e| op.err.take(e))
}

/// [`combine`] as a candle custom op on `(expert_out, topk_weights)` or
/// `(expert_out, topk_weights, shared)`.
struct CombineOp<'a> {
    perm: &'a Permutation,
    err: ErrorSlot,
}

impl CombineOp<'_> {
    fn cpu(
        &self,
        y: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        shared: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let perm = self.perm.on_cpu()?;
        with_element!("expert outputs", y.0.dtype(), Y => match shared {
            None => combine_cpu::<Y, Y>(perm, y, w, None),
            Some(s) => with_element!("shared expert output", s.0.dtype(), S => {
                combine_cpu::<Y, S>(perm, y, w, Some(s))
            }),
        })
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda(
        &self,
        y: (&CudaStorage, &Layout),
        w: (&CudaStorage, &Layout),
        shared: Option<(&CudaStorage, &Layout)>,
    ) -> Result<(CudaStorage, Shape)> {
        let perm = self.perm.on_cuda(&y.0.device)?;
        with_element!("expert outputs", y.0.dtype(), Y => match shared {
            None => combine_cuda::<Y, Y>(perm, y, w, None),
            Some(s) => with_element!("shared expert output", s.0.dtype(), S => {
                combine_cuda::<Y, S>(perm, y, w, Some(s))
            }),
        })
    }
}

impl CustomOp2 for CombineOp<'_> {
    fn name(&self) -> &'static str {
        "moe-combine"
    }

    fn cpu_fwd(
        &self,
        sy: &CpuStorage,
        ly: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.err.keep(self.cpu((sy, ly), (sw, lw), None))
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(
        &self,
        sy: &CudaStorage,
        ly: &Layout,
        sw: &CudaStorage,
        lw: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.err.keep(self.cuda((sy, ly), (sw, lw), None))
    }
}

impl CustomOp3 for CombineOp<'_> {
    fn name(&self) -> &'static str {
        "moe-combine"
    }

    fn cpu_fwd(
        &self,
        sy: &CpuStorage,
        ly: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        ss: &CpuStorage,
        ls: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.err.keep(self.cpu((sy, ly), (sw, lw), Some((ss, ls))))
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(
        &self,
        sy: &CudaStorage,
        ly: &Layout,
        sw: &CudaStorage,
        lw: &Layout,
        ss: &CudaStorage,
        ls: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.err.keep(self.cuda((sy, ly), (sw, lw), Some((ss, ls))))
    }
}

fn combine_cpu<Y: Element + WithDType, S: Element + WithDType>(
    perm: &cpu::permute::Permutation,
    (sy, ly): (&CpuStorage, &Layout),
    (sw, lw): (&CpuStorage, &Layout),
    shared: Option<(&CpuStorage, &Layout)>,
) -> Result<(CpuStorage, Shape)> {
    let [rows, h] = dims("expert outputs", ly)?;
    let [t, k] = dims("topk_weights", lw)?;
    let y = MatRef::new(
        "expert outputs",
        cpu_slice::<Y>("expert outputs", sy, ly)?,
        rows,
        h,
    )?;
    let w = MatRef::new(
        "topk_weights",
        cpu_slice::<f32>("topk_weights", sw, lw)?,
        t,
        k,
    )?;
    let shared = match shared {
        Some((ss, ls)) => {
            let [st, sh] = dims("shared expert output", ls)?;
            let s = cpu_slice::<S>("shared expert output", ss, ls)?;
            Some(MatRef::new("shared expert output", s, st, sh)?)
        }
        None => None,
    };
    let tokens = perm.num_tokens();
    let mut out = vec![Y::default(); checked_mul(tokens, h, "combined output")?];
    let mut view = MatMut::new("combined output", &mut out, tokens, h)?;
    cpu::combine::combine(y, perm, w, shared, &mut view)?;
    Ok((Y::to_cpu_storage_owned(out), Shape::from((tokens, h))))
}

#[cfg(feature = "candle-cuda")]
fn combine_cuda<
    Y: GpuElement + WithDType + CudaDType + ValidAsZeroBits,
    S: GpuElement + WithDType + CudaDType,
>(
    perm: &GpuPermutation,
    (sy, ly): (&CudaStorage, &Layout),
    (sw, lw): (&CudaStorage, &Layout),
    shared: Option<(&CudaStorage, &Layout)>,
) -> Result<(CudaStorage, Shape)> {
    let [_, h] = dims("expert outputs", ly)?;
    dims::<2>("topk_weights", lw)?;
    let shared = match shared {
        Some((ss, ls)) => {
            dims::<2>("shared expert output", ls)?;
            Some(cuda_view::<S>("shared expert output", ss, ls)?)
        }
        None => None,
    };
    let dev = gpu_device(&sy.device)?;
    let tokens = perm.num_tokens();
    let len = checked_mul(tokens, h, "combined output")?;
    let mut out = cuda_output::<Y>(&dev, len)?;
    gpu::combine::<Y, S, Y>(
        &dev,
        &cuda_view::<Y>("expert outputs", sy, ly)?,
        h,
        perm,
        &cuda_view::<f32>("topk_weights", sw, lw)?,
        shared.as_ref(),
        &mut out.slice_mut(..len),
    )?;
    let out = CudaStorage::wrap_cuda_slice(out, sy.device.clone());
    Ok((out, Shape::from((tokens, h))))
}
