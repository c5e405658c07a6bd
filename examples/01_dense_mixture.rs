//! The seed model: a dense mixture of five linear experts `768 -> 1`, whose outputs are summed with
//! softmax expert weights (`k = E = 5`, no activation), built from the public stage functions.
//!
//! Run with `cargo run --release --example 01_dense_mixture`.

use anyhow::Result;
use moe_kernels::cpu::combine::combine;
use moe_kernels::cpu::gemm::grouped_gemm;
use moe_kernels::cpu::permute::{gather, permute};
use moe_kernels::cpu::routing::{route, router_logits};
use moe_kernels::{ExpertsRef, MatMut, MatRef, RoutingConfig};
use rand::{Rng, SeedableRng};

const HIDDEN: usize = 768;
const EXPERTS: usize = 5;
const TOKENS: usize = 4;

fn main() -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut randn = |n: usize, s: f32| {
        (0..n)
            .map(|_| rng.random_range(-s..s))
            .collect::<Vec<f32>>()
    };
    let x = randn(TOKENS * HIDDEN, 1.0);
    let router = randn(EXPERTS * HIDDEN, 0.05);
    let experts = randn(EXPERTS * HIDDEN, 0.05); // [E, N = 1, K = 768]

    // 1. Routing: softmax over all five experts, every expert kept, weights not renormalised.
    let mut logits = vec![0f32; TOKENS * EXPERTS];
    router_logits(
        MatRef::new("x", &x, TOKENS, HIDDEN)?,
        MatRef::new("router", &router, EXPERTS, HIDDEN)?,
        &mut MatMut::new("logits", &mut logits, TOKENS, EXPERTS)?,
    )?;
    let cfg = RoutingConfig::dense_mixture(EXPERTS);
    let routing = route(&cfg, MatRef::new("logits", &logits, TOKENS, EXPERTS)?, None)?;

    // 2. Permutation: every token appears once per expert.
    let perm = permute(routing.ids_view(), EXPERTS, 1)?;
    let rows = perm.num_rows();
    let mut gathered = vec![0f32; rows * HIDDEN];
    gather(
        MatRef::new("x", &x, TOKENS, HIDDEN)?,
        &perm,
        &mut MatMut::new("gathered", &mut gathered, rows, HIDDEN)?,
    )?;

    // 3. Each expert is one linear map 768 -> 1: a grouped GEMM with N = 1 and no activation.
    let mut y = vec![0f32; rows];
    grouped_gemm(
        MatRef::new("gathered", &gathered, rows, HIDDEN)?,
        perm.expert_offsets(),
        ExpertsRef::new("experts", &experts, EXPERTS, 1, HIDDEN)?,
        &mut MatMut::new("y", &mut y, rows, 1)?,
    )?;

    // 4. Combine: the softmax-weighted sum of the five expert outputs.
    let mut out = vec![0f32; TOKENS];
    combine(
        MatRef::new("y", &y, rows, 1)?,
        &perm,
        routing.weights_view(),
        None::<MatRef<'_, f32>>,
        &mut MatMut::new("out", &mut out, TOKENS, 1)?,
    )?;

    // The same mixture written directly, as a check.
    for t in 0..TOKENS {
        let xt = &x[t * HIDDEN..(t + 1) * HIDDEN];
        let dot = |w: &[f32]| w.iter().zip(xt).map(|(a, b)| (a * b) as f64).sum::<f64>();
        let l: Vec<f64> = (0..EXPERTS)
            .map(|e| dot(&router[e * HIDDEN..(e + 1) * HIDDEN]))
            .collect();
        let m = l.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = l.iter().map(|v| (v - m).exp()).sum();
        let direct: f64 = (0..EXPERTS)
            .map(|e| (l[e] - m).exp() / z * dot(&experts[e * HIDDEN..(e + 1) * HIDDEN]))
            .sum();
        println!(
            "token {t}: mixture = {:+.6}   direct = {direct:+.6}",
            out[t]
        );
        anyhow::ensure!((out[t] as f64 - direct).abs() < 1e-5, "token {t} disagrees");
    }
    Ok(())
}
