//! Expert parallelism, with the ranks emulated on one machine: each rank holds the router of all
//! experts and its own experts' weights (`ExpertMap`), and returns its partial sum. The ranks'
//! partial outputs, summed in float64, must equal a float64 oracle of the whole layer (each token's
//! `sum_s w_s * expert_s(x) + shared(x)`, computed directly, no permutation), for even and uneven
//! contiguous splits, shuffled maps, and more ranks than experts (ranks that hold no chosen expert
//! return exact zeros, or only the shared experts on the rank that adds them).
//!
//! On the CPU always; on the GPU (or the emulated GPU) the same through `GpuMoeLayer::upload_rank`
//! and the raw forward. Without a usable GPU the GPU tests print `SKIPPED expert_parallel::<test>`
//! and pass, unless `MOE_KERNELS_REQUIRE_GPU=1`. The seed is printed; `MOE_TEST_SEED` replays it.

mod common;

use cudarc::driver::CudaSlice;
use half::bf16;
use moe_kernels::cpu::layer::{CpuMoeLayer, MoeWeights};
use moe_kernels::cpu::routing::Routing;
use moe_kernels::gpu::GpuMoeLayer;
use moe_kernels::raw::{self, RawExpertMap};
use moe_kernels::{DType, Element, ExpertMap, MatRef, MoeConfig, MoeError};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// The rank's weights: the whole layer's, with the routed experts cut to the rank's, in local order.
fn rank_weights<W: Element>(
    cfg: &MoeConfig,
    full: &MoeWeights<W>,
    map: &ExpertMap,
) -> MoeWeights<W> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let (up, down) = (cfg.activation.up_rows(i) * h, h * i);
    let mut local: Vec<usize> = vec![0; map.num_local()];
    for g in 0..map.num_global() {
        if let Some(l) = map.local(g) {
            local[l] = g;
        }
    }
    let take = |v: &[W], n: usize| {
        local
            .iter()
            .flat_map(|&g| v[g * n..(g + 1) * n].to_vec())
            .collect()
    };
    MoeWeights {
        gate_up: take(&full.gate_up, up),
        down: take(&full.down, down),
        ..full.clone()
    }
}

/// Maps of `ranks` ranks over `e` experts: the contiguous split, or a shuffled assignment with a
/// shuffled local order (uneven: each expert's rank drawn at random); rank 0 adds the shared experts.
fn maps(rng: &mut StdRng, e: usize, ranks: usize, shuffled: bool) -> Vec<ExpertMap> {
    if !shuffled {
        return (0..ranks)
            .map(|r| ExpertMap::contiguous(e, r, ranks).unwrap())
            .collect();
    }
    let owner: Vec<usize> = (0..e).map(|_| rng.random_range(0..ranks)).collect();
    (0..ranks)
        .map(|r| {
            let mut mine: Vec<usize> = (0..e).filter(|&g| owner[g] == r).collect();
            mine.shuffle(rng);
            let mut table = vec![-1i32; e];
            for (l, &g) in mine.iter().enumerate() {
                table[g] = l as i32;
            }
            ExpertMap::new(table).unwrap().with_shared_experts(r == 0)
        })
        .collect()
}

/// The float64 oracle of the whole layer for routing `ids`, `w` (`[T, k]`); `shared` adds the
/// shared experts.
fn oracle<W: Element>(
    cfg: &MoeConfig,
    full: &MoeWeights<W>,
    x: &[f64],
    routing: &Routing,
    include: impl Fn(usize) -> bool,
    shared: bool,
) -> Vec<f64> {
    let (h, k) = (cfg.hidden_size, cfg.routing.top_k);
    let mut out = Vec::with_capacity(routing.num_tokens * h);
    for t in 0..routing.num_tokens {
        let (ids, wts): (Vec<usize>, Vec<f64>) = (0..k)
            .map(|s| {
                (
                    routing.ids[t * k + s] as usize,
                    routing.weights[t * k + s] as f64,
                )
            })
            .filter(|&(g, _)| include(g))
            .unzip();
        out.extend(common::oracle::layer_token(
            cfg,
            full,
            &x[t * h..(t + 1) * h],
            &ids,
            &wts,
            shared,
        ));
    }
    out
}

/// Small configs of every routing and shared-expert structure.
fn configs() -> Vec<MoeConfig> {
    vec![
        common::scaled(MoeConfig::mixtral_8x7b(), 64, 32),
        common::scaled(MoeConfig::qwen2_moe_a2_7b(), 64, 32),
        common::scaled(MoeConfig::deepseek_v3(), 64, 32),
        common::scaled(MoeConfig::olmoe_1b_7b(), 64, 32),
    ]
}

#[test]
fn cpu_ranks_partial_sums_add_up_to_the_layer() {
    let mut rng = common::rng("expert_parallel_cpu");
    for cfg in configs() {
        let e = cfg.routing.num_experts;
        let full = common::random_layer_weights::<f32>(&mut rng, &cfg, false);
        let layer = CpuMoeLayer::new(cfg.clone(), full.clone()).unwrap();
        let h = cfg.hidden_size;
        for (ranks, shuffled) in [
            (1, false),
            (2, false),
            (3, true),
            (5, false),
            (e + 3, false),
            (4, true),
        ] {
            for t in [1usize, 7, 33] {
                let what = format!("E {e}, {ranks} ranks (shuffled {shuffled}), T {t}");
                let x: Vec<f32> = common::values(&mut rng, t * h, 1.0);
                let xm = MatRef::new("x", &x, t, h).unwrap();
                let whole = layer.forward(xm).unwrap();
                let mut sum = vec![0f64; t * h];
                for map in maps(&mut rng, e, ranks, shuffled) {
                    let rank = CpuMoeLayer::with_expert_map(
                        cfg.clone(),
                        rank_weights(&cfg, &full, &map),
                        map.clone(),
                    )
                    .unwrap();
                    let part = rank.forward(xm).unwrap();
                    assert_eq!(
                        part.routing, whole.routing,
                        "{what}: every rank routes alike"
                    );
                    let chosen = whole
                        .routing
                        .ids
                        .iter()
                        .any(|&g| map.local(g as usize).is_some());
                    let adds_shared = map.shared_experts() && !cfg.shared_experts.is_empty();
                    if !chosen && !adds_shared {
                        assert!(
                            part.hidden.iter().all(|&v| v == 0.0),
                            "{what}: an idle rank adds nothing"
                        );
                    }
                    // Each rank's partial against the oracle of its own experts.
                    let want = oracle(
                        &cfg,
                        &full,
                        &common::el64(&x),
                        &whole.routing,
                        |g| map.local(g).is_some(),
                        map.shared_experts(),
                    );
                    common::assert_close(
                        &format!("{what}: a rank's partial"),
                        &common::el64(&part.hidden),
                        &want,
                        1e-5,
                    );
                    sum.iter_mut()
                        .zip(&part.hidden)
                        .for_each(|(s, &v)| *s += v as f64);
                }
                let want = oracle(
                    &cfg,
                    &full,
                    &common::el64(&x),
                    &whole.routing,
                    |_| true,
                    true,
                );
                common::assert_close(&format!("{what}: sum of the ranks"), &sum, &want, 1e-5);
            }
        }
    }
}

#[test]
fn bad_maps_and_rank_weights_are_rejected() {
    let mut rng = common::rng("expert_parallel_bad_input");
    let cfg = common::scaled(MoeConfig::mixtral_8x7b(), 64, 32);
    let full = common::random_layer_weights::<f32>(&mut rng, &cfg, false);
    let map = ExpertMap::contiguous(8, 1, 3).unwrap();
    // A map of another expert count, and weights of the whole layer for a rank's map.
    let other = ExpertMap::contiguous(9, 0, 3).unwrap();
    let r = CpuMoeLayer::with_expert_map(cfg.clone(), rank_weights(&cfg, &full, &map), other);
    assert!(matches!(r, Err(MoeError::InvalidConfig(_))), "{r:?}");
    let r = CpuMoeLayer::with_expert_map(cfg.clone(), full.clone(), map);
    assert!(matches!(r, Err(MoeError::ShapeMismatch { .. })), "{r:?}");
}

#[test]
fn gpu_ranks_partial_sums_add_up_to_the_layer() {
    let Some(dev) = common::gpu(
        "expert_parallel",
        "gpu_ranks_partial_sums_add_up_to_the_layer",
    ) else {
        return;
    };
    let mut rng = common::rng("expert_parallel_gpu");
    let s = dev.stream();
    for cfg in configs() {
        let (e, h, k) = (cfg.routing.num_experts, cfg.hidden_size, cfg.routing.top_k);
        let full = common::random_layer_weights::<bf16>(&mut rng, &cfg, false);
        for (ranks, shuffled, t) in [(3usize, true, 9usize), (e + 3, false, 1), (2, false, 40)] {
            let what = format!("E {e}, {ranks} ranks (shuffled {shuffled}), T {t}");
            let x: Vec<bf16> = common::values(&mut rng, t * h, 1.0);
            let x_dev = s.clone_htod(&x).unwrap();
            let mut sum = vec![0f64; t * h];
            let mut routing = None;
            for map in maps(&mut rng, e, ranks, shuffled) {
                let layer =
                    GpuMoeLayer::upload_rank(&dev, &cfg, &rank_weights(&cfg, &full, &map), &map)
                        .unwrap();
                let mut ws = layer.workspace(&dev, t).unwrap();
                let mut out = s.clone_htod(&vec![bf16::NAN; t * h]).unwrap();
                layer
                    .forward(&dev, &x_dev.as_view(), t, &mut ws, &mut out.as_view_mut())
                    .unwrap();
                ws.status().check().unwrap();
                let part = s.clone_dtoh(&out).unwrap();
                assert!(
                    part.iter().all(|v| v.is_finite()),
                    "{what}: every element written"
                );
                let ids = s.clone_dtoh(&ws.topk_ids()).unwrap();
                let w = s.clone_dtoh(&ws.topk_weights()).unwrap();
                let r = Routing::from_parts(t, k, ids, w, e).unwrap();
                if let Some(first) = &routing {
                    assert_eq!(&r, first, "{what}: every rank routes alike");
                }
                let chosen = r.ids.iter().any(|&g| map.local(g as usize).is_some());
                let adds_shared = map.shared_experts() && !cfg.shared_experts.is_empty();
                if !chosen && !adds_shared {
                    assert!(
                        part.iter().all(|v| v.to_f32() == 0.0),
                        "{what}: an idle rank adds nothing"
                    );
                }
                sum.iter_mut()
                    .zip(&part)
                    .for_each(|(a, v)| *a += v.to_f32() as f64);
                routing.get_or_insert(r);
            }
            let want = oracle(
                &cfg,
                &full,
                &common::el64(&x),
                &routing.unwrap(),
                |_| true,
                true,
            );
            common::assert_close(&format!("{what}: sum of the GPU ranks"), &sum, &want, 1e-2);
        }
    }
}

#[test]
fn raw_ranks_partial_sums_add_up_to_the_layer() {
    let Some(dev) = common::gpu(
        "expert_parallel",
        "raw_ranks_partial_sums_add_up_to_the_layer",
    ) else {
        return;
    };
    let mut rng = common::rng("expert_parallel_raw");
    let cfg = common::scaled(MoeConfig::deepseek_v3(), 64, 32);
    let (e, h, k, t) = (
        cfg.routing.num_experts,
        cfg.hidden_size,
        cfg.routing.top_k,
        12usize,
    );
    let full = common::random_layer_weights::<bf16>(&mut rng, &cfg, false);
    let s = dev.stream();
    let x: Vec<bf16> = common::values(&mut rng, t * h, 1.0);
    let x_dev = s.clone_htod(&x).unwrap();
    let mut sum = vec![0f64; t * h];
    let mut routing = None;
    for map in maps(&mut rng, e, 5, true) {
        let layer =
            GpuMoeLayer::upload_rank(&dev, &cfg, &rank_weights(&cfg, &full, &map), &map).unwrap();
        let weights = common::raw_weights(&layer, s);
        assert_eq!(
            weights.expert_map,
            Some(RawExpertMap {
                table: weights.expert_map.unwrap().table,
                num_local: map.num_local(),
                shared_experts: map.shared_experts(),
            })
        );
        let bytes =
            raw::layer_workspace_bytes(&cfg, DType::BF16, t, Some(map.num_local())).unwrap();
        let mut ws: CudaSlice<u8> = s.clone_htod(&vec![0x5Au8; bytes]).unwrap();
        let mut out = s.clone_htod(&vec![bf16::NAN; t * h]).unwrap();
        common::raw_forward_checked(&dev, s, &cfg, &weights, &x_dev, t, &mut out, &mut ws);
        let part = s.clone_dtoh(&out).unwrap();
        sum.iter_mut()
            .zip(&part)
            .for_each(|(a, v)| *a += v.to_f32() as f64);
        if routing.is_none() {
            let ws_host = s.clone_dtoh(&ws).unwrap();
            let layout =
                raw::LayerWorkspaceLayout::new(&cfg, DType::BF16, t, Some(map.num_local()))
                    .unwrap();
            let word = |at: usize, n: usize| -> Vec<[u8; 4]> {
                ws_host[at..at + 4 * n]
                    .chunks_exact(4)
                    .map(|c| c.try_into().unwrap())
                    .collect()
            };
            let ids = word(layout.topk_ids, t * k)
                .into_iter()
                .map(i32::from_le_bytes)
                .collect();
            let wts = word(layout.topk_weights, t * k)
                .into_iter()
                .map(f32::from_le_bytes)
                .collect();
            routing = Some(Routing::from_parts(t, k, ids, wts, e).unwrap());
        }
    }
    let want = oracle(
        &cfg,
        &full,
        &common::el64(&x),
        &routing.unwrap(),
        |_| true,
        true,
    );
    common::assert_close("sum of the raw ranks", &sum, &want, 1e-2);
}
