//! The GPU MoE layer against `CpuMoeLayer`: every family preset scaled down and random configs, in
//! bf16 and f16, over token counts 1 to 4097, with empty experts and a hot expert. Routing ids must
//! equal the CPU's except at near-ties; the output must match the CPU forward of the same routing
//! within 1e-2 relative L2. Also: CUDA-graph capture and replay give the bits of a direct forward,
//! a device borrowing an engine's stream launches only there, repeated forwards give identical
//! bits, bad input is rejected.
//!
//! Without a usable GPU each test prints `SKIPPED gpu_layer::<test>: <reason>` and passes, unless
//! `MOE_KERNELS_REQUIRE_GPU=1`. The seed is printed; `MOE_TEST_SEED` replays it.

mod common;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use half::{bf16, f16};
use moe_kernels::cpu::layer::{CpuMoeLayer, MoeWeights, SharedExpertWeights};
use moe_kernels::cpu::routing::{route as cpu_route, Routing};
use moe_kernels::gpu::{
    Device, GemmElement, GemmOutput, GpuElement, GpuExpertStorage, GpuMoeLayer, UploadExperts,
    Workspace,
};
use moe_kernels::quant::{e8m0_to_f32, CodeFormat, QuantExperts};
use moe_kernels::{
    Activation, ActivationKind, MatRef, MoeConfig, MoeError, RoutingConfig, ScoringFunc,
    SharedExpertConfig,
};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;

fn device(test: &str) -> Option<Device> {
    common::gpu("gpu_layer", test)
}

/// An element type the layer runs in.
trait LayerElement: GemmElement + GemmOutput<Self> + cudarc::driver::ValidAsZeroBits {}
impl LayerElement for bf16 {}
impl LayerElement for f16 {}

/// Hidden states `[t, h]`; with `hot`, of positive mean (so the hot expert's logit is large).
fn random_x<T: GpuElement>(rng: &mut StdRng, t: usize, h: usize, hot: bool) -> Vec<T> {
    let shift = if hot { 1.0 } else { 0.0 };
    common::randn(rng, t * h, 1.0)
        .into_iter()
        .map(|v| T::from_f32(v + shift))
        .collect()
}

/// What a GPU forward produced.
struct GpuRun<T> {
    out: Vec<T>,
    ids: Vec<i32>,
    weights: Vec<f32>,
}

/// One GPU forward into a NaN-poisoned output; checks the status and downloads everything.
fn gpu_forward<T: LayerElement, S: GpuExpertStorage>(
    dev: &Device,
    layer: &GpuMoeLayer<T, S>,
    ws: &mut Workspace<T>,
    x: &[T],
    t: usize,
) -> GpuRun<T> {
    let s = dev.stream();
    let h = layer.config().hidden_size;
    let x_dev = s.clone_htod(x).unwrap();
    let mut out = s.clone_htod(&vec![T::from_f32(f32::NAN); t * h]).unwrap();
    layer
        .forward(dev, &x_dev.as_view(), t, ws, &mut out.as_view_mut())
        .unwrap();
    ws.status().check().unwrap();
    GpuRun {
        out: s.clone_dtoh(&out).unwrap(),
        ids: s.clone_dtoh(&ws.topk_ids()).unwrap(),
        weights: s.clone_dtoh(&ws.topk_weights()).unwrap(),
    }
}

/// Run `cfg` on both sides and compare. Returns the number of tokens routed differently at
/// near-ties.
fn check_layer<T: LayerElement>(
    dev: &Device,
    rng: &mut StdRng,
    cfg: &MoeConfig,
    t: usize,
    hot: bool,
) -> usize {
    let weights = common::random_layer_weights::<T>(rng, cfg, hot);
    check_layer_weights(dev, rng, cfg, weights, t, hot)
}

/// [`check_layer`] on the given weights (experts stored as `H`: in `T`, or quantized).
fn check_layer_weights<T: LayerElement, H: UploadExperts>(
    dev: &Device,
    rng: &mut StdRng,
    cfg: &MoeConfig,
    weights: MoeWeights<T, H>,
    t: usize,
    hot: bool,
) -> usize {
    let biased = weights.biases.is_some();
    let what = format!(
        "{} T = {t}, hot = {hot}, biases {biased}: {cfg:?}",
        T::DTYPE
    );
    let (h, e, k) = (cfg.hidden_size, cfg.routing.num_experts, cfg.routing.top_k);
    let x = random_x::<T>(rng, t, h, hot);
    let layer = GpuMoeLayer::<T, H::Gpu>::upload(dev, cfg, &weights).unwrap();
    let mut ws = layer.workspace(dev, t).unwrap();
    let gpu = gpu_forward(dev, &layer, &mut ws, &x, t);
    assert!(
        gpu.out.iter().all(|v| v.to_f32().is_finite()),
        "{what}: non-finite output"
    );

    let cpu = CpuMoeLayer::new(cfg.clone(), weights).unwrap();
    let xm = MatRef::new("x", &x, t, h).unwrap();
    let logits = cpu.router_logits(xm).unwrap();
    let bias = cpu.weights().correction_bias.clone();
    let cpu_routing = cpu_route(
        &cfg.routing,
        MatRef::new("logits", &logits, t, e).unwrap(),
        bias.as_deref(),
    )
    .unwrap();

    // Routing: equal ids except where the CPU's choice scores of the differing experts are within
    // 1e-5 of each other (the GPU's logits come from a different accumulation order).
    let mut ties = 0;
    for tok in 0..t {
        let (c, g) = (
            &cpu_routing.ids[tok * k..(tok + 1) * k],
            &gpu.ids[tok * k..(tok + 1) * k],
        );
        if c == g {
            continue;
        }
        let choice = common::choice_scores(
            &cfg.routing,
            &logits[tok * e..(tok + 1) * e],
            bias.as_deref(),
        );
        let mut cs: Vec<f64> = c.iter().map(|&i| choice[i as usize]).collect();
        let mut gs: Vec<f64> = g.iter().map(|&i| choice[i as usize]).collect();
        cs.sort_by(|a, b| b.total_cmp(a));
        gs.sort_by(|a, b| b.total_cmp(a));
        let near = cs
            .iter()
            .zip(&gs)
            .all(|(a, b)| (a - b).abs() <= 1e-5 * a.abs().max(b.abs()) + 1e-7);
        assert!(
            near,
            "{what}: token {tok}: GPU ids {g:?} vs CPU {c:?} ({gs:?} vs {cs:?})"
        );
        ties += 1;
    }

    // Output: the CPU forward of the GPU's routing decision.
    let routing = Routing::from_parts(t, k, gpu.ids.clone(), gpu.weights.clone(), e).unwrap();
    let want = cpu.forward_routed(xm, &routing).unwrap();
    common::assert_close(&what, &common::el64(&gpu.out), &common::el64(&want), 1e-2);
    ties
}

#[test]
fn family_presets_match_the_cpu_layer() {
    let Some(dev) = device("family_presets_match_the_cpu_layer") else {
        return;
    };
    let mut rng = common::rng("gpu_layer_presets");
    let presets = [
        MoeConfig::mixtral_8x7b(),
        MoeConfig::qwen2_moe_a2_7b(),
        MoeConfig::qwen3_30b_a3b(),
        MoeConfig::deepseek_v2_lite(),
        MoeConfig::deepseek_v3(),
        MoeConfig::olmoe_1b_7b(),
    ];
    let mut ties = 0;
    for (n, preset) in presets.into_iter().enumerate() {
        let cfg = common::scaled(preset, 256, 128);
        for t in [1usize, 7, 1000] {
            ties += if n % 2 == 0 {
                check_layer::<bf16>(&dev, &mut rng, &cfg, t, false)
            } else {
                check_layer::<f16>(&dev, &mut rng, &cfg, t, false)
            };
        }
    }
    // The largest token count once per type, on the most routed preset.
    let v3 = common::scaled(MoeConfig::deepseek_v3(), 128, 64);
    ties += check_layer::<bf16>(&dev, &mut rng, &v3, 4097, false);
    ties += check_layer::<f16>(
        &dev,
        &mut rng,
        &common::scaled(MoeConfig::qwen2_moe_a2_7b(), 128, 64),
        4097,
        false,
    );
    eprintln!("gpu_layer presets: {ties} tokens accepted as near-ties");
}

#[test]
fn random_configs_match_the_cpu_layer() {
    let Some(dev) = device("random_configs_match_the_cpu_layer") else {
        return;
    };
    let mut rng = common::rng("gpu_layer_random");
    for case in 0..24 {
        let e = *[1usize, 8, 60, 128, 256].choose(&mut rng).unwrap();
        let k = (*[1usize, 2, 6, 8].choose(&mut rng).unwrap()).min(e);
        // Widths that are and are not multiples of 8 (vector and scalar gather and combine).
        let h = *[64usize, 128, 256, 100].choose(&mut rng).unwrap();
        let i = *[32usize, 64, 96, 40].choose(&mut rng).unwrap();
        let activation = *[
            Activation::SWIGLU,
            Activation::GEGLU,
            Activation {
                kind: ActivationKind::Silu,
                gated: false,
            },
        ]
        .choose(&mut rng)
        .unwrap();
        let shared_experts = match rng.random_range(0..4) {
            0 => vec![],
            1 => vec![SharedExpertConfig {
                intermediate_size: 2 * i,
                sigmoid_gate: true,
            }],
            2 => vec![SharedExpertConfig {
                intermediate_size: i,
                sigmoid_gate: false,
            }],
            _ => vec![
                SharedExpertConfig {
                    intermediate_size: i,
                    sigmoid_gate: false,
                },
                SharedExpertConfig {
                    intermediate_size: 48,
                    sigmoid_gate: true,
                },
            ],
        };
        // Softmax top-k; sigmoid scores that scale the expert inputs (Llama 4); the sparse mixer
        // (Phi-3.5-MoE, two experts).
        let routing = match rng.random_range(0..4) {
            0 => RoutingConfig {
                scoring: ScoringFunc::Sigmoid,
                scale_input: true,
                ..RoutingConfig::softmax_topk(e, k, false)
            },
            1 if e >= 2 => RoutingConfig {
                scoring: ScoringFunc::SparseMixer {
                    jitter_eps: rng.random_range(0.0..0.5),
                },
                ..RoutingConfig::softmax_topk(e, 2, false)
            },
            _ => RoutingConfig::softmax_topk(e, k, rng.random_bool(0.5)),
        };
        let cfg = MoeConfig {
            hidden_size: h,
            intermediate_size: i,
            routing,
            activation,
            shared_experts,
        };
        let t = *[1usize, 7, 1000, 4097].choose(&mut rng).unwrap();
        let hot = case % 6 == 5;
        if case % 2 == 0 {
            check_layer::<bf16>(&dev, &mut rng, &cfg, t, hot);
        } else {
            check_layer::<f16>(&dev, &mut rng, &cfg, t, hot);
        }
    }
}

#[test]
fn hot_expert_and_empty_experts() {
    let Some(dev) = device("hot_expert_and_empty_experts") else {
        return;
    };
    let mut rng = common::rng("gpu_layer_hot");
    // Every token picks expert 0 first; with T = 1 and E = 256 almost every expert is empty.
    let cfg = MoeConfig {
        hidden_size: 128,
        intermediate_size: 64,
        routing: RoutingConfig::softmax_topk(256, 8, true),
        activation: Activation::SWIGLU,
        shared_experts: vec![],
    };
    for t in [1usize, 7, 1000] {
        check_layer::<bf16>(&dev, &mut rng, &cfg, t, true);
    }
}

/// A small DeepSeek-V3-like layer and its inputs, for the graph and repeatability tests.
fn small_layer<T: LayerElement>(dev: &Device, rng: &mut StdRng) -> (GpuMoeLayer<T>, MoeConfig) {
    let cfg = common::scaled(MoeConfig::deepseek_v3(), 256, 128);
    let weights = common::random_layer_weights::<T>(rng, &cfg, false);
    (GpuMoeLayer::upload(dev, &cfg, &weights).unwrap(), cfg)
}

#[test]
fn cuda_graph_replay_equals_a_direct_forward() {
    let Some(dev) = device("cuda_graph_replay_equals_a_direct_forward") else {
        return;
    };
    check_graph_replay(&dev, "gpu_layer_graph");
}

#[test]
fn a_borrowed_engine_stream_gets_every_launch() {
    let Some(owned) = device("a_borrowed_engine_stream_gets_every_launch") else {
        return;
    };
    let mut rng = common::rng("gpu_layer_engine_stream");
    // The engine's own stream; the crate's device borrows it.
    let engine = owned.context().new_stream().unwrap();
    let dev = Device::from_stream(engine.clone()).unwrap();
    assert!(std::sync::Arc::ptr_eq(dev.stream(), &engine));
    let cfg = common::scaled(MoeConfig::qwen3_30b_a3b(), 128, 64);
    check_layer::<bf16>(&dev, &mut rng, &cfg, 33, false);
    // A capture of the engine's stream holds every launch of a forward: none ran outside it.
    check_graph_replay(&dev, "gpu_layer_engine_graph");
    // Another stream of the engine's context, sharing the loaded modules.
    let other = dev
        .on_stream(owned.context().new_stream().unwrap())
        .unwrap();
    check_layer::<bf16>(&other, &mut rng, &cfg, 5, true);
}

/// Capture one forward on `dev`'s stream and replay it: nothing may run during the capture (every
/// launch goes to the captured stream), and each replay gives the bits of a direct forward.
fn check_graph_replay(dev: &Device, seed_name: &str) {
    // Every buffer of this test is used on the device's one stream only, so cudarc's per-buffer
    // events are not needed; without them the capture holds no waits on events recorded outside
    // it. Buffers must be created after this call for it to apply to them.
    // SAFETY: all work below is enqueued on `dev.stream()`, which orders it; no buffer is used on
    // another stream, and the stream is synchronised before any buffer is dropped.
    unsafe { dev.context().disable_event_tracking() };
    let mut rng = common::rng(seed_name);
    let (layer, cfg) = small_layer::<bf16>(dev, &mut rng);
    let (t, h) = (64usize, cfg.hidden_size);
    let s = dev.stream();
    let mut ws = layer.workspace(dev, t).unwrap();
    let x0: Vec<bf16> = random_x(&mut rng, t, h, false);
    let x1: Vec<bf16> = random_x(&mut rng, t, h, false);
    let mut x_dev = s.clone_htod(&x0).unwrap();
    let mut out = s.alloc_zeros::<bf16>(t * h).unwrap();

    // Direct forwards (the first also loads every kernel, which must not happen during capture).
    let mut direct = Vec::new();
    for x in [&x0, &x1] {
        s.memcpy_htod(x.as_slice(), &mut x_dev).unwrap();
        layer
            .forward(dev, &x_dev.as_view(), t, &mut ws, &mut out.as_view_mut())
            .unwrap();
        direct.push(s.clone_dtoh(&out).unwrap());
    }
    ws.status().check().unwrap();

    // Capture one forward (thread-local mode: other test threads may allocate meanwhile) into a
    // poisoned output, which must stay poisoned until the graph runs.
    let poison = vec![bf16::NAN; t * h];
    s.memcpy_htod(poison.as_slice(), &mut out).unwrap();
    s.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    let captured = layer.forward(dev, &x_dev.as_view(), t, &mut ws, &mut out.as_view_mut());
    let graph = s.end_capture(CUgraphInstantiate_flags(0)).unwrap();
    captured.unwrap();
    let graph = graph.expect("the capture recorded the forward's launches");
    assert!(
        s.clone_dtoh(&out).unwrap().iter().all(|v| v.is_nan()),
        "a launch of the captured forward ran outside the capture"
    );

    // Replay on each input, the output poisoned first: the bits of the direct forward.
    for _ in 0..2 {
        for (x, want) in [&x0, &x1].into_iter().zip(&direct) {
            s.memcpy_htod(x.as_slice(), &mut x_dev).unwrap();
            s.memcpy_htod(poison.as_slice(), &mut out).unwrap();
            graph.launch().unwrap();
            let got = s.clone_dtoh(&out).unwrap();
            assert!(
                got.iter()
                    .zip(want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "graph replay differs from the direct forward"
            );
        }
    }
    ws.status().check().unwrap();
    s.synchronize().unwrap();
}

#[test]
fn repeated_forwards_give_identical_bits() {
    let Some(dev) = device("repeated_forwards_give_identical_bits") else {
        return;
    };
    let mut rng = common::rng("gpu_layer_repeat");
    let (layer, cfg) = small_layer::<f16>(&dev, &mut rng);
    let t = 1000;
    let x: Vec<f16> = random_x(&mut rng, t, cfg.hidden_size, false);
    let mut ws = layer.workspace(&dev, t).unwrap();
    let first = gpu_forward(&dev, &layer, &mut ws, &x, t);
    for _ in 0..2 {
        // A fresh workspace too: nothing may depend on what a workspace held before.
        let mut ws2 = layer.workspace(&dev, t).unwrap();
        let again = gpu_forward(&dev, &layer, &mut ws2, &x, t);
        assert_eq!(again.ids, first.ids);
        assert!(again
            .weights
            .iter()
            .zip(&first.weights)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(again
            .out
            .iter()
            .zip(&first.out)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
    // Fewer tokens than the workspace holds give the bits of a workspace made for exactly them.
    let x7 = &x[..7 * cfg.hidden_size];
    let few = gpu_forward(&dev, &layer, &mut ws, x7, 7);
    let mut exact = layer.workspace(&dev, 7).unwrap();
    let want = gpu_forward(&dev, &layer, &mut exact, x7, 7);
    assert_eq!(few.ids, want.ids);
    assert!(few
        .out
        .iter()
        .zip(&want.out)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn bad_input_is_rejected_before_launch() {
    let Some(dev) = device("bad_input_is_rejected_before_launch") else {
        return;
    };
    let mut rng = common::rng("gpu_layer_bad_input");
    let (layer, cfg) = small_layer::<bf16>(&dev, &mut rng);
    let h = cfg.hidden_size;
    let s = dev.stream();
    let x = s.clone_htod(&vec![bf16::ONE; 8 * h]).unwrap();
    let mut out = s.clone_htod(&vec![bf16::NAN; 8 * h]).unwrap();
    let mut ws = layer.workspace(&dev, 4).unwrap();
    let shape = |r: Result<(), MoeError>| matches!(r, Err(MoeError::ShapeMismatch { .. }));
    assert!(shape(layer.forward(
        &dev,
        &x.as_view(),
        8,
        &mut ws,
        &mut out.as_view_mut()
    )));
    assert!(shape(layer.forward(
        &dev,
        &x.slice(..4 * h - 1),
        4,
        &mut ws,
        &mut out.slice_mut(..4 * h)
    )));
    assert!(shape(layer.forward(
        &dev,
        &x.slice(..4 * h),
        4,
        &mut ws,
        &mut out.slice_mut(..4 * h + 1)
    )));
    let other = common::scaled(MoeConfig::qwen3_30b_a3b(), h, 128);
    let mut wrong = Workspace::<bf16>::new(&dev, &other, 4).unwrap();
    assert!(matches!(
        layer.forward(
            &dev,
            &x.slice(..4 * h),
            4,
            &mut wrong,
            &mut out.slice_mut(..4 * h)
        ),
        Err(MoeError::InvalidConfig(_))
    ));
    // Weights that do not fit the config are rejected at upload, by the CPU layer's checks.
    let mut weights = common::random_layer_weights::<bf16>(&mut rng, &cfg, false);
    weights.down.pop();
    assert!(matches!(
        GpuMoeLayer::upload(&dev, &cfg, &weights),
        Err(MoeError::ShapeMismatch { .. })
    ));
    // T = 0 is valid and launches nothing.
    layer
        .forward(&dev, &x.slice(..0), 0, &mut ws, &mut out.slice_mut(..0))
        .unwrap();
    assert!(s.clone_dtoh(&out).unwrap().iter().all(|v| v.is_nan()));
    ws.status().check().unwrap();
}

/// Small forwards of the layer (grouped sigmoid routing with bias, gated and ungated shared experts,
/// odd widths), for `compute-sanitizer` (scripts/gpu-check.sh runs the `sanitizer_smoke` tests).
#[test]
fn sanitizer_smoke() {
    let Some(dev) = device("sanitizer_smoke") else {
        return;
    };
    let mut rng = common::rng("gpu_layer_sanitizer_smoke");
    check_layer::<bf16>(
        &dev,
        &mut rng,
        &common::scaled(MoeConfig::deepseek_v3(), 64, 32),
        5,
        false,
    );
    check_layer::<f16>(
        &dev,
        &mut rng,
        &common::scaled(MoeConfig::qwen2_moe_a2_7b(), 72, 24),
        3,
        false,
    );
    let odd = MoeConfig {
        hidden_size: 36,
        intermediate_size: 20,
        routing: RoutingConfig::softmax_topk(8, 2, true),
        activation: Activation::GEGLU,
        shared_experts: vec![],
    };
    check_layer::<bf16>(&dev, &mut rng, &odd, 2, true);
}

/// gpt-oss (scaled down) against the CPU layer: router bias, expert biases and the clamped SwiGLU,
/// with biases large enough that the router bias moves the choice and the gate and up projections
/// pass the clamp on both sides.
#[test]
fn gpt_oss_matches_the_cpu_layer() {
    let Some(dev) = device("gpt_oss_matches_the_cpu_layer") else {
        return;
    };
    let mut rng = common::rng("gpt_oss_matches_the_cpu_layer");
    let cfg = common::scaled(MoeConfig::gpt_oss_20b(), 128, 64);
    let (e, i, h) = (
        cfg.routing.num_experts,
        cfg.intermediate_size,
        cfg.hidden_size,
    );
    let mut ties = 0;
    for t in [1usize, 9, 300] {
        let mut weights = common::random_layer_weights::<bf16>(&mut rng, &cfg, false);
        weights.biases = Some(moe_kernels::cpu::layer::MoeBiases {
            router: common::randn(&mut rng, e, 1.0),
            gate_up: common::randn(&mut rng, e * 2 * i, 6.0),
            down: common::randn(&mut rng, e * h, 0.5),
        });
        ties += check_layer_weights::<bf16, Vec<bf16>>(&dev, &mut rng, &cfg, weights, t, false);
    }
    let f16_cfg = common::scaled(MoeConfig::gpt_oss_20b(), 64, 32);
    let mut weights = common::random_layer_weights::<f16>(&mut rng, &f16_cfg, false);
    let (e, i, h) = (f16_cfg.routing.num_experts, 32, 64);
    weights.biases = Some(moe_kernels::cpu::layer::MoeBiases {
        router: common::randn(&mut rng, e, 1.0),
        gate_up: common::randn(&mut rng, e * 2 * i, 6.0),
        down: common::randn(&mut rng, e * h, 0.5),
    });
    ties += check_layer_weights::<f16, Vec<f16>>(&dev, &mut rng, &f16_cfg, weights, 40, false);
    eprintln!("gpt_oss: {ties} tokens accepted as near-ties");
}

/// A random MXFP4 stack `[e, n, k]` in gpt-oss's groups of 32: random codes (every nibble), e8m0
/// scales of 2^-1 to 2^-3 over sqrt(k) (typical |e2m1| is about 2).
fn random_mxfp4(rng: &mut StdRng, [e, n, k]: [usize; 3]) -> QuantExperts {
    let codes = (0..e * n * k.div_ceil(2)).map(|_| rng.random()).collect();
    let base = 127 - (k as f64).sqrt().log2().round() as i32;
    let scales = (0..e * n * k.div_ceil(32))
        .map(|_| e8m0_to_f32((base - rng.random_range(1..=3)) as u8))
        .collect();
    QuantExperts::new(CodeFormat::Mxfp4E2M1, [e, n, k], 32, codes, scales).unwrap()
}

/// A layer with MXFP4 experts (routed and shared) runs on the GPU (`GpuMoeLayer<T,
/// GpuQuantExperts>`) and matches the CPU reference layer on the same `QuantExperts`: K a multiple
/// of 32, K % 32 != 0 and odd K (the down projection's K is I), decode and prefill token counts.
#[test]
fn mxfp4_experts_match_the_cpu_layer() {
    let Some(dev) = device("mxfp4_experts_match_the_cpu_layer") else {
        return;
    };
    let mut rng = common::rng("mxfp4_experts_match_the_cpu_layer");
    for (i, (cfg, t)) in [
        (common::scaled(MoeConfig::qwen3_30b_a3b(), 64, 32), 3),
        (common::scaled(MoeConfig::qwen2_moe_a2_7b(), 64, 40), 40),
        (common::scaled(MoeConfig::mixtral_8x7b(), 96, 45), 100),
    ]
    .into_iter()
    .enumerate()
    {
        let plain = common::random_layer_weights::<bf16>(&mut rng, &cfg, false);
        let (h, up) = (
            cfg.hidden_size,
            cfg.activation.up_rows(cfg.intermediate_size),
        );
        let e = cfg.routing.num_experts;
        let mut mx = |n: usize, k: usize, experts: usize| random_mxfp4(&mut rng, [experts, n, k]);
        let shared = cfg
            .shared_experts
            .iter()
            .zip(&plain.shared)
            .map(|(s, w)| SharedExpertWeights {
                gate_up: mx(cfg.activation.up_rows(s.intermediate_size), h, 1),
                down: mx(h, s.intermediate_size, 1),
                gate: w.gate.clone(),
            })
            .collect();
        let weights = MoeWeights {
            router: plain.router,
            correction_bias: plain.correction_bias,
            gate_up: mx(up, h, e),
            down: mx(h, cfg.intermediate_size, e),
            shared,
            biases: None,
        };
        if i % 2 == 0 {
            check_layer_weights(&dev, &mut rng, &cfg, weights, t, false);
        } else {
            let to_f16 = |v: Vec<bf16>| v.into_iter().map(|x| f16::from_f32(x.to_f32())).collect();
            let weights = MoeWeights {
                router: to_f16(weights.router),
                shared: weights
                    .shared
                    .into_iter()
                    .map(|s| SharedExpertWeights {
                        gate: s.gate.map(to_f16),
                        gate_up: s.gate_up,
                        down: s.down,
                    })
                    .collect(),
                correction_bias: weights.correction_bias,
                gate_up: weights.gate_up,
                down: weights.down,
                biases: None,
            };
            check_layer_weights::<f16, _>(&dev, &mut rng, &cfg, weights, t, false);
        }
    }
}

/// MXFP4 scales live on the device as e8m0 bytes: a scale that is no power of two (which the CPU
/// runs) is a typed refusal at upload, naming its index.
#[test]
fn mxfp4_scales_that_are_no_e8m0_are_refused() {
    let Some(dev) = device("mxfp4_scales_that_are_no_e8m0_are_refused") else {
        return;
    };
    let mut rng = common::rng("mxfp4_scales_that_are_no_e8m0_are_refused");
    let good = random_mxfp4(&mut rng, [2, 4, 64]);
    let mut scales = good.scales().to_vec();
    scales[5] *= 1.5;
    let bad = QuantExperts::new(
        CodeFormat::Mxfp4E2M1,
        good.shape(),
        32,
        good.codes().to_vec(),
        scales,
    )
    .unwrap();
    assert!(good.upload(dev.stream()).is_ok());
    match bad.upload(dev.stream()) {
        Err(MoeError::Unsupported(m)) => assert!(m.contains("MXFP4 scale 5"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}
