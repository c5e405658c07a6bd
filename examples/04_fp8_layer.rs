//! An FP8 (e4m3, 128 x 128 block scales) MoE layer on the CPU, as Qwen3-30B-A3B-FP8 ships it (H 2048,
//! I 768, 128 experts, top-8): the experts stay one byte per weight (`QuantExperts`) and are
//! dequantized a row at a time inside the GEMMs. It checks the output against the same weights
//! dequantized once into an f32 layer, and times a decode step (one token) of both, reporting the
//! bytes each one streams.
//!
//! Run with `cargo run --release --example 04_fp8_layer`.

use anyhow::{ensure, Result};
use moe_kernels::cpu::layer::{CpuMoeLayer, MoeWeights};
use moe_kernels::quant::{fp8_e4m3_to_f32, CodeFormat, QuantExperts};
use moe_kernels::{MatRef, MoeConfig};
use rand::{Rng, SeedableRng};
use std::time::Instant;

const BLOCK: usize = 128;

/// Random FP8 matrices `[e, n, k]` (|value| <= 3.75) with one random scale per 128 x 128 block,
/// repeated for each row of its block as `QuantExperts` keeps them.
fn random_fp8(rng: &mut impl Rng, [e, n, k]: [usize; 3], scale: f32) -> Result<QuantExperts> {
    let codes: Vec<u8> = (0..e * n * k)
        .map(|_| {
            (rng.random_range(0..2u8) << 7)
                | (rng.random_range(0..=8u8) << 3)
                | rng.random_range(0..8u8)
        })
        .collect();
    let (nb, kb) = (n.div_ceil(BLOCK), k.div_ceil(BLOCK));
    let blocks: Vec<f32> = (0..e * nb * kb)
        .map(|_| scale * rng.random_range(0.5..1.5))
        .collect();
    let mut scales = Vec::with_capacity(e * n * kb);
    for x in 0..e {
        for r in 0..n {
            let b = (x * nb + r / BLOCK) * kb;
            scales.extend_from_slice(&blocks[b..b + kb]);
        }
    }
    Ok(QuantExperts::new(
        CodeFormat::Fp8E4M3,
        [e, n, k],
        BLOCK,
        codes,
        scales,
    )?)
}

/// The matrices of `q` dequantized into f32 (for the comparison only: the FP8 layer never does this).
fn dequantized(q: &QuantExperts) -> Vec<f32> {
    let k = q.shape()[2];
    let groups = k.div_ceil(q.group());
    q.codes()
        .iter()
        .enumerate()
        .map(|(idx, &c)| {
            let (row, col) = (idx / k, idx % k);
            fp8_e4m3_to_f32(c) * q.scales()[row * groups + col / q.group()]
        })
        .collect()
}

fn main() -> Result<()> {
    let cfg = MoeConfig::qwen3_30b_a3b();
    let (h, i, e) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let router: Vec<f32> = (0..e * h).map(|_| rng.random_range(-0.04..0.04)).collect();
    let gate_up = random_fp8(&mut rng, [e, 2 * i, h], 0.5 / (h as f32).sqrt())?;
    let down = random_fp8(&mut rng, [e, h, i], 0.5 / (i as f32).sqrt())?;
    let plain = MoeWeights {
        router: router.clone(),
        biases: None,
        correction_bias: None,
        gate_up: dequantized(&gate_up),
        down: dequantized(&down),
        shared: vec![],
    };
    let fp8_bytes = gate_up.codes().len()
        + down.codes().len()
        + 4 * (gate_up.scales().len() + down.scales().len());
    let fp8 = CpuMoeLayer::new(
        cfg.clone(),
        MoeWeights {
            router,
            biases: None,
            correction_bias: None,
            gate_up,
            down,
            shared: vec![],
        },
    )?;
    let reference = CpuMoeLayer::new(cfg.clone(), plain)?;

    let tokens = 16;
    let x: Vec<f32> = (0..tokens * h)
        .map(|_| rng.random_range(-1.7..1.7))
        .collect();
    let got = fp8.forward(MatRef::new("x", &x, tokens, h)?)?;
    let want = reference.forward(MatRef::new("x", &x, tokens, h)?)?;
    let (num, den) = got
        .hidden
        .iter()
        .zip(&want.hidden)
        .fold((0f64, 0f64), |(n, d), (&g, &w)| {
            let diff = (g - w) as f64;
            (n + diff * diff, d + (w as f64) * (w as f64))
        });
    let rel = (num / den).sqrt();
    println!("FP8 layer vs the same weights dequantized to f32: relative L2 {rel:.2e} over {tokens} tokens");
    ensure!(
        rel < 1e-5,
        "the FP8 layer disagrees with its dequantized twin"
    );

    // Decode: one token touches k experts; time the median of several steps.
    let k = cfg.routing.top_k;
    let per_token = |bytes_per_weight: f64| {
        bytes_per_weight * (k * (2 * i * h + h * i)) as f64 + 4.0 * (e * h) as f64
    };
    for (name, layer_bytes, run) in [
        (
            "FP8 (1 byte + scales)",
            per_token(fp8_bytes as f64 / (e * 3 * i * h) as f64),
            Box::new(|x: &[f32]| fp8.forward(MatRef::new("x", x, 1, h)?).map(drop))
                as Box<dyn Fn(&[f32]) -> moe_kernels::Result<()>>,
        ),
        (
            "f32 (4 bytes)",
            per_token(4.0),
            Box::new(|x: &[f32]| reference.forward(MatRef::new("x", x, 1, h)?).map(drop)),
        ),
    ] {
        let mut times = vec![];
        for step in 0..9 {
            let xt = &x[(step % tokens) * h..(step % tokens + 1) * h];
            let t0 = Instant::now();
            run(xt)?;
            times.push(t0.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "decode, {name:>22}: {:7.2} ms, {:6.2} GB/s of weights read",
            median * 1e3,
            layer_bytes / median / 1e9
        );
    }
    Ok(())
}
