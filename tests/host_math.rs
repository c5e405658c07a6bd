//! The kernels' index math, compiled for the host by build.rs, against the CPU reference and the
//! documented rules. Runs on every machine: this is the GPU code that can be checked without a GPU.

mod common;

use moe_kernels::host_math;
use moe_kernels::GroupScore;
use rand::Rng;

#[test]
fn selection_order_is_score_descending_then_lower_index() {
    let mut rng = common::rng("selection_order_is_score_descending_then_lower_index");
    for _ in 0..10_000 {
        // Few distinct scores, so that ties are frequent.
        let (sa, sb) = (
            rng.random_range(0..4) as f32 * 0.25,
            rng.random_range(0..4) as f32 * 0.25,
        );
        let (ia, ib) = (rng.random_range(0..8), rng.random_range(0..8));
        let want = sa > sb || (sa == sb && ia < ib);
        assert_eq!(
            host_math::ranks_before(sa, ia, sb, ib),
            want,
            "({sa}, {ia}) vs ({sb}, {ib})"
        );
    }
}

#[test]
fn group_scores_match_the_definition() {
    let mut rng = common::rng("group_scores_match_the_definition");
    for _ in 0..2_000 {
        let n = rng.random_range(1..20);
        let choice = common::randn(&mut rng, n, 1.0);
        let mut sorted = common::f64s(&choice);
        sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
        let max = host_math::group_score(&choice, GroupScore::Max) as f64;
        assert_eq!(max, sorted[0]);
        let top2 = host_math::group_score(&choice, GroupScore::SumTop2) as f64;
        let want = if n == 1 {
            sorted[0]
        } else {
            sorted[0] + sorted[1]
        };
        assert!(
            (top2 - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{choice:?}: {top2} vs {want}"
        );
    }
}
