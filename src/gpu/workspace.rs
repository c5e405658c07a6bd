//! The device scratch memory of a forward pass, allocated once and reused, so that a steady-state
//! [`GpuMoeLayer::forward`](super::GpuMoeLayer::forward) allocates nothing (and can be captured in
//! a CUDA graph).

use super::permute::GpuPermutation;
use super::{Device, DeviceStatus, GpuElement};
use crate::config::MoeConfig;
use crate::error::{MoeError, Result};
use crate::raw::LayerBuffers;
use crate::view::checked_mul;
use cudarc::driver::{CudaSlice, CudaStream, CudaView, DevicePtrMut, SyncOnDrop, ValidAsZeroBits};

/// Element counts of every workspace buffer for a config and a token capacity `Tm` (a pure
/// function: size a workspace without a GPU).
///
/// With `k` experts per token, `E` experts, width `H`, intermediate `I` and `Is` the largest shared
/// expert's intermediate size:
///
/// | buffer | elements | type |
/// |---|---|---|
/// | router logits | `Tm * E` | `f32` |
/// | top-k ids, weights | `Tm * k` each | `i32`, `f32` |
/// | permuted rows (the gathered activations, then the experts' down outputs) | `Tm * k * H` | `T` |
/// | activated intermediate | `Tm * k * I` | `T` |
/// | shared-expert intermediate | `Tm * Is` | `T` |
/// | shared-expert sum | `Tm * H` (with shared experts) | `f32` |
/// | one shared expert's output | `Tm * H` (with a gated or a second shared expert) | `f32` |
/// | permutation maps | see [`GpuPermutation::bytes`]: `(2E + 1 + 2 Tm k)` `i64` + `O(E)` counters | |
///
/// So about `Tm * k * (H + I)` elements of `T`, plus `Tm * (E + 2k)` words, plus the shared experts'
/// `Tm * (Is + H)` (or `Tm * (Is + 2H)`), plus `O(E)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkspaceSizes {
    /// Token capacity `Tm`.
    pub max_tokens: usize,
    /// Router logits, `Tm * E`.
    pub logits: usize,
    /// Top-k ids and weights, `Tm * k` each.
    pub topk: usize,
    /// Permuted rows, `Tm * k * H`.
    pub rows: usize,
    /// Activated intermediate, `Tm * k * I`.
    pub act: usize,
    /// Shared-expert intermediate, `Tm * Is` (0 without shared experts).
    pub shared_mid: usize,
    /// Shared-expert sum, `Tm * H` (0 without shared experts).
    pub shared_sum: usize,
    /// One shared expert's output, `Tm * H` when some shared expert is gated or there are several
    /// (otherwise the only one writes the sum directly), else 0.
    pub shared_part: usize,
    /// The permutation's buffers, in bytes.
    pub permutation_bytes: usize,
}

impl WorkspaceSizes {
    /// The sizes for `cfg` (validated) and up to `max_tokens` tokens per forward.
    pub fn new(cfg: &MoeConfig, max_tokens: usize) -> Result<Self> {
        cfg.validate()?;
        let (h, i, e, k) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.routing.num_experts,
            cfg.routing.top_k,
        );
        let slots = checked_mul(max_tokens, k, "workspace rows")?;
        let shared_is = cfg
            .shared_experts
            .iter()
            .map(|s| s.intermediate_size)
            .max()
            .unwrap_or(0);
        let has_shared = !cfg.shared_experts.is_empty();
        let token_rows = checked_mul(max_tokens, h, "workspace shared sum")?;
        Ok(WorkspaceSizes {
            max_tokens,
            logits: checked_mul(max_tokens, e, "workspace router logits")?,
            topk: slots,
            rows: checked_mul(slots, h, "workspace permuted rows")?,
            act: checked_mul(slots, i, "workspace intermediate")?,
            shared_mid: checked_mul(max_tokens, shared_is, "workspace shared intermediate")?,
            shared_sum: if has_shared { token_rows } else { 0 },
            shared_part: if needs_shared_part(cfg) {
                token_rows
            } else {
                0
            },
            permutation_bytes: GpuPermutation::bytes(max_tokens, k, e, 1)?,
        })
    }

    /// Total device bytes with elements of `elem_bytes` bytes (2 for `bf16`/`f16`).
    pub fn bytes(&self, elem_bytes: usize) -> Result<usize> {
        let overflow = || MoeError::SizeOverflow("workspace bytes".into());
        let elems = [self.rows, self.act, self.shared_mid]
            .iter()
            .try_fold(0usize, |acc, &n| acc.checked_add(n))
            .and_then(|n| n.checked_mul(elem_bytes))
            .ok_or_else(overflow)?;
        let words = [
            self.logits,
            self.topk,
            self.topk,
            self.shared_sum,
            self.shared_part,
        ]
        .iter()
        .try_fold(0usize, |acc, &n| acc.checked_add(n))
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(overflow)?;
        [elems, words, self.permutation_bytes, DeviceStatus::BYTES]
            .iter()
            .try_fold(0usize, |acc, &n| acc.checked_add(n))
            .ok_or_else(overflow)
    }
}

/// Whether the shared experts need a buffer for one expert's output besides the sum: when one is
/// gated (its output is scaled on the way into the sum) or there are several.
pub(crate) fn needs_shared_part(cfg: &MoeConfig) -> bool {
    cfg.shared_experts.len() > 1 || cfg.shared_experts.iter().any(|s| s.sigmoid_gate)
}

/// Every intermediate buffer of a forward, for one config and up to `max_tokens` tokens; reuse it
/// across forwards (sizes: [`WorkspaceSizes`]). It also keeps the last forward's routing decision
/// ([`topk_ids`](Self::topk_ids), [`topk_weights`](Self::topk_weights)), its router logits and
/// permutation, and the [`DeviceStatus`] every forward records device-side errors in.
#[derive(Debug)]
pub struct Workspace<T> {
    config: MoeConfig,
    sizes: WorkspaceSizes,
    pub(crate) num_tokens: usize,
    pub(crate) logits: CudaSlice<f32>,
    pub(crate) topk_ids: CudaSlice<i32>,
    pub(crate) topk_weights: CudaSlice<f32>,
    pub(crate) perm: GpuPermutation,
    pub(crate) rows: CudaSlice<T>,
    pub(crate) act: CudaSlice<T>,
    pub(crate) shared_mid: CudaSlice<T>,
    pub(crate) shared_sum: CudaSlice<f32>,
    pub(crate) shared_part: CudaSlice<f32>,
    pub(crate) status: DeviceStatus,
}

impl<T: GpuElement + ValidAsZeroBits> Workspace<T> {
    /// Allocate (zeroed) the buffers for forwards of up to `max_tokens` tokens of `cfg` on `dev`.
    pub fn new(dev: &Device, cfg: &MoeConfig, max_tokens: usize) -> Result<Self> {
        Self::with_segments(dev, cfg, max_tokens, cfg.routing.num_experts)
    }

    /// [`Workspace::new`] with a permutation of `segments` experts: all of them, or one rank's
    /// local ones.
    pub(crate) fn with_segments(
        dev: &Device,
        cfg: &MoeConfig,
        max_tokens: usize,
        segments: usize,
    ) -> Result<Self> {
        let sizes = WorkspaceSizes::new(cfg, max_tokens)?;
        let stream = dev.stream();
        // Every buffer gets at least one element, so that a view of it always exists.
        Ok(Workspace {
            config: cfg.clone(),
            sizes,
            num_tokens: 0,
            logits: stream.alloc_zeros(sizes.logits.max(1))?,
            topk_ids: stream.alloc_zeros(sizes.topk.max(1))?,
            topk_weights: stream.alloc_zeros(sizes.topk.max(1))?,
            perm: GpuPermutation::new(dev, max_tokens, cfg.routing.top_k, segments, 1)?,
            rows: stream.alloc_zeros(sizes.rows.max(1))?,
            act: stream.alloc_zeros(sizes.act.max(1))?,
            shared_mid: stream.alloc_zeros(sizes.shared_mid.max(1))?,
            shared_sum: stream.alloc_zeros(sizes.shared_sum.max(1))?,
            shared_part: stream.alloc_zeros(sizes.shared_part.max(1))?,
            status: DeviceStatus::new(dev)?,
        })
    }
}

impl<T> Workspace<T> {
    /// The config the workspace was made for.
    pub fn config(&self) -> &MoeConfig {
        &self.config
    }

    /// Its buffer sizes.
    pub fn sizes(&self) -> &WorkspaceSizes {
        &self.sizes
    }

    /// The most tokens one forward with this workspace takes.
    pub fn max_tokens(&self) -> usize {
        self.sizes.max_tokens
    }

    /// Tokens of the last forward (0 before the first).
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }

    /// The last forward's router logits `[T, E]`.
    pub fn router_logits(&self) -> CudaView<'_, f32> {
        self.logits
            .slice(..self.num_tokens * self.config.routing.num_experts)
    }

    /// The last forward's chosen experts `[T, k]`, best first.
    pub fn topk_ids(&self) -> CudaView<'_, i32> {
        self.topk_ids
            .slice(..self.num_tokens * self.config.routing.top_k)
    }

    /// The last forward's routing weights `[T, k]`.
    pub fn topk_weights(&self) -> CudaView<'_, f32> {
        self.topk_weights
            .slice(..self.num_tokens * self.config.routing.top_k)
    }

    /// The last forward's permutation.
    pub fn permutation(&self) -> &GpuPermutation {
        &self.perm
    }

    /// The device-side error record of the forwards (sticky until reset).
    pub fn status(&self) -> &DeviceStatus {
        &self.status
    }

    /// The error record, to [`reset`](DeviceStatus::reset) it.
    pub fn status_mut(&mut self) -> &mut DeviceStatus {
        &mut self.status
    }

    /// The buffers as raw pointers for a forward, with the guards that order `stream` against
    /// other accesses to them until they are dropped.
    pub(crate) fn raw_mut<'a>(
        &'a mut self,
        stream: &'a CudaStream,
    ) -> (LayerBuffers, Vec<SyncOnDrop<'a>>) {
        let (perm, perm_guards) = self.perm.raw_mut(stream);
        let mut guards: Vec<SyncOnDrop<'a>> = perm_guards.into_iter().collect();
        let mut ptr = |(p, g): (u64, SyncOnDrop<'a>)| {
            guards.push(g);
            p
        };
        let buffers = LayerBuffers {
            logits: ptr(self.logits.device_ptr_mut(stream)),
            topk_ids: ptr(self.topk_ids.device_ptr_mut(stream)),
            topk_weights: ptr(self.topk_weights.device_ptr_mut(stream)),
            perm,
            rows: ptr(self.rows.device_ptr_mut(stream)),
            act: ptr(self.act.device_ptr_mut(stream)),
            shared_mid: ptr(self.shared_mid.device_ptr_mut(stream)),
            shared_sum: ptr(self.shared_sum.device_ptr_mut(stream)),
            shared_part: ptr(self.shared_part.device_ptr_mut(stream)),
            status: ptr(self.status.record_mut().device_ptr_mut(stream)),
        };
        (buffers, guards)
    }

    /// Check that every buffer was allocated in `dev`'s context.
    pub(crate) fn check_device(&self, dev: &Device) -> Result<()> {
        dev.check_owns("workspace router logits", &self.logits)?;
        dev.check_owns("workspace topk_ids", &self.topk_ids)?;
        dev.check_owns("workspace topk_weights", &self.topk_weights)?;
        dev.check_owns("workspace rows", &self.rows)?;
        dev.check_owns("workspace intermediate", &self.act)?;
        dev.check_owns("workspace shared intermediate", &self.shared_mid)?;
        dev.check_owns("workspace shared sum", &self.shared_sum)?;
        dev.check_owns("workspace shared output", &self.shared_part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SharedExpertConfig;

    #[test]
    fn sizes_follow_the_formula() {
        let cfg = MoeConfig::qwen2_moe_a2_7b();
        let s = WorkspaceSizes::new(&cfg, 100).unwrap();
        let (h, i, e, k) = (2048, 1408, 60, 4);
        assert_eq!(s.logits, 100 * e);
        assert_eq!(s.topk, 100 * k);
        assert_eq!(s.rows, 100 * k * h);
        assert_eq!(s.act, 100 * k * i);
        assert_eq!(s.shared_mid, 100 * 5632);
        assert_eq!(s.shared_sum, 100 * h);
        assert_eq!(s.shared_part, 100 * h, "the Qwen2 shared expert is gated");
        let perm = GpuPermutation::bytes(100, k, e, 1).unwrap();
        assert_eq!(s.permutation_bytes, perm);
        let bytes = s.bytes(2).unwrap();
        let want = (100 * k * (h + i) + 100 * 5632) * 2
            + (100 * e + 2 * 100 * k + 2 * 100 * h) * 4
            + perm
            + DeviceStatus::BYTES;
        assert_eq!(bytes, want);

        let mixtral = WorkspaceSizes::new(&MoeConfig::mixtral_8x7b(), 7).unwrap();
        assert_eq!(
            (mixtral.shared_mid, mixtral.shared_sum, mixtral.shared_part),
            (0, 0, 0)
        );
        let v3 = WorkspaceSizes::new(&MoeConfig::deepseek_v3(), 7).unwrap();
        assert_eq!(
            v3.shared_part, 0,
            "one ungated shared expert writes the sum directly"
        );
        let mut two = MoeConfig::deepseek_v3();
        two.shared_experts.push(SharedExpertConfig {
            intermediate_size: 4096,
            sigmoid_gate: false,
        });
        let two = WorkspaceSizes::new(&two, 7).unwrap();
        assert_eq!((two.shared_mid, two.shared_part), (7 * 4096, 7 * 7168));
    }

    #[test]
    fn sizes_reject_bad_configs_and_overflow() {
        let mut cfg = MoeConfig::mixtral_8x7b();
        assert!(matches!(
            WorkspaceSizes::new(&cfg, usize::MAX / 2),
            Err(MoeError::SizeOverflow(_))
        ));
        cfg.routing.top_k = 9;
        assert!(matches!(
            WorkspaceSizes::new(&cfg, 1),
            Err(MoeError::InvalidConfig(_))
        ));
        assert!(WorkspaceSizes::new(&MoeConfig::mixtral_8x7b(), 0).is_ok());
    }
}
