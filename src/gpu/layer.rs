//! The whole MoE block on the GPU: the device twin of [`CpuMoeLayer`](crate::cpu::layer::CpuMoeLayer)
//! (the stage sequence is documented on [`GpuMoeLayer`]).

use super::combine::{combine, shared_expert_accumulate};
use super::gemm::{grouped_gemm, GemmElement, GemmEpilogue, GemmOutput, GroupedGemmShape};
use super::permute::{gather, permute};
use super::routing::route_from_hidden;
use super::weights::GpuMoeWeights;
use super::workspace::{needs_shared_part, Workspace};
use super::Device;
use crate::config::MoeConfig;
use crate::cpu::layer::MoeWeights;
use crate::error::{MoeError, Result};
use crate::view::checked_mul;
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, ValidAsZeroBits};

/// A validated MoE block on the GPU, for activations and weights of type `T` (`bf16` or `f16`).
///
/// A forward is a fixed sequence of asynchronous launches on [`Device::stream`], with no host
/// synchronisation and no allocation (every intermediate lives in a [`Workspace`]), so it can be
/// captured in a CUDA graph and replayed:
///
/// 1. router GEMM `x @ W_router^T` into `f32` logits, and routing ([`route_from_hidden`]);
/// 2. permutation ([`permute`]) and gather ([`gather`]) of the hidden states by expert;
/// 3. grouped up-projection GEMM with the activation fused ([`grouped_gemm`]), intermediate in `T`;
/// 4. grouped down-projection GEMM, output in `T`;
/// 5. shared experts: up GEMM with the activation, down GEMM in `f32`, optional per-token sigmoid
///    gate, summed in `f32` ([`shared_expert_accumulate`]);
/// 6. [`combine`]: weighted sum in slot order plus the shared sum, rounded once to `T`.
///
/// The rounding points are those of [`cpu::layer`](crate::cpu::layer): the activated intermediate
/// and the down projection in `T`, the shared sum and every accumulator in `f32`, the output in `T`.
#[derive(Debug)]
pub struct GpuMoeLayer<T> {
    weights: GpuMoeWeights<T>,
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

impl<T: GemmElement + GemmOutput<T>> GpuMoeLayer<T>
where
    f32: GemmOutput<T>,
{
    /// A layer from uploaded weights.
    pub fn new(weights: GpuMoeWeights<T>) -> Self {
        GpuMoeLayer { weights }
    }

    /// Validate and upload `weights` for `config` (see [`GpuMoeWeights::upload`]).
    pub fn upload(dev: &Device, config: &MoeConfig, weights: &MoeWeights<T>) -> Result<Self> {
        Ok(Self::new(GpuMoeWeights::upload(dev, config, weights)?))
    }

    /// The configuration.
    pub fn config(&self) -> &MoeConfig {
        self.weights.config()
    }

    /// The weights.
    pub fn weights(&self) -> &GpuMoeWeights<T> {
        &self.weights
    }

    /// A workspace for forwards of up to `max_tokens` tokens of this layer.
    pub fn workspace(&self, dev: &Device, max_tokens: usize) -> Result<Workspace<T>>
    where
        T: ValidAsZeroBits,
    {
        Workspace::new(dev, self.config(), max_tokens)
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
        let (h, i, e, k) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.routing.num_experts,
            cfg.routing.top_k,
        );
        // All products below are bounded by the workspace sizes, which were computed with checks.
        let rows = num_tokens * k;
        let Workspace {
            logits,
            topk_ids,
            topk_weights,
            perm,
            rows: row_buf,
            act,
            shared_mid,
            shared_sum,
            shared_part,
            status,
            ..
        } = ws;

        // 1. Routing.
        let mut ids = topk_ids.slice_mut(..rows);
        let mut weights = topk_weights.slice_mut(..rows);
        let bias = self.weights.correction_bias();
        route_from_hidden(
            dev,
            &cfg.routing,
            x,
            num_tokens,
            h,
            &self.weights.router(),
            bias.as_ref(),
            &mut logits.slice_mut(..num_tokens * e),
            &mut ids,
            &mut weights,
            status,
        )?;

        // 2. Permutation and gather (no padding: the GEMM takes any segment boundaries).
        permute(dev, &ids.as_view(), num_tokens, e, 1, perm, status)?;
        let mut permuted = row_buf.slice_mut(..rows * h);
        gather(dev, x, h, perm, &mut permuted)?;

        // 3-4. Routed experts: up projection with the activation, then down projection back into
        // the permuted rows (the gathered activations are not needed any more).
        let offsets = perm.expert_offsets();
        let mut mid = act.slice_mut(..rows * i);
        grouped_gemm::<T, T>(
            dev,
            &permuted.as_view(),
            Some(&offsets),
            &self.weights.gate_up(),
            GroupedGemmShape {
                rows,
                n: cfg.activation.up_rows(i),
                k: h,
                num_experts: e,
            },
            GemmEpilogue::Activation(cfg.activation),
            &mut mid,
        )?;
        grouped_gemm::<T, T>(
            dev,
            &mid.as_view(),
            Some(&offsets),
            &self.weights.down(),
            GroupedGemmShape {
                rows,
                n: h,
                k: i,
                num_experts: e,
            },
            GemmEpilogue::Store,
            &mut permuted,
        )?;

        // 5. Shared experts, summed in f32.
        let token_elems = num_tokens * h;
        self.shared_experts(dev, x, num_tokens, shared_mid, shared_part, shared_sum)?;

        // 6. Combine.
        let shared = (!cfg.shared_experts.is_empty()).then(|| shared_sum.slice(..token_elems));
        combine::<T, f32, T>(
            dev,
            &permuted.as_view(),
            h,
            perm,
            &weights.as_view(),
            shared.as_ref(),
            out,
        )
    }
}

impl<T: GemmElement + GemmOutput<T>> GpuMoeLayer<T>
where
    f32: GemmOutput<T>,
{
    /// The shared experts' summed output `[T, H]` into `sum`: for each, the up GEMM with the
    /// activation into `mid`, the down GEMM in `f32` (into `sum` directly for a single ungated
    /// expert, else into `part`, then gated and accumulated).
    fn shared_experts(
        &self,
        dev: &Device,
        x: &CudaView<'_, T>,
        num_tokens: usize,
        mid: &mut CudaSlice<T>,
        part: &mut CudaSlice<f32>,
        sum: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let cfg = self.weights.config();
        let h = cfg.hidden_size;
        let token_elems = num_tokens * h;
        let direct = !needs_shared_part(cfg);
        for (n, (sw, sc)) in self
            .weights
            .shared()
            .iter()
            .zip(&cfg.shared_experts)
            .enumerate()
        {
            let is = sc.intermediate_size;
            let mut smid = mid.slice_mut(..num_tokens * is);
            grouped_gemm::<T, T>(
                dev,
                x,
                None,
                &sw.gate_up(),
                GroupedGemmShape {
                    rows: num_tokens,
                    n: cfg.activation.up_rows(is),
                    k: h,
                    num_experts: 1,
                },
                GemmEpilogue::Activation(cfg.activation),
                &mut smid,
            )?;
            let down_shape = GroupedGemmShape {
                rows: num_tokens,
                n: h,
                k: is,
                num_experts: 1,
            };
            let down_out = if direct { &mut *sum } else { &mut *part };
            grouped_gemm::<T, f32>(
                dev,
                &smid.as_view(),
                None,
                &sw.down(),
                down_shape,
                GemmEpilogue::Store,
                &mut down_out.slice_mut(..token_elems),
            )?;
            if !direct {
                shared_expert_accumulate(
                    dev,
                    x,
                    num_tokens,
                    h,
                    sw.gate().as_ref(),
                    &part.slice(..token_elems),
                    n > 0,
                    &mut sum.slice_mut(..token_elems),
                )?;
            }
        }
        Ok(())
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
