//! The whole CPU MoE layer against a float64 oracle that computes each token's output directly
//! (`sum_j w_j * expert_j(x) + shared(x)`), with no permutation, over family configs and random shapes.
//! The layer runs on its default backend, the fast one (`cpu::fast`); `cpu_fast.rs` compares it with
//! the reference backend.

mod common;

use common::oracle::{self, Route};
use moe_kernels::cpu::fast::CpuBackend;
use moe_kernels::cpu::layer::{CpuMoeLayer, MoeBiases, MoeWeights, SharedExpertWeights};
use moe_kernels::{
    Activation, ActivationKind, Element, GroupScore, GroupedTopK, MatRef, MoeConfig, RoutingConfig,
    ScoringFunc, SharedExpertConfig,
};
use rand::rngs::StdRng;
use rand::Rng;

fn random_weights<W: Element>(rng: &mut StdRng, cfg: &MoeConfig) -> MoeWeights<W> {
    let (h, i, e) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
    );
    let up = cfg.activation.up_rows(i);
    let conv = |v: Vec<f32>| v.into_iter().map(W::from_f32).collect::<Vec<W>>();
    let hs = 1.0 / (h as f32).sqrt();
    // gpt-oss's biases for its clamped activation: the router's wide enough to change the choice,
    // the gate-up's wide enough that both clamps bite.
    let biases =
        matches!(cfg.activation.kind, ActivationKind::ClampedSilu { .. }).then(|| MoeBiases {
            router: common::uniform(rng, e, -1.0, 1.0),
            gate_up: common::uniform(rng, e * up, -10.0, 10.0),
            down: common::uniform(rng, e * h, -1.0, 1.0),
        });
    MoeWeights {
        router: conv(common::randn(rng, e * h, hs)),
        biases,
        correction_bias: cfg
            .routing
            .correction_bias
            .then(|| common::randn(rng, e, 0.05)),
        gate_up: conv(common::randn(rng, e * up * h, hs)),
        down: conv(common::randn(rng, e * h * i, 1.0 / (i as f32).sqrt())),
        shared: cfg
            .shared_experts
            .iter()
            .map(|s| SharedExpertWeights {
                gate_up: conv(common::randn(
                    rng,
                    cfg.activation.up_rows(s.intermediate_size) * h,
                    hs,
                )),
                down: conv(common::randn(
                    rng,
                    h * s.intermediate_size,
                    1.0 / (s.intermediate_size as f32).sqrt(),
                )),
                gate: s.sigmoid_gate.then(|| conv(common::randn(rng, h, hs))),
            })
            .collect(),
    }
}

/// Run the layer and compare with the oracle at relative L2 tolerance `tol`.
fn check_layer<X: Element, W: Element>(rng: &mut StdRng, cfg: &MoeConfig, t: usize, tol: f64) {
    let (h, i, e, k) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
        cfg.routing.top_k,
    );
    let weights = random_weights::<W>(rng, cfg);
    let x: Vec<X> = common::randn(rng, t * h, 1.0)
        .into_iter()
        .map(X::from_f32)
        .collect();
    let layer = CpuMoeLayer::new(cfg.clone(), weights.clone()).unwrap();
    let out = layer.forward(MatRef::new("x", &x, t, h).unwrap()).unwrap();
    assert_eq!(out.hidden.len(), t * h);
    // Biased (gpt-oss) layers: the fast backend runs their GEMMs, the bias and activation are
    // plain loops; the reference backend must give the same answer.
    let reference = weights.biases.is_some().then(|| {
        layer
            .clone()
            .with_backend(CpuBackend::Reference)
            .forward(MatRef::new("x", &x, t, h).unwrap())
            .unwrap()
    });

    let r = &cfg.routing;
    let route = Route::of(r, weights.correction_bias.as_deref());
    let x64 = common::el64(&x);
    let router = common::el64(&weights.router);
    let mut want = vec![0f64; t * h];
    // The squares of every term the mixture adds (each routed expert's weighted output, the shared
    // experts' sum): the sum may cancel (a hidden size of 1 with 7 experts), so the error is
    // measured against the size of its terms where that is larger than the sum.
    let mut terms = 0f64;
    for tok in 0..t {
        let xt = &x64[tok * h..(tok + 1) * h];
        let mut logits = oracle::matvec(&router, e, h, xt);
        if let Some(b) = &weights.biases {
            logits
                .iter_mut()
                .zip(&b.router)
                .for_each(|(l, &b)| *l += b as f64);
        }
        let o = oracle::route_row(&route, &logits);
        let ids: Vec<usize> = out.routing.ids[tok * k..(tok + 1) * k]
            .iter()
            .map(|&v| v as usize)
            .collect();
        assert!(
            o.ids_agree(&ids),
            "token {tok}: routed to {ids:?}, oracle {:?}",
            o.ids
        );
        let wts = oracle::weights_for(&route, &o.scores, &ids);
        // The token's output is the sum of its terms: each routed expert's alone, then the shared
        // experts' (`layer_token` of no routed expert).
        let y = &mut want[tok * h..(tok + 1) * h];
        let routed = ids
            .iter()
            .zip(&wts)
            .map(|(&id, &w)| oracle::layer_token(cfg, &weights, xt, &[id], &[w], false));
        for term in routed.chain([oracle::layer_token(cfg, &weights, xt, &[], &[], true)]) {
            terms += term.iter().map(|v| v * v).sum::<f64>();
            y.iter_mut().zip(&term).for_each(|(a, v)| *a += v);
        }
    }
    common::assert_close_of(
        &format!(
            "layer T={t} H={h} I={i} E={e} k={k} {:?} {} (against the sum, or its terms' size)",
            cfg.activation,
            X::DTYPE
        ),
        &common::el64(&out.hidden),
        &want,
        terms,
        tol,
    );
    if let Some(r) = reference {
        assert_eq!(r.routing, out.routing);
        common::assert_close_of(
            &format!("reference backend, layer T={t} {}", X::DTYPE),
            &common::el64(&r.hidden),
            &want,
            terms,
            tol,
        );
    }
}

/// Each family's routing, activation and shared experts, at small odd sizes.
fn family_configs() -> Vec<MoeConfig> {
    [
        MoeConfig::mixtral_8x7b(),
        MoeConfig::qwen2_moe_a2_7b(),
        MoeConfig::qwen3_30b_a3b(),
        MoeConfig::deepseek_v2_lite(),
        MoeConfig::deepseek_v3(),
        MoeConfig::olmoe_1b_7b(),
        MoeConfig::gpt_oss_20b(),
    ]
    .into_iter()
    .map(|mut c| {
        c.hidden_size = 37;
        c.intermediate_size = 19;
        for s in &mut c.shared_experts {
            s.intermediate_size = 23;
        }
        c
    })
    .collect()
}

#[test]
fn family_layers_match_oracle_f32() {
    let mut rng = common::rng("family_layers_match_oracle_f32");
    for cfg in family_configs() {
        for t in [0usize, 1, 5, 1031] {
            check_layer::<f32, f32>(&mut rng, &cfg, t, 1e-5);
        }
    }
}

#[test]
fn family_layers_match_oracle_bf16_and_f16() {
    let mut rng = common::rng("family_layers_match_oracle_bf16_and_f16");
    for cfg in family_configs() {
        check_layer::<half::bf16, half::bf16>(&mut rng, &cfg, 67, 1e-2);
        check_layer::<half::f16, half::f16>(&mut rng, &cfg, 67, 2e-3);
        check_layer::<f32, half::bf16>(&mut rng, &cfg, 13, 1e-5);
    }
}

#[test]
fn random_layers_match_oracle_f32() {
    let mut rng = common::rng("random_layers_match_oracle_f32");
    for case in 0..40 {
        let e = [1usize, 2, 6, 16, 60, 128, 256][case % 7];
        let divisors: Vec<usize> = (1..=e).filter(|d| e.is_multiple_of(*d)).collect();
        let grouping = rng.random_bool(0.4).then(|| {
            let n_group = divisors[rng.random_range(0..divisors.len())];
            GroupedTopK {
                n_group,
                topk_group: rng.random_range(1..=n_group),
                score: if rng.random_bool(0.5) {
                    GroupScore::SumTop2
                } else {
                    GroupScore::Max
                },
            }
        });
        let eligible = grouping.map_or(e, |g| g.topk_group * (e / g.n_group));
        let sigmoid = rng.random_bool(0.4);
        let cfg = MoeConfig {
            hidden_size: rng.random_range(1..48) | 1,
            intermediate_size: rng.random_range(1..30) | 1,
            routing: RoutingConfig {
                num_experts: e,
                top_k: rng.random_range(1..=eligible.min(10)),
                scoring: if sigmoid {
                    ScoringFunc::Sigmoid
                } else {
                    ScoringFunc::Softmax
                },
                correction_bias: sigmoid && rng.random_bool(0.5),
                grouping,
                renormalize: rng.random_bool(0.5),
                routed_scaling_factor: if rng.random_bool(0.5) { 1.0 } else { 2.5 },
                scale_input: false,
            },
            activation: Activation {
                kind: if rng.random_bool(0.5) {
                    ActivationKind::Silu
                } else {
                    ActivationKind::GeluTanh
                },
                gated: rng.random_bool(0.7),
            },
            shared_experts: (0..rng.random_range(0..3))
                .map(|_| SharedExpertConfig {
                    intermediate_size: rng.random_range(1..20),
                    sigmoid_gate: rng.random_bool(0.5),
                })
                .collect(),
        };
        let t = [0usize, 1, 3, 17, 1200][rng.random_range(0..5)];
        check_layer::<f32, f32>(&mut rng, &cfg, t, 1e-5);
    }
}

#[test]
fn k_equal_to_e_is_the_dense_mixture() {
    let mut rng = common::rng("k_equal_to_e_is_the_dense_mixture");
    for e in [1usize, 5, 32] {
        let cfg = MoeConfig {
            hidden_size: 21,
            intermediate_size: 9,
            routing: RoutingConfig::dense_mixture(e),
            activation: Activation::SWIGLU,
            shared_experts: vec![],
        };
        check_layer::<f32, f32>(&mut rng, &cfg, 40, 1e-5);
    }
}
