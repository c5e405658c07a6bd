//! CPU combine: weighted sums in token order against the float64 oracle, identity experts, shared output.

mod common;

use moe_kernels::cpu::combine::combine;
use moe_kernels::cpu::permute::{gather, permute};
use moe_kernels::{MatMut, MatRef};
use rand::Rng;

#[test]
fn combine_matches_oracle_with_scaled_experts_and_shared_output() {
    let mut rng = common::rng("combine_matches_oracle_with_scaled_experts_and_shared_output");
    for case in 0..40 {
        let e = [1usize, 4, 9, 64][case % 4];
        let k = rng.random_range(1..=e.min(6));
        let t = [0usize, 1, 3, 40, 1100][rng.random_range(0..5)];
        let h = rng.random_range(1..40);
        let block = [1usize, 8][rng.random_range(0..2)];
        let ids: Vec<i32> = (0..t)
            .flat_map(|_| {
                let mut pool: Vec<i32> = (0..e as i32).collect();
                for j in 0..k {
                    let p = rng.random_range(j..e);
                    pool.swap(j, p);
                }
                pool.truncate(k);
                pool
            })
            .collect();
        let weights = common::randn(&mut rng, t * k, 1.0);
        let x = common::randn(&mut rng, t * h, 1.0);
        let scale = common::randn(&mut rng, e, 2.0);
        let shared = rng
            .random_bool(0.5)
            .then(|| common::randn(&mut rng, t * h, 1.0));

        // Expert e multiplies its input by scale[e]: apply it to the gathered rows segment by segment.
        let p = permute(MatRef::new("ids", &ids, t, k).unwrap(), e, block).unwrap();
        let rows = p.num_rows();
        let mut y = vec![0f32; rows * h];
        gather(
            MatRef::new("x", &x, t, h).unwrap(),
            &p,
            &mut MatMut::new("y", &mut y, rows, h).unwrap(),
        )
        .unwrap();
        for (seg, &c) in p.expert_offsets().windows(2).zip(&scale) {
            y[seg[0] * h..seg[1] * h].iter_mut().for_each(|v| *v *= c);
        }
        let mut out = vec![f32::NAN; t * h];
        combine(
            MatRef::new("y", &y, rows, h).unwrap(),
            &p,
            MatRef::new("w", &weights, t, k).unwrap(),
            shared
                .as_deref()
                .map(|s| MatRef::new("s", s, t, h).unwrap()),
            &mut MatMut::new("out", &mut out, t, h).unwrap(),
        )
        .unwrap();
        let mut want = vec![0f64; t * h];
        for tok in 0..t {
            for c in 0..h {
                let mut acc = shared.as_ref().map_or(0.0, |s| s[tok * h + c] as f64);
                for s in 0..k {
                    let ex = ids[tok * k + s] as usize;
                    acc += weights[tok * k + s] as f64 * scale[ex] as f64 * x[tok * h + c] as f64;
                }
                want[tok * h + c] = acc;
            }
        }
        common::assert_close(
            &format!("combine case {case}"),
            &common::f64s(&out),
            &want,
            1e-5,
        );
    }
}

#[test]
fn identity_experts_reproduce_the_weighted_input() {
    let mut rng = common::rng("identity_experts_reproduce_the_weighted_input");
    let (t, e, k, h) = (300, 8, 3, 17);
    let ids: Vec<i32> = (0..t)
        .flat_map(|tok| (0..k).map(move |s| ((tok + 2 * s) % e) as i32))
        .collect();
    let weights = common::uniform(&mut rng, t * k, 0.0, 1.0);
    let x: Vec<half::bf16> = common::randn(&mut rng, t * h, 1.0)
        .into_iter()
        .map(half::bf16::from_f32)
        .collect();
    let p = permute(MatRef::new("ids", &ids, t, k).unwrap(), e, 1).unwrap();
    let mut y = vec![half::bf16::ZERO; p.num_rows() * h];
    gather(
        MatRef::new("x", &x, t, h).unwrap(),
        &p,
        &mut MatMut::new("y", &mut y, p.num_rows(), h).unwrap(),
    )
    .unwrap();
    let mut out = vec![f32::NAN; t * h];
    combine(
        MatRef::new("y", &y, p.num_rows(), h).unwrap(),
        &p,
        MatRef::new("w", &weights, t, k).unwrap(),
        None::<MatRef<'_, f32>>,
        &mut MatMut::new("out", &mut out, t, h).unwrap(),
    )
    .unwrap();
    for tok in 0..t {
        let wsum: f64 = weights[tok * k..(tok + 1) * k]
            .iter()
            .map(|&w| w as f64)
            .sum();
        for c in 0..h {
            let want = wsum * x[tok * h + c].to_f64();
            assert!(
                (out[tok * h + c] as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "token {tok} col {c}"
            );
        }
    }
}
