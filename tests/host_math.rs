//! The kernels' index math, compiled for the host by build.rs, against the CPU reference and the
//! documented rules. Runs on every machine: this is the GPU code that can be checked without a GPU.

mod common;

use moe_kernels::cpu::routing::route;
use moe_kernels::host_math::{self, RowSource};
use moe_kernels::{GroupScore, MatRef, MoeError, RoutingConfig};
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

#[test]
fn router_row_algorithm_equals_the_cpu_reference() {
    // One serial lane computes every score with the reference's expressions in the reference's
    // order (sequential max and sum), so both row sources must reproduce cpu::routing::route bit for
    // bit: ids and weights.
    let mut rng = common::rng("router_row_algorithm_equals_the_cpu_reference");
    for case in 0..300 {
        let e = [1usize, 2, 8, 60, 64, 128, 256, 1000][case % 8];
        let cfg = common::random_routing_config(&mut rng, e);
        let t = [1usize, 3, 17, 64][rng.random_range(0..4)];
        let spread = [0.5f32, 3.0, 12.0][rng.random_range(0..3)];
        let mut logits = common::uniform(&mut rng, t * e, -spread, spread);
        if rng.random_bool(0.2) {
            // Exact ties: few distinct values.
            logits
                .iter_mut()
                .for_each(|v| *v = (*v * 2.0).round() / 2.0);
        }
        let bias = cfg
            .correction_bias
            .then(|| common::uniform(&mut rng, e, -0.2, 0.2));
        let view = MatRef::new("logits", &logits, t, e).unwrap();
        let cpu = route(&cfg, view, bias.as_deref()).unwrap();
        for source in [RowSource::Registers, RowSource::Recomputed] {
            let got = host_math::route(&cfg, &logits, t, bias.as_deref(), source).unwrap();
            assert!(got.status.is_none(), "{cfg:?}: {:?}", got.status);
            assert_eq!(got.ids, cpu.ids, "{cfg:?} {source:?}: ids");
            let same = got
                .weights
                .iter()
                .zip(&cpu.weights)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{cfg:?} {source:?}: {:?} vs {:?}",
                got.weights, cpu.weights
            );
        }
    }
}

#[test]
fn router_twin_reports_non_finite_inputs_and_falls_back() {
    let (t, e, k) = (4usize, 40usize, 3usize);
    let cfg = RoutingConfig::softmax_topk(e, k, true);
    let mut logits = vec![0.1f32; t * e];
    logits[2 * e + 33] = f32::NAN;
    logits[2 * e + 7] = f32::NEG_INFINITY;
    logits[3 * e] = f32::INFINITY;
    for source in [RowSource::Registers, RowSource::Recomputed] {
        let got = host_math::route(&cfg, &logits, t, None, source).unwrap();
        match got.status {
            Some(MoeError::NonFinite {
                what: "router logit",
                token: 2,
                expert: 7,
                value,
            }) if value == f32::NEG_INFINITY => {}
            other => panic!("{source:?}: expected the non-finite logit at (2, 7), got {other:?}"),
        }
        for row in [2, 3] {
            assert_eq!(&got.ids[row * k..(row + 1) * k], &[0, 1, 2]);
            assert!(got.weights[row * k..(row + 1) * k]
                .iter()
                .all(|&w| w == 0.0));
        }
        assert!(got.weights[..2 * k]
            .iter()
            .all(|w| (w - 1.0 / 3.0).abs() < 1e-6));
    }
    let biased = RoutingConfig {
        correction_bias: true,
        ..cfg.clone()
    };
    let mut bias = vec![0f32; e];
    bias[5] = f32::NAN;
    let got = host_math::route(
        &biased,
        &vec![0.1f32; t * e],
        t,
        Some(&bias),
        RowSource::Registers,
    )
    .unwrap();
    assert!(matches!(
        got.status,
        Some(MoeError::NonFinite {
            what: "correction bias",
            expert: 5,
            ..
        })
    ));
}

#[test]
fn top2_merge_is_the_top2_of_the_union() {
    let mut rng = common::rng("top2_merge_is_the_top2_of_the_union");
    for _ in 0..5_000 {
        let (na, nb) = (rng.random_range(0..6), rng.random_range(0..6));
        // Few distinct values: duplicates across and within the halves.
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| rng.random_range(0..4) as f32 * 0.5)
                .collect()
        };
        let (a, b) = (draw(na), draw(nb));
        let mut all: Vec<f32> = a.iter().chain(&b).copied().collect();
        all.sort_by(|x, y| y.total_cmp(x));
        let want = (
            all.first().copied().unwrap_or(f32::NEG_INFINITY),
            all.get(1).copied().unwrap_or(f32::NEG_INFINITY),
        );
        assert_eq!(host_math::top2_merge(&a, &b), want, "{a:?} + {b:?}");
    }
}

#[test]
fn combine_decomposition_owns_every_output_element_once() {
    for &(t, h, threads, vec) in &[
        (1usize, 4096usize, 128usize, 8usize),
        (3, 7168, 128, 8),
        (5, 1000, 128, 8),
        (2, 7, 128, 1),
        (4, 130, 128, 1),
        (1, 1, 128, 1),
    ] {
        let mut owner = vec![0u8; t * h];
        for item in 0..host_math::combine_items(t, h, threads, vec) {
            for thread in 0..threads {
                let (token, col) = host_math::combine_owner(item, h, thread, threads, vec);
                assert!(token < t, "item {item} maps to token {token}");
                for c in col..(col + vec).min(h.max(col)) {
                    owner[token * h + c] += 1;
                }
            }
        }
        assert!(
            owner.iter().all(|&n| n == 1),
            "T = {t}, H = {h}, vec = {vec}: every element owned exactly once"
        );
    }
}
