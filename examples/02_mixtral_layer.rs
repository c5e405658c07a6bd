//! A Mixtral-shaped MoE layer (8 experts, top-2, SwiGLU) on the CPU, in bf16 with f32 accumulation,
//! compared with the same layer in f32. The width is scaled down (`--full` for the real 4096 x 14336,
//! which needs about 2.8 GB of memory for the bf16 weights and some patience).
//!
//! Run with `cargo run --release --example 02_mixtral_layer [-- --full]`.

use anyhow::Result;
use half::bf16;
use moe_kernels::cpu::layer::{CpuMoeLayer, MoeWeights};
use moe_kernels::{MatRef, MoeConfig};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() -> Result<()> {
    let full = std::env::args().any(|a| a == "--full");
    let mut cfg = MoeConfig::mixtral_8x7b();
    if !full {
        cfg.hidden_size = 512;
        cfg.intermediate_size = 1792;
    }
    let (h, i, e) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
    );
    let tokens = 16;
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let mut randn = |n: usize, s: f32| {
        (0..n)
            .map(|_| rng.random_range(-s..s))
            .collect::<Vec<f32>>()
    };
    let s_h = 1.0 / (h as f32).sqrt();
    let weights = MoeWeights {
        router: randn(e * h, s_h),
        biases: None,
        correction_bias: None,
        gate_up: randn(e * 2 * i * h, s_h),
        down: randn(e * h * i, 1.0 / (i as f32).sqrt()),
        shared: vec![],
    };
    let x = randn(tokens * h, 1.0);

    let to_bf16 = |v: &[f32]| v.iter().map(|&a| bf16::from_f32(a)).collect::<Vec<bf16>>();
    let w16 = MoeWeights {
        router: to_bf16(&weights.router),
        biases: None,
        correction_bias: None,
        gate_up: to_bf16(&weights.gate_up),
        down: to_bf16(&weights.down),
        shared: vec![],
    };
    let layer16 = CpuMoeLayer::new(cfg.clone(), w16)?;
    let layer32 = CpuMoeLayer::new(cfg, weights)?;

    let x16 = to_bf16(&x);
    let start = Instant::now();
    let out16 = layer16.forward(MatRef::new("x", &x16, tokens, h)?)?;
    let t16 = start.elapsed();
    let out32 = layer32.forward(MatRef::new("x", &x, tokens, h)?)?;

    let (mut num, mut den) = (0f64, 0f64);
    for (a, b) in out16.hidden.iter().zip(&out32.hidden) {
        num += (a.to_f64() - *b as f64).powi(2);
        den += (*b as f64).powi(2);
    }
    let agree = out16
        .routing
        .ids
        .iter()
        .zip(&out32.routing.ids)
        .filter(|(a, b)| a == b)
        .count();
    println!("Mixtral-shaped layer: H {h}, I {i}, E {e}, k 2, {tokens} tokens");
    println!(
        "  bf16 forward on the CPU: {:.1} ms",
        t16.as_secs_f64() * 1e3
    );
    println!(
        "  bf16 vs f32: relative L2 error {:.2e}",
        (num / den).sqrt()
    );
    println!(
        "  routing agreement: {agree}/{} slots",
        out32.routing.ids.len()
    );
    println!(
        "  token 0 experts {:?}, weights {:?}",
        &out16.routing.ids[..2],
        &out16.routing.weights[..2]
    );
    Ok(())
}
