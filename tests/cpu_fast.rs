//! The fast CPU backend (`cpu::fast`) against the float64 oracle and against the reference
//! (`cpu::gemm`): every kernel build this CPU runs (the portable one always), plain, FP8 and MXFP4
//! weights, odd shapes, and the same bits whatever the thread count. The layer tests in
//! `cpu_layer.rs` run the layer's default backend, which is this one; the last tests here run both
//! backends by name.

mod common;

use common::oracle;
use half::{bf16, f16};
use moe_kernels::cpu::fast::{self, CpuBackend, Isa};
use moe_kernels::cpu::gemm::{self, ExpertRows};
use moe_kernels::cpu::layer::{CpuMoeLayer, MoeWeights};
use moe_kernels::quant::{CodeFormat, QuantExperts};
use moe_kernels::{Activation, Element, ExpertsRef, MatMut, MatRef, MoeConfig};
use rand::rngs::StdRng;
use rand::Rng;

/// The builds this CPU runs.
fn isas() -> Vec<Isa> {
    let v: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.available()).collect();
    eprintln!("kernel builds tested: {v:?}");
    v
}

/// A random grouped-GEMM problem: offsets over `e` experts (some empty, sometimes one expert with
/// all rows) and activations `[rows, k]`.
fn random_segments(rng: &mut StdRng, e: usize, case: usize) -> Vec<usize> {
    let mut offsets = vec![0usize];
    for ex in 0..e {
        let c = if case.is_multiple_of(5) {
            if ex == e - 1 {
                300
            } else {
                0
            }
        } else if rng.random_bool(0.3) {
            0
        } else {
            rng.random_range(0..12)
        };
        offsets.push(offsets[ex] + c);
    }
    offsets
}

/// The oracle's `[rows, n]` grouped product of `x64` `[rows, k]` with `w64` `[e, n, k]`.
fn oracle_gemm(x64: &[f64], w64: &[f64], offsets: &[usize], n: usize, k: usize) -> Vec<f64> {
    let rows = *offsets.last().unwrap();
    let mut want = vec![0f64; rows * n];
    for ex in 0..offsets.len() - 1 {
        for r in offsets[ex]..offsets[ex + 1] {
            let y = oracle::matvec(
                &w64[ex * n * k..(ex + 1) * n * k],
                n,
                k,
                &x64[r * k..(r + 1) * k],
            );
            want[r * n..(r + 1) * n].copy_from_slice(&y);
        }
    }
    want
}

/// Assert `got` is the grouped GEMM of `x64` and `w64` within `tol`, relative to the L2 norm of
/// the GEMM of their magnitudes: an `f32` dot's rounding error is bounded by the sum of its terms'
/// magnitudes, not by its value, which can cancel (a single output near zero would otherwise fail
/// a relative test that its magnitude-scaled error passes).
fn check_gemm(
    what: &str,
    got: &[f64],
    x64: &[f64],
    w64: &[f64],
    offsets: &[usize],
    [n, k]: [usize; 2],
    tol: f64,
) {
    let want = oracle_gemm(x64, w64, offsets, n, k);
    let abs = |v: &[f64]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
    let scale = oracle_gemm(&abs(x64), &abs(w64), offsets, n, k);
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, g) in got.iter().enumerate() {
        assert!(g.is_finite(), "{what}: element {i} is {g}");
    }
    let err: f64 = got.iter().zip(&want).map(|(g, w)| (g - w) * (g - w)).sum();
    let norm: f64 = scale.iter().map(|s| s * s).sum();
    let rel = (err / norm.max(f64::MIN_POSITIVE)).sqrt();
    assert!(
        rel <= tol,
        "{what}: L2 error {rel:e} of the magnitudes' L2 > {tol:e}"
    );
}

/// [`check_gemm`] of the fast GEMM's `out` on plain element activations `x` and weights `w`.
fn check_plain_gemm<X: Element, W: Element>(
    what: &str,
    out: &[f32],
    x: &[X],
    w: &[W],
    offsets: &[usize],
    nk: [usize; 2],
    tol: f64,
) {
    let (x64, w64) = (common::el64(x), common::el64(w));
    check_gemm(what, &common::f64s(out), &x64, &w64, offsets, nk, tol);
}

/// Shapes with K below, at and around multiples of the 16-lane chunk, and N around the 4-row tile.
fn random_shape(rng: &mut StdRng, case: usize) -> (usize, usize, usize) {
    let e = [1usize, 2, 5, 9][case % 4];
    let k = [1usize, 7, 15, 16, 17, 33, 64, 100, 129][case % 9];
    let n = rng.random_range(1..40);
    (e, n, k)
}

fn check_plain<X: Element, W: Element>(test: &str, tol: f64) {
    let mut rng = common::rng(test);
    for isa in isas() {
        for case in 0..36 {
            let (e, n, k) = random_shape(&mut rng, case);
            let offsets = random_segments(&mut rng, e, case);
            let rows = offsets[e];
            let x: Vec<X> = common::values(&mut rng, rows * k, 1.0);
            let w: Vec<W> = common::values(&mut rng, e * n * k, 0.3);
            let mut out = vec![f32::NAN; rows * n];
            fast::grouped_gemm(
                isa,
                MatRef::new("x", &x, rows, k).unwrap(),
                &offsets,
                ExpertsRef::new("w", &w, e, n, k).unwrap(),
                &mut MatMut::new("out", &mut out, rows, n).unwrap(),
            )
            .unwrap();
            check_plain_gemm(
                &format!(
                    "{isa:?} case {case} E={e} N={n} K={k} rows={rows} {} x {}",
                    X::DTYPE,
                    W::DTYPE
                ),
                &out,
                &x,
                &w,
                &offsets,
                [n, k],
                tol,
            );
        }
    }
}

// Inputs are exact in f32 and the output is f32: only the summation order differs from the oracle.
#[test]
fn fast_gemm_matches_oracle_f32() {
    check_plain::<f32, f32>("fast_gemm_matches_oracle_f32", 1e-5);
}

#[test]
fn fast_gemm_matches_oracle_bf16_weights() {
    check_plain::<f32, bf16>("fast_gemm_matches_oracle_bf16_weights", 1e-5);
    check_plain::<bf16, bf16>("fast_gemm_matches_oracle_bf16_weights", 1e-5);
}

#[test]
fn fast_gemm_matches_oracle_f16_weights() {
    check_plain::<f16, f16>("fast_gemm_matches_oracle_f16_weights", 1e-5);
}

/// An e4m3 code's value, from its bits (the oracle's own decoder).
fn e4m3(code: u8) -> f64 {
    let (s, e, m) = ((code >> 7) & 1, (code >> 3) & 15, code & 7);
    let mag = if e == 0 {
        m as f64 / 8.0 * 2f64.powi(-6)
    } else {
        (1.0 + m as f64 / 8.0) * 2f64.powi(e as i32 - 7)
    };
    if s == 1 {
        -mag
    } else {
        mag
    }
}

/// Random FP8 experts `[e, n, k]` with scale groups of `group` columns (no NaN codes), and their
/// values in f64.
fn random_fp8(rng: &mut StdRng, [e, n, k]: [usize; 3], group: usize) -> (QuantExperts, Vec<f64>) {
    let codes: Vec<u8> = (0..e * n * k)
        .map(|_| loop {
            let c: u8 = rng.random();
            if c & 0x7f != 0x7f {
                break c;
            }
        })
        .collect();
    let groups = k.div_ceil(group);
    let scales: Vec<f32> = (0..e * n * groups)
        .map(|_| rng.random_range(0.001f32..0.01))
        .collect();
    fp8_experts([e, n, k], group, codes, scales)
}

/// FP8 experts `[e, n, k]` of these codes and scales (groups of `group` columns), and their values
/// in f64.
fn fp8_experts(
    [e, n, k]: [usize; 3],
    group: usize,
    codes: Vec<u8>,
    scales: Vec<f32>,
) -> (QuantExperts, Vec<f64>) {
    let groups = k.div_ceil(group);
    let w64 = (0..e * n * k)
        .map(|idx| {
            let (row, c) = (idx / k, idx % k);
            e4m3(codes[idx]) * scales[row * groups + c / group] as f64
        })
        .collect();
    let q = QuantExperts::new(CodeFormat::Fp8E4M3, [e, n, k], group, codes, scales).unwrap();
    (q, w64)
}

#[test]
fn fast_gemm_matches_oracle_fp8() {
    let mut rng = common::rng("fast_gemm_matches_oracle_fp8");
    for isa in isas() {
        for case in 0..36 {
            let (e, n, k) = random_shape(&mut rng, case);
            // Block scales (groups of 16 and 128 columns), groups that straddle the 16-lane chunks
            // (5), and one scale per row (group = K).
            let group = [16usize, 128, 5, k][case % 4];
            let offsets = random_segments(&mut rng, e, case);
            let rows = offsets[e];
            let x: Vec<f32> = common::values(&mut rng, rows * k, 1.0);
            let (q, w64) = random_fp8(&mut rng, [e, n, k], group);
            let mut out = vec![f32::NAN; rows * n];
            fast::grouped_gemm(
                isa,
                MatRef::new("x", &x, rows, k).unwrap(),
                &offsets,
                &q,
                &mut MatMut::new("out", &mut out, rows, n).unwrap(),
            )
            .unwrap();
            check_gemm(
                &format!("{isa:?} FP8 case {case} E={e} N={n} K={k} group={group}"),
                &common::f64s(&out),
                &common::el64(&x),
                &w64,
                &offsets,
                [n, k],
                1e-5,
            );
        }
    }
}

/// An e2m1 code's value, from its low 4 bits (the oracle's own decoder).
fn e2m1(code: u8) -> f64 {
    let (s, e, m) = ((code >> 3) & 1, (code >> 1) & 3, code & 1);
    let mag = if e == 0 {
        m as f64 * 0.5
    } else {
        (1.0 + m as f64 / 2.0) * 2f64.powi(e as i32 - 1)
    };
    if s == 1 {
        -mag
    } else {
        mag
    }
}

/// Random MXFP4 experts `[e, n, k]` with scale groups of `group` columns, and their values in f64.
/// The scales are powers of two (as e8m0 scales are) for `power_of_two`, else any value in
/// [0.001, 0.01) (the product with the code then rounds); the high nibble of a row's half-used last
/// byte (odd K) is random, not a value.
fn random_mxfp4(
    rng: &mut StdRng,
    [e, n, k]: [usize; 3],
    group: usize,
    power_of_two: bool,
) -> (QuantExperts, Vec<f64>) {
    let bytes = k.div_ceil(2);
    let codes: Vec<u8> = (0..e * n * bytes).map(|_| rng.random()).collect();
    let groups = k.div_ceil(group);
    let scales: Vec<f32> = (0..e * n * groups)
        .map(|_| {
            if power_of_two {
                2f32.powi(rng.random_range(-12..4))
            } else {
                rng.random_range(0.001f32..0.01)
            }
        })
        .collect();
    let w64 = (0..e * n * k)
        .map(|idx| {
            let (row, c) = (idx / k, idx % k);
            let byte = codes[row * bytes + c / 2];
            let code = if c % 2 == 0 { byte & 0xf } else { byte >> 4 };
            e2m1(code) * scales[row * groups + c / group] as f64
        })
        .collect();
    let q = QuantExperts::new(CodeFormat::Mxfp4E2M1, [e, n, k], group, codes, scales).unwrap();
    (q, w64)
}

#[test]
fn fast_gemm_matches_oracle_mxfp4() {
    let mut rng = common::rng("fast_gemm_matches_oracle_mxfp4");
    for isa in isas() {
        for case in 0..36 {
            let (e, n, k) = random_shape(&mut rng, case);
            // MXFP4's groups of 32, groups of 16 (one a chunk), groups that straddle the 16-lane
            // chunks (5), and one scale per row (group = K).
            let group = [32usize, 16, 5, k][case % 4];
            let offsets = random_segments(&mut rng, e, case);
            let rows = offsets[e];
            let x: Vec<f32> = common::values(&mut rng, rows * k, 1.0);
            let (q, w64) = random_mxfp4(&mut rng, [e, n, k], group, case % 3 != 0);
            let mut out = vec![f32::NAN; rows * n];
            fast::grouped_gemm(
                isa,
                MatRef::new("x", &x, rows, k).unwrap(),
                &offsets,
                &q,
                &mut MatMut::new("out", &mut out, rows, n).unwrap(),
            )
            .unwrap();
            check_gemm(
                &format!("{isa:?} MXFP4 case {case} E={e} N={n} K={k} group={group}"),
                &common::f64s(&out),
                &common::el64(&x),
                &w64,
                &offsets,
                [n, k],
                1e-5,
            );
        }
    }
}

/// One-hot activations (row `r` of each expert is unit vector `r`) make every output a weight value
/// alone: `out[r][j] = w[e][j][r]` exactly, whatever the order of the sum. The fast kernels'
/// dequantised weights must be the reference's (`QuantExperts::row_into`) exactly, and the oracle's
/// values `w64` rounded to `f32` (exact products: a code has at most 4 significant bits).
fn assert_reference_weights(isa: Isa, q: &QuantExperts, w64: &[f64], what: &str) {
    let [e, n, k] = q.shape();
    let offsets: Vec<usize> = (0..=e).map(|ex| ex * k).collect();
    let mut x = vec![0f32; e * k * k];
    for r in 0..e * k {
        x[r * k + r % k] = 1.0;
    }
    let mut out = vec![f32::NAN; e * k * n];
    fast::grouped_gemm(
        isa,
        MatRef::new("x", &x, e * k, k).unwrap(),
        &offsets,
        q,
        &mut MatMut::new("out", &mut out, e * k, n).unwrap(),
    )
    .unwrap();
    let mut row = vec![0f32; k];
    for ex in 0..e {
        for j in 0..n {
            q.row_into(ex, j, &mut row);
            for (c, &want) in row.iter().enumerate() {
                let got = out[(ex * k + c) * n + j];
                let oracle = w64[(ex * n + j) * k + c] as f32;
                assert!(
                    got == want && got == oracle,
                    "{isa:?} {:?} K={k} group={} {what}: weight [{ex}, {j}, {c}] is {got:e}, the \
                     reference has {want:e}, the oracle {oracle:e}",
                    q.format(),
                    q.group()
                );
            }
        }
    }
}

#[test]
fn fast_quantized_weights_are_the_reference_values() {
    let mut rng = common::rng("fast_quantized_weights_are_the_reference_values");
    for isa in isas() {
        for (case, k) in [1usize, 15, 31, 33, 64, 77, 100].into_iter().enumerate() {
            let (e, n) = (2, rng.random_range(1..20));
            let group = [32usize, 16, 5, k, 128][case % 5];
            let (q, w64) = random_mxfp4(&mut rng, [e, n, k], group, case % 2 == 0);
            assert_reference_weights(isa, &q, &w64, "");
            let (q, w64) = random_fp8(&mut rng, [e, n, k], group);
            assert_reference_weights(isa, &q, &w64, "");
        }
    }
}

/// FP8 experts as [`random_fp8`] makes them, with the scales of some groups replaced by `2^125`
/// (`256 * scale` overflows: those spans cannot be scaled in one multiply; their codes are kept
/// below 8 in magnitude so that every value stays finite) and of others by random subnormals (the
/// products round into the subnormal range).
fn fp8_extreme_scales(
    rng: &mut StdRng,
    [e, n, k]: [usize; 3],
    group: usize,
) -> (QuantExperts, Vec<f64>) {
    let (q, _) = random_fp8(rng, [e, n, k], group);
    let (mut codes, mut scales) = (q.codes().to_vec(), q.scales().to_vec());
    let groups = k.div_ceil(group);
    for (g, s) in scales.iter_mut().enumerate() {
        match rng.random_range(0..4) {
            0 => {
                *s = 2f32.powi(125);
                let (row, first) = (g / groups, g % groups * group);
                for c in first..(first + group).min(k) {
                    let code = &mut codes[row * k + c];
                    *code = (*code & 0x80) | ((*code & 0x7f) % 0x50);
                }
            }
            1 => *s = f32::from_bits(rng.random_range(1..0x0080_0000)),
            _ => {}
        }
    }
    fp8_experts([e, n, k], group, codes, scales)
}

#[test]
fn fast_quantized_spans_keep_the_reference_values() {
    // The kernels walk each row in spans of one scale (a group, or runs of a row-wide scale) and
    // the loads in steps of 16 or 32 columns: K ending mid-group and mid-step, row-wide scales
    // over several spans, groups of multiples of 16 that are no power of two or split a 32-column
    // step, FP8 scales whose `256 * s` overflows (those spans' sums are scaled in two steps) and
    // subnormal scales. Every weight must still be the reference's and the oracle's.
    let mut rng = common::rng("fast_quantized_spans_keep_the_reference_values");
    for isa in isas() {
        for (k, group) in [
            (300usize, 128usize),
            (300, 300),
            (600, 1000),
            (200, 48),
            (77, 32),
            (48, 32),
            (40, 16),
            (96, 48),
            (150, 64),
        ] {
            let (e, n) = (2, rng.random_range(1..14));
            let (q, w64) = random_mxfp4(&mut rng, [e, n, k], group, n % 2 == 0);
            assert_reference_weights(isa, &q, &w64, "");
            let (q, w64) = random_fp8(&mut rng, [e, n, k], group);
            assert_reference_weights(isa, &q, &w64, "");
            let (q, w64) = fp8_extreme_scales(&mut rng, [e, n, k], group);
            assert_reference_weights(isa, &q, &w64, "(extreme scales)");
        }
    }
}

#[test]
fn fast_fp8_nan_code_gives_nan() {
    // e4m3 has no infinities: 0x7f and 0xff are NaN, and must not decode to a finite value.
    let (e, n, k) = (1, 2, 20);
    for isa in isas() {
        for (pos, code) in [(3usize, 0x7fu8), (18, 0xff)] {
            let mut codes = vec![0x38u8; e * n * k]; // 1.0
            codes[pos] = code;
            let q = QuantExperts::new(CodeFormat::Fp8E4M3, [e, n, k], 128, codes, vec![1.0; 2])
                .unwrap();
            let x = vec![1f32; k];
            let mut out = vec![0f32; n];
            fast::grouped_gemm(
                isa,
                MatRef::new("x", &x, 1, k).unwrap(),
                &[0, 1],
                &q,
                &mut MatMut::new("out", &mut out, 1, n).unwrap(),
            )
            .unwrap();
            assert!(out[0].is_nan(), "{isa:?}: code {code:#x} gave {}", out[0]);
            assert_eq!(out[1], k as f32, "{isa:?}: the other row");
        }
    }
}

#[test]
fn fast_fp8_nan_spans_keep_the_other_bits() {
    // A NaN code makes its weight row's outputs NaN, and nothing else: the other rows, those that
    // share its register tile included, keep their bits exactly (the spans with a NaN may take
    // another path than the others: the products and their order must not change). NaN codes in
    // the first, a middle and the last (partial) span, in the first and the last of 64 bytes.
    let mut rng = common::rng("fast_fp8_nan_spans_keep_the_other_bits");
    for isa in isas() {
        for (k, group, col) in [
            (300usize, 128usize, 0usize),
            (300, 128, 191),
            (300, 128, 299),
            (600, 600, 320),
            (70, 16, 63),
        ] {
            let (e, n) = (2, 9);
            let (q, w64) = random_fp8(&mut rng, [e, n, k], group);
            for rows in [1usize, 6] {
                let offsets = [0, rows, 2 * rows];
                let x: Vec<f32> = common::values(&mut rng, 2 * rows * k, 1.0);
                let run = |q: &QuantExperts| {
                    let mut out = vec![f32::NAN; 2 * rows * n];
                    fast::grouped_gemm(
                        isa,
                        MatRef::new("x", &x, 2 * rows, k).unwrap(),
                        &offsets,
                        q,
                        &mut MatMut::new("out", &mut out, 2 * rows, n).unwrap(),
                    )
                    .unwrap();
                    out
                };
                let clean = run(&q);
                let what = format!("{isa:?} K={k} group={group} NaN at column {col}");
                let x64 = common::el64(&x);
                check_gemm(
                    &what,
                    &common::f64s(&clean),
                    &x64,
                    &w64,
                    &offsets,
                    [n, k],
                    1e-5,
                );
                // Row 2 of expert 1 (the third row of its first register tile) gets the NaN.
                let (nan_row, mut codes) = (n + 2, q.codes().to_vec());
                codes[nan_row * k + col] = if col % 2 == 0 { 0x7f } else { 0xff };
                let q_nan = QuantExperts::new(
                    CodeFormat::Fp8E4M3,
                    [e, n, k],
                    group,
                    codes,
                    q.scales().to_vec(),
                )
                .unwrap();
                let got = run(&q_nan);
                for r in 0..2 * rows {
                    for j in 0..n {
                        let (g, c) = (got[r * n + j], clean[r * n + j]);
                        if r >= rows && j == 2 {
                            assert!(g.is_nan(), "{what}: output [{r}, {j}] is {g}, not NaN");
                        } else {
                            assert!(
                                g.to_bits() == c.to_bits(),
                                "{what}: output [{r}, {j}] is {g:e} with a NaN elsewhere, {c:e} \
                                 without"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn fast_activation_matches_oracle() {
    let mut rng = common::rng("fast_activation_matches_oracle");
    for isa in isas() {
        for (case, act) in [
            Activation::SWIGLU,
            Activation::GEGLU,
            Activation {
                kind: moe_kernels::ActivationKind::Silu,
                gated: false,
            },
        ]
        .into_iter()
        .cycle()
        .take(12)
        .enumerate()
        {
            let (e, i, k) = ([1usize, 3, 8][case % 3], rng.random_range(1..30), 17 + case);
            let up = act.up_rows(i);
            let offsets = random_segments(&mut rng, e, case);
            let rows = offsets[e];
            let x: Vec<f32> = common::values(&mut rng, rows * k, 1.0);
            let w: Vec<bf16> = common::values(&mut rng, e * up * k, 0.3);
            let mut out = vec![f32::NAN; rows * i];
            fast::grouped_gemm_activation(
                isa,
                MatRef::new("x", &x, rows, k).unwrap(),
                &offsets,
                ExpertsRef::new("w", &w, e, up, k).unwrap(),
                act,
                &mut MatMut::new("out", &mut out, rows, i).unwrap(),
            )
            .unwrap();
            let pre = oracle_gemm(&common::el64(&x), &common::el64(&w), &offsets, up, k);
            let f = |v: f64| {
                if act.kind == moe_kernels::ActivationKind::GeluTanh {
                    oracle::gelu_tanh(v)
                } else {
                    oracle::silu(v)
                }
            };
            let want: Vec<f64> = (0..rows * i)
                .map(|idx| {
                    let (r, j) = (idx / i, idx % i);
                    let p = &pre[r * up..(r + 1) * up];
                    if act.gated {
                        f(p[j]) * p[i + j]
                    } else {
                        f(p[j])
                    }
                })
                .collect();
            common::assert_close(
                &format!("{isa:?} activation case {case} {act:?} E={e} I={i} K={k}"),
                &common::f64s(&out),
                &want,
                1e-5,
            );
        }
    }
}

/// The fast GEMM of `w` on `x` in a pool of `threads` threads.
fn fast_in_pool<X: Element>(
    threads: usize,
    isa: Isa,
    x: &[X],
    offsets: &[usize],
    w: impl ExpertRows + Send,
) -> Vec<u32> {
    let [_, n, k] = w.shape();
    let rows = *offsets.last().unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let mut out = vec![f32::NAN; rows * n];
    pool.install(|| {
        fast::grouped_gemm(
            isa,
            MatRef::new("x", x, rows, k).unwrap(),
            offsets,
            w,
            &mut MatMut::new("out", &mut out, rows, n).unwrap(),
        )
    })
    .unwrap();
    out.iter().map(|f| f.to_bits()).collect()
}

#[test]
fn fast_bits_do_not_depend_on_thread_count() {
    let mut rng = common::rng("fast_bits_do_not_depend_on_thread_count");
    // Large enough to be split into many tasks: several row blocks, many weight strips (and for
    // the AMX tiles, N a multiple of 16 and K of 32).
    let (e, n, k) = (3, 304, 256);
    let offsets = [0, 1, 150, 420];
    let x: Vec<f32> = common::values(&mut rng, 420 * k, 1.0);
    let xb: Vec<bf16> = common::values(&mut rng, 420 * k, 1.0);
    let w: Vec<bf16> = common::values(&mut rng, e * n * k, 0.3);
    let (q, _) = random_fp8(&mut rng, [e, n, k], 128);
    let (q4, _) = random_mxfp4(&mut rng, [e, n, k], 32, true);
    let wr = ExpertsRef::new("w", &w, e, n, k).unwrap();
    for isa in isas() {
        let one = [
            fast_in_pool(1, isa, &x, &offsets, wr),
            fast_in_pool(1, isa, &xb, &offsets, wr),
            fast_in_pool(1, isa, &x, &offsets, &q),
            fast_in_pool(1, isa, &x, &offsets, &q4),
        ];
        for threads in [2, 3, 7] {
            let many = [
                fast_in_pool(threads, isa, &x, &offsets, wr),
                fast_in_pool(threads, isa, &xb, &offsets, wr),
                fast_in_pool(threads, isa, &x, &offsets, &q),
                fast_in_pool(threads, isa, &x, &offsets, &q4),
            ];
            assert!(
                one == many,
                "{isa:?}: 1 thread and {threads} threads differ"
            );
        }
    }
}

#[test]
fn fast_quantized_bits_do_not_depend_on_rows_per_expert() {
    // With more activation rows than a register tile holds, a task decodes each strip of quantized
    // weight rows once and reads the decoded values back for its other tiles. Each row's outputs
    // must keep the bits they have when the row is alone (every tile then decodes), whatever the
    // spans: groups of 128, 32, 48 and one per row, groups of 16 (half steps), groups of 5 (lane by
    // lane), FP8 rows whose spans' sums are scaled in one step and in two (extreme scales), K
    // ending mid-step.
    let mut rng = common::rng("fast_quantized_bits_do_not_depend_on_rows_per_expert");
    for isa in isas() {
        for (k, group) in [
            (300usize, 128usize),
            (200, 32),
            (96, 48),
            (150, 150),
            (300, 16),
            (77, 5),
        ] {
            let (n, rows) = (13, 11);
            let x: Vec<f32> = common::values(&mut rng, rows * k, 1.0);
            let (fp8, _) = random_fp8(&mut rng, [1, n, k], group);
            let (fp8_extreme, _) = fp8_extreme_scales(&mut rng, [1, n, k], group);
            let (mxfp4, _) = random_mxfp4(&mut rng, [1, n, k], group, true);
            for (what, q) in [
                ("FP8", &fp8),
                ("FP8 (extreme scales)", &fp8_extreme),
                ("MXFP4", &mxfp4),
            ] {
                let all = fast_in_pool(1, isa, &x, &[0, rows], q);
                for r in 0..rows {
                    let alone = fast_in_pool(1, isa, &x[r * k..(r + 1) * k], &[0, 1], q);
                    assert!(
                        alone == all[r * n..(r + 1) * n],
                        "{isa:?} {what} K={k} group={group}: row {r} alone and among {rows} rows \
                         differ"
                    );
                }
            }
        }
    }
}

/// The fast build `isa` and the reference on the same problem.
fn fast_and_reference<R: ExpertRows + Copy>(
    isa: Isa,
    x: MatRef<'_, bf16>,
    offsets: &[usize],
    w: R,
) -> (Vec<f64>, Vec<f64>) {
    let (rows, n) = (x.rows(), w.shape()[1]);
    let mut fast_out = vec![f32::NAN; rows * n];
    let mut ref_out = vec![f32::NAN; rows * n];
    fast::grouped_gemm(
        isa,
        x,
        offsets,
        w,
        &mut MatMut::new("out", &mut fast_out, rows, n).unwrap(),
    )
    .unwrap();
    gemm::grouped_gemm(
        x,
        offsets,
        w,
        &mut MatMut::new("out", &mut ref_out, rows, n).unwrap(),
    )
    .unwrap();
    (common::f64s(&fast_out), common::f64s(&ref_out))
}

#[test]
fn fast_gemm_matches_reference() {
    let mut rng = common::rng("fast_gemm_matches_reference");
    for isa in isas() {
        for case in 0..20 {
            let (e, n, k) = random_shape(&mut rng, case);
            let offsets = random_segments(&mut rng, e, case);
            let rows = offsets[e];
            let x: Vec<bf16> = common::values(&mut rng, rows * k, 1.0);
            let w: Vec<bf16> = common::values(&mut rng, e * n * k, 0.3);
            let (q, _) = random_fp8(&mut rng, [e, n, k], 128);
            let (q4, _) = random_mxfp4(&mut rng, [e, n, k], 32, true);
            let xr = MatRef::new("x", &x, rows, k).unwrap();
            let (got, want) = fast_and_reference(
                isa,
                xr,
                &offsets,
                ExpertsRef::new("w", &w, e, n, k).unwrap(),
            );
            common::assert_close(&format!("{isa:?} bf16 case {case}"), &got, &want, 1e-5);
            let (got, want) = fast_and_reference(isa, xr, &offsets, &q);
            common::assert_close(&format!("{isa:?} FP8 case {case}"), &got, &want, 1e-5);
            let (got, want) = fast_and_reference(isa, xr, &offsets, &q4);
            common::assert_close(&format!("{isa:?} MXFP4 case {case}"), &got, &want, 1e-5);
        }
    }
}

#[test]
fn layer_backends_agree_and_default_is_fast() {
    let mut rng = common::rng("layer_backends_agree_and_default_is_fast");
    let mut cfg = MoeConfig::qwen3_30b_a3b();
    cfg.hidden_size = 67;
    cfg.intermediate_size = 45;
    let weights: MoeWeights<bf16> = common::random_layer_weights(&mut rng, &cfg, false);
    let t = 29;
    let x: Vec<bf16> = common::values(&mut rng, t * cfg.hidden_size, 1.0);
    let xr = MatRef::new("x", &x, t, cfg.hidden_size).unwrap();
    let layer = CpuMoeLayer::new(cfg.clone(), weights).unwrap();
    assert_eq!(layer.backend(), CpuBackend::Fast);
    let fast_out = layer.forward(xr).unwrap();
    let reference = layer.clone().with_backend(CpuBackend::Reference);
    let ref_out = reference.forward(xr).unwrap();
    assert_eq!(fast_out.routing, ref_out.routing);
    // Both round the intermediate to bf16: an order-of-summation difference can flip a rounding.
    common::assert_close(
        "fast layer against the reference layer (bf16)",
        &common::el64(&fast_out.hidden),
        &common::el64(&ref_out.hidden),
        1e-2,
    );
}

#[test]
fn fast_tile_shapes_match_oracle() {
    // The shapes the AMX tiles take (bf16 activations and weights, N a multiple of 16, K of 32,
    // blocks of at least 8 rows), with row counts around the 16-row tiles, the 64-row blocks of the
    // register tiles and the 256-row blocks of the AMX tiles, next to blocks too small for them.
    let mut rng = common::rng("fast_tile_shapes_match_oracle");
    for isa in isas() {
        for case in 0..12 {
            let (e, n, k) = (
                [1usize, 3][case % 2],
                [16usize, 48, 64][case % 3],
                [32usize, 96, 160][case % 3],
            );
            let mut offsets = vec![0usize];
            for _ in 0..e {
                let c = [
                    1usize, 7, 8, 15, 16, 17, 63, 64, 65, 130, 255, 256, 257, 300,
                ][rng.random_range(0..14)];
                offsets.push(offsets[offsets.len() - 1] + c);
            }
            let rows = offsets[e];
            let x: Vec<bf16> = common::values(&mut rng, rows * k, 1.0);
            let w: Vec<bf16> = common::values(&mut rng, e * n * k, 0.3);
            let mut out = vec![f32::NAN; rows * n];
            fast::grouped_gemm(
                isa,
                MatRef::new("x", &x, rows, k).unwrap(),
                &offsets,
                ExpertsRef::new("w", &w, e, n, k).unwrap(),
                &mut MatMut::new("out", &mut out, rows, n).unwrap(),
            )
            .unwrap();
            check_plain_gemm(
                &format!("{isa:?} tile case {case} E={e} N={n} K={k} offsets={offsets:?}"),
                &out,
                &x,
                &w,
                &offsets,
                [n, k],
                1e-5,
            );
        }
    }
}

#[test]
fn fast_tile_k_chunks_match_oracle() {
    // K long enough that the AMX task cuts it into chunks (about 1 MB of a strip pair's weights
    // and its block's activations each: ~1800 columns for a 256-row block), and not a multiple of
    // them; the accumulators carry across chunks and start again at every panel of strip pairs
    // (16 strips for a 256-row block). Blocks of 256 + 44 rows and of 40 rows; 17 strips of weight
    // rows, in pools of 1 thread (tasks of two panels, pairs and a single strip) and of 4.
    let mut rng = common::rng("fast_tile_k_chunks_match_oracle");
    let (e, n, k) = (2usize, 272usize, 3232usize);
    let offsets = [0usize, 300, 340];
    let rows = offsets[e];
    let x: Vec<bf16> = common::values(&mut rng, rows * k, 1.0);
    let w: Vec<bf16> = common::values(&mut rng, e * n * k, 0.3);
    let wr = ExpertsRef::new("w", &w, e, n, k).unwrap();
    for isa in isas() {
        for threads in [1, 4] {
            let out: Vec<f32> = fast_in_pool(threads, isa, &x, &offsets, wr)
                .into_iter()
                .map(f32::from_bits)
                .collect();
            check_plain_gemm(
                &format!("{isa:?} K chunks, {threads} threads, N={n} K={k} offsets={offsets:?}"),
                &out,
                &x,
                &w,
                &offsets,
                [n, k],
                1e-5,
            );
        }
    }
}

#[test]
fn fast_empty_k_gives_zeros() {
    // K = 0: every output is an empty sum, 0, on every build, including the shapes that would go
    // to the AMX tiles (bf16, N a multiple of 16, blocks of 16+ rows) were K not empty.
    for isa in isas() {
        let (e, n, rows) = (2usize, 32usize, 40usize);
        let offsets = [0usize, 24, rows];
        let x: Vec<bf16> = Vec::new();
        let w: Vec<bf16> = Vec::new();
        let mut out = vec![f32::NAN; rows * n];
        fast::grouped_gemm(
            isa,
            MatRef::new("x", &x, rows, 0).unwrap(),
            &offsets,
            ExpertsRef::new("w", &w, e, n, 0).unwrap(),
            &mut MatMut::new("out", &mut out, rows, n).unwrap(),
        )
        .unwrap();
        assert!(out.iter().all(|&v| v == 0.0), "{isa:?}: {out:?}");
    }
}
