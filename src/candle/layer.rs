//! The whole MoE block as one candle op: [`MoeBlock`], a drop-in for the sparse-MoE block of
//! candle-transformers' Mixtral and Qwen3-MoE models.

use super::error::ErrorSlot;
use super::tensor::{cpu_slice, expect_dtype, rows_of, with_element};
use crate::config::MoeConfig;
use crate::cpu::layer::{CpuMoeLayer, MoeWeights};
use crate::error::{MoeError, Result};
use crate::view::MatRef;
use crate::Element;
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Module, Shape, Tensor, WithDType};
use std::fmt;

#[cfg(feature = "candle-cuda")]
use {
    super::device::gpu_device,
    super::tensor::{cuda_output, cuda_view},
    crate::gpu::{self, GemmElement, GpuMoeLayer, Workspace},
    crate::view::checked_mul,
    candle_core::{cuda_backend::CudaDType, CudaDevice, CudaStorage},
    cudarc::driver::ValidAsZeroBits,
    std::sync::{Arc, Mutex, PoisonError},
};

/// An element type of a [`MoeBlock`]'s weights and activations: `f32`, `bf16` or `f16` on the CPU,
/// `bf16` or `f16` on CUDA (the GPU GEMMs run on tensor cores).
///
/// Sealed: implemented for exactly these types.
pub trait CandleElement: Element + WithDType + sealed::Sealed {}

impl CandleElement for f32 {}
impl CandleElement for half::bf16 {}
impl CandleElement for half::f16 {}

mod sealed {
    /// The per-type part of [`MoeBlock::new`](super::MoeBlock::new) on CUDA.
    pub trait Sealed: Sized {
        /// The block on `cuda`, or an error for a type the GPU kernels do not take.
        #[cfg(feature = "candle-cuda")]
        fn cuda_block(
            cuda: &candle_core::CudaDevice,
            config: &crate::MoeConfig,
            weights: &crate::cpu::layer::MoeWeights<Self>,
        ) -> crate::Result<Box<dyn CudaBlock>>;
    }

    /// A block on CUDA, of any element type.
    #[cfg(feature = "candle-cuda")]
    pub trait CudaBlock: Send + Sync {
        /// The forward of the hidden states `[..., H]` in `storage`: the output of the same shape.
        fn run(
            &self,
            storage: &candle_core::CudaStorage,
            layout: &candle_core::Layout,
        ) -> crate::Result<candle_core::CudaStorage>;

        /// Read and clear the device-side error record of the forwards so far.
        fn check_status(&self) -> crate::Result<()>;
    }
}

#[cfg(feature = "candle-cuda")]
impl sealed::Sealed for f32 {
    fn cuda_block(
        _: &CudaDevice,
        _: &MoeConfig,
        _: &MoeWeights<f32>,
    ) -> Result<Box<dyn sealed::CudaBlock>> {
        Err(MoeError::Unsupported(
            "the CUDA block runs its GEMMs on tensor cores, which take bf16 or f16: convert the \
             f32 weights to bf16 or f16"
                .into(),
        ))
    }
}

#[cfg(not(feature = "candle-cuda"))]
impl sealed::Sealed for f32 {}

macro_rules! gpu_sealed {
    ($($t:ty),*) => {$(
        #[cfg(feature = "candle-cuda")]
        impl sealed::Sealed for $t {
            fn cuda_block(
                cuda: &CudaDevice,
                config: &MoeConfig,
                weights: &MoeWeights<$t>,
            ) -> Result<Box<dyn sealed::CudaBlock>> {
                Ok(Box::new(CudaLayer::<$t>::upload(cuda, config, weights)?))
            }
        }

        #[cfg(not(feature = "candle-cuda"))]
        impl sealed::Sealed for $t {}
    )*};
}
gpu_sealed!(half::bf16, half::f16);

/// A block on the CPU, of any element type.
trait CpuBlock: Send + Sync {
    /// The forward of the hidden states `[..., H]` in `storage`: the output of the same shape.
    fn run(&self, storage: &CpuStorage, layout: &Layout) -> Result<CpuStorage>;
}

impl<W: CandleElement> CpuBlock for CpuMoeLayer<W> {
    fn run(&self, storage: &CpuStorage, layout: &Layout) -> Result<CpuStorage> {
        let h = self.config().hidden_size;
        let t = rows_of("hidden states", layout, h)?;
        let x = cpu_slice::<W>("hidden states", storage, layout)?;
        let out = self.forward(MatRef::new("hidden states", x, t, h)?)?;
        Ok(W::to_cpu_storage_owned(out.hidden))
    }
}

/// A [`GpuMoeLayer`] with the workspace of its forwards.
#[cfg(feature = "candle-cuda")]
struct CudaLayer<T> {
    dev: Arc<gpu::Device>,
    layer: GpuMoeLayer<T>,
    /// Grown to the next power of two of the tokens when a forward needs more.
    workspace: Mutex<Option<Workspace<T>>>,
}

#[cfg(feature = "candle-cuda")]
impl<T: GemmElement + WithDType + CudaDType + ValidAsZeroBits> CudaLayer<T> {
    fn upload(cuda: &CudaDevice, config: &MoeConfig, weights: &MoeWeights<T>) -> Result<Self> {
        let dev = gpu_device(cuda)?;
        let layer = GpuMoeLayer::upload(&dev, config, weights)?;
        Ok(CudaLayer {
            dev,
            layer,
            workspace: Mutex::new(None),
        })
    }
}

#[cfg(feature = "candle-cuda")]
impl<T: GemmElement + WithDType + CudaDType + ValidAsZeroBits> sealed::CudaBlock for CudaLayer<T> {
    fn run(&self, storage: &CudaStorage, layout: &Layout) -> Result<CudaStorage> {
        let h = self.layer.config().hidden_size;
        let t = rows_of("hidden states", layout, h)?;
        let x = cuda_view::<T>("hidden states", storage, layout)?;
        let mut guard = self
            .workspace
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ws = match &mut *guard {
            Some(ws) if ws.max_tokens() >= t => ws,
            slot => {
                // Free the old workspace before allocating the larger one.
                *slot = None;
                let capacity = t.checked_next_power_of_two().unwrap_or(t);
                slot.insert(self.layer.workspace(&self.dev, capacity)?)
            }
        };
        let len = checked_mul(t, h, "MoE output")?;
        let mut out = cuda_output::<T>(&self.dev, len)?;
        self.layer
            .forward(&self.dev, &x, t, ws, &mut out.slice_mut(..len))?;
        Ok(CudaStorage::wrap_cuda_slice(out, storage.device.clone()))
    }

    fn check_status(&self) -> Result<()> {
        let mut guard = self
            .workspace
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(ws) = guard.as_mut() else {
            return Ok(());
        };
        let status = ws.status().check();
        if status.is_err() {
            ws.status_mut().reset()?;
        }
        status
    }
}

enum Backend {
    Cpu(Box<dyn CpuBlock>),
    #[cfg(feature = "candle-cuda")]
    Cuda(Box<dyn sealed::CudaBlock>),
}

/// A whole MoE block (routing, permutation, expert GEMMs with the activation, combine, shared
/// experts) as one candle operation on the hidden states `[..., H]` (typically `[batch, seq, H]`),
/// returning the block's output of the same shape.
///
/// It can stand in for the sparse-MoE block of candle-transformers' models, whose `forward` it
/// replaces with one op: `Qwen3SparseMoeBlock` (`qwen3_moe`: softmax top-k, renormalised when
/// `norm_topk_prob`, SwiGLU experts) and Mixtral's `SparseMoeBlock` (softmax top-2, renormalised,
/// SwiGLU); it implements [`Module`], so `xs.apply(&block)` works where theirs did. The weights are
/// the crate's fused layout ([`MoeWeights`]): build it with [`MoeBlock::from_tensors`] from the
/// model's tensors (the routed experts stacked: `gate_up` is the experts' `gate_proj` (Mixtral
/// `w1`) weights followed by their `up_proj` (`w3`) weights, `down` their `down_proj` (`w2`)), or
/// with [`MoeBlock::new`] from [`MoeWeights`] loaded by [`hf`](crate::hf) (any family the crate
/// supports, shared experts and correction bias included).
///
/// On the CPU it runs [`CpuMoeLayer`]; on CUDA it uploads the weights once and runs
/// [`GpuMoeLayer`](crate::gpu::GpuMoeLayer) on the stream of the candle device it was built for, with
/// a workspace it keeps and grows (no host synchronisation in a forward). A device-side error (a
/// non-finite router logit) does not fail the CUDA forward: the affected tokens get the router's
/// fallback and the error is reported by [`MoeBlock::check_device_status`].
pub struct MoeBlock {
    config: MoeConfig,
    dtype: candle_core::DType,
    device: Device,
    backend: Backend,
}

impl fmt::Debug for MoeBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MoeBlock")
            .field("config", &self.config)
            .field("dtype", &self.dtype)
            .field("device", &self.device.location())
            .finish_non_exhaustive()
    }
}

impl MoeBlock {
    /// A block of `config` with `weights` (validated against it), on `device` (CPU or CUDA).
    ///
    /// Errors: the validation's ([`MoeError::InvalidConfig`], [`MoeError::ShapeMismatch`]);
    /// [`MoeError::Unsupported`] for `f32` weights on CUDA, for a Metal device, and for a CUDA
    /// device in a build without the `candle-cuda` feature; on CUDA, those of
    /// [`gpu::Device::from_stream`](crate::gpu::Device::from_stream) and of the upload.
    pub fn new<W: CandleElement>(
        config: MoeConfig,
        weights: MoeWeights<W>,
        device: &Device,
    ) -> Result<Self> {
        let backend = match device {
            Device::Cpu => Backend::Cpu(Box::new(CpuMoeLayer::new(config.clone(), weights)?)),
            #[cfg(feature = "candle-cuda")]
            Device::Cuda(cuda) => Backend::Cuda(W::cuda_block(cuda, &config, &weights)?),
            other => {
                return Err(MoeError::Unsupported(format!(
                    "MoeBlock runs on the CPU and on CUDA (with the `candle-cuda` feature), not \
                     on {:?}",
                    other.location()
                )))
            }
        };
        Ok(MoeBlock {
            config,
            dtype: <W as WithDType>::DTYPE,
            device: device.clone(),
            backend,
        })
    }

    /// A block without shared experts or correction bias (Mixtral, Qwen3-MoE, OLMoE) from candle
    /// tensors: the router `[E, H]`, the experts' fused gate-up projections `[E, 2I, H]` (gate rows
    /// first; `[E, I, H]` for a plain activation) and down projections `[E, H, I]`, all of one element
    /// type. The block runs on the router's device; the weights are copied once (through the host).
    ///
    /// Errors: [`MoeError::ShapeMismatch`] for a tensor whose shape is not the config's,
    /// [`MoeError::CandleDType`] for tensors of different or unsupported element types, and those
    /// of [`MoeBlock::new`] (a config that asks for shared experts or a bias is invalid here).
    pub fn from_tensors(
        config: MoeConfig,
        router: &Tensor,
        gate_up: &Tensor,
        down: &Tensor,
    ) -> Result<Self> {
        config.validate()?;
        let (h, i, e) = (
            config.hidden_size,
            config.intermediate_size,
            config.routing.num_experts,
        );
        let up = config.activation.up_rows(i);
        expect_dims("router weight", router, &[e, h])?;
        expect_dims("expert gate_up weights", gate_up, &[e, up, h])?;
        expect_dims("expert down weights", down, &[e, h, i])?;
        let dtype = router.dtype();
        expect_dtype("expert gate_up weights", dtype, gate_up.dtype())?;
        expect_dtype("expert down weights", dtype, down.dtype())?;
        with_element!("router weight", dtype, W => {
            let weights = MoeWeights::<W> {
                router: host_vec(router)?,
                biases: None,
                correction_bias: None,
                gate_up: host_vec(gate_up)?,
                down: host_vec(down)?,
                shared: vec![],
            };
            Self::new(config, weights, router.device())
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MoeConfig {
        &self.config
    }

    /// The element type of the weights, and of the hidden states a forward takes and returns.
    pub fn dtype(&self) -> candle_core::DType {
        self.dtype
    }

    /// The device the block runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The block's output for the hidden states `xs` `[..., H]` (contiguous, of the block's dtype, on
    /// its device): a tensor of the same shape.
    ///
    /// Errors: [`MoeError::CandleDType`], [`MoeError::NonContiguous`], [`MoeError::ShapeMismatch`]
    /// for a last dimension other than `H`, [`MoeError::Unsupported`] for a tensor on another
    /// device; on the CPU the forward's errors ([`MoeError::NonFinite`] router logits), on CUDA
    /// [`MoeError::Cuda`].
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let op = BlockOp {
            block: self,
            err: ErrorSlot::default(),
        };
        xs.apply_op1_no_bwd(&op).map_err(|e| op.err.take(e))
    }

    /// Errors the CUDA kernels recorded on the device during the forwards since the last check (a
    /// non-finite router logit, with its token and expert), which a CUDA forward does not wait for.
    /// Waits for the device, then clears the record. Always `Ok` on the CPU, where
    /// [`forward`](Self::forward) reports such errors itself.
    pub fn check_device_status(&self) -> Result<()> {
        match &self.backend {
            Backend::Cpu(_) => Ok(()),
            #[cfg(feature = "candle-cuda")]
            Backend::Cuda(block) => block.check_status(),
        }
    }

    /// The error for hidden states on `found`, another device than the block's.
    #[cfg(feature = "candle-cuda")]
    fn device_error(&self, found: &Device) -> MoeError {
        MoeError::Unsupported(format!(
            "the hidden states are on {:?}, the block on {:?}",
            found.location(),
            self.device.location()
        ))
    }
}

/// [`MoeBlock::forward`] as a [`Module`], for candle models (errors become candle errors).
impl Module for MoeBlock {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(MoeBlock::forward(self, xs)?)
    }
}

/// Check a tensor's dimensions.
fn expect_dims(what: &str, t: &Tensor, expected: &[usize]) -> Result<()> {
    if t.dims() == expected {
        Ok(())
    } else {
        Err(MoeError::shape(
            what,
            format!("{expected:?}"),
            format!("{:?}", t.dims()),
        ))
    }
}

/// A tensor's elements, in row-major order, on the host.
fn host_vec<W: WithDType>(t: &Tensor) -> Result<Vec<W>> {
    Ok(t.flatten_all()?.to_vec1::<W>()?)
}

/// [`MoeBlock::forward`] as a candle custom op.
struct BlockOp<'a> {
    block: &'a MoeBlock,
    err: ErrorSlot,
}

impl CustomOp1 for BlockOp<'_> {
    fn name(&self) -> &'static str {
        "moe-block"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match &self.block.backend {
            Backend::Cpu(block) => block.run(s, l),
            #[cfg(feature = "candle-cuda")]
            Backend::Cuda(_) => Err(self.block.device_error(&Device::Cpu)),
        };
        self.err.keep(out.map(|o| (o, l.shape().clone())))
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let out = match &self.block.backend {
            Backend::Cuda(block) => block.run(s, l),
            Backend::Cpu(_) => Err(self.block.device_error(&Device::Cuda(s.device.clone()))),
        };
        self.err.keep(out.map(|o| (o, l.shape().clone())))
    }
}
