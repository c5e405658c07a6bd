//! The whole MoE block on the GPU: the device twin of [`CpuMoeLayer`](crate::cpu::layer::CpuMoeLayer)
//! (the stage sequence is documented on [`GpuMoeLayer`]).

use super::gemm::{GemmElement, GemmOutput};
use super::weights::{GpuExpertStorage, GpuMoeWeights, UploadExperts};
use super::workspace::Workspace;
use super::Device;
use crate::config::MoeConfig;
use crate::cpu::layer::MoeWeights;
use crate::error::{MoeError, Result};
use crate::expert_map::ExpertMap;
use crate::raw::forward_buffers;
use crate::view::checked_mul;
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, ValidAsZeroBits};

/// A validated MoE block on the GPU, for activations and weights of type `T` (`bf16` or `f16`).
///
/// A forward is a fixed sequence of asynchronous launches on [`Device::stream`], with no host
/// synchronisation and no allocation (every intermediate lives in a [`Workspace`]), so it can be
/// captured in a CUDA graph and replayed:
///
/// 1. router GEMM `x @ W_router^T` into `f32` logits (plus gpt-oss's router bias), and routing ([`route_from_hidden`](super::route_from_hidden));
/// 2. permutation ([`permute`](super::permute)) and gather ([`gather`](super::gather)) of the hidden states by expert;
/// 3. grouped up-projection GEMM with the activation fused ([`grouped_gemm`](super::grouped_gemm)), intermediate in `T`;
/// 4. grouped down-projection GEMM, output in `T` (gpt-oss: each with its expert bias added to the
///    `f32` accumulators, [`grouped_gemm_biased`](super::grouped_gemm_biased));
/// 5. shared experts: up GEMM with the activation, down GEMM in `f32`, optional per-token sigmoid
///    gate, summed in `f32` ([`shared_expert_accumulate`](super::shared_expert_accumulate));
/// 6. [`combine`](super::combine): weighted sum in slot order plus the shared sum, rounded once to `T`.
///
/// The rounding points are those of [`cpu::layer`](crate::cpu::layer): the activated intermediate
/// and the down projection in `T`, the shared sum and every accumulator in `f32`, the output in `T`.
#[derive(Debug)]
pub struct GpuMoeLayer<T, S = CudaSlice<T>> {
    weights: GpuMoeWeights<T, S>,
}

/// Check a forward's sizes against the layer's config and the workspace.
fn check_forward(
    cfg: &MoeConfig,
    ws_cfg: &MoeConfig,
    ws_max_tokens: usize,
    x_len: usize,
    num_tokens: usize,
    out_len: usize,
) -> Result<()> {
    if cfg != ws_cfg {
        return Err(MoeError::InvalidConfig(
            "the workspace was made for another MoE config than the layer's".into(),
        ));
    }
    if num_tokens > ws_max_tokens {
        return Err(MoeError::shape(
            "forward tokens",
            format!("at most {ws_max_tokens} (the workspace's capacity)"),
            num_tokens,
        ));
    }
    let elems = checked_mul(num_tokens, cfg.hidden_size, "hidden states")?;
    super::check_len("hidden states", elems, x_len)?;
    super::check_len("MoE output", elems, out_len)
}

impl<T: GemmElement + GemmOutput<T>, S: GpuExpertStorage> GpuMoeLayer<T, S>
where
    f32: GemmOutput<T>,
{
    /// A layer from uploaded weights.
    pub fn new(weights: GpuMoeWeights<T, S>) -> Self {
        GpuMoeLayer { weights }
    }

    /// Validate and upload `weights` for `config` (see [`GpuMoeWeights::upload`]).
    pub fn upload<H: UploadExperts<Gpu = S>>(
        dev: &Device,
        config: &MoeConfig,
        weights: &MoeWeights<T, H>,
    ) -> Result<Self> {
        Ok(Self::new(GpuMoeWeights::upload(dev, config, weights)?))
    }

    /// One rank of an expert-parallel layer (see [`GpuMoeWeights::upload_rank`]): its forwards
    /// write this rank's partial sum, as
    /// [`CpuMoeLayer::with_expert_map`](crate::cpu::layer::CpuMoeLayer::with_expert_map)'s do.
    pub fn upload_rank<H: UploadExperts<Gpu = S>>(
        dev: &Device,
        config: &MoeConfig,
        weights: &MoeWeights<T, H>,
        expert_map: &ExpertMap,
    ) -> Result<Self> {
        Ok(Self::new(GpuMoeWeights::upload_rank(
            dev, config, weights, expert_map,
        )?))
    }

    /// The configuration.
    pub fn config(&self) -> &MoeConfig {
        self.weights.config()
    }

    /// The weights.
    pub fn weights(&self) -> &GpuMoeWeights<T, S> {
        &self.weights
    }

    /// A workspace for forwards of up to `max_tokens` tokens of this layer.
    pub fn workspace(&self, dev: &Device, max_tokens: usize) -> Result<Workspace<T>>
    where
        T: ValidAsZeroBits,
    {
        Workspace::with_segments(dev, self.config(), max_tokens, self.weights.num_routed())
    }

    /// The forward pass: `out` `[num_tokens, H]` for the hidden states `x` `[num_tokens, H]`.
    ///
    /// Enqueues the launches listed on [`GpuMoeLayer`] on [`Device::stream`] and returns
    /// without waiting: no host synchronisation, no allocation (`ws` holds every intermediate and,
    /// afterwards, the routing decision: [`Workspace::topk_ids`], [`Workspace::topk_weights`]). Run
    /// one forward before capturing another in a CUDA graph, so that the kernels are loaded.
    /// Non-finite router logits and out-of-range ids are recorded in [`Workspace::status`] (check
    /// it outside the forward); their tokens get the router's fallback (experts `0..k`, weight 0).
    ///
    /// Errors, before anything is enqueued: [`MoeError::InvalidConfig`] for a workspace of another
    /// config; [`MoeError::ShapeMismatch`] for wrong lengths or more tokens than the workspace holds;
    /// [`MoeError::Unsupported`] for buffers of another CUDA context; then each stage's errors, and
    /// [`MoeError::Cuda`].
    pub fn forward(
        &self,
        dev: &Device,
        x: &CudaView<'_, T>,
        num_tokens: usize,
        ws: &mut Workspace<T>,
        out: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        let cfg = self.weights.config();
        check_forward(
            cfg,
            ws.config(),
            ws.max_tokens(),
            x.len(),
            num_tokens,
            out.len(),
        )?;
        dev.check_owns("hidden states", x)?;
        dev.check_owns("MoE output", out)?;
        self.weights.check_device(dev)?;
        ws.check_device(dev)?;
        ws.num_tokens = num_tokens;
        if num_tokens == 0 {
            return Ok(());
        }
        let stream = dev.stream().clone();
        // Each guard orders the forward's launches against other accesses to its buffer and
        // records them when dropped, after the launches.
        let (x_ptr, _x_guard) = x.device_ptr(&stream);
        let (out_ptr, _out_guard) = out.device_ptr_mut(&stream);
        let (weights, _weight_guards) = self.weights.raw(&stream);
        let (buffers, _workspace_guards) = ws.raw_mut(&stream);
        // SAFETY: x and out hold num_tokens * H elements of T (checked above), the weights were
        // validated against this config at upload and the workspace holds the buffers of
        // `WorkspaceSizes` for its config (the layer's, checked) and at least num_tokens tokens
        // (checked), all live buffers of this device's context (checked); the guards held until
        // after this call order the launches on the device's stream against other accesses.
        unsafe {
            forward_buffers(
                dev,
                dev.raw_stream(),
                cfg,
                T::DTYPE,
                &weights,
                x_ptr,
                num_tokens,
                out_ptr,
                &buffers,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_are_checked_against_the_workspace() {
        let cfg = MoeConfig::olmoe_1b_7b();
        let h = cfg.hidden_size;
        assert!(check_forward(&cfg, &cfg, 8, 8 * h, 8, 8 * h).is_ok());
        assert!(check_forward(&cfg, &cfg, 8, 0, 0, 0).is_ok());
        assert!(matches!(
            check_forward(&cfg, &cfg, 8, 9 * h, 9, 9 * h),
            Err(MoeError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            check_forward(&cfg, &cfg, 8, 8 * h - 1, 8, 8 * h),
            Err(MoeError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            check_forward(&cfg, &cfg, 8, 8 * h, 8, 8 * h + 1),
            Err(MoeError::ShapeMismatch { .. })
        ));
        let other = MoeConfig::qwen3_30b_a3b();
        assert!(matches!(
            check_forward(&cfg, &other, 8, 8 * h, 8, 8 * h),
            Err(MoeError::InvalidConfig(_))
        ));
        assert!(matches!(
            check_forward(&cfg, &cfg, usize::MAX, usize::MAX, usize::MAX, 0),
            Err(MoeError::SizeOverflow(_))
        ));
    }
}
