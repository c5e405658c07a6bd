//! Every kind of bad input gets its typed error: never a panic, never a silent wrong answer, and the
//! inputs are left untouched.

mod common;

use moe_kernels::cpu::combine::combine;
use moe_kernels::cpu::gemm::grouped_gemm;
use moe_kernels::cpu::layer::{CpuMoeLayer, MoeWeights, SharedExpertWeights};
use moe_kernels::cpu::permute::{gather, permute};
use moe_kernels::cpu::routing::{route, Routing};
use moe_kernels::{
    Activation, DType, ExpertsRef, GroupScore, GroupedTopK, HostTensor, MatMut, MatRef, MoeConfig,
    MoeError, RoutingConfig, SharedExpertConfig,
};

/// A change to otherwise valid weights.
type Mutation = Box<dyn Fn(&mut MoeWeights<f32>)>;

fn small_config() -> MoeConfig {
    MoeConfig {
        hidden_size: 4,
        intermediate_size: 3,
        routing: RoutingConfig::softmax_topk(4, 2, true),
        activation: Activation::SWIGLU,
        shared_experts: vec![SharedExpertConfig {
            intermediate_size: 2,
            sigmoid_gate: true,
        }],
    }
}

fn small_weights() -> MoeWeights<f32> {
    let fill = |n: usize| {
        (0..n)
            .map(|i| (i as f32 * 0.37).sin())
            .collect::<Vec<f32>>()
    };
    MoeWeights {
        router: fill(4 * 4),
        biases: None,
        correction_bias: None,
        gate_up: fill(4 * 6 * 4),
        down: fill(4 * 4 * 3),
        shared: vec![SharedExpertWeights {
            gate_up: fill(4 * 4),
            down: fill(4 * 2),
            gate: Some(fill(4)),
        }],
    }
}

#[test]
fn k_greater_than_e_and_other_bad_configs() {
    let bad = [
        RoutingConfig::softmax_topk(4, 5, true),
        RoutingConfig::softmax_topk(4, 0, true),
        RoutingConfig::softmax_topk(0, 0, true),
        RoutingConfig {
            routed_scaling_factor: f32::NAN,
            ..RoutingConfig::softmax_topk(4, 2, true)
        },
        RoutingConfig {
            routed_scaling_factor: 0.0,
            ..RoutingConfig::softmax_topk(4, 2, true)
        },
        RoutingConfig {
            grouping: Some(GroupedTopK {
                n_group: 3,
                topk_group: 1,
                score: GroupScore::Max,
            }),
            ..RoutingConfig::softmax_topk(4, 1, true)
        },
        RoutingConfig {
            grouping: Some(GroupedTopK {
                n_group: 2,
                topk_group: 3,
                score: GroupScore::Max,
            }),
            ..RoutingConfig::softmax_topk(4, 1, true)
        },
        RoutingConfig {
            grouping: Some(GroupedTopK {
                n_group: 4,
                topk_group: 1,
                score: GroupScore::SumTop2,
            }),
            ..RoutingConfig::softmax_topk(4, 2, true)
        },
    ];
    let logits = vec![0.0f32; 4];
    for cfg in bad {
        let err = route(&cfg, MatRef::new("l", &logits, 1, 4).unwrap(), None).unwrap_err();
        assert!(matches!(err, MoeError::InvalidConfig(_)), "{cfg:?}: {err}");
    }
    let mut cfg = small_config();
    cfg.routing.top_k = 9;
    assert!(matches!(
        CpuMoeLayer::new(cfg, small_weights()),
        Err(MoeError::InvalidConfig(_))
    ));
    let mut cfg = small_config();
    cfg.hidden_size = 0;
    assert!(matches!(
        CpuMoeLayer::new(cfg, small_weights()),
        Err(MoeError::InvalidConfig(_))
    ));
}

#[test]
fn non_finite_logits_and_bias() {
    let cfg = RoutingConfig::softmax_topk(3, 1, false);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let logits = vec![0.0, 1.0, 2.0, 0.5, bad, 0.0];
        let before = logits.clone();
        let err = route(&cfg, MatRef::new("l", &logits, 2, 3).unwrap(), None).unwrap_err();
        match err {
            MoeError::NonFinite {
                what: "router logit",
                token: 1,
                expert: 1,
                ..
            } => {}
            other => panic!("expected NonFinite at token 1 expert 1, got {other}"),
        }
        assert_eq!(
            format!("{logits:?}"),
            format!("{before:?}"),
            "input modified"
        );
    }
    let cfg = RoutingConfig {
        correction_bias: true,
        ..cfg
    };
    let err = route(
        &cfg,
        MatRef::new("l", &[0.0; 3], 1, 3).unwrap(),
        Some(&[0.0, f32::NAN, 0.0]),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            MoeError::NonFinite {
                what: "correction bias",
                expert: 1,
                ..
            }
        ),
        "{err}"
    );
    // A bias required but missing, or given but not used.
    assert!(matches!(
        route(&cfg, MatRef::new("l", &[0.0; 3], 1, 3).unwrap(), None),
        Err(MoeError::InvalidConfig(_))
    ));
    let plain = RoutingConfig::softmax_topk(3, 1, false);
    assert!(matches!(
        route(
            &plain,
            MatRef::new("l", &[0.0; 3], 1, 3).unwrap(),
            Some(&[0.0; 3])
        ),
        Err(MoeError::InvalidConfig(_))
    ));
    assert!(matches!(
        route(
            &cfg,
            MatRef::new("l", &[0.0; 3], 1, 3).unwrap(),
            Some(&[0.0; 2])
        ),
        Err(MoeError::ShapeMismatch { .. })
    ));
}

#[test]
fn expert_ids_out_of_range() {
    for bad in [-1i32, 4, i32::MAX, i32::MIN] {
        let ids = vec![0, 1, 2, bad];
        let err = permute(MatRef::new("ids", &ids, 2, 2).unwrap(), 4, 1).unwrap_err();
        match err {
            MoeError::ExpertIdOutOfRange {
                token: 1,
                slot: 1,
                id,
                num_experts: 4,
            } => assert_eq!(id, bad as i64),
            other => panic!("{other}"),
        }
        let r = Routing::from_parts(2, 2, ids.clone(), vec![0.5; 4], 4);
        assert!(matches!(r, Err(MoeError::ExpertIdOutOfRange { .. })));
    }
    assert!(matches!(
        Routing::from_parts(1, 2, vec![0, 1], vec![0.5, f32::NAN], 4),
        Err(MoeError::NonFinite {
            what: "routing weight",
            ..
        })
    ));
    assert!(matches!(
        permute(MatRef::new("ids", &[0], 1, 1).unwrap(), 0, 1),
        Err(MoeError::InvalidConfig(_))
    ));
    assert!(matches!(
        permute(MatRef::new("ids", &[0], 1, 1).unwrap(), 1, 0),
        Err(MoeError::InvalidConfig(_))
    ));
}

#[test]
fn shape_mismatches() {
    // Views check their lengths.
    assert!(matches!(
        MatRef::new("x", &[0f32; 5], 2, 3),
        Err(MoeError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        ExpertsRef::new("w", &[0f32; 5], 1, 2, 3),
        Err(MoeError::ShapeMismatch { .. })
    ));
    // Logits of the wrong width.
    let cfg = RoutingConfig::softmax_topk(4, 2, true);
    assert!(matches!(
        route(&cfg, MatRef::new("l", &[0f32; 6], 2, 3).unwrap(), None),
        Err(MoeError::ShapeMismatch { .. })
    ));
    // GEMM: K mismatch, offsets of the wrong length or not ending at the row count, output of the wrong shape.
    let x = [1f32; 6];
    let w = [1f32; 12];
    let xv = MatRef::new("x", &x, 2, 3).unwrap();
    let mut out = [0f32; 8];
    let mut ov = MatMut::new("o", &mut out, 2, 4).unwrap();
    assert!(matches!(
        grouped_gemm(
            xv,
            &[0, 2],
            ExpertsRef::new("w", &w, 1, 3, 4).unwrap(),
            &mut ov
        ),
        Err(MoeError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        grouped_gemm(
            xv,
            &[0, 1, 2],
            ExpertsRef::new("w", &w, 1, 4, 3).unwrap(),
            &mut ov
        ),
        Err(MoeError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        grouped_gemm(
            xv,
            &[0, 1],
            ExpertsRef::new("w", &w, 1, 4, 3).unwrap(),
            &mut ov
        ),
        Err(MoeError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        grouped_gemm(
            xv,
            &[0, 3, 2],
            ExpertsRef::new("w", &[1f32; 24], 2, 4, 3).unwrap(),
            &mut ov
        ),
        Err(MoeError::InvalidConfig(_))
    ));
    // Gather and combine against a permutation of other sizes.
    let p = permute(MatRef::new("ids", &[0, 1, 1, 0], 2, 2).unwrap(), 2, 1).unwrap();
    let mut g = [0f32; 12];
    assert!(matches!(
        gather(
            MatRef::new("x", &[0f32; 9], 3, 3).unwrap(),
            &p,
            &mut MatMut::new("g", &mut g, 4, 3).unwrap()
        ),
        Err(MoeError::ShapeMismatch { .. })
    ));
    let mut o = [0f32; 6];
    assert!(matches!(
        combine(
            MatRef::new("y", &[0f32; 9], 3, 3).unwrap(),
            &p,
            MatRef::new("w", &[0f32; 4], 2, 2).unwrap(),
            None::<MatRef<'_, f32>>,
            &mut MatMut::new("o", &mut o, 2, 3).unwrap()
        ),
        Err(MoeError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        combine(
            MatRef::new("y", &[0f32; 12], 4, 3).unwrap(),
            &p,
            MatRef::new("w", &[0f32, f32::INFINITY, 0.0, 0.0], 2, 2).unwrap(),
            None::<MatRef<'_, f32>>,
            &mut MatMut::new("o", &mut o, 2, 3).unwrap()
        ),
        Err(MoeError::NonFinite {
            what: "routing weight",
            ..
        })
    ));
    // Layer weights of the wrong size, one tensor at a time.
    let cfg = small_config();
    let mutations: Vec<Mutation> = vec![
        Box::new(|w| w.router.pop().map(drop).unwrap_or(())),
        Box::new(|w| w.gate_up.push(0.0)),
        Box::new(|w| w.down.truncate(3)),
        Box::new(|w| w.shared[0].down.push(1.0)),
        Box::new(|w| w.shared[0].gate.as_mut().unwrap().push(1.0)),
        Box::new(|w| w.shared.clear()),
    ];
    for (n, m) in mutations.iter().enumerate() {
        let mut w = small_weights();
        m(&mut w);
        let err = CpuMoeLayer::new(cfg.clone(), w).unwrap_err();
        assert!(
            matches!(err, MoeError::ShapeMismatch { .. }),
            "mutation {n}: {err}"
        );
    }
    // A gate where the config has none, a missing correction bias.
    let mut w = small_weights();
    w.shared[0].gate = None;
    assert!(matches!(
        CpuMoeLayer::new(cfg.clone(), w),
        Err(MoeError::InvalidConfig(_))
    ));
    let mut c = cfg.clone();
    c.routing.correction_bias = true;
    assert!(matches!(
        CpuMoeLayer::new(c, small_weights()),
        Err(MoeError::InvalidConfig(_))
    ));
    // Hidden states of the wrong width.
    let layer = CpuMoeLayer::new(cfg, small_weights()).unwrap();
    assert!(matches!(
        layer.forward(MatRef::new("x", &[0f32; 10], 2, 5).unwrap()),
        Err(MoeError::ShapeMismatch { .. })
    ));
}

#[test]
fn dtype_mismatch() {
    let t = HostTensor::from_vec("x", vec![2, 2], vec![1f32, 2.0, 3.0, 4.0]).unwrap();
    let err = t.matrix::<half::bf16>("hidden_states").unwrap_err();
    match err {
        MoeError::DTypeMismatch {
            what,
            expected: DType::BF16,
            found: DType::F32,
        } => assert_eq!(what, "hidden_states"),
        other => panic!("{other}"),
    }
    assert!(matches!(t.matrix::<f32>("x"), Ok(m) if m.rows() == 2));
    let three_d = HostTensor::from_vec("y", vec![1, 2, 2], vec![1f32; 4]).unwrap();
    assert!(matches!(
        three_d.matrix::<f32>("y"),
        Err(MoeError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        HostTensor::from_vec("z", vec![3, 2], vec![1f32; 4]),
        Err(MoeError::ShapeMismatch { .. })
    ));
}

#[test]
fn size_overflow() {
    let err = MatRef::new("x", &[0f32; 1], usize::MAX, 2).unwrap_err();
    assert!(matches!(err, MoeError::SizeOverflow(_)), "{err}");
    let err = ExpertsRef::new("w", &[0f32; 1], 1 << 40, 1 << 20, 1 << 20).unwrap_err();
    assert!(matches!(err, MoeError::SizeOverflow(_)), "{err}");
}
