//! The router's per-row math from `kernels/routing.cuh`.

use crate::config::GroupScore;

extern "C" {
    fn moe_host_ranks_before(score_a: f32, index_a: i32, score_b: f32, index_b: i32) -> i32;
    fn moe_host_group_score(choice: *const f32, n: i32, kind: i32) -> f32;
}

/// Whether `(score_a, index_a)` ranks strictly before `(score_b, index_b)` in the kernels'
/// selection order.
pub fn ranks_before(score_a: f32, index_a: i32, score_b: f32, index_b: i32) -> bool {
    // SAFETY: a pure function of its four scalar arguments.
    unsafe { moe_host_ranks_before(score_a, index_a, score_b, index_b) != 0 }
}

/// The kernels' score of one group of experts from its members' choice scores.
pub fn group_score(choice: &[f32], kind: GroupScore) -> f32 {
    let kind = crate::gpu::routing::group_score_abi(kind);
    let n = i32::try_from(choice.len()).expect("a group has fewer than 2^31 experts");
    // SAFETY: the callee reads exactly `n` floats from `choice`, which holds that many.
    unsafe { moe_host_group_score(choice.as_ptr(), n, kind) }
}
