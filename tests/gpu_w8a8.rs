//! The FP8 x FP8 path: the activation quantisation (GPU and CPU mirror) and the W8A8 grouped GEMM
//! against a float64 oracle written here, which quantises the activations itself (scale =
//! amax / 448 in f32, codes = the nearest e4m3 to x / scale, ties to even, saturated) and multiplies
//! the decoded codes with the scales in DeepSeek-V3's order: per 128-deep block of K the product of
//! codes, times the activation scale and the weight scale, summed over the blocks.
//!
//! Seeded random data (the seed is printed; `MOE_TEST_SEED` replays it), outputs poisoned with NaN,
//! every element checked, each GEMM run twice for identical bits. Without a GPU each GPU test prints
//! `SKIPPED` and passes, unless `MOE_KERNELS_REQUIRE_GPU=1`.

mod common;

use common::oracle;
use half::{bf16, f16};
use moe_kernels::cpu::fp8_act::quantize_fp8_per_token_group as cpu_quantize;
use moe_kernels::gpu::{
    grouped_gemm_w8a8, quantize_fp8_per_token_group, Device, Fp8Activations, Fp8Weights,
    GemmElement, GemmEpilogue, GroupedGemmShape, W8a8Output,
};
use moe_kernels::{Activation, DType, MatMut, MatRef, MoeError};
use rand::rngs::StdRng;
use rand::Rng;

const BLOCK: usize = 128;

fn device(test: &str) -> Option<Device> {
    common::gpu("gpu_w8a8", test)
}

/// The e4m3 code nearest to `q`, ties to the even code, saturated at 448, from the list of every
/// finite code's value (oracle::e4m3).
fn oracle_code(q: f64) -> u8 {
    if q.is_nan() {
        return 0x7f;
    }
    let sign = if q.is_sign_negative() { 0x80u8 } else { 0 };
    let a = q.abs();
    let mut best = 0u8;
    for c in 1..=0x7eu8 {
        let (d, db) = ((oracle::e4m3(c) - a).abs(), (oracle::e4m3(best) - a).abs());
        if d < db || (d == db && c % 2 == 0) {
            best = c;
        }
    }
    sign | best
}

/// The oracle's quantisation of `x` `[rows, k]`: (codes `[rows, k]`, scales `[rows, groups]`).
fn oracle_quantize(x: &[f32], rows: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
    let groups = k.div_ceil(BLOCK);
    let mut codes = vec![0u8; rows * k];
    let mut scales = vec![0f32; rows * groups];
    for r in 0..rows {
        for g in 0..groups {
            let cols = g * BLOCK..((g + 1) * BLOCK).min(k);
            let amax = cols
                .clone()
                .map(|c| x[r * k + c].abs())
                .fold(0f32, f32::max);
            // The f32 scale of the definition; an all-zero group gets 1.
            let scale = if amax == 0.0 { 1.0 } else { amax / 448.0 };
            scales[r * groups + g] = scale;
            for c in cols {
                codes[r * k + c] = oracle_code((x[r * k + c] / scale) as f64);
            }
        }
    }
    (codes, scales)
}

/// Activations with the features the quantisation must handle: random magnitudes per group, an
/// all-zero group, a group with one large outlier.
fn activations(rng: &mut StdRng, rows: usize, k: usize) -> Vec<f32> {
    let mut x = common::randn(rng, rows * k, 1.0);
    for r in 0..rows {
        let scale = 10f32.powf(rng.random_range(-3.0..0.5));
        for v in &mut x[r * k..(r + 1) * k] {
            *v *= scale;
        }
    }
    if rows > 1 {
        for v in &mut x[k..k + k.min(BLOCK)] {
            *v = 0.0;
        }
    }
    if rows > 2 {
        x[2 * k + k / 2] = 100.0;
    }
    x
}

fn run_quant<T: GemmElement>(
    dev: &Device,
    x: &[T],
    rows: usize,
    k: usize,
) -> moe_kernels::Result<(Vec<u8>, Vec<f32>)> {
    let s = dev.stream();
    let xd = s.clone_htod(x)?;
    let mut codes = s.clone_htod(&vec![0xa5u8; rows * k])?;
    let mut scales = s.clone_htod(&vec![f32::NAN; rows * k.div_ceil(BLOCK)])?;
    quantize_fp8_per_token_group(
        dev,
        &xd.as_view(),
        rows,
        k,
        &mut codes.as_view_mut(),
        &mut scales.as_view_mut(),
    )?;
    Ok((s.clone_dtoh(&codes)?, s.clone_dtoh(&scales)?))
}

fn check_quant<T: GemmElement>(dev: &Device, rng: &mut StdRng, rows: usize, k: usize) {
    let x: Vec<T> = activations(rng, rows, k)
        .into_iter()
        .map(T::from_f32)
        .collect();
    let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let (want_codes, want_scales) = oracle_quantize(&xf, rows, k);
    let what = format!("{} [{rows}, {k}]", T::DTYPE.name());

    let (codes, scales) = run_quant(dev, &x, rows, k).unwrap();
    let bits = |v: &[f32]| v.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&scales), bits(&want_scales), "{what}: GPU scales");
    for (i, (&c, &w)) in codes.iter().zip(&want_codes).enumerate() {
        assert_eq!(c, w, "{what}: GPU code ({}, {}) of {}", i / k, i % k, xf[i]);
    }

    let mut cpu_codes = vec![0xa5u8; rows * k];
    let mut cpu_scales = vec![f32::NAN; rows * k.div_ceil(BLOCK)];
    cpu_quantize(
        MatRef::new("x", &x, rows, k).unwrap(),
        &mut MatMut::new("codes", &mut cpu_codes, rows, k).unwrap(),
        &mut MatMut::new("scales", &mut cpu_scales, rows, k.div_ceil(BLOCK)).unwrap(),
    )
    .unwrap();
    assert_eq!(bits(&cpu_scales), bits(&want_scales), "{what}: CPU scales");
    assert_eq!(cpu_codes, want_codes, "{what}: CPU codes");
}

#[test]
fn quantisation_matches_the_oracle_bit_for_bit() {
    let Some(dev) = device("quantisation_matches_the_oracle_bit_for_bit") else {
        return;
    };
    let mut rng = common::rng("quantisation");
    for (rows, k) in [(5usize, 300usize), (3, 128), (4, 7), (2, 1000)] {
        check_quant::<bf16>(&dev, &mut rng, rows, k);
        check_quant::<f16>(&dev, &mut rng, rows, k);
    }
}

#[test]
fn cpu_quantisation_of_edge_values() {
    // A group of zeros: scale 1, codes 0. A NaN is skipped by the amax and gives the NaN code; the
    // largest value of a group maps to 448 (0x7e).
    let x = [0.0f32, -0.0, 1.0, f32::NAN, -2.0];
    let mut codes = [0u8; 5];
    let mut scales = [0f32; 1];
    cpu_quantize(
        MatRef::new("x", &x, 1, 5).unwrap(),
        &mut MatMut::new("codes", &mut codes, 1, 5).unwrap(),
        &mut MatMut::new("scales", &mut scales, 1, 1).unwrap(),
    )
    .unwrap();
    assert_eq!(scales[0], 2.0 / 448.0);
    assert_eq!(codes, [0x00, 0x80, 0x76, 0x7f, 0xfe]); // 1 / (2/448) = 224 = 1.75 * 2^7
    let zeros = [0.0f32; 3];
    let mut codes = [9u8; 3];
    cpu_quantize(
        MatRef::new("x", &zeros, 1, 3).unwrap(),
        &mut MatMut::new("codes", &mut codes, 1, 3).unwrap(),
        &mut MatMut::new("scales", &mut scales, 1, 1).unwrap(),
    )
    .unwrap();
    assert_eq!((scales[0], codes), (1.0, [0, 0, 0]));
    let mut wrong = [0f32; 2];
    assert!(matches!(
        cpu_quantize(
            MatRef::new("x", &zeros, 1, 3).unwrap(),
            &mut MatMut::new("codes", &mut codes, 1, 3).unwrap(),
            &mut MatMut::new("scales", &mut wrong, 1, 2).unwrap(),
        ),
        Err(MoeError::ShapeMismatch { .. })
    ));
}

/// One GEMM case: expert row counts (a trailing `tail` of rows no segment covers), sizes, epilogue.
struct Case {
    counts: Vec<usize>,
    tail: usize,
    offsets: bool,
    n: usize,
    k: usize,
    epilogue: GemmEpilogue,
}

/// Random weight codes (no NaN) and per-row scales constant over 128 x 128 blocks, as DeepSeek-V3
/// stores them.
fn weights(rng: &mut StdRng, e: usize, n: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
    let codes = (0..e * n * k)
        .map(|_| {
            let c: u8 = rng.random();
            if c & 0x7f == 0x7f {
                c - 1
            } else {
                c
            }
        })
        .collect();
    let groups = k.div_ceil(BLOCK);
    let blocks: Vec<f32> = (0..e * n.div_ceil(BLOCK) * groups)
        .map(|_| rng.random_range(1e-4..1e-3f32))
        .collect();
    let mut scales = vec![0f32; e * n * groups];
    for ex in 0..e {
        for j in 0..n {
            for g in 0..groups {
                scales[(ex * n + j) * groups + g] =
                    blocks[(ex * n.div_ceil(BLOCK) + j / BLOCK) * groups + g];
            }
        }
    }
    (codes, scales)
}

/// The oracle's output `[covered rows, out_cols]` in f64.
#[allow(clippy::too_many_arguments)]
fn oracle_gemm(
    xc: &[u8],
    xs: &[f32],
    wc: &[u8],
    ws: &[f32],
    bounds: &[usize],
    n: usize,
    k: usize,
    epilogue: GemmEpilogue,
) -> Vec<f64> {
    let groups = k.div_ceil(BLOCK);
    let mut out = Vec::new();
    for e in 0..bounds.len() - 1 {
        for r in bounds[e]..bounds[e + 1] {
            let acc: Vec<f64> = (0..n)
                .map(|j| {
                    (0..groups)
                        .map(|g| {
                            let block: f64 = (g * BLOCK..((g + 1) * BLOCK).min(k))
                                .map(|c| {
                                    oracle::e4m3(xc[r * k + c])
                                        * oracle::e4m3(wc[(e * n + j) * k + c])
                                })
                                .sum();
                            block * xs[r * groups + g] as f64 * ws[(e * n + j) * groups + g] as f64
                        })
                        .sum()
                })
                .collect();
            match epilogue {
                GemmEpilogue::Store => out.extend(acc),
                GemmEpilogue::Activation(a) if a.gated => {
                    out.extend((0..n / 2).map(|j| oracle::gated(a.kind, acc[j], acc[n / 2 + j])))
                }
                GemmEpilogue::Activation(a) => out.extend(acc.iter().map(|&v| match a.kind {
                    moe_kernels::ActivationKind::Silu => oracle::silu(v),
                    _ => oracle::gelu_tanh(v),
                })),
            }
        }
    }
    out
}

/// Per-element relative tolerance (to |want| + rms) and relative L2 bound, by output type.
fn tolerances(output: DType) -> (f64, f64) {
    match output {
        DType::BF16 => (1.6e-2, 1e-2),
        DType::F16 => (2.5e-3, 2e-3),
        DType::F32 => (1e-4, 1e-5),
    }
}

fn check_gemm<O: W8a8Output>(dev: &Device, rng: &mut StdRng, case: &Case) {
    let e = case.counts.len();
    let covered: usize = case.counts.iter().sum();
    let rows = covered + case.tail;
    let (n, k) = (case.n, case.k);
    let shape = GroupedGemmShape {
        rows,
        n,
        k,
        num_experts: e,
    };
    let cols = shape.out_cols(case.epilogue);
    let what = format!(
        "E {e} counts {:?} tail {} N {n} K {k} {:?} -> {}",
        case.counts,
        case.tail,
        case.epilogue,
        O::DTYPE.name()
    );
    let x: Vec<bf16> = activations(rng, rows, k)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    let (wc, ws) = weights(rng, e, n, k);
    let mut bounds = vec![0usize];
    for c in &case.counts {
        bounds.push(bounds.last().unwrap() + c);
    }
    let offsets: Vec<i64> = bounds.iter().map(|&b| b as i64).collect();

    let s = dev.stream();
    let run = || -> moe_kernels::Result<Vec<O>> {
        let xd = s.clone_htod(&x)?;
        let mut codes = s.alloc_zeros::<u8>(rows * k)?;
        let mut scales = s.alloc_zeros::<f32>(rows * k.div_ceil(BLOCK))?;
        quantize_fp8_per_token_group(
            dev,
            &xd.as_view(),
            rows,
            k,
            &mut codes.as_view_mut(),
            &mut scales.as_view_mut(),
        )?;
        let wcd = s.clone_htod(&wc)?;
        let wsd = s.clone_htod(&ws)?;
        let od = s.clone_htod(&offsets)?;
        let mut out = s.clone_htod(&vec![O::from_f32(f32::NAN); rows * cols])?;
        let (codes_v, scales_v, wc_v, ws_v, od_v) = (
            codes.as_view(),
            scales.as_view(),
            wcd.as_view(),
            wsd.as_view(),
            od.as_view(),
        );
        grouped_gemm_w8a8(
            dev,
            Fp8Activations {
                codes: &codes_v,
                scales: &scales_v,
            },
            case.offsets.then_some(&od_v),
            Fp8Weights {
                codes: &wc_v,
                scales: &ws_v,
                group: BLOCK,
            },
            shape,
            case.epilogue,
            &mut out.as_view_mut(),
        )?;
        Ok(s.clone_dtoh(&out)?)
    };
    let first = run().unwrap_or_else(|err| panic!("{what}: {err}"));
    let second = run().unwrap_or_else(|err| panic!("{what}: second run: {err}"));
    let bits = |v: &[O]| -> Vec<u32> { v.iter().map(|x| x.to_f32().to_bits()).collect() };
    assert!(
        bits(&first) == bits(&second),
        "{what}: repeated runs differ"
    );

    let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let (xc, xs) = oracle_quantize(&xf, rows, k);
    let want = oracle_gemm(&xc, &xs, &wc, &ws, &bounds, n, k, case.epilogue);
    let got = common::el64(&first[..covered * cols]);
    let (rtol, l2_tol) = tolerances(O::DTYPE);
    let rms = (want.iter().map(|v| v * v).sum::<f64>() / want.len().max(1) as f64).sqrt();
    for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
        assert!(
            g.is_finite() && (g - r).abs() <= rtol * (r.abs() + rms),
            "{what}: element ({}, {}) is {g}, oracle {r}",
            i / cols,
            i % cols
        );
    }
    common::assert_close(&what, &got, &want, l2_tol);
    for (i, v) in first[covered * cols..].iter().enumerate() {
        assert!(
            v.to_f32().is_nan(),
            "{what}: uncovered row {} was written",
            covered + i / cols
        );
    }
}

const SWIGLU: GemmEpilogue = GemmEpilogue::Activation(Activation::SWIGLU);
const GEGLU: GemmEpilogue = GemmEpilogue::Activation(Activation::GEGLU);

#[test]
fn w8a8_gemm_matches_the_float64_oracle() {
    let Some(dev) = device("w8a8_gemm_matches_the_float64_oracle") else {
        return;
    };
    let mut rng = common::rng("w8a8_gemm");
    // K % 128 != 0 on the byte loader (K % 16 != 0), N not a multiple of the 64-row tile, empty
    // experts, uncovered tail rows.
    let case = Case {
        counts: vec![3, 0, 70, 0, 9],
        tail: 5,
        offsets: true,
        n: 72,
        k: 300,
        epilogue: GemmEpilogue::Store,
    };
    check_gemm::<bf16>(&dev, &mut rng, &case);
    check_gemm::<f32>(&dev, &mut rng, &case);
    // The cp.async path (K % 16 == 0) with a partial last K block, gated.
    let case = Case {
        counts: vec![0, 33, 1, 66],
        tail: 0,
        offsets: true,
        n: 200,
        k: 400,
        epilogue: SWIGLU,
    };
    check_gemm::<f32>(&dev, &mut rng, &case);
    check_gemm::<bf16>(&dev, &mut rng, &case);
    // Whole K blocks, f16 output, GeGLU; one group without offsets.
    let case = Case {
        counts: vec![20, 0, 45],
        tail: 2,
        offsets: true,
        n: 130,
        k: 256,
        epilogue: GEGLU,
    };
    check_gemm::<f16>(&dev, &mut rng, &case);
    let case = Case {
        counts: vec![37],
        tail: 0,
        offsets: false,
        n: 64,
        k: 128,
        epilogue: GemmEpilogue::Store,
    };
    check_gemm::<f32>(&dev, &mut rng, &case);
}

#[test]
fn bad_arguments_are_typed_errors() {
    let Some(dev) = device("bad_arguments_are_typed_errors") else {
        return;
    };
    let s = dev.stream();
    let (rows, n, k, e) = (4usize, 8usize, 200usize, 2usize);
    let shape = GroupedGemmShape {
        rows,
        n,
        k,
        num_experts: e,
    };
    let codes = s.alloc_zeros::<u8>(rows * k).unwrap();
    let scales = s.alloc_zeros::<f32>(rows * 2).unwrap();
    let short_scales = s.alloc_zeros::<f32>(rows).unwrap();
    let wc = s.alloc_zeros::<u8>(e * n * k).unwrap();
    let ws = s.alloc_zeros::<f32>(e * n * 2).unwrap();
    let ws_64 = s.alloc_zeros::<f32>(e * n * 4).unwrap();
    let offsets = s.clone_htod(&[0i64, 2, 4]).unwrap();
    let mut out = s.alloc_zeros::<f32>(rows * n).unwrap();
    let (codes, scales, short_scales, wc, ws, ws_64, offsets) = (
        codes.as_view(),
        scales.as_view(),
        short_scales.as_view(),
        wc.as_view(),
        ws.as_view(),
        ws_64.as_view(),
        offsets.as_view(),
    );
    let x = Fp8Activations {
        codes: &codes,
        scales: &scales,
    };
    let w = Fp8Weights {
        codes: &wc,
        scales: &ws,
        group: BLOCK,
    };
    let mut gemm = |x, w, shape| {
        grouped_gemm_w8a8(
            &dev,
            x,
            Some(&offsets),
            w,
            shape,
            GemmEpilogue::Store,
            &mut out.as_view_mut(),
        )
    };
    assert!(gemm(x, w, shape).is_ok());
    let group_64 = Fp8Weights {
        scales: &ws_64,
        group: 64,
        ..w
    };
    assert!(matches!(
        gemm(x, group_64, shape),
        Err(MoeError::Unsupported(_))
    ));
    let short = Fp8Activations {
        scales: &short_scales,
        ..x
    };
    assert!(matches!(
        gemm(short, w, shape),
        Err(MoeError::ShapeMismatch { .. })
    ));
    let wider = GroupedGemmShape { n: 9, ..shape };
    assert!(matches!(
        gemm(x, w, wider),
        Err(MoeError::ShapeMismatch { .. })
    ));

    let xd = s.alloc_zeros::<bf16>(rows * k).unwrap();
    let mut qc = s.alloc_zeros::<u8>(rows * k).unwrap();
    let mut qs = s.alloc_zeros::<f32>(rows).unwrap();
    assert!(matches!(
        quantize_fp8_per_token_group(
            &dev,
            &xd.as_view(),
            rows,
            k,
            &mut qc.as_view_mut(),
            &mut qs.as_view_mut()
        ),
        Err(MoeError::ShapeMismatch { .. })
    ));
}

/// On the emulated A100 (sm_80) both entry points refuse with `Unsupported`. The emulated device is
/// chosen per process, so the test reruns itself with `PTX_EMU_DEVICE=a100`.
#[test]
fn devices_older_than_sm_89_are_refused() {
    const CHILD: &str = "MOE_W8A8_TEST_OLD_DEVICE";
    if std::env::var_os(CHILD).is_none() {
        if !common::emulated() {
            eprintln!("SKIPPED gpu_w8a8::devices_older_than_sm_89_are_refused: needs the emulator");
            return;
        }
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["devices_older_than_sm_89_are_refused", "--exact"])
            .env(CHILD, "1")
            .env("PTX_EMU_DEVICE", "a100")
            .status()
            .unwrap();
        assert!(status.success(), "the sm_80 run failed");
        return;
    }
    let dev = device("devices_older_than_sm_89_are_refused").expect("the emulated A100");
    assert_eq!(dev.compute_capability(), (8, 0));
    let s = dev.stream();
    let xd = s.alloc_zeros::<bf16>(128).unwrap();
    let mut qc = s.alloc_zeros::<u8>(128).unwrap();
    let mut qs = s.alloc_zeros::<f32>(1).unwrap();
    let err = quantize_fp8_per_token_group(
        &dev,
        &xd.as_view(),
        1,
        128,
        &mut qc.as_view_mut(),
        &mut qs.as_view_mut(),
    );
    assert!(matches!(err, Err(MoeError::Unsupported(_))), "{err:?}");
    let (qc, qs) = (qc.as_view(), qs.as_view());
    let mut out = s.alloc_zeros::<f32>(1).unwrap();
    let err = grouped_gemm_w8a8(
        &dev,
        Fp8Activations {
            codes: &qc,
            scales: &qs,
        },
        None,
        Fp8Weights {
            codes: &qc,
            scales: &qs,
            group: BLOCK,
        },
        GroupedGemmShape {
            rows: 1,
            n: 1,
            k: 128,
            num_experts: 1,
        },
        GemmEpilogue::Store,
        &mut out.as_view_mut(),
    );
    assert!(matches!(err, Err(MoeError::Unsupported(_))), "{err:?}");
}
