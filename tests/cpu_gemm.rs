//! CPU grouped GEMM and activation against the float64 oracle.

mod common;

use common::oracle;
use moe_kernels::cpu::activation::activation;
use moe_kernels::cpu::gemm::{grouped_gemm, grouped_gemm_activation};
use moe_kernels::{Activation, ActivationKind, Element, ExpertsRef, MatMut, MatRef};
use rand::Rng;

fn run_gemm<X: Element, W: Element>(rng: &mut rand::rngs::StdRng, tol: f64) {
    for case in 0..30 {
        let e = [1usize, 3, 8, 60][case % 4];
        let (n, k) = (rng.random_range(1..70), rng.random_range(1..90));
        // Random segment sizes, with empty experts and sometimes everything on one expert.
        let mut counts: Vec<usize> = (0..e)
            .map(|_| {
                if rng.random_bool(0.3) {
                    0
                } else {
                    rng.random_range(0..40)
                }
            })
            .collect();
        if case % 5 == 0 {
            counts.iter_mut().for_each(|c| *c = 0);
            counts[e - 1] = 1200;
        }
        let mut offsets = vec![0usize];
        for c in &counts {
            offsets.push(offsets.last().unwrap() + c);
        }
        let rows = offsets[e];
        let x: Vec<X> = common::randn(rng, rows * k, 1.0)
            .into_iter()
            .map(X::from_f32)
            .collect();
        let w: Vec<W> = common::randn(rng, e * n * k, 0.3)
            .into_iter()
            .map(W::from_f32)
            .collect();
        let mut out = vec![f32::NAN; rows * n];
        grouped_gemm(
            MatRef::new("x", &x, rows, k).unwrap(),
            &offsets,
            ExpertsRef::new("w", &w, e, n, k).unwrap(),
            &mut MatMut::new("out", &mut out, rows, n).unwrap(),
        )
        .unwrap();
        let (x64, w64) = (common::el64(&x), common::el64(&w));
        let mut want = vec![0f64; rows * n];
        for ex in 0..e {
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
        common::assert_close(
            &format!("grouped gemm case {case}"),
            &common::f64s(&out),
            &want,
            tol,
        );
    }
}

#[test]
fn grouped_gemm_matches_oracle_f32() {
    run_gemm::<f32, f32>(&mut common::rng("grouped_gemm_matches_oracle_f32"), 1e-5);
}

#[test]
fn grouped_gemm_matches_oracle_bf16_inputs() {
    // Inputs are bf16, accumulation and output f32: only summation order differs from the oracle.
    run_gemm::<half::bf16, half::bf16>(
        &mut common::rng("grouped_gemm_matches_oracle_bf16_inputs"),
        1e-5,
    );
    run_gemm::<half::f16, half::bf16>(
        &mut common::rng("grouped_gemm_matches_oracle_f16_x_bf16_w"),
        1e-5,
    );
}

#[test]
fn activations_match_oracle() {
    let mut rng = common::rng("activations_match_oracle");
    for kind in [ActivationKind::Silu, ActivationKind::GeluTanh] {
        for gated in [true, false] {
            let act = Activation { kind, gated };
            let (rows, i) = (rng.random_range(0..50), rng.random_range(1..40));
            let cols = act.up_rows(i);
            let x = common::randn(&mut rng, rows * cols, 3.0);
            let mut out = vec![f32::NAN; rows * i];
            activation(
                act,
                MatRef::new("x", &x, rows, cols).unwrap(),
                &mut MatMut::new("out", &mut out, rows, i).unwrap(),
            )
            .unwrap();
            let gelu = kind == ActivationKind::GeluTanh;
            let f = |v: f64| {
                if gelu {
                    oracle::gelu_tanh(v)
                } else {
                    oracle::silu(v)
                }
            };
            let want: Vec<f64> = (0..rows)
                .flat_map(|r| {
                    let row = common::f64s(&x[r * cols..(r + 1) * cols]);
                    (0..i)
                        .map(|j| {
                            if gated {
                                f(row[j]) * row[i + j]
                            } else {
                                f(row[j])
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            common::assert_close(&format!("{act:?}"), &common::f64s(&out), &want, 1e-6);
        }
    }
}

#[test]
fn fused_activation_gemm_matches_oracle() {
    let mut rng = common::rng("fused_activation_gemm_matches_oracle");
    for kind in [ActivationKind::Silu, ActivationKind::GeluTanh] {
        for gated in [true, false] {
            let act = Activation { kind, gated };
            let (e, i, k) = (5, rng.random_range(1..30), rng.random_range(1..50));
            let up = act.up_rows(i);
            let offsets = [0usize, 3, 3, 40, 41, 60];
            let rows = offsets[e];
            let x = common::randn(&mut rng, rows * k, 1.0);
            let w = common::randn(&mut rng, e * up * k, 0.5);
            let mut out = vec![f32::NAN; rows * i];
            grouped_gemm_activation(
                MatRef::new("x", &x, rows, k).unwrap(),
                &offsets,
                ExpertsRef::new("w", &w, e, up, k).unwrap(),
                act,
                &mut MatMut::new("out", &mut out, rows, i).unwrap(),
            )
            .unwrap();
            let gelu = kind == ActivationKind::GeluTanh;
            let f = |v: f64| {
                if gelu {
                    oracle::gelu_tanh(v)
                } else {
                    oracle::silu(v)
                }
            };
            let (x64, w64) = (common::f64s(&x), common::f64s(&w));
            let mut want = Vec::with_capacity(rows * i);
            for ex in 0..e {
                for r in offsets[ex]..offsets[ex + 1] {
                    let y = oracle::matvec(
                        &w64[ex * up * k..(ex + 1) * up * k],
                        up,
                        k,
                        &x64[r * k..(r + 1) * k],
                    );
                    want.extend((0..i).map(|j| if gated { f(y[j]) * y[i + j] } else { f(y[j]) }));
                }
            }
            common::assert_close(&format!("{act:?}"), &common::f64s(&out), &want, 1e-5);
        }
    }
}

/// The summation order the CPU path promises for every output element (`cpu::dot_f32`): eight lanes,
/// lane `l` summing the products `l, l + 8, l + 16, ...` in order, the `len % 8` trailing products in a
/// separate sum, then `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) + tail`.
fn reference_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let full = a.len() - a.len() % 8;
    for c in (0..full).step_by(8) {
        for l in 0..8 {
            lanes[l] += a[c + l] * b[c + l];
        }
    }
    let mut tail = 0f32;
    for i in full..a.len() {
        tail += a[i] * b[i];
    }
    let s = [
        lanes[0] + lanes[4],
        lanes[1] + lanes[5],
        lanes[2] + lanes[6],
        lanes[3] + lanes[7],
    ];
    (s[0] + s[2]) + (s[1] + s[3]) + tail
}

/// `f` run inside a rayon pool of `threads` threads (the grouped GEMM's parallel work uses the pool it
/// is called from).
fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn grouped_gemm_bits_do_not_depend_on_thread_count() {
    let mut rng = common::rng("grouped_gemm_bits_do_not_depend_on_thread_count");
    let act = Activation {
        kind: ActivationKind::Silu,
        gated: true,
    };
    // Shapes with enough work per row block to be split across threads: decode-like (one row per
    // expert, many weight rows) and prefill-like (full and partial 32-row blocks). `N` is not a multiple
    // of the 64-row strips nor of the 4-row panels, and `K` leaves a tail of products after the 8 lanes.
    for (e, up, k, counts) in [
        (4usize, 2002usize, 603usize, vec![1usize, 0, 1, 1]),
        (2, 262, 1030, vec![70, 33]),
    ] {
        let mut offsets = vec![0usize];
        for c in &counts {
            offsets.push(offsets.last().unwrap() + c);
        }
        let rows = offsets[e];
        let x: Vec<half::bf16> = common::randn(&mut rng, rows * k, 1.0)
            .into_iter()
            .map(half::bf16::from_f32)
            .collect();
        let w: Vec<half::bf16> = common::randn(&mut rng, e * up * k, 0.3)
            .into_iter()
            .map(half::bf16::from_f32)
            .collect();
        let xv = MatRef::new("x", &x, rows, k).unwrap();
        let wv = ExpertsRef::new("w", &w, e, up, k).unwrap();
        let i = up / 2;
        let run = |threads: usize| {
            with_threads(threads, || {
                let mut out = vec![f32::NAN; rows * up];
                grouped_gemm(
                    xv,
                    &offsets,
                    wv,
                    &mut MatMut::new("out", &mut out, rows, up).unwrap(),
                )
                .unwrap();
                let mut activated = vec![half::bf16::NAN; rows * i];
                grouped_gemm_activation(
                    xv,
                    &offsets,
                    wv,
                    act,
                    &mut MatMut::new("activated", &mut activated, rows, i).unwrap(),
                )
                .unwrap();
                (
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    activated.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                )
            })
        };
        let one = run(1);
        assert_eq!(one, run(2), "1 vs 2 threads, N {up}, K {k}");
        assert_eq!(one, run(4), "1 vs 4 threads, N {up}, K {k}");
        // And every element is exactly the promised dot product of the widened inputs.
        let (xf, wf) = (common::el64(&x), common::el64(&w));
        let (xf, wf): (Vec<f32>, Vec<f32>) = (
            xf.iter().map(|&v| v as f32).collect(),
            wf.iter().map(|&v| v as f32).collect(),
        );
        for ex in 0..e {
            for r in offsets[ex]..offsets[ex + 1] {
                for j in 0..up {
                    let want = reference_dot(
                        &xf[r * k..(r + 1) * k],
                        &wf[(ex * up + j) * k..(ex * up + j + 1) * k],
                    );
                    assert_eq!(
                        one.0[r * up + j],
                        want.to_bits(),
                        "row {r}, column {j}, N {up}, K {k}"
                    );
                }
            }
        }
    }
}
