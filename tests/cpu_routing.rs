//! CPU routing against the float64 oracle, over random configs and shapes; tie rule; invariants.

mod common;

use common::oracle::{self, Route};
use moe_kernels::cpu::routing::{route, router_logits, Routing};
use moe_kernels::{GroupScore, GroupedTopK, MatMut, MatRef, RoutingConfig, ScoringFunc};
use rand::Rng;

/// Check a routing decision against the oracle: same ids except where the oracle's choice scores of the
/// two experts involved, or of the groups at the kept groups' boundary, are within `1e-5` relative (a
/// near-tie, decided by f32 rounding: `RowRoute::ids_agree`), and weights
/// within `1e-5` relative of the oracle's weights for the ids actually chosen.
fn check_routing(cfg: &RoutingConfig, logits: &[f32], bias: Option<&[f32]>, got: &Routing) {
    let (e, k) = (cfg.num_experts, cfg.top_k);
    let t = logits.len() / e;
    assert_eq!((got.num_tokens, got.top_k), (t, k));
    let r = Route::of(cfg, bias);
    for tok in 0..t {
        let want = oracle::route_row(&r, &common::f64s(&logits[tok * e..(tok + 1) * e]));
        let ids: Vec<usize> = got.ids[tok * k..(tok + 1) * k]
            .iter()
            .map(|&i| i as usize)
            .collect();
        assert!(
            want.ids_agree(&ids),
            "token {tok}: ids {ids:?} vs {:?} (choice scores {:?} vs {:?})",
            want.ids,
            ids.iter().map(|&i| want.choice[i]).collect::<Vec<_>>(),
            want.ids.iter().map(|&i| want.choice[i]).collect::<Vec<_>>()
        );
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), k, "token {tok}: repeated expert in {ids:?}");
        let want_w = oracle::weights_for(&r, &want.scores, &ids);
        let got_w = common::f64s(&got.weights[tok * k..(tok + 1) * k]);
        for (j, (g, w)) in got_w.iter().zip(&want_w).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1e-6) + 1e-7,
                "token {tok} slot {j}: weight {g} vs oracle {w}"
            );
        }
    }
}

#[test]
fn routing_matches_oracle_on_random_configs() {
    let mut rng = common::rng("routing_matches_oracle_on_random_configs");
    let experts = [1usize, 2, 3, 5, 8, 12, 60, 64, 128, 160, 256];
    for case in 0..120 {
        let e = experts[case % experts.len()];
        let cfg = common::random_routing_config(&mut rng, e);
        let t = [0usize, 1, 7, 33, 1025][rng.random_range(0..5)];
        let t = if e >= 128 && t > 100 { 130 } else { t };
        let logits = common::randn(&mut rng, t * e, 2.0);
        let bias = cfg.correction_bias.then(|| common::randn(&mut rng, e, 0.1));
        let got = route(
            &cfg,
            MatRef::new("logits", &logits, t, e).unwrap(),
            bias.as_deref(),
        )
        .unwrap_or_else(|err| panic!("case {case} {cfg:?}: {err}"));
        check_routing(&cfg, &logits, bias.as_deref(), &got);
    }
}

#[test]
fn family_presets_route_like_oracle() {
    let mut rng = common::rng("family_presets_route_like_oracle");
    for cfg in [
        moe_kernels::MoeConfig::mixtral_8x7b(),
        moe_kernels::MoeConfig::qwen2_moe_a2_7b(),
        moe_kernels::MoeConfig::qwen3_30b_a3b(),
        moe_kernels::MoeConfig::deepseek_v2_lite(),
        moe_kernels::MoeConfig::deepseek_v3(),
        moe_kernels::MoeConfig::olmoe_1b_7b(),
    ] {
        let r = &cfg.routing;
        let t = 1100;
        let logits = common::randn(&mut rng, t * r.num_experts, 1.0);
        let bias = r
            .correction_bias
            .then(|| common::randn(&mut rng, r.num_experts, 0.05));
        let got = route(
            r,
            MatRef::new("logits", &logits, t, r.num_experts).unwrap(),
            bias.as_deref(),
        )
        .unwrap();
        check_routing(r, &logits, bias.as_deref(), &got);
    }
}

#[test]
fn equal_scores_go_to_the_lower_expert_index() {
    // Every logit equal: the k lowest indices, in order.
    let cfg = RoutingConfig::softmax_topk(8, 3, false);
    let logits = vec![0.5f32; 8];
    let r = route(&cfg, MatRef::new("l", &logits, 1, 8).unwrap(), None).unwrap();
    assert_eq!(r.ids, vec![0, 1, 2]);
    // A tie below a clear winner: the winner, then the tied pair in index order.
    let logits = vec![0.1f32, 2.0, 0.1, 3.0, 2.0, -1.0];
    let cfg = RoutingConfig::softmax_topk(6, 4, false);
    let r = route(&cfg, MatRef::new("l", &logits, 1, 6).unwrap(), None).unwrap();
    assert_eq!(r.ids, vec![3, 1, 4, 0]);
    // Tied groups: the lower group index is kept.
    let cfg = RoutingConfig {
        grouping: Some(GroupedTopK {
            n_group: 3,
            topk_group: 1,
            score: GroupScore::SumTop2,
        }),
        ..RoutingConfig::softmax_topk(6, 2, false)
    };
    let logits = vec![1.0f32, 0.0, 0.0, 1.0, 0.5, 0.5];
    let r = route(&cfg, MatRef::new("l", &logits, 1, 6).unwrap(), None).unwrap();
    assert_eq!(r.ids, vec![0, 1]);
}

#[test]
fn bias_changes_choice_but_not_weights() {
    let cfg = RoutingConfig {
        scoring: ScoringFunc::Sigmoid,
        correction_bias: true,
        ..RoutingConfig::softmax_topk(4, 1, false)
    };
    let logits = vec![1.0f32, 0.0, 0.0, 0.0];
    let bias = vec![0.0f32, 0.0, 1.0, 0.0];
    let r = route(&cfg, MatRef::new("l", &logits, 1, 4).unwrap(), Some(&bias)).unwrap();
    assert_eq!(r.ids, vec![2]);
    assert!(
        (r.weights[0] - 0.5).abs() < 1e-7,
        "weight is sigmoid(0) = 0.5, got {}",
        r.weights[0]
    );
}

#[test]
fn renormalised_weights_sum_to_one_and_scale_multiplies() {
    let mut rng = common::rng("renormalised_weights_sum_to_one_and_scale_multiplies");
    for scoring in [ScoringFunc::Softmax, ScoringFunc::Sigmoid] {
        let (t, e, k) = (257, 64, 6);
        let cfg = RoutingConfig {
            scoring,
            renormalize: true,
            ..RoutingConfig::softmax_topk(e, k, true)
        };
        let logits = common::randn(&mut rng, t * e, 3.0);
        let r = route(&cfg, MatRef::new("l", &logits, t, e).unwrap(), None).unwrap();
        for tok in 0..t {
            let s: f64 = r.weights[tok * k..(tok + 1) * k]
                .iter()
                .map(|&w| w as f64)
                .sum();
            assert!((s - 1.0).abs() < 1e-5, "token {tok}: weights sum to {s}");
        }
        let scaled = RoutingConfig {
            routed_scaling_factor: 2.5,
            ..cfg.clone()
        };
        let r2 = route(&scaled, MatRef::new("l", &logits, t, e).unwrap(), None).unwrap();
        assert_eq!(r.ids, r2.ids);
        for (a, b) in r.weights.iter().zip(&r2.weights) {
            assert!((a * 2.5 - b).abs() <= 1e-6 * b.abs());
        }
    }
}

#[test]
fn dense_mixture_weights_every_expert_by_its_softmax_score() {
    let mut rng = common::rng("dense_mixture_weights_every_expert_by_its_softmax_score");
    let (t, e) = (9, 5);
    let cfg = RoutingConfig::dense_mixture(e);
    let logits = common::randn(&mut rng, t * e, 1.0);
    let r = route(&cfg, MatRef::new("l", &logits, t, e).unwrap(), None).unwrap();
    for tok in 0..t {
        let row = common::f64s(&logits[tok * e..(tok + 1) * e]);
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = row.iter().map(|l| (l - m).exp()).sum();
        let mut ids = r.ids[tok * e..(tok + 1) * e].to_vec();
        for (&id, &w) in ids.iter().zip(&r.weights[tok * e..(tok + 1) * e]) {
            let want = (row[id as usize] - m).exp() / z;
            assert!((w as f64 - want).abs() < 1e-6);
        }
        ids.sort();
        assert_eq!(ids, (0..e as i32).collect::<Vec<_>>());
    }
}

#[test]
fn router_logits_match_oracle() {
    let mut rng = common::rng("router_logits_match_oracle");
    for (t, h, e) in [
        (0usize, 7usize, 3usize),
        (1, 33, 8),
        (77, 129, 60),
        (1030, 17, 5),
    ] {
        let x = common::randn(&mut rng, t * h, 1.0);
        let w = common::randn(&mut rng, e * h, 0.2);
        let xb: Vec<half::bf16> = x.iter().map(|&v| half::bf16::from_f32(v)).collect();
        let mut out = vec![f32::NAN; t * e];
        router_logits(
            MatRef::new("x", &xb, t, h).unwrap(),
            MatRef::new("w", &w, e, h).unwrap(),
            &mut MatMut::new("logits", &mut out, t, e).unwrap(),
        )
        .unwrap();
        let want: Vec<f64> = (0..t)
            .flat_map(|tok| {
                let xr = common::el64(&xb[tok * h..(tok + 1) * h]);
                oracle::matvec(&common::f64s(&w), e, h, &xr)
            })
            .collect();
        common::assert_close("router logits", &common::f64s(&out), &want, 1e-5);
    }
}
