//! The raw layer (`moe_kernels::raw`): the layer forward on raw pointers, a raw stream and one
//! caller-provided workspace, against the safe layer (bit for bit) and the CPU layer (the CPU
//! forward of the raw forward's routing decision, within 1e-2 relative L2); its capture in a CUDA
//! graph; and the validation every raw function does before it enqueues anything.
//!
//! Without a usable GPU each test prints `SKIPPED gpu_raw::<test>: <reason>` and passes, unless
//! `MOE_KERNELS_REQUIRE_GPU=1`. The seed is printed; `MOE_TEST_SEED` replays it.

mod common;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
use half::bf16;
use moe_kernels::cpu::layer::CpuMoeLayer;
use moe_kernels::cpu::routing::Routing;
use moe_kernels::gpu::{Device, GpuMoeLayer, GroupedGemmShape};
use moe_kernels::raw::{self, LayerWorkspaceLayout, RawLayerWeights, RawMatrices};
use moe_kernels::{DType, MatRef, MoeConfig, MoeError, RoutingConfig};

fn device(test: &str) -> Option<Device> {
    common::gpu("gpu_raw", test)
}

/// `n` little-endian 4-byte values from `bytes` at `offset`.
fn words<T>(bytes: &[u8], offset: usize, n: usize, f: impl Fn([u8; 4]) -> T) -> Vec<T> {
    bytes[offset..offset + 4 * n]
        .chunks_exact(4)
        .map(|c| f(c.try_into().unwrap()))
        .collect()
}

/// A small DeepSeek-V3-like layer (grouped routing, correction bias, a shared expert).
fn small_layer(
    dev: &Device,
    rng: &mut rand::rngs::StdRng,
) -> (GpuMoeLayer<bf16>, CpuMoeLayer<bf16>) {
    let cfg = common::scaled(MoeConfig::deepseek_v3(), 128, 64);
    let weights = common::random_layer_weights::<bf16>(rng, &cfg, false);
    let gpu = GpuMoeLayer::upload(dev, &cfg, &weights).unwrap();
    (gpu, CpuMoeLayer::new(cfg, weights).unwrap())
}

#[test]
fn raw_forward_on_an_engine_stream_matches_the_safe_and_the_cpu_layer() {
    let Some(dev) = device("raw_forward_on_an_engine_stream_matches_the_safe_and_the_cpu_layer")
    else {
        return;
    };
    let mut rng = common::rng("gpu_raw_forward");
    let (layer, cpu) = small_layer(&dev, &mut rng);
    let cfg = cpu.config().clone();
    let (h, e, k) = (cfg.hidden_size, cfg.routing.num_experts, cfg.routing.top_k);
    // The engine's stream and memory; the layer's weights were uploaded on the device's stream.
    dev.synchronize().unwrap();
    let engine = dev.context().new_stream().unwrap();
    let weights = common::raw_weights(&layer, &engine);
    for t in [1usize, 9, 300] {
        let x: Vec<bf16> = common::values(&mut rng, t * h, 1.0);
        let x_dev = engine.clone_htod(&x).unwrap();
        let mut out = engine.clone_htod(&vec![bf16::NAN; t * h]).unwrap();
        // A workspace larger than needed, of garbage bytes (the forward must not depend on them).
        let bytes = raw::layer_workspace_bytes(&cfg, DType::BF16, t, None).unwrap() + 4096;
        let mut ws: CudaSlice<u8> = engine.clone_htod(&vec![0xA5u8; bytes]).unwrap();
        common::raw_forward_checked(&dev, &engine, &cfg, &weights, &x_dev, t, &mut out, &mut ws);
        let got = engine.clone_dtoh(&out).unwrap();
        let ws_host = engine.clone_dtoh(&ws).unwrap();

        // The safe layer, on the device's own stream: the same bits.
        let mut safe_ws = layer.workspace(&dev, t).unwrap();
        let s = dev.stream();
        let x_safe = s.clone_htod(&x).unwrap();
        let mut out_safe = s.clone_htod(&vec![bf16::NAN; t * h]).unwrap();
        layer
            .forward(
                &dev,
                &x_safe.as_view(),
                t,
                &mut safe_ws,
                &mut out_safe.as_view_mut(),
            )
            .unwrap();
        let want_bits = s.clone_dtoh(&out_safe).unwrap();
        assert!(
            got.iter()
                .zip(&want_bits)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "T = {t}: the raw forward differs from the safe forward"
        );

        // The CPU layer on the raw forward's routing decision, read at the layout's offsets.
        let layout = LayerWorkspaceLayout::new(&cfg, DType::BF16, t, None).unwrap();
        let ids = words(&ws_host, layout.topk_ids, t * k, i32::from_le_bytes);
        let w = words(&ws_host, layout.topk_weights, t * k, f32::from_le_bytes);
        assert_eq!(
            ids,
            s.clone_dtoh(&safe_ws.topk_ids()).unwrap(),
            "T = {t}: ids"
        );
        let routing = Routing::from_parts(t, k, ids, w, e).unwrap();
        let xm = MatRef::new("x", &x, t, h).unwrap();
        let want = cpu.forward_routed(xm, &routing).unwrap();
        common::assert_close(
            &format!("raw forward, T = {t}"),
            &common::el64(&got),
            &common::el64(&want),
            1e-2,
        );
    }
}

#[test]
fn raw_forward_captures_in_a_graph_on_the_given_stream() {
    let Some(dev) = device("raw_forward_captures_in_a_graph_on_the_given_stream") else {
        return;
    };
    let mut rng = common::rng("gpu_raw_graph");
    let (layer, cpu) = small_layer(&dev, &mut rng);
    let cfg = cpu.config().clone();
    let (t, h) = (16usize, cfg.hidden_size);
    dev.synchronize().unwrap();
    let engine = dev.context().new_stream().unwrap();
    let weights = common::raw_weights(&layer, &engine);
    let x: Vec<bf16> = common::values(&mut rng, t * h, 1.0);
    let x_dev = engine.clone_htod(&x).unwrap();
    let poison = vec![bf16::NAN; t * h];
    let mut out = engine.clone_htod(&poison).unwrap();
    let bytes = raw::layer_workspace_bytes(&cfg, DType::BF16, t, None).unwrap();
    let mut ws: CudaSlice<u8> = engine.alloc_zeros(bytes).unwrap();
    let (x_ptr, _) = x_dev.device_ptr(&engine);
    let (out_ptr, _) = out.device_ptr_mut(&engine);
    let (ws_ptr, _) = ws.device_ptr_mut(&engine);
    let stream = engine.cu_stream().cast();
    // SAFETY: as in the test above; every buffer lives until the end of the test and is used on
    // `engine` only.
    let forward = || unsafe {
        raw::layer_forward(
            &dev,
            stream,
            &cfg,
            DType::BF16,
            &weights,
            x_ptr,
            t,
            out_ptr,
            ws_ptr,
            bytes,
        )
    };
    // A direct forward (which also loads the kernels), then a capture that must run nothing.
    forward().unwrap();
    let direct = engine.clone_dtoh(&out).unwrap();
    engine.memcpy_htod(&poison, &mut out).unwrap();
    engine
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    let captured = forward();
    let graph = engine.end_capture(CUgraphInstantiate_flags(0)).unwrap();
    captured.unwrap();
    let graph = graph.expect("the capture recorded the forward's launches");
    assert!(
        engine.clone_dtoh(&out).unwrap().iter().all(|v| v.is_nan()),
        "a launch of the captured raw forward ran outside the capture"
    );
    graph.launch().unwrap();
    let replayed = engine.clone_dtoh(&out).unwrap();
    assert!(
        replayed
            .iter()
            .zip(&direct)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "graph replay differs from the direct raw forward"
    );
    // SAFETY: the status record is the workspace's first bytes, written on `engine`.
    unsafe { raw::read_status(&dev, stream, ws_ptr) }.unwrap();
}

#[test]
fn raw_functions_validate_before_they_enqueue_anything() {
    let Some(dev) = device("raw_functions_validate_before_they_enqueue_anything") else {
        return;
    };
    let stream = dev.raw_stream();
    let cfg = common::scaled(MoeConfig::qwen3_30b_a3b(), 64, 32);
    let weights = RawLayerWeights {
        router: 0,
        correction_bias: None,
        gate_up: RawMatrices::Plain(0),
        down: RawMatrices::Plain(0),
        shared: vec![],
        expert_map: None,
        biases: None,
    };
    // Every call below gets null pointers: a launch would be an illegal address (a finding on the
    // emulated GPU, a fault on a real one), so each must fail in validation or launch nothing.
    // SAFETY: none of these calls may touch its pointers, which is what the test checks.
    unsafe {
        let need = raw::layer_workspace_bytes(&cfg, DType::BF16, 4, None).unwrap();
        let small = raw::layer_forward(
            &dev,
            stream,
            &cfg,
            DType::BF16,
            &weights,
            0,
            4,
            0,
            0,
            need - 1,
        );
        assert!(
            matches!(small, Err(MoeError::ShapeMismatch { .. })),
            "{small:?}"
        );
        let f32_layer =
            raw::layer_forward(&dev, stream, &cfg, DType::F32, &weights, 0, 4, 0, 0, need);
        assert!(
            matches!(f32_layer, Err(MoeError::Unsupported(_))),
            "{f32_layer:?}"
        );
        let mut biased = cfg.clone();
        biased.routing.correction_bias = true;
        let need = raw::layer_workspace_bytes(&biased, DType::BF16, 4, None).unwrap();
        let no_bias = raw::layer_forward(
            &dev,
            stream,
            &biased,
            DType::BF16,
            &weights,
            0,
            4,
            0,
            0,
            need,
        );
        assert!(
            matches!(no_bias, Err(MoeError::InvalidConfig(_))),
            "{no_bias:?}"
        );
        raw::layer_forward(&dev, stream, &cfg, DType::BF16, &weights, 0, 0, 0, 0, 0).unwrap();

        let bad_k = RoutingConfig::softmax_topk(8, 9, true);
        let r = raw::route(&dev, stream, &bad_k, DType::F32, 0, 4, None, 0, 0, 0);
        assert!(matches!(r, Err(MoeError::InvalidConfig(_))), "{r:?}");
        let gemm = GroupedGemmShape {
            rows: 4,
            n: 8,
            k: 8,
            num_experts: 2,
        };
        let store = moe_kernels::gpu::GemmEpilogue::Store;
        let r = raw::grouped_gemm(
            &dev,
            stream,
            DType::BF16,
            DType::BF16,
            0,
            None,
            0,
            gemm,
            store,
            0,
        );
        assert!(matches!(r, Err(MoeError::InvalidConfig(_))), "{r:?}");
        let r = raw::grouped_gemm(
            &dev,
            stream,
            DType::F32,
            DType::F32,
            0,
            Some(0),
            0,
            gemm,
            store,
            0,
        );
        assert!(matches!(r, Err(MoeError::Unsupported(_))), "{r:?}");
        let perm = raw::RawPermutation::carve(0, 4, 2, 8, 1).unwrap();
        let r = raw::gather(&dev, stream, DType::BF16, 0, 0, 4, &perm, 0);
        assert!(matches!(r, Err(MoeError::InvalidConfig(_))), "{r:?}");
        let types = (DType::BF16, Some(DType::F16), DType::BF16);
        let r = raw::combine(&dev, stream, types, 0, 8, 4, &perm, 0, Some(0), 0);
        assert!(matches!(r, Err(MoeError::Unsupported(_))), "{r:?}");
        let r = raw::permute(&dev, stream, 0, usize::MAX, 8, None, &perm, 0);
        assert!(r.is_err(), "{r:?}");
    }
    dev.synchronize().unwrap();
}
