//! The candle ops (`moe_kernels::candle`) on CPU tensors against float64 oracles written here (and the
//! routing oracle of `tests/common`), on fresh seeded random data; and the typed errors for
//! non-contiguous, wrong-dtype and wrong-shape inputs. Start offsets (a `narrow` of the first
//! dimension) are handled: every oracle case runs on such a view.
//!
//! Every test runs on the CPU and, with the `candle-cuda` feature, on CUDA device 0 as well (a real
//! GPU, or the emulated one): `scripts/check-engine-builds.sh` runs this file in the stand-in engine
//! of `tests/engine-consumer`, on the emulated GPU, with candle's CUDA backend linked.
#![cfg(feature = "candle")]

mod common;

use candle_core::{DType, Device, Tensor};
use common::oracle::{self, Route};
use moe_kernels::candle::{self as mc, CandleElement, MoeBlock};
use moe_kernels::cpu::layer::MoeWeights;
use moe_kernels::{Activation, ActivationKind, MoeConfig, MoeError, RoutingConfig};
use rand::rngs::StdRng;
use rand::Rng;

const CPU: Device = Device::Cpu;

/// The devices every test runs on: the CPU and, with `candle-cuda`, CUDA device 0 on a stream of its
/// own (not the null stream), which a `candle-cuda` build requires.
fn devices() -> Vec<Device> {
    #[allow(unused_mut)]
    let mut devices = vec![CPU];
    #[cfg(feature = "candle-cuda")]
    devices.push(
        Device::new_cuda_with_stream(0)
            .unwrap_or_else(|e| panic!("the candle-cuda tests need CUDA device 0: {e}")),
    );
    devices
}

/// Runs `check` once per device of [`devices`], each with a fresh seeded generator.
fn on_every_device(test: &str, check: impl Fn(&mut StdRng, &Device)) {
    for dev in devices() {
        let mut rng = common::rng(&format!("{test} on {:?}", dev.location()));
        check(&mut rng, &dev);
    }
}

/// `values` as a `dims` tensor of `dtype` on `dev` that starts at a nonzero offset into its storage:
/// a `narrow` of a larger tensor along the first dimension (contiguous, offset `dims[1..]` elements).
/// The values are rounded to `dtype` on the CPU, then copied.
fn offset_tensor(values: &[f32], dims: &[usize], dtype: DType, dev: &Device) -> Tensor {
    let row: usize = dims[1..].iter().product();
    let mut padded = vec![7.0f32; row];
    padded.extend_from_slice(values);
    padded.extend(std::iter::repeat_n(-7.0f32, row));
    let mut outer = dims.to_vec();
    outer[0] += 2;
    let t = Tensor::from_vec(padded, outer, &CPU)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
        .to_device(dev)
        .unwrap()
        .narrow(0, 1, dims[0])
        .unwrap();
    assert!(t.is_contiguous() && t.layout().start_offset() == row);
    t
}

/// The values of `t` as they are stored (after rounding to its dtype), widened to f64 on the CPU.
fn f64_values(t: &Tensor) -> Vec<f64> {
    t.to_device(&CPU)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// The types the GEMMs take on `dev`: CUDA's tensor cores take bf16 and f16 (f32 is refused, see
/// `bad_inputs_give_typed_errors`).
fn gemm_dtypes(dev: &Device) -> &'static [DType] {
    if dev.is_cpu() {
        &[DType::F32, DType::BF16, DType::F16]
    } else {
        &[DType::BF16, DType::F16]
    }
}

fn rel_tol(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-5,
        _ => 1e-2,
    }
}

#[test]
fn route_matches_oracle() {
    on_every_device("route_matches_oracle", route_matches_oracle_on);
}

fn route_matches_oracle_on(rng: &mut StdRng, dev: &Device) {
    for case in 0..40 {
        let e = [4usize, 8, 16, 60, 128][case % 5];
        let cfg = common::random_routing_config(rng, e);
        let k = cfg.top_k;
        let t = rng.random_range(1..40);
        let dtype = [DType::F32, DType::BF16, DType::F16][case % 3];
        let logits = offset_tensor(&common::randn(rng, t * e, 2.0), &[t, e], dtype, dev);
        let bias = cfg.correction_bias.then(|| common::randn(rng, e, 0.1));
        let bias_t = bias
            .as_ref()
            .map(|b| Tensor::from_slice(b, e, dev).unwrap());
        let (ids, weights) = mc::route(&logits, bias_t.as_ref(), &cfg)
            .unwrap_or_else(|err| panic!("case {case} {cfg:?}: {err}"));
        assert_eq!((ids.dims(), ids.dtype()), (&[t, k][..], DType::U32));
        assert_eq!((weights.dims(), weights.dtype()), (&[t, k][..], DType::F32));
        let ids = ids.to_vec2::<u32>().unwrap();
        let weights = weights.to_vec2::<f32>().unwrap();
        let l64 = f64_values(&logits);
        let r = Route::of(&cfg, bias.as_deref());
        let (mut got_w, mut want_w) = (vec![], vec![]);
        for tok in 0..t {
            let want = oracle::route_row(&r, &l64[tok * e..(tok + 1) * e]);
            let got: Vec<usize> = ids[tok].iter().map(|&i| i as usize).collect();
            assert!(
                want.ids_agree(&got),
                "case {case} token {tok}: ids {got:?}, oracle {:?}",
                want.ids
            );
            got_w.extend(weights[tok].iter().map(|&w| w as f64));
            want_w.extend(oracle::weights_for(&r, &want.scores, &got));
        }
        common::assert_close(&format!("case {case} weights"), &got_w, &want_w, 1e-5);
    }
}

/// The oracle permutation of `ids` `[T, k]`: (token, slot) pairs sorted by expert, stably.
fn oracle_permutation(ids: &[u32], e: usize) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let mut row_source = vec![];
    let mut offsets = vec![0i64];
    for expert in 0..e {
        for (flat, &id) in ids.iter().enumerate() {
            if id as usize == expert {
                row_source.push(flat as i64);
            }
        }
        offsets.push(row_source.len() as i64);
    }
    let mut slot_row = vec![0i64; ids.len()];
    for (row, &flat) in row_source.iter().enumerate() {
        slot_row[flat as usize] = row as i64;
    }
    (offsets, row_source, slot_row)
}

/// Random distinct ids `[T, k]` as a `u32` tensor (with a start offset), and their values.
fn random_ids(rng: &mut StdRng, t: usize, e: usize, k: usize, dev: &Device) -> (Tensor, Vec<u32>) {
    let (hot, skew) = (rng.random_bool(0.2), rng.random_bool(0.3));
    let ids: Vec<u32> = common::random_ids(rng, t, e, k, hot, skew)
        .into_iter()
        .map(|v| v as u32)
        .collect();
    let mut padded = vec![0u32; k];
    padded.extend(&ids);
    let tensor = Tensor::from_vec(padded, (t + 1, k), dev)
        .unwrap()
        .narrow(0, 1, t)
        .unwrap();
    (tensor, ids)
}

#[test]
fn permute_and_gather_match_oracle() {
    on_every_device(
        "permute_and_gather_match_oracle",
        permute_and_gather_match_oracle_on,
    );
}

fn permute_and_gather_match_oracle_on(rng: &mut StdRng, dev: &Device) {
    for case in 0..30 {
        let e = [1usize, 5, 16, 64][case % 4];
        let k = rng.random_range(1..=e.min(8));
        let t = rng.random_range(0..50);
        let h = rng.random_range(1..70);
        let (ids_t, ids) = random_ids(rng, t, e, k, dev);
        let perm = mc::permute(&ids_t, e).unwrap();
        assert_eq!(
            (
                perm.num_tokens(),
                perm.top_k(),
                perm.num_experts(),
                perm.num_rows()
            ),
            (t, k, e, t * k)
        );
        let (offsets, row_source, slot_row) = oracle_permutation(&ids, e);
        let as_vec = |x: Tensor| x.to_vec1::<i64>().unwrap();
        assert_eq!(
            as_vec(perm.expert_offsets().unwrap()),
            offsets,
            "case {case}"
        );
        assert_eq!(
            as_vec(perm.row_source().unwrap()),
            row_source,
            "case {case}"
        );
        assert_eq!(as_vec(perm.slot_row().unwrap()), slot_row, "case {case}");

        let dtype = [DType::F32, DType::BF16, DType::F16][case % 3];
        let x = offset_tensor(&common::randn(rng, t * h, 1.0), &[t, h], dtype, dev);
        let gathered = mc::gather(&x, &perm).unwrap();
        assert_eq!(
            (gathered.dims(), gathered.dtype()),
            (&[t * k, h][..], dtype)
        );
        let x64 = f64_values(&x);
        let want: Vec<f64> = row_source
            .iter()
            .flat_map(|&flat| {
                let tok = flat as usize / k;
                x64[tok * h..(tok + 1) * h].to_vec()
            })
            .collect();
        assert_eq!(f64_values(&gathered), want, "case {case}: gather");
    }
}

#[test]
fn grouped_gemm_matches_oracle() {
    on_every_device(
        "grouped_gemm_matches_oracle",
        grouped_gemm_matches_oracle_on,
    );
}

fn grouped_gemm_matches_oracle_on(rng: &mut StdRng, dev: &Device) {
    let acts = [
        None,
        Some(Activation::SWIGLU),
        Some(Activation {
            kind: ActivationKind::GeluTanh,
            gated: true,
        }),
        Some(Activation {
            kind: ActivationKind::Silu,
            gated: false,
        }),
    ];
    for case in 0..24 {
        let e = [1usize, 3, 16][case % 3];
        let k = rng.random_range(1..=e.min(4));
        let t = rng.random_range(1..20);
        let (kk, n) = (rng.random_range(1..80), 2 * rng.random_range(1..40));
        let act = acts[case % 4];
        let dtypes = gemm_dtypes(dev);
        let dtype = dtypes[(case / 4) % dtypes.len()];
        let (ids_t, ids) = random_ids(rng, t, e, k, dev);
        let perm = mc::permute(&ids_t, e).unwrap();
        let rows = t * k;
        let x = offset_tensor(&common::randn(rng, rows * kk, 1.0), &[rows, kk], dtype, dev);
        let scale = 1.0 / (kk as f32).sqrt();
        let w = offset_tensor(
            &common::randn(rng, e * n * kk, scale),
            &[e, n, kk],
            dtype,
            dev,
        );
        let y =
            mc::grouped_gemm(&x, &w, &perm, act).unwrap_or_else(|err| panic!("case {case}: {err}"));
        let cols = if act.is_some_and(|a| a.gated) {
            n / 2
        } else {
            n
        };
        assert_eq!((y.dims(), y.dtype()), (&[rows, cols][..], dtype));

        let (offsets, _, _) = oracle_permutation(&ids, e);
        let (x64, w64) = (f64_values(&x), f64_values(&w));
        let mut want = vec![];
        for r in 0..rows {
            let expert = offsets.iter().rposition(|&o| o <= r as i64).unwrap();
            let acc: Vec<f64> = (0..n)
                .map(|j| {
                    (0..kk)
                        .map(|c| x64[r * kk + c] * w64[(expert * n + j) * kk + c])
                        .sum()
                })
                .collect();
            let f = |v: f64| match act.map(|a| a.kind) {
                Some(ActivationKind::GeluTanh) => oracle::gelu_tanh(v),
                _ => oracle::silu(v),
            };
            match act {
                None => want.extend(acc),
                Some(a) if a.gated => want.extend((0..cols).map(|j| f(acc[j]) * acc[cols + j])),
                Some(_) => want.extend(acc.into_iter().map(f)),
            }
        }
        common::assert_close(
            &format!("case {case} ({dtype:?}, {act:?})"),
            &f64_values(&y),
            &want,
            rel_tol(dtype),
        );
    }
}

#[test]
fn combine_matches_oracle() {
    on_every_device("combine_matches_oracle", combine_matches_oracle_on);
}

fn combine_matches_oracle_on(rng: &mut StdRng, dev: &Device) {
    for case in 0..30 {
        let e = [2usize, 8, 32][case % 3];
        let k = rng.random_range(1..=e.min(6));
        let t = rng.random_range(1..40);
        let h = rng.random_range(1..70);
        let dtype = [DType::F32, DType::BF16, DType::F16][case % 3];
        let (ids_t, ids) = random_ids(rng, t, e, k, dev);
        let perm = mc::permute(&ids_t, e).unwrap();
        let y = offset_tensor(&common::randn(rng, t * k * h, 1.0), &[t * k, h], dtype, dev);
        let w = offset_tensor(&common::randn(rng, t * k, 1.0), &[t, k], DType::F32, dev);
        // The shared output in f32 or in the experts' type, or none.
        let shared = match (case / 3) % 3 {
            0 => None,
            1 => Some(DType::F32),
            _ => Some(dtype),
        }
        .map(|d| offset_tensor(&common::randn(rng, t * h, 1.0), &[t, h], d, dev));
        let out = mc::combine(&y, &perm, &w, shared.as_ref())
            .unwrap_or_else(|err| panic!("case {case}: {err}"));
        assert_eq!((out.dims(), out.dtype()), (&[t, h][..], dtype));

        let (_, _, slot_row) = oracle_permutation(&ids, e);
        let (y64, w64) = (f64_values(&y), f64_values(&w));
        let s64 = shared.as_ref().map(f64_values);
        let mut want = vec![0f64; t * h];
        for tok in 0..t {
            for slot in 0..k {
                let row = slot_row[tok * k + slot] as usize;
                for c in 0..h {
                    want[tok * h + c] += w64[tok * k + slot] * y64[row * h + c];
                }
            }
            if let Some(s) = &s64 {
                for c in 0..h {
                    want[tok * h + c] += s[tok * h + c];
                }
            }
        }
        common::assert_close(
            &format!("case {case} ({dtype:?})"),
            &f64_values(&out),
            &want,
            rel_tol(dtype),
        );
    }
}

/// A Qwen3-MoE-shaped config, scaled down.
fn qwen3_small(h: usize, i: usize, e: usize, k: usize) -> MoeConfig {
    let mut cfg = common::scaled(MoeConfig::qwen3_30b_a3b(), h, i);
    cfg.routing = RoutingConfig::softmax_topk(e, k, true);
    cfg
}

/// The oracle output `[T, H]` of a block on `x` `[T, H]`, with its shared experts or not, or `None`
/// when a token's k-th and (k+1)-th choices are a near-tie.
fn oracle_block<W: moe_kernels::Element>(
    cfg: &MoeConfig,
    x: &[f64],
    w: &MoeWeights<W>,
    shared: bool,
) -> Option<Vec<f64>> {
    let (h, e, k) = (cfg.hidden_size, cfg.routing.num_experts, cfg.routing.top_k);
    let route = Route::of(&cfg.routing, None);
    let router: Vec<f64> = w.router.iter().map(|v| v.to_f32() as f64).collect();
    let mut out = vec![];
    for xt in x.chunks(h) {
        let o = oracle::route_row(&route, &oracle::matvec(&router, e, h, xt));
        if k < e {
            let mut c = o.choice.clone();
            c.sort_by(|a, b| b.partial_cmp(a).unwrap());
            if (c[k - 1] - c[k]).abs() <= 1e-4 * c[k - 1].abs() {
                return None;
            }
        }
        out.extend(oracle::layer_token(cfg, w, xt, &o.ids, &o.weights, shared));
    }
    Some(out)
}

#[test]
fn block_matches_oracle() {
    on_every_device("block_matches_oracle", block_matches_oracle_on);
}

fn block_matches_oracle_on(rng: &mut StdRng, dev: &Device) {
    for case in 0..6 {
        let cfg = qwen3_small(64, 32, 16, [1, 2, 8][case % 3]);
        let (h, i, e) = (64, 32, 16);
        let dtypes = gemm_dtypes(dev);
        let dtype = dtypes[(case + case / 3) % dtypes.len()];
        let hs = 1.0 / (h as f32).sqrt();
        let router = offset_tensor(&common::randn(rng, e * h, hs), &[e, h], dtype, dev);
        let gate_up = offset_tensor(
            &common::randn(rng, e * 2 * i * h, 2.0 * hs),
            &[e, 2 * i, h],
            dtype,
            dev,
        );
        let down = offset_tensor(
            &common::randn(rng, e * h * i, 1.0 / (i as f32).sqrt()),
            &[e, h, i],
            dtype,
            dev,
        );
        let block = MoeBlock::from_tensors(cfg.clone(), &router, &gate_up, &down).unwrap();
        assert_eq!((block.dtype(), block.config()), (dtype, &cfg));
        // The weights as stored (exact in f32), for the oracle.
        let f32_values = |t: &Tensor| f64_values(t).iter().map(|&v| v as f32).collect();
        let w32 = MoeWeights {
            router: f32_values(&router),
            biases: None,
            correction_bias: None,
            gate_up: f32_values(&gate_up),
            down: f32_values(&down),
            shared: vec![],
        };
        let (b, s) = (2, rng.random_range(1..9));
        // Redraw the (rare) inputs with a near-tie in the routing, which f32 rounding decides.
        let (xs, want) = loop {
            let xs = offset_tensor(&common::randn(rng, b * s * h, 1.0), &[b, s, h], dtype, dev);
            if let Some(want) = oracle_block(&cfg, &f64_values(&xs), &w32, false) {
                break (xs, want);
            }
        };
        let out = block.forward(&xs).unwrap();
        assert_eq!((out.dims(), out.dtype()), (&[b, s, h][..], dtype));
        common::assert_close(
            &format!("case {case} ({dtype:?})"),
            &f64_values(&out),
            &want,
            rel_tol(dtype),
        );
        // The same through candle's `Module`, as a model calls it.
        assert_eq!(f64_values(&xs.apply(&block).unwrap()), f64_values(&out));
    }
}

#[test]
fn block_from_host_weights_with_shared_experts_matches_oracle() {
    on_every_device(
        "block_from_host_weights_with_shared_experts_matches_oracle",
        |rng, dev| match dev {
            // CUDA's tensor cores take bf16 and f16.
            Device::Cpu => block_from_host_weights_case::<f32>(rng, dev),
            _ => block_from_host_weights_case::<half::bf16>(rng, dev),
        },
    );
}

/// A Qwen2-MoE-shaped block (shared expert with its gate) from host weights of type `W`, against
/// the oracle; on the CPU also bit for bit against the CPU layer it wraps.
fn block_from_host_weights_case<W: CandleElement>(rng: &mut StdRng, dev: &Device) {
    let cfg = common::scaled(MoeConfig::qwen2_moe_a2_7b(), 64, 32);
    let weights = common::random_layer_weights::<W>(rng, &cfg, false);
    let (t, h) = (9, cfg.hidden_size);
    let (x, xs, want) = loop {
        let x = common::randn(rng, t * h, 1.0);
        let xs = offset_tensor(&x, &[t, h], <W as candle_core::WithDType>::DTYPE, dev);
        if let Some(want) = oracle_block(&cfg, &f64_values(&xs), &weights, true) {
            break (x, xs, want);
        }
    };
    let block = MoeBlock::new(cfg.clone(), weights.clone(), dev).unwrap();
    let out = block.forward(&xs).unwrap();
    common::assert_close(
        &format!("block on {:?}", dev.location()),
        &f64_values(&out),
        &want,
        rel_tol(<W as candle_core::WithDType>::DTYPE),
    );
    if dev.is_cpu() {
        let reference = moe_kernels::cpu::layer::CpuMoeLayer::new(cfg.clone(), weights)
            .unwrap()
            .forward(moe_kernels::MatRef::new("x", &x, t, h).unwrap())
            .unwrap();
        let out: Vec<f32> = f64_values(&out).iter().map(|&v| v as f32).collect();
        assert_eq!(out, reference.hidden);
    }
    assert!(block.check_device_status().is_ok());
}

/// Assert that `result` is an error matching `pattern`, printing it.
macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {
        match $result {
            Err(e @ $pattern) => eprintln!("expected error: {e}"),
            Err(e) => panic!("wrong error: {e:?}"),
            Ok(_) => panic!("no error"),
        }
    };
}

#[test]
fn bad_inputs_give_typed_errors() {
    on_every_device(
        "bad_inputs_give_typed_errors",
        bad_inputs_give_typed_errors_on,
    );
}

fn bad_inputs_give_typed_errors_on(rng: &mut StdRng, dev: &Device) {
    let (t, e, k, h) = (5, 8, 2, 16);
    // The GEMMs' type, and another one; CUDA's tensor cores take bf16 and f16.
    let (float, other) = if dev.is_cpu() {
        (DType::F32, DType::BF16)
    } else {
        (DType::BF16, DType::F16)
    };
    let cfg = RoutingConfig::softmax_topk(e, k, true);
    let logits = Tensor::from_vec(common::randn(rng, t * e, 1.0), (t, e), dev).unwrap();

    // Routing.
    assert_err!(
        mc::route(
            &logits.t().unwrap(),
            None,
            &RoutingConfig::softmax_topk(t, k, true)
        ),
        MoeError::NonContiguous { .. }
    );
    assert_err!(
        mc::route(&logits.to_dtype(DType::F64).unwrap(), None, &cfg),
        MoeError::CandleDType { .. }
    );
    assert_err!(
        mc::route(&logits.to_dtype(DType::U32).unwrap(), None, &cfg),
        MoeError::CandleDType { .. }
    );
    assert_err!(
        mc::route(&logits.reshape((1, t, e)).unwrap(), None, &cfg),
        MoeError::ShapeMismatch { .. }
    );
    assert_err!(
        mc::route(&logits, None, &RoutingConfig::softmax_topk(e + 1, k, true)),
        MoeError::ShapeMismatch { .. }
    );
    let biased = RoutingConfig {
        correction_bias: true,
        ..cfg.clone()
    };
    let bias = Tensor::from_vec(common::randn(rng, e, 0.1), e, dev).unwrap();
    assert_err!(
        mc::route(&logits, Some(&bias.reshape((1, e)).unwrap()), &biased),
        MoeError::ShapeMismatch { .. }
    );
    assert_err!(
        mc::route(&logits, Some(&bias.to_dtype(DType::BF16).unwrap()), &biased),
        MoeError::CandleDType { .. }
    );
    assert_err!(
        mc::route(&logits, Some(&bias), &cfg),
        MoeError::InvalidConfig(_)
    );
    let mut bad = common::randn(rng, t * e, 1.0);
    bad[3 * e + 2] = f32::NAN;
    let bad = Tensor::from_vec(bad, (t, e), dev).unwrap();
    assert_err!(
        mc::route(&bad, None, &cfg),
        MoeError::NonFinite {
            token: 3,
            expert: 2,
            ..
        }
    );

    // Permutation.
    let (ids, _) = mc::route(&logits, None, &cfg).unwrap();
    assert_err!(
        mc::permute(&ids.to_dtype(DType::I64).unwrap(), e),
        MoeError::CandleDType { .. }
    );
    assert_err!(
        mc::permute(&ids.t().unwrap(), e),
        MoeError::NonContiguous { .. }
    );
    assert_err!(
        mc::permute(&ids.flatten_all().unwrap(), e),
        MoeError::ShapeMismatch { .. }
    );
    assert_err!(mc::permute(&ids, 1), MoeError::ExpertIdOutOfRange { .. });
    let perm = mc::permute(&ids, e).unwrap();

    // Gather.
    let x = Tensor::from_vec(common::randn(rng, t * h, 1.0), (t, h), dev)
        .unwrap()
        .to_dtype(float)
        .unwrap();
    assert_err!(
        mc::gather(&x.narrow(0, 0, t - 1).unwrap(), &perm),
        MoeError::ShapeMismatch { .. }
    );
    assert_err!(
        mc::gather(&x.to_dtype(DType::F64).unwrap(), &perm),
        MoeError::CandleDType { .. }
    );
    let square = Tensor::from_vec(common::randn(rng, t * t, 1.0), (t, t), dev).unwrap();
    assert_err!(
        mc::gather(&square.t().unwrap(), &perm),
        MoeError::NonContiguous { .. }
    );
    let gathered = mc::gather(&x, &perm).unwrap();

    // Grouped GEMM.
    let w = Tensor::from_vec(common::randn(rng, e * 6 * h, 1.0), (e, 6, h), dev)
        .unwrap()
        .to_dtype(float)
        .unwrap();
    let act = Some(Activation::SWIGLU);
    assert!(mc::grouped_gemm(&gathered, &w, &perm, act).is_ok());
    assert_err!(
        mc::grouped_gemm(&gathered, &w.to_dtype(other).unwrap(), &perm, act),
        MoeError::CandleDType { .. }
    );
    assert_err!(
        mc::grouped_gemm(&gathered, &w.reshape((e, 12, h / 2)).unwrap(), &perm, act),
        MoeError::ShapeMismatch { .. }
    );
    assert_err!(
        mc::grouped_gemm(&gathered, &w.narrow(0, 0, e - 1).unwrap(), &perm, act),
        MoeError::ShapeMismatch { .. }
    );
    assert_err!(
        mc::grouped_gemm(&gathered.narrow(0, 1, t * k - 1).unwrap(), &w, &perm, act),
        MoeError::ShapeMismatch { .. }
    );
    assert_err!(
        mc::grouped_gemm(&gathered, &w.transpose(1, 2).unwrap(), &perm, None),
        MoeError::ShapeMismatch { .. } | MoeError::NonContiguous { .. }
    );
    let wt = Tensor::from_vec(common::randn(rng, e * h * h, 1.0), (e, h, h), dev)
        .unwrap()
        .to_dtype(float)
        .unwrap();
    assert_err!(
        mc::grouped_gemm(&gathered, &wt.transpose(1, 2).unwrap(), &perm, None),
        MoeError::NonContiguous { .. }
    );

    // Combine.
    let weights = Tensor::from_vec(common::randn(rng, t * k, 1.0), (t, k), dev).unwrap();
    assert!(mc::combine(&gathered, &perm, &weights, None).is_ok());
    assert_err!(
        mc::combine(
            &gathered,
            &perm,
            &weights.to_dtype(DType::BF16).unwrap(),
            None
        ),
        MoeError::CandleDType { .. }
    );
    assert_err!(
        mc::combine(
            &gathered,
            &perm,
            &weights.narrow(0, 0, t - 1).unwrap(),
            None
        ),
        MoeError::ShapeMismatch { .. }
    );
    assert_err!(
        mc::combine(
            &gathered,
            &perm,
            &weights,
            Some(&x.narrow(1, 0, h - 1).unwrap())
        ),
        MoeError::ShapeMismatch { .. } | MoeError::NonContiguous { .. }
    );
    assert_err!(
        mc::combine(
            &gathered,
            &perm,
            &weights,
            Some(&x.to_dtype(DType::U8).unwrap())
        ),
        MoeError::CandleDType { .. }
    );
    let mut nan = common::randn(rng, t * k, 1.0);
    nan[1] = f32::INFINITY;
    let nan = Tensor::from_vec(nan, (t, k), dev).unwrap();
    if dev.is_cpu() {
        assert_err!(
            mc::combine(&gathered, &perm, &nan, None),
            MoeError::NonFinite { .. }
        );
    } else {
        // On CUDA the weights are not checked (that would wait for the device): the non-finite
        // weight makes its own token's output non-finite, and only that token's.
        let out = f64_values(&mc::combine(&gathered, &perm, &nan, None).unwrap());
        let finite_rows: Vec<bool> = out
            .chunks(h)
            .map(|row| row.iter().all(|v| v.is_finite()))
            .collect();
        assert_eq!(finite_rows, [false, true, true, true, true]);
    }

    // The block.
    let mcfg = qwen3_small(h, 8, e, k);
    let mut block_w = |n: usize| {
        Tensor::from_vec(common::randn(rng, n, 0.3), n, dev)
            .unwrap()
            .to_dtype(float)
            .unwrap()
    };
    let (router, gate_up, down) = (
        block_w(e * h).reshape((e, h)).unwrap(),
        block_w(e * 16 * h).reshape((e, 16, h)).unwrap(),
        block_w(e * h * 8).reshape((e, h, 8)).unwrap(),
    );
    let block = MoeBlock::from_tensors(mcfg.clone(), &router, &gate_up, &down).unwrap();
    assert!(block.forward(&x).is_ok());
    assert_err!(
        block.forward(&x.to_dtype(other).unwrap()),
        MoeError::CandleDType { .. }
    );
    assert_err!(
        block.forward(&x.narrow(1, 0, h - 1).unwrap().contiguous().unwrap()),
        MoeError::ShapeMismatch { .. }
    );
    let xt = Tensor::from_vec(common::randn(rng, h * t, 1.0), (h, t), dev)
        .unwrap()
        .to_dtype(float)
        .unwrap();
    assert_err!(
        block.forward(&xt.t().unwrap()),
        MoeError::NonContiguous { .. }
    );
    assert_err!(
        MoeBlock::from_tensors(mcfg.clone(), &router.t().unwrap(), &gate_up, &down),
        MoeError::ShapeMismatch { .. }
    );
    assert_err!(
        MoeBlock::from_tensors(
            mcfg.clone(),
            &router,
            &gate_up.to_dtype(other).unwrap(),
            &down
        ),
        MoeError::CandleDType { .. }
    );
    assert_err!(
        MoeBlock::from_tensors(
            mcfg.clone(),
            &router.to_dtype(DType::F64).unwrap(),
            &gate_up.to_dtype(DType::F64).unwrap(),
            &down.to_dtype(DType::F64).unwrap()
        ),
        MoeError::CandleDType { .. }
    );
    // Through `Module`, the same error as a candle error.
    let err = x.to_dtype(other).unwrap().apply(&block).unwrap_err();
    assert!(
        err.to_string().contains("dtype mismatch for hidden states"),
        "{err}"
    );

    // Arguments on another device than the call's first one: the op's own error, or candle's
    // where candle compares the devices of a custom op's tensors first.
    if !dev.is_cpu() {
        let on_cpu = |t: &Tensor| t.to_device(&CPU).unwrap();
        assert_err!(mc::gather(&on_cpu(&x), &perm), MoeError::Unsupported(_));
        assert_err!(
            mc::combine(&gathered, &perm, &on_cpu(&weights), None),
            MoeError::Unsupported(_) | MoeError::Candle(_)
        );
        assert_err!(
            mc::grouped_gemm(&gathered, &on_cpu(&w), &perm, act),
            MoeError::Unsupported(_) | MoeError::Candle(_)
        );
        assert_err!(block.forward(&on_cpu(&x)), MoeError::Unsupported(_));
        // f32 GEMMs: the tensor cores do not take them.
        let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        assert_err!(
            mc::grouped_gemm(&f32(&gathered), &f32(&w), &perm, act),
            MoeError::Unsupported(_)
        );
        assert_err!(
            MoeBlock::from_tensors(mcfg, &f32(&router), &f32(&gate_up), &f32(&down)),
            MoeError::Unsupported(_)
        );
    }
}
