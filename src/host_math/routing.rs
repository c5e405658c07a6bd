//! The router's per-row algorithm from `kernels/routing.cuh`, run on one serial lane.

use crate::config::{GroupScore, RoutingConfig};
use crate::error::Result;
use crate::gpu::abi::{MoeRoutingParams, MoeStatus};
use crate::gpu::routing::check_shapes;
use crate::MoeError;

extern "C" {
    fn moe_host_ranks_before(score_a: f32, index_a: i32, score_b: f32, index_b: i32) -> i32;
    fn moe_host_group_score(choice: *const f32, n: i32, kind: i32) -> f32;
    fn moe_host_top2_merge(a: *const f32, n_a: i32, b: *const f32, n_b: i32, out: *mut f32);
    fn moe_host_route(p: *const MoeRoutingParams, fast: i32) -> i32;
}

/// Whether `(score_a, index_a)` ranks strictly before `(score_b, index_b)` in the kernels'
/// selection order.
pub fn ranks_before(score_a: f32, index_a: i32, score_b: f32, index_b: i32) -> bool {
    // SAFETY: a pure function of its four scalar arguments.
    unsafe { moe_host_ranks_before(score_a, index_a, score_b, index_b) != 0 }
}

fn len_i32(v: &[f32]) -> i32 {
    i32::try_from(v.len()).expect("a group has fewer than 2^31 experts")
}

/// The kernels' score of one group of experts from its members' choice scores.
pub fn group_score(choice: &[f32], kind: GroupScore) -> f32 {
    let kind = crate::gpu::routing::group_score_abi(kind);
    // SAFETY: the callee reads exactly `len` floats from `choice`, which holds that many.
    unsafe { moe_host_group_score(choice.as_ptr(), len_i32(choice), kind) }
}

/// The kernels' merge of two lanes' partial top-2 summaries, over the values `a` and `b`:
/// `(best, second best)` of their union.
pub fn top2_merge(a: &[f32], b: &[f32]) -> (f32, f32) {
    let mut out = [0f32; 2];
    // SAFETY: the callee reads `a.len()` and `b.len()` floats from `a` and `b` and writes two
    // floats to `out`.
    unsafe {
        moe_host_top2_merge(
            a.as_ptr(),
            len_i32(a),
            b.as_ptr(),
            len_i32(b),
            out.as_mut_ptr(),
        )
    };
    (out[0], out[1])
}

/// Which of the kernels' row sources the host twin runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowSource {
    /// Every score in registers (the fast path); the host holds up to 1024 experts.
    Registers,
    /// Scores recomputed from the logits (the general path), any expert count.
    Recomputed,
}

/// The output of the host twin of the routing kernels.
#[derive(Debug)]
pub struct HostRouting {
    /// `[T, k]` expert ids.
    pub ids: Vec<i32>,
    /// `[T, k]` weights.
    pub weights: Vec<f32>,
    /// What the kernels would record in the device status.
    pub status: Option<MoeError>,
}

/// Route `num_tokens` rows of `f32` logits with the kernels' row algorithm on one serial lane,
/// after the same validation as [`crate::gpu::route`]. Outputs are poisoned (ids -7, weights NaN)
/// first, so an entry the algorithm fails to write shows.
pub fn route(
    cfg: &RoutingConfig,
    logits: &[f32],
    num_tokens: usize,
    bias: Option<&[f32]>,
    source: RowSource,
) -> Result<HostRouting> {
    let shape = check_shapes(cfg, num_tokens, logits.len(), bias.map(<[f32]>::len))?;
    if source == RowSource::Registers && cfg.num_experts > 1024 {
        return Err(MoeError::Unsupported(
            "the host's register row source holds at most 1024 experts".into(),
        ));
    }
    let n = num_tokens * cfg.top_k;
    let mut out = HostRouting {
        ids: vec![-7; n],
        weights: vec![f32::NAN; n],
        status: None,
    };
    let mut status = MoeStatus::default();
    let params = shape.params(
        cfg,
        logits.as_ptr().cast(),
        bias.map_or(std::ptr::null(), <[f32]>::as_ptr),
        out.ids.as_mut_ptr(),
        out.weights.as_mut_ptr(),
        &mut status,
    );
    let fast = i32::from(source == RowSource::Registers);
    // SAFETY: the params hold host pointers to live buffers of the lengths check_shapes validated
    // (logits T*E floats, bias E floats or null, ids and weights T*k, status one record), and the
    // register source is only asked for E <= 1024, which the callee checks again.
    let rc = unsafe { moe_host_route(&params, fast) };
    debug_assert_eq!(rc, 0, "E was checked against the host's register slots");
    out.status = crate::gpu::status::decode(&status).err();
    Ok(out)
}
