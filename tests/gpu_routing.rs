//! The GPU router against the CPU reference, on seeded random shapes and configs, plus bad input.
//!
//! Without a usable GPU (no kernels built, no driver, no device) each test prints
//! `SKIPPED gpu_routing::<test>: <reason>` and passes, unless `MOE_KERNELS_REQUIRE_GPU=1`, which makes a
//! missing GPU a failure (for GPU CI runners). The seed is printed; `MOE_TEST_SEED` replays it.

mod common;

use cudarc::driver::CudaSlice;
use half::{bf16, f16};
use moe_kernels::cpu::routing::{route as cpu_route, Routing};
use moe_kernels::gpu::{route, Device, DeviceStatus, GpuElement};
use moe_kernels::{GroupScore, GroupedTopK, MatRef, MoeError, RoutingConfig, ScoringFunc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;

/// The device, or `None` (after printing why) when this machine cannot run the GPU tests.
fn device(test: &str) -> Option<Device> {
    common::gpu("gpu_routing", test)
}

#[test]
fn device_new_reports_a_missing_gpu_as_an_error() {
    // Never a panic: Ok on a GPU machine (real or emulated), a typed error everywhere else.
    common::backend::backend();
    match Device::new(0) {
        Ok(_) | Err(MoeError::KernelsNotBuilt) | Err(MoeError::NoCudaDevice(_)) => {}
        Err(e) => panic!("unexpected error from Device::new(0): {e}"),
    }
}

/// Logits as stored on the device, and their exact `f32` values for the CPU reference.
enum Logits {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
}

impl Logits {
    fn new(kind: usize, values: &[f32]) -> Self {
        match kind {
            0 => Logits::F32(values.to_vec()),
            1 => Logits::Bf16(values.iter().map(|&v| bf16::from_f32(v)).collect()),
            _ => Logits::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
        }
    }

    fn exact_f32(&self) -> Vec<f32> {
        match self {
            Logits::F32(v) => v.clone(),
            Logits::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Logits::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }

    fn dtype_name(&self) -> &'static str {
        match self {
            Logits::F32(_) => "f32",
            Logits::Bf16(_) => "bf16",
            Logits::F16(_) => "f16",
        }
    }
}

/// The GPU outputs of one routing launch.
struct GpuRouting {
    ids: Vec<i32>,
    weights: Vec<f32>,
}

/// Upload, poison the outputs (ids -7, weights NaN), route, check the status, download.
fn run_gpu<T: GpuElement>(
    dev: &Device,
    cfg: &RoutingConfig,
    logits: &[T],
    num_tokens: usize,
    bias: Option<&[f32]>,
    status: &mut DeviceStatus,
) -> Result<GpuRouting, MoeError> {
    let stream = dev.stream();
    let n = num_tokens * cfg.top_k;
    let logits: CudaSlice<T> = stream.clone_htod(logits)?;
    let bias = bias.map(|b| stream.clone_htod(b)).transpose()?;
    let mut ids = stream.clone_htod(&vec![-7i32; n])?;
    let mut weights = stream.clone_htod(&vec![f32::NAN; n])?;
    let bias_view = bias.as_ref().map(|b| b.as_view());
    route(
        dev,
        cfg,
        &logits.as_view(),
        num_tokens,
        bias_view.as_ref(),
        &mut ids.as_view_mut(),
        &mut weights.as_view_mut(),
        status,
    )?;
    Ok(GpuRouting {
        ids: stream.clone_dtoh(&ids)?,
        weights: stream.clone_dtoh(&weights)?,
    })
}

fn run_gpu_logits(
    dev: &Device,
    cfg: &RoutingConfig,
    logits: &Logits,
    num_tokens: usize,
    bias: Option<&[f32]>,
    status: &mut DeviceStatus,
) -> Result<GpuRouting, MoeError> {
    match logits {
        Logits::F32(v) => run_gpu(dev, cfg, v, num_tokens, bias, status),
        Logits::Bf16(v) => run_gpu(dev, cfg, v, num_tokens, bias, status),
        Logits::F16(v) => run_gpu(dev, cfg, v, num_tokens, bias, status),
    }
}

fn near_tie(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()) + 1e-12
}

/// Whether the boundary between kept and dropped groups is a near-tie (then the two sides may keep
/// different groups, and the rows legitimately differ).
fn group_boundary_near_tie(g: &GroupedTopK, choice: &[f64]) -> bool {
    if g.topk_group == g.n_group {
        return false;
    }
    let size = choice.len() / g.n_group;
    let mut scores: Vec<f64> = choice
        .chunks(size)
        .map(|m| {
            let mut m = m.to_vec();
            m.sort_by(|a, b| b.total_cmp(a));
            match g.score {
                GroupScore::SumTop2 if m.len() >= 2 => m[0] + m[1],
                _ => m[0],
            }
        })
        .collect();
    scores.sort_by(|a, b| b.total_cmp(a));
    near_tie(scores[g.topk_group - 1], scores[g.topk_group])
}

/// Compare GPU and CPU routing row by row. Ids must be equal except where the two experts at a slot
/// (or the kept/dropped groups) have choice scores within 1e-6 relative; weights of equal rows within
/// 1e-5 relative. Returns the number of rows accepted as near-ties.
fn compare(
    what: &str,
    cfg: &RoutingConfig,
    logits: &[f32],
    bias: Option<&[f32]>,
    cpu: &Routing,
    gpu: &GpuRouting,
) -> usize {
    let (e, k) = (cfg.num_experts, cfg.top_k);
    let mut tie_rows = 0;
    for t in 0..cpu.num_tokens {
        let row = t * k..(t + 1) * k;
        let (cpu_ids, gpu_ids) = (&cpu.ids[row.clone()], &gpu.ids[row.clone()]);
        let mut seen = vec![false; e];
        for &id in gpu_ids {
            assert!(
                (0..e as i32).contains(&id) && !std::mem::replace(&mut seen[id as usize], true),
                "{what}: token {t}: GPU ids {gpu_ids:?} are not distinct experts in 0..{e}"
            );
        }
        if cpu_ids == gpu_ids {
            for (j, (&c, &g)) in cpu.weights[row.clone()]
                .iter()
                .zip(&gpu.weights[row.clone()])
                .enumerate()
            {
                assert!(
                    (g - c).abs() <= 1e-5 * c.abs() + 1e-12,
                    "{what}: token {t} slot {j} (expert {}): GPU weight {g} vs CPU {c}",
                    cpu_ids[j]
                );
            }
            continue;
        }
        let choice = common::choice_scores(cfg, &logits[t * e..(t + 1) * e], bias);
        let groups_tied = cfg
            .grouping
            .as_ref()
            .is_some_and(|g| group_boundary_near_tie(g, &choice));
        let slots_tied = cpu_ids
            .iter()
            .zip(gpu_ids)
            .all(|(&a, &b)| a == b || near_tie(choice[a as usize], choice[b as usize]));
        assert!(
            groups_tied || slots_tied,
            "{what}: token {t}: GPU ids {gpu_ids:?} vs CPU {cpu_ids:?} (choice scores GPU {:?}, \
             CPU {:?})",
            gpu_ids
                .iter()
                .map(|&i| choice[i as usize])
                .collect::<Vec<_>>(),
            cpu_ids
                .iter()
                .map(|&i| choice[i as usize])
                .collect::<Vec<_>>(),
        );
        assert!(
            gpu.weights[row].iter().all(|w| w.is_finite()),
            "{what}: token {t}: non-finite GPU weight"
        );
        tie_rows += 1;
    }
    tie_rows
}

fn check_case(
    dev: &Device,
    rng: &mut StdRng,
    cfg: &RoutingConfig,
    num_tokens: usize,
    dtype: usize,
) -> usize {
    let e = cfg.num_experts;
    let spread = *[0.5f32, 3.0, 12.0].choose(rng).unwrap();
    let raw: Vec<f32> = (0..num_tokens * e)
        .map(|_| rng.random_range(-spread..spread))
        .collect();
    let logits = Logits::new(dtype, &raw);
    let exact = logits.exact_f32();
    let bias: Option<Vec<f32>> = cfg
        .correction_bias
        .then(|| (0..e).map(|_| rng.random_range(-0.2f32..0.2)).collect());
    let what = format!("{cfg:?}, T = {num_tokens}, {}", logits.dtype_name());

    let view = MatRef::new("router logits", &exact, num_tokens, e).unwrap();
    let cpu = cpu_route(cfg, view, bias.as_deref()).unwrap();
    let mut status = DeviceStatus::new(dev).unwrap();
    let gpu = run_gpu_logits(dev, cfg, &logits, num_tokens, bias.as_deref(), &mut status)
        .unwrap_or_else(|err| panic!("{what}: GPU routing failed: {err}"));
    status
        .check()
        .unwrap_or_else(|err| panic!("{what}: status reports {err}"));
    compare(&what, cfg, &exact, bias.as_deref(), &cpu, &gpu)
}

/// The most rows x k x 32-expert words one random case selects on the emulated GPU.
const EMULATED_SELECTION_WORK: usize = 1 << 18;

#[test]
fn matches_cpu_reference_on_random_configs() {
    let Some(dev) = device("matches_cpu_reference_on_random_configs") else {
        return;
    };
    let mut rng = common::rng("gpu_routing");
    let mut rows = 0;
    let mut tie_rows = 0;
    for case in 0..60 {
        // Every fast-path width (E <= 32, 64, 128, 256, 512) and its boundaries, and the general
        // path beyond 512.
        let e = *[1usize, 8, 33, 60, 128, 256, 257, 512, 513, 1000, 1024]
            .choose(&mut rng)
            .unwrap();
        let cfg = common::random_routing_config(&mut rng, e);
        let mut t = *[1usize, 7, 1000, 4097].choose(&mut rng).unwrap();
        // Keep the CPU reference quick: dense k = E routing of big rows uses fewer tokens.
        if cfg.top_k * t > 1 << 20 {
            t = 1000;
        }
        // The emulated GPU's scaled-down twin: bound each case's selection work (rows x k passes
        // over the row's 32-expert words) so the suite's time does not depend on the seed. Small
        // configs keep 4097 rows (several blocks and a tail); dense k = E routing of wide rows uses
        // fewer.
        if common::emulated() {
            let passes = cfg.top_k * e.div_ceil(32);
            t = t.min((EMULATED_SELECTION_WORK / passes).max(7));
        }
        let dtype = case % 3;
        tie_rows += check_case(&dev, &mut rng, &cfg, t, dtype);
        rows += t;
    }
    eprintln!("gpu_routing: {rows} rows compared, {tie_rows} accepted as near-ties");
}

#[test]
fn matches_cpu_reference_on_model_configs() {
    let Some(dev) = device("matches_cpu_reference_on_model_configs") else {
        return;
    };
    let mut rng = common::rng("gpu_routing_models");
    let configs = [
        moe_kernels::MoeConfig::mixtral_8x7b().routing,
        moe_kernels::MoeConfig::qwen2_moe_a2_7b().routing,
        moe_kernels::MoeConfig::qwen3_30b_a3b().routing,
        moe_kernels::MoeConfig::deepseek_v2_lite().routing,
        moe_kernels::MoeConfig::deepseek_v3().routing,
        moe_kernels::MoeConfig::olmoe_1b_7b().routing,
        RoutingConfig::dense_mixture(60),
    ];
    for cfg in &configs {
        for dtype in 0..3 {
            check_case(&dev, &mut rng, cfg, 4097, dtype);
        }
    }
}

#[test]
fn equal_logits_pick_lower_expert_ids() {
    let Some(dev) = device("equal_logits_pick_lower_expert_ids") else {
        return;
    };
    // Every expert ties: the picks are 0, 1, ..., k-1 (ties go to the lower index), also across
    // groups of equal score.
    let mut cfg = RoutingConfig::softmax_topk(64, 8, true);
    let logits = vec![0.25f32; 3 * 64];
    let mut status = DeviceStatus::new(&dev).unwrap();
    for grouping in [
        None,
        Some(GroupedTopK {
            n_group: 8,
            topk_group: 2,
            score: GroupScore::SumTop2,
        }),
    ] {
        cfg.grouping = grouping;
        let gpu = run_gpu(&dev, &cfg, &logits, 3, None, &mut status).unwrap();
        for t in 0..3 {
            assert_eq!(&gpu.ids[t * 8..(t + 1) * 8], &[0, 1, 2, 3, 4, 5, 6, 7]);
            for &w in &gpu.weights[t * 8..(t + 1) * 8] {
                assert!((w - 0.125).abs() < 1e-6, "weight {w}");
            }
        }
    }
    status.check().unwrap();
}

#[test]
fn bad_shapes_and_configs_are_rejected_before_launch() {
    let Some(dev) = device("bad_shapes_and_configs_are_rejected_before_launch") else {
        return;
    };
    let stream = dev.stream();
    let cfg = RoutingConfig::softmax_topk(8, 2, true);
    let logits = stream.clone_htod(&vec![0.5f32; 3 * 8]).unwrap();
    let mut ids = stream.clone_htod(&vec![-7i32; 3 * 2]).unwrap();
    let mut weights = stream.clone_htod(&vec![f32::NAN; 3 * 2]).unwrap();
    let bias = stream.clone_htod(&vec![0f32; 8]).unwrap();
    let mut status = DeviceStatus::new(&dev).unwrap();

    // The outputs are borrowed by the closure only until its last call below.
    let mut run =
        |cfg: &RoutingConfig, t: usize, n_logits: usize, bias_len: Option<usize>, out: usize| {
            let bias_view = bias_len.map(|n| bias.slice(..n));
            route(
                &dev,
                cfg,
                &logits.slice(..n_logits),
                t,
                bias_view.as_ref(),
                &mut ids.slice_mut(..out),
                &mut weights.slice_mut(..out),
                &mut status,
            )
        };
    let shape = |r: Result<(), MoeError>| matches!(r, Err(MoeError::ShapeMismatch { .. }));
    let invalid = |r: Result<(), MoeError>| matches!(r, Err(MoeError::InvalidConfig(_)));
    assert!(shape(run(&cfg, 3, 23, None, 6)), "short logits");
    assert!(shape(run(&cfg, 3, 24, None, 5)), "short outputs");
    assert!(
        shape(run(&cfg, 2, 24, None, 4)),
        "T does not match the logits"
    );
    let k_too_big = RoutingConfig::softmax_topk(8, 9, true);
    assert!(invalid(run(&k_too_big, 3, 24, None, 6)), "k > E");
    assert!(invalid(run(&cfg, 3, 24, Some(8), 6)), "unexpected bias");
    let biased = RoutingConfig {
        correction_bias: true,
        ..cfg.clone()
    };
    assert!(invalid(run(&biased, 3, 24, None, 6)), "missing bias");
    assert!(shape(run(&biased, 3, 24, Some(7), 6)), "short bias");
    // T = 0 is valid and launches nothing.
    assert!(run(&cfg, 0, 0, None, 0).is_ok());

    // Nothing was written by the rejected calls.
    assert!(stream.clone_dtoh(&ids).unwrap().iter().all(|&v| v == -7));
    assert!(stream
        .clone_dtoh(&weights)
        .unwrap()
        .iter()
        .all(|v| v.is_nan()));
    status.check().unwrap();
}

#[test]
fn non_finite_inputs_are_reported_by_the_status() {
    let Some(dev) = device("non_finite_inputs_are_reported_by_the_status") else {
        return;
    };
    let (t, e, k) = (5usize, 60usize, 4usize);
    let cfg = RoutingConfig::softmax_topk(e, k, true);
    let mut logits = vec![0.1f32; t * e];
    logits[3 * e + 17] = f32::INFINITY;
    logits[4 * e + 2] = f32::NAN;
    logits[3 * e + 40] = f32::NAN;
    let mut status = DeviceStatus::new(&dev).unwrap();

    for (dtype, name) in [(0, "f32"), (1, "bf16"), (2, "f16")] {
        status.reset().unwrap();
        let gpu = run_gpu_logits(
            &dev,
            &cfg,
            &Logits::new(dtype, &logits),
            t,
            None,
            &mut status,
        )
        .unwrap();
        // The lowest (token, expert) is reported, with its value.
        match status.check() {
            Err(MoeError::NonFinite {
                what: "router logit",
                token: 3,
                expert: 17,
                value,
            }) if value == f32::INFINITY => {}
            other => panic!("{name}: expected a non-finite logit at (3, 17), got {other:?}"),
        }
        // Affected rows fall back to experts 0..k with weight 0; the others are routed normally.
        for row in [3, 4] {
            assert_eq!(&gpu.ids[row * k..(row + 1) * k], &[0, 1, 2, 3], "{name}");
            assert!(gpu.weights[row * k..(row + 1) * k]
                .iter()
                .all(|&w| w == 0.0));
        }
        assert!(gpu.weights[..3 * k]
            .iter()
            .all(|&w| (w - 0.25).abs() < 1e-6));
    }

    // A non-finite bias entry is reported as such (token 0), before any logit.
    let biased = RoutingConfig {
        correction_bias: true,
        scoring: ScoringFunc::Sigmoid,
        ..cfg.clone()
    };
    let mut bias = vec![0f32; e];
    bias[33] = f32::NEG_INFINITY;
    bias[50] = f32::NAN;
    status.reset().unwrap();
    run_gpu(&dev, &biased, &logits, t, Some(&bias), &mut status).unwrap();
    match status.check() {
        Err(MoeError::NonFinite {
            what: "correction bias",
            token: 0,
            expert: 33,
            value,
        }) if value == f32::NEG_INFINITY => {}
        other => panic!("expected a non-finite bias at expert 33, got {other:?}"),
    }

    // reset() clears the record.
    status.reset().unwrap();
    status.check().unwrap();
}

#[test]
fn route_from_hidden_matches_cpu_router() {
    let Some(dev) = device("route_from_hidden_matches_cpu_router") else {
        return;
    };
    let mut rng = common::rng("route_from_hidden_matches_cpu_router");
    let stream = dev.stream();
    for (e, k, h, t) in [
        (8usize, 2usize, 256usize, 7usize),
        (60, 4, 128, 1000),
        (256, 8, 512, 33),
    ] {
        let cfg = RoutingConfig::softmax_topk(e, k, true);
        let x: Vec<bf16> = common::randn(&mut rng, t * h, 1.0)
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        let w: Vec<bf16> = common::randn(&mut rng, e * h, 1.0 / (h as f32).sqrt())
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        // The CPU router on the same bf16 values.
        let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let mut logits_cpu = vec![0f32; t * e];
        moe_kernels::cpu::routing::router_logits(
            MatRef::new("x", &xf, t, h).unwrap(),
            MatRef::new("w", &wf, e, h).unwrap(),
            &mut moe_kernels::MatMut::new("logits", &mut logits_cpu, t, e).unwrap(),
        )
        .unwrap();
        let cpu = cpu_route(
            &cfg,
            MatRef::new("logits", &logits_cpu, t, e).unwrap(),
            None,
        )
        .unwrap();

        let x_dev = stream.clone_htod(&x).unwrap();
        let w_dev = stream.clone_htod(&w).unwrap();
        let mut logits = stream.clone_htod(&vec![f32::NAN; t * e]).unwrap();
        let mut ids = stream.clone_htod(&vec![-7i32; t * k]).unwrap();
        let mut weights = stream.clone_htod(&vec![f32::NAN; t * k]).unwrap();
        let mut status = DeviceStatus::new(&dev).unwrap();
        moe_kernels::gpu::route_from_hidden(
            &dev,
            &cfg,
            &x_dev.as_view(),
            t,
            h,
            &w_dev.as_view(),
            None,
            None,
            &mut logits.as_view_mut(),
            &mut ids.as_view_mut(),
            &mut weights.as_view_mut(),
            &mut status,
        )
        .unwrap();
        status.check().unwrap();
        let logits_gpu = stream.clone_dtoh(&logits).unwrap();
        common::assert_close(
            "router logits",
            &common::f64s(&logits_gpu),
            &common::f64s(&logits_cpu),
            1e-5,
        );
        let gpu = GpuRouting {
            ids: stream.clone_dtoh(&ids).unwrap(),
            weights: stream.clone_dtoh(&weights).unwrap(),
        };
        // Near-ties are judged on the GPU's logits (the CPU's differ in the last bits).
        compare(
            &format!("route_from_hidden E = {e}"),
            &cfg,
            &logits_gpu,
            None,
            &cpu_route(
                &cfg,
                MatRef::new("logits", &logits_gpu, t, e).unwrap(),
                None,
            )
            .unwrap(),
            &gpu,
        );
        // And the routing of the CPU's logits agrees except where the logits differ.
        let mut differing = 0;
        for tok in 0..t {
            if cpu.ids[tok * k..(tok + 1) * k] != gpu.ids[tok * k..(tok + 1) * k] {
                differing += 1;
            }
        }
        assert!(
            differing <= (t / 100).max(1),
            "E = {e}: {differing} of {t} tokens routed differently from the CPU router"
        );
    }
}

/// Small routings through every kernel (each fast-path width and the general path, grouped and
/// biased), for `compute-sanitizer` (scripts/gpu-check.sh runs the `sanitizer_smoke` tests).
#[test]
fn sanitizer_smoke() {
    let Some(dev) = device("sanitizer_smoke") else {
        return;
    };
    let mut rng = common::rng("gpu_routing_sanitizer_smoke");
    for (n, e) in [8usize, 60, 128, 256, 512, 1000, 1024]
        .into_iter()
        .enumerate()
    {
        let cfg = common::random_routing_config(&mut rng, e);
        check_case(&dev, &mut rng, &cfg, 3, n % 3);
    }
    check_case(
        &dev,
        &mut rng,
        &moe_kernels::MoeConfig::deepseek_v3().routing,
        5,
        1,
    );
}

#[test]
fn router_bias_matches_the_float64_oracle() {
    let Some(dev) = device("router_bias_matches_the_float64_oracle") else {
        return;
    };
    let stream = dev.stream().clone();
    let mut rng = common::rng("router_bias_matches_the_float64_oracle");
    // gpt-oss's routing (softmax over the chosen experts: softmax renormalised) with its router
    // bias, which moves both the choice and the weights.
    for (e, k, h, t) in [(32usize, 4usize, 192usize, 300usize), (8, 2, 64, 50)] {
        let cfg = RoutingConfig::softmax_topk(e, k, true);
        let x: Vec<bf16> = common::values(&mut rng, t * h, 1.0);
        let w: Vec<bf16> = common::values(&mut rng, e * h, 1.0 / (h as f32).sqrt());
        let bias = common::randn(&mut rng, e, 1.0);
        let x_dev = stream.clone_htod(&x).unwrap();
        let w_dev = stream.clone_htod(&w).unwrap();
        let bias_dev = stream.clone_htod(&bias).unwrap();
        let mut logits = stream.clone_htod(&vec![f32::NAN; t * e]).unwrap();
        let mut ids = stream.clone_htod(&vec![-7i32; t * k]).unwrap();
        let mut weights = stream.clone_htod(&vec![f32::NAN; t * k]).unwrap();
        let mut status = DeviceStatus::new(&dev).unwrap();
        moe_kernels::gpu::route_from_hidden(
            &dev,
            &cfg,
            &x_dev.as_view(),
            t,
            h,
            &w_dev.as_view(),
            Some(&bias_dev.as_view()),
            None,
            &mut logits.as_view_mut(),
            &mut ids.as_view_mut(),
            &mut weights.as_view_mut(),
            &mut status,
        )
        .unwrap();
        status.check().unwrap();
        let logits_gpu = stream.clone_dtoh(&logits).unwrap();
        let (ids, weights) = (
            stream.clone_dtoh(&ids).unwrap(),
            stream.clone_dtoh(&weights).unwrap(),
        );

        // The oracle: logits x . w + bias in float64, then the routing rule.
        let (xf, wf) = (common::el64(&x), common::el64(&w));
        let route = common::oracle::Route::of(&cfg, None);
        let mut moved = 0;
        let mut want_logits = vec![];
        for tok in 0..t {
            let plain = common::oracle::matvec(&wf, e, h, &xf[tok * h..(tok + 1) * h]);
            let biased: Vec<f64> = plain
                .iter()
                .zip(&bias)
                .map(|(l, &b)| l + b as f64)
                .collect();
            want_logits.extend_from_slice(&biased);
            let want = common::oracle::route_row(&route, &biased);
            moved += usize::from(common::oracle::route_row(&route, &plain).ids != want.ids);
            let row = tok * k..(tok + 1) * k;
            let got: Vec<usize> = ids[row.clone()].iter().map(|&i| i as usize).collect();
            if got == want.ids {
                for (j, (&g, &r)) in weights[row].iter().zip(&want.weights).enumerate() {
                    assert!(
                        (g as f64 - r).abs() <= 1e-5 * r.abs() + 1e-7,
                        "E = {e}: token {tok} slot {j}: GPU weight {g} vs oracle {r}"
                    );
                }
            } else {
                // Only a near-tie of the oracle's choice scores may order differently.
                for (&a, &b) in got.iter().zip(&want.ids) {
                    let (ca, cb) = (want.choice[a], want.choice[b]);
                    assert!(
                        (ca - cb).abs() <= 1e-5 * ca.abs().max(cb.abs()),
                        "E = {e}: token {tok}: GPU ids {got:?} vs oracle {:?}",
                        want.ids
                    );
                }
            }
        }
        common::assert_close(
            "biased router logits",
            &common::f64s(&logits_gpu),
            &want_logits,
            1e-5,
        );
        // The bias matters: it changes the choice of many tokens.
        assert!(
            moved > t / 10,
            "E = {e}: the router bias moved only {moved} of {t} tokens"
        );
    }
}
