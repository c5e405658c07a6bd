//! The whole MoE block on raw pointers: its weights ([`RawLayerWeights`]), the layout of a
//! caller's workspace ([`LayerWorkspaceLayout`]), the forward ([`layer_forward`]) and the status
//! record ([`read_status`], [`reset_status`]). [`GpuMoeLayer::forward`] runs the same sequence
//! ([`forward_buffers`]) on its own buffers.
//!
//! [`GpuMoeLayer::forward`]: crate::gpu::GpuMoeLayer::forward

use super::{DevicePtr, Stream};
use crate::config::MoeConfig;
use crate::dtype::DType;
use crate::error::{MoeError, Result};
use crate::gpu::abi::MoeStatus;
use crate::gpu::combine::{combine_raw, shared_expert_accumulate_raw};
use crate::gpu::gemm::{grouped_gemm_stored_raw, GemmEpilogue, GroupedGemmShape};
use crate::gpu::permute::{align_region, gather_scaled_raw, permute_raw, RawPermutation};
use crate::gpu::routing::route_raw;
use crate::gpu::status::decode;
use crate::gpu::{Device, DeviceStatus, WorkspaceSizes};

/// A stack of expert matrices `[E, N, K]` on the device (`E = 1` for a shared expert), as the raw
/// layer takes the experts' projections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawMatrices {
    /// Elements of the layer's type.
    Plain(DevicePtr),
    /// FP8 e4m3 codes `[E, N, K]` with `f32` scales `[E, N, ceil(K / group)]`, one per row and group
    /// of `group` columns ([`GemmWeights::Fp8E4M3`](crate::gpu::GemmWeights::Fp8E4M3); the layout of
    /// [`QuantExperts`](crate::quant::QuantExperts)).
    Fp8E4M3 {
        /// The codes.
        codes: DevicePtr,
        /// The scales.
        scales: DevicePtr,
        /// Columns per scale.
        group: usize,
    },
    /// MXFP4 e2m1 codes `[E, N, ceil(K / 2)]` bytes (two to a byte, low nibble first) with e8m0 scale
    /// bytes `[E, N, ceil(K / group)]`, one per row and group of `group` columns
    /// ([`GemmWeights::Mxfp4E2M1`](crate::gpu::GemmWeights::Mxfp4E2M1)).
    Mxfp4E2M1 {
        /// The codes.
        codes: DevicePtr,
        /// The e8m0 scales.
        scales: DevicePtr,
        /// Columns per scale.
        group: usize,
    },
}

/// One shared expert's weights (layouts as in
/// [`SharedExpertWeights`](crate::cpu::layer::SharedExpertWeights)), as device pointers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawSharedExpert {
    /// Fused gate-up projection `[2 * Is, H]` (gate rows first), `[Is, H]` when not gated.
    pub gate_up: RawMatrices,
    /// Down projection `[H, Is]`.
    pub down: RawMatrices,
    /// Sigmoid gate `[H]`, given exactly when the config asks for one.
    pub gate: Option<DevicePtr>,
}

/// gpt-oss's biases (layouts as in [`MoeBiases`](crate::cpu::layer::MoeBiases)), `f32` device
/// pointers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawBiases {
    /// Router bias `[E]`, added to the router logits (before the choice and the weights).
    pub router: DevicePtr,
    /// Routed experts' gate-up bias `[E, 2I]` (gate half first; `[E, I]` when not gated).
    pub gate_up: DevicePtr,
    /// Routed experts' down bias `[E, H]`.
    pub down: DevicePtr,
}

/// One rank's share of an expert-parallel layer (see [`ExpertMap`](crate::ExpertMap)), as the
/// raw forward takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawExpertMap {
    /// `[E]` `i32` on the device: the local id of each global expert, -1 for another rank's
    /// ([`ExpertMap::global_to_local`](crate::ExpertMap::global_to_local)).
    pub table: DevicePtr,
    /// The rank's experts: the expert weights are `[num_local, ..]`.
    pub num_local: usize,
    /// Whether this rank adds the shared experts to its partial sum.
    pub shared_experts: bool,
}

/// An MoE block's weights in the crate's fused layout (see
/// [`MoeWeights`](crate::cpu::layer::MoeWeights)), as device pointers; every matrix in the
/// layer's element type except the `f32` correction bias and biases, and the experts' projections
/// stored as FP8 ([`RawMatrices::Fp8E4M3`]) or MXFP4 ([`RawMatrices::Mxfp4E2M1`]). With an expert map the routed experts' matrices hold the rank's
/// `num_local` experts, in local order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawLayerWeights {
    /// Router `[E, H]`.
    pub router: DevicePtr,
    /// Score correction bias `[E]` (`f32`), given exactly when the routing config uses one.
    pub correction_bias: Option<DevicePtr>,
    /// Routed experts' fused gate-up projections `[E, 2I, H]` (`[E, I, H]` when not gated).
    pub gate_up: RawMatrices,
    /// Routed experts' down projections `[E, H, I]`.
    pub down: RawMatrices,
    /// The shared experts, one per entry of [`MoeConfig::shared_experts`].
    pub shared: Vec<RawSharedExpert>,
    /// For one rank of an expert-parallel layer: which experts are local. The forward's output is
    /// then this rank's partial sum.
    pub expert_map: Option<RawExpertMap>,
    /// The router's and routed experts' biases (gpt-oss; of the rank's local experts with an
    /// expert map), `None` for the families without.
    pub biases: Option<RawBiases>,
}

/// Where each buffer of a layer's workspace lies: byte offsets from its start (each 256-byte
/// aligned), for forwards of up to `max_tokens` tokens; the element counts are those of
/// [`WorkspaceSizes`].
///
/// The status record is always first, so it stays in place whatever the token count; the other
/// offsets depend on the token count the layout was made for. After a
/// [`layer_forward`] of `T` tokens, the layout for `T` tells where its routing decision
/// (`topk_ids` `[T, k]` `i32`, `topk_weights` `[T, k]` `f32`) and router logits (`[T, E]` `f32`)
/// are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerWorkspaceLayout {
    /// The status record ([`STATUS_BYTES`]), at offset 0.
    pub status: usize,
    /// Router logits `[Tm, E]`, `f32`.
    pub router_logits: usize,
    /// Chosen experts `[Tm, k]`, `i32`.
    pub topk_ids: usize,
    /// Routing weights `[Tm, k]`, `f32`.
    pub topk_weights: usize,
    /// The permutation's buffers ([`RawPermutation::carve`]).
    pub permutation: usize,
    /// Permuted rows `[Tm * k, H]`, the layer's element type.
    pub rows: usize,
    /// Activated intermediate `[Tm * k, I]`, the layer's element type.
    pub act: usize,
    /// Shared-expert intermediate `[Tm, Is]`, the layer's element type.
    pub shared_mid: usize,
    /// Shared-expert sum `[Tm, H]`, `f32`.
    pub shared_sum: usize,
    /// One shared expert's output `[Tm, H]`, `f32`.
    pub shared_part: usize,
    /// Total bytes.
    pub bytes: usize,
    sizes: WorkspaceSizes,
    /// Segments of the permutation: the experts, or a rank's local experts.
    segments: usize,
}

/// Device bytes of one status record.
pub const STATUS_BYTES: usize = DeviceStatus::BYTES;

impl LayerWorkspaceLayout {
    /// The layout for `cfg` (validated), a layer in `dtype` (`bf16` or `f16`) and forwards of up to
    /// `max_tokens` tokens; `local_experts` is the rank's expert count for one rank of an
    /// expert-parallel layer ([`RawExpertMap::num_local`]), `None` otherwise.
    pub fn new(
        cfg: &MoeConfig,
        dtype: DType,
        max_tokens: usize,
        local_experts: Option<usize>,
    ) -> Result<Self> {
        check_dtype(dtype)?;
        let sizes = WorkspaceSizes::new(cfg, max_tokens)?;
        let overflow = || MoeError::SizeOverflow("layer workspace bytes".into());
        let elem = dtype.size_in_bytes();
        let mut end = 0usize;
        let mut region = |bytes: Option<usize>| -> Result<usize> {
            let start = align_region(end)?;
            end = start
                .checked_add(bytes.ok_or_else(overflow)?)
                .ok_or_else(overflow)?;
            Ok(start)
        };
        let status = region(Some(STATUS_BYTES))?;
        let router_logits = region(sizes.logits.checked_mul(4))?;
        let topk_ids = region(sizes.topk.checked_mul(4))?;
        let topk_weights = region(sizes.topk.checked_mul(4))?;
        let segments = local_experts.unwrap_or(cfg.routing.num_experts);
        let permutation = region(Some(RawPermutation::bytes(
            max_tokens,
            cfg.routing.top_k,
            segments,
            1,
        )?))?;
        let rows = region(sizes.rows.checked_mul(elem))?;
        let act = region(sizes.act.checked_mul(elem))?;
        let shared_mid = region(sizes.shared_mid.checked_mul(elem))?;
        let shared_sum = region(sizes.shared_sum.checked_mul(4))?;
        let shared_part = region(sizes.shared_part.checked_mul(4))?;
        Ok(LayerWorkspaceLayout {
            status,
            router_logits,
            topk_ids,
            topk_weights,
            permutation,
            rows,
            act,
            shared_mid,
            shared_sum,
            shared_part,
            bytes: end,
            sizes,
            segments,
        })
    }

    /// The buffers of this layout in the workspace at `base`.
    fn buffers(&self, base: DevicePtr, cfg: &MoeConfig) -> Result<LayerBuffers> {
        let at = |offset: usize| base + offset as u64;
        Ok(LayerBuffers {
            logits: at(self.router_logits),
            topk_ids: at(self.topk_ids),
            topk_weights: at(self.topk_weights),
            perm: RawPermutation::carve(
                at(self.permutation),
                self.sizes.max_tokens,
                cfg.routing.top_k,
                self.segments,
                1,
            )?,
            rows: at(self.rows),
            act: at(self.act),
            shared_mid: at(self.shared_mid),
            shared_sum: at(self.shared_sum),
            shared_part: at(self.shared_part),
            status: at(self.status),
        })
    }
}

/// The device bytes a [`layer_forward`] of up to `max_tokens` tokens needs as its workspace:
/// [`LayerWorkspaceLayout::new`]`(cfg, dtype, max_tokens, local_experts).bytes`.
pub fn layer_workspace_bytes(
    cfg: &MoeConfig,
    dtype: DType,
    max_tokens: usize,
    local_experts: Option<usize>,
) -> Result<usize> {
    Ok(LayerWorkspaceLayout::new(cfg, dtype, max_tokens, local_experts)?.bytes)
}

/// The layer's element type must be one the grouped GEMM takes.
fn check_dtype(dtype: DType) -> Result<()> {
    match dtype {
        DType::BF16 | DType::F16 => Ok(()),
        DType::F32 => Err(MoeError::Unsupported(
            "the GPU layer runs in bf16 or f16 (its GEMMs run on tensor cores); use the CPU path \
             for f32"
                .into(),
        )),
    }
}

/// The forward pass on raw pointers: `out` `[num_tokens, H]` for the hidden states `x`
/// `[num_tokens, H]`, both of `dtype` (`bf16` or `f16`), with the layer's `weights` for `cfg`, in
/// the caller's `workspace` of `workspace_bytes` bytes (at least
/// [`layer_workspace_bytes`]`(cfg, dtype, num_tokens, local experts)`, 256-byte aligned: any
/// `cuMemAlloc` allocation is). `num_tokens = 0` launches nothing and needs no workspace. With
/// `weights.expert_map`, `out` receives this rank's partial sum (see
/// [`ExpertMap`](crate::ExpertMap)).
///
/// The launches of [`GpuMoeLayer`](crate::gpu::GpuMoeLayer)'s forward, in order, on `stream`: no
/// allocation, no host synchronisation, so it can be captured in a CUDA graph (load the kernels
/// first with one forward outside the capture). Device-side findings (non-finite logits,
/// out-of-range ids) go to the status record at the start of the workspace: zero it once with
/// [`reset_status`] before the first forward and read it with [`read_status`].
///
/// Errors, before anything is enqueued: [`MoeError::InvalidConfig`] for an invalid config or
/// weights that do not match it (a bias or a shared gate given or missing);
/// [`MoeError::ShapeMismatch`] for a workspace smaller than needed; [`MoeError::Unsupported`] for
/// `f32` or sizes past the kernels' limits; [`MoeError::SizeOverflow`]; then [`MoeError::Cuda`].
///
/// # Safety
///
/// `x` and `out` must hold `num_tokens * H` elements of `dtype`, every weight pointer the elements
/// its field lists for `cfg`, and `workspace` `workspace_bytes` bytes, all device allocations of
/// `dev`'s context valid until the launches complete; `out` and the workspace must not be accessed
/// by other work meanwhile; `stream` must be a stream of `dev`'s context.
#[allow(clippy::too_many_arguments)]
pub unsafe fn layer_forward(
    dev: &Device,
    stream: Stream,
    cfg: &MoeConfig,
    dtype: DType,
    weights: &RawLayerWeights,
    x: DevicePtr,
    num_tokens: usize,
    out: DevicePtr,
    workspace: DevicePtr,
    workspace_bytes: usize,
) -> Result<()> {
    let local = weights.expert_map.map(|m| m.num_local);
    let layout = LayerWorkspaceLayout::new(cfg, dtype, num_tokens, local)?;
    if num_tokens == 0 {
        // `forward_buffers` validates the weights; with no tokens they are checked here alone.
        return check_weights(cfg, weights);
    }
    if layout.bytes > workspace_bytes {
        return Err(MoeError::shape(
            "layer workspace",
            format!("at least {} bytes for {num_tokens} tokens", layout.bytes),
            format!("{workspace_bytes} bytes"),
        ));
    }
    let buffers = layout.buffers(workspace, cfg)?;
    // SAFETY: the caller's contract, and the workspace regions of `layout` hold the element counts
    // of `WorkspaceSizes` for `num_tokens` tokens, inside the `workspace_bytes` just checked.
    unsafe {
        forward_buffers(
            dev, stream, cfg, dtype, weights, x, num_tokens, out, &buffers,
        )
    }
}

/// Zero the status record at `status` (the start of a layer workspace, or any
/// [`STATUS_BYTES`]-byte device buffer): an asynchronous memset on `stream`.
///
/// # Safety
///
/// `status` must be a device allocation of `dev`'s context of at least [`STATUS_BYTES`] bytes,
/// not accessed by other work while the memset runs; `stream` must be a stream of that context.
pub unsafe fn reset_status(dev: &Device, stream: Stream, status: DevicePtr) -> Result<()> {
    dev.context().bind_to_thread()?;
    // SAFETY: the caller's contract.
    unsafe { cudarc::driver::result::memset_d8_async(status, 0, STATUS_BYTES, stream.cast()) }?;
    Ok(())
}

/// Wait for `stream`, read the status record at `status` and turn it into an error, as
/// [`DeviceStatus::check`] does. This synchronises the host with the device: call it outside the
/// forward pass.
///
/// # Safety
///
/// `status` must be a device allocation of `dev`'s context of at least [`STATUS_BYTES`] bytes
/// that the launches on `stream` wrote; `stream` must be a stream of that context.
pub unsafe fn read_status(dev: &Device, stream: Stream, status: DevicePtr) -> Result<()> {
    dev.context().bind_to_thread()?;
    let mut record = [MoeStatus::default()];
    // SAFETY: the caller's contract; `record` is one plain `#[repr(C)]` struct of STATUS_BYTES
    // bytes, written by the synchronous copy after the stream's work completed.
    unsafe {
        cudarc::driver::result::stream::synchronize(stream.cast())?;
        cudarc::driver::result::memcpy_dtoh_sync(&mut record, status)?;
    }
    decode(&record[0])
}

/// Every intermediate buffer of one forward, as device pointers (a [`Workspace`]'s buffers, or the
/// regions of a [`LayerWorkspaceLayout`]).
///
/// [`Workspace`]: crate::gpu::Workspace
#[derive(Clone, Copy, Debug)]
pub(crate) struct LayerBuffers {
    pub(crate) logits: DevicePtr,
    pub(crate) topk_ids: DevicePtr,
    pub(crate) topk_weights: DevicePtr,
    pub(crate) perm: RawPermutation,
    pub(crate) rows: DevicePtr,
    pub(crate) act: DevicePtr,
    pub(crate) shared_mid: DevicePtr,
    pub(crate) shared_sum: DevicePtr,
    pub(crate) shared_part: DevicePtr,
    pub(crate) status: DevicePtr,
}

/// The forward's launches on `buffers` (the sequence documented on
/// [`GpuMoeLayer`](crate::gpu::GpuMoeLayer)).
///
/// # Safety
///
/// As [`layer_forward`], with `buffers` holding at least the element counts of
/// [`WorkspaceSizes`]`::new(cfg, num_tokens)` (and a permutation for `num_tokens` tokens).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn forward_buffers(
    dev: &Device,
    stream: Stream,
    cfg: &MoeConfig,
    dtype: DType,
    weights: &RawLayerWeights,
    x: DevicePtr,
    num_tokens: usize,
    out: DevicePtr,
    b: &LayerBuffers,
) -> Result<()> {
    check_dtype(dtype)?;
    check_weights(cfg, weights)?;
    // Validates the config and every product below.
    WorkspaceSizes::new(cfg, num_tokens)?;
    if num_tokens == 0 {
        return Ok(());
    }
    let (h, i, e_global) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
    );
    // The routed experts this layer runs: all, or the rank's local ones.
    let map = weights.expert_map;
    let e = map.map_or(e_global, |m| m.num_local);
    let shared_experts = map.is_none_or(|m| m.shared_experts);
    if b.perm.num_experts != e {
        return Err(MoeError::InvalidConfig(format!(
            "the workspace's permutation was made for {} experts, the layer runs {e}",
            b.perm.num_experts
        )));
    }
    let rows = num_tokens * cfg.routing.top_k;
    let f32s = DType::F32;
    // SAFETY (every launch below): the caller's contract gives each buffer the elements its stage
    // needs for `num_tokens` tokens; the stages are ordered by `stream`.
    unsafe {
        // 1. Routing: the router GEMM into f32 logits (with the router bias, if any), then top-k.
        let router = GroupedGemmShape {
            rows: num_tokens,
            n: e_global,
            k: h,
            num_experts: 1,
        };
        let biases = weights.biases;
        grouped_gemm_stored_raw(
            dev,
            stream,
            dtype,
            f32s,
            x,
            None,
            RawMatrices::Plain(weights.router),
            biases.map(|b| b.router),
            router,
            GemmEpilogue::Store,
            b.logits,
        )?;
        route_raw(
            dev,
            stream,
            &cfg.routing,
            f32s,
            b.logits,
            num_tokens,
            weights.correction_bias,
            b.topk_ids,
            b.topk_weights,
            b.status,
        )?;

        // 2. Permutation and gather (no padding: the GEMM takes any segment boundaries); with
        // input scaling the gather multiplies each row by its routing weight, and the combine
        // below sums with weight 1 (a null weights pointer).
        let table = map.map(|m| m.table);
        let ids = b.topk_ids;
        permute_raw(
            dev, stream, ids, num_tokens, e_global, table, &b.perm, b.status,
        )?;
        let scale_input = cfg.routing.scale_input;
        let row_scale = scale_input.then_some(b.topk_weights);
        gather_scaled_raw(
            dev, stream, dtype, x, h, num_tokens, &b.perm, row_scale, b.rows,
        )?;

        // 3-4. Routed experts: up projection with the activation, then down projection back into
        // the permuted rows (the gathered activations are not needed any more), each with its
        // bias, if any, added before the activation and the rounding. A rank without experts has
        // no rows.
        let offsets = Some(b.perm.expert_offsets);
        let act = GemmEpilogue::Activation(cfg.activation);
        let store = GemmEpilogue::Store;
        if e > 0 {
            let up = GroupedGemmShape {
                rows,
                n: cfg.activation.up_rows(i),
                k: h,
                num_experts: e,
            };
            grouped_gemm_stored_raw(
                dev,
                stream,
                dtype,
                dtype,
                b.rows,
                offsets,
                weights.gate_up,
                biases.map(|b| b.gate_up),
                up,
                act,
                b.act,
            )?;
            let down = GroupedGemmShape {
                rows,
                n: h,
                k: i,
                num_experts: e,
            };
            grouped_gemm_stored_raw(
                dev,
                stream,
                dtype,
                dtype,
                b.act,
                offsets,
                weights.down,
                biases.map(|b| b.down),
                down,
                store,
                b.rows,
            )?;
        }

        // 5. Shared experts, summed in f32: for each, the up GEMM with the activation, the down
        // GEMM in f32 (into the sum directly for a single ungated expert, else into the part
        // buffer, then gated and accumulated).
        let direct = !crate::gpu::workspace::needs_shared_part(cfg);
        let shared_weights = if shared_experts {
            &weights.shared[..]
        } else {
            &[]
        };
        for (n, (sw, sc)) in shared_weights.iter().zip(&cfg.shared_experts).enumerate() {
            let is = sc.intermediate_size;
            let up = GroupedGemmShape {
                rows: num_tokens,
                n: cfg.activation.up_rows(is),
                k: h,
                num_experts: 1,
            };
            let (x_, w_, mid) = (x, sw.gate_up, b.shared_mid);
            grouped_gemm_stored_raw(dev, stream, dtype, dtype, x_, None, w_, None, up, act, mid)?;
            let down = GroupedGemmShape {
                rows: num_tokens,
                n: h,
                k: is,
                num_experts: 1,
            };
            let part = if direct { b.shared_sum } else { b.shared_part };
            grouped_gemm_stored_raw(
                dev, stream, dtype, f32s, mid, None, sw.down, None, down, store, part,
            )?;
            if !direct {
                shared_expert_accumulate_raw(
                    dev,
                    stream,
                    dtype,
                    x,
                    num_tokens,
                    h,
                    sw.gate,
                    b.shared_part,
                    n > 0,
                    b.shared_sum,
                )?;
            }
        }

        // 6. Combine, rounded once to the layer's type.
        let shared = (shared_experts && !cfg.shared_experts.is_empty()).then_some(b.shared_sum);
        let types = (dtype, shared.map(|_| f32s), dtype);
        combine_raw(
            dev,
            stream,
            types,
            b.rows,
            h,
            num_tokens,
            &b.perm,
            if scale_input { 0 } else { b.topk_weights },
            shared,
            out,
        )
    }
}

/// The optional weights are given exactly when the config asks for them, one set per shared
/// expert.
fn check_weights(cfg: &MoeConfig, w: &RawLayerWeights) -> Result<()> {
    if w.correction_bias.is_some() != cfg.routing.correction_bias {
        return Err(MoeError::InvalidConfig(format!(
            "the correction bias must be given exactly when the routing config uses one ({})",
            cfg.routing.correction_bias
        )));
    }
    if w.shared.len() != cfg.shared_experts.len() {
        return Err(MoeError::InvalidConfig(format!(
            "{} shared expert weight sets for {} shared experts",
            w.shared.len(),
            cfg.shared_experts.len()
        )));
    }
    for (n, (s, c)) in w.shared.iter().zip(&cfg.shared_experts).enumerate() {
        if s.gate.is_some() != c.sigmoid_gate {
            return Err(MoeError::InvalidConfig(format!(
                "shared expert {n}: the sigmoid gate must be given exactly when its config has one"
            )));
        }
    }
    if let Some(m) = w.expert_map {
        if m.num_local > cfg.routing.num_experts {
            return Err(MoeError::InvalidConfig(format!(
                "an expert map with {} local experts for a layer of {}",
                m.num_local, cfg.routing.num_experts
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_regions_are_aligned_disjoint_and_sized() {
        for cfg in [
            MoeConfig::mixtral_8x7b(),
            MoeConfig::qwen2_moe_a2_7b(),
            MoeConfig::deepseek_v3(),
        ] {
            let (k, e) = (cfg.routing.top_k, cfg.routing.num_experts);
            for t in [0usize, 1, 7, 1000] {
                let l = LayerWorkspaceLayout::new(&cfg, DType::F16, t, None).unwrap();
                let s = WorkspaceSizes::new(&cfg, t).unwrap();
                let perm_bytes = RawPermutation::bytes(t, k, e, 1).unwrap();
                let regions = [
                    (l.status, STATUS_BYTES),
                    (l.router_logits, s.logits * 4),
                    (l.topk_ids, s.topk * 4),
                    (l.topk_weights, s.topk * 4),
                    (l.permutation, perm_bytes),
                    (l.rows, s.rows * 2),
                    (l.act, s.act * 2),
                    (l.shared_mid, s.shared_mid * 2),
                    (l.shared_sum, s.shared_sum * 4),
                    (l.shared_part, s.shared_part * 4),
                ];
                assert_eq!(l.status, 0);
                let mut end = 0;
                for (start, bytes) in regions {
                    assert_eq!(start % 256, 0, "{cfg:?} T = {t}");
                    assert!(start >= end, "{cfg:?} T = {t}: regions overlap");
                    end = start + bytes;
                }
                assert_eq!(end, l.bytes);
                assert_eq!(
                    layer_workspace_bytes(&cfg, DType::BF16, t, None).unwrap(),
                    l.bytes
                );
                // The permutation's own regions lie inside its region, in order.
                let p = RawPermutation::carve(1 << 20, t, k, e, 1).unwrap();
                let starts = [
                    p.expert_offsets,
                    p.expert_counts,
                    p.row_source,
                    p.slot_row,
                    p.scratch,
                ];
                assert!(starts.windows(2).all(|w| w[0] < w[1]));
                assert!(p.scratch < (1 << 20) + perm_bytes as u64);
            }
        }
    }

    #[test]
    fn workspace_layouts_reject_f32_and_overflow() {
        let cfg = MoeConfig::olmoe_1b_7b();
        assert!(matches!(
            LayerWorkspaceLayout::new(&cfg, DType::F32, 4, None),
            Err(MoeError::Unsupported(_))
        ));
        assert!(matches!(
            layer_workspace_bytes(&cfg, DType::BF16, usize::MAX / 2, None),
            Err(MoeError::SizeOverflow(_))
        ));
        let mut bad = cfg.clone();
        bad.routing.top_k = bad.routing.num_experts + 1;
        assert!(matches!(
            layer_workspace_bytes(&bad, DType::BF16, 4, None),
            Err(MoeError::InvalidConfig(_))
        ));
    }
}
