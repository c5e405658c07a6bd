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
