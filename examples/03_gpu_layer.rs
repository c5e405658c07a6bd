//! One MoE layer of a real model's shape on the GPU, checked against the CPU layer: random bf16
//! weights and hidden states (seeded), one GPU forward, the relative L2 error and the routing
//! agreement. Presets: mixtral-8x7b, qwen2-moe, qwen3-30b-a3b, deepseek-v2-lite, deepseek-v3,
//! olmoe-1b-7b, gpt-oss-120b. When the weights would exceed `--max-weights-gib` (default 3), the
//! intermediate size is scaled down (the routing, E, k and H stay the model's) and the example says
//! so.
//!
//! Run with `cargo run --release --example 03_gpu_layer -- <preset> <tokens>` on a GPU machine, or on
//! the emulated GPU with its profiler:
//!
//! ```text
//! PTX_EMU_PROFILE=prof scripts/with-emulated-gpu target/release/examples/03_gpu_layer olmoe-1b-7b 16
//! ```

use anyhow::{bail, Context, Result};
use half::bf16;
use moe_kernels::cpu::layer::{CpuMoeLayer, MoeWeights, SharedExpertWeights};
use moe_kernels::gpu::{Device, GpuMoeLayer};
use moe_kernels::{Activation, MatRef, MoeConfig, RoutingConfig};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn preset(name: &str) -> Result<MoeConfig> {
    Ok(match name {
        "mixtral-8x7b" => MoeConfig::mixtral_8x7b(),
        "qwen2-moe" => MoeConfig::qwen2_moe_a2_7b(),
        "qwen3-30b-a3b" => MoeConfig::qwen3_30b_a3b(),
        "deepseek-v2-lite" => MoeConfig::deepseek_v2_lite(),
        "deepseek-v3" => MoeConfig::deepseek_v3(),
        "olmoe-1b-7b" => MoeConfig::olmoe_1b_7b(),
        // gpt-oss-120b's block shape (its clamped activation and biases are not modelled here).
        "gpt-oss-120b" => MoeConfig {
            hidden_size: 2880,
            intermediate_size: 2880,
            routing: RoutingConfig::softmax_topk(128, 4, true),
            activation: Activation::SWIGLU,
            shared_experts: vec![],
        },
        other => bail!("unknown preset `{other}`"),
    })
}

/// Bytes of the layer's bf16 weights.
fn weight_bytes(cfg: &MoeConfig) -> usize {
    let (h, i, e) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
    );
    let routed = e * (cfg.activation.up_rows(i) + i) * h;
    let shared: usize = cfg
        .shared_experts
        .iter()
        .map(|s| (cfg.activation.up_rows(s.intermediate_size) + s.intermediate_size) * h)
        .sum();
    2 * (routed + shared + e * h)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, tokens) = match args.as_slice() {
        [n, t, ..] => (
            n.as_str(),
            t.parse::<usize>().context("<tokens> must be a number")?,
        ),
        _ => bail!("usage: 03_gpu_layer <preset> <tokens> [--max-weights-gib N]"),
    };
    let max_gib: f64 = args
        .iter()
        .position(|a| a == "--max-weights-gib")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse())
        .transpose()
        .context("--max-weights-gib must be a number")?
        .unwrap_or(3.0);
    let mut cfg = preset(name)?;
    let full = cfg.intermediate_size;
    while weight_bytes(&cfg) as f64 > max_gib * (1u64 << 30) as f64 && cfg.intermediate_size > 64 {
        cfg.intermediate_size = (cfg.intermediate_size / 2).max(64) / 64 * 64;
        for s in cfg.shared_experts.iter_mut() {
            s.intermediate_size = (s.intermediate_size / 2).max(64) / 64 * 64;
        }
    }
    if cfg.intermediate_size != full {
        println!(
            "{name}: intermediate size scaled from {full} to {} to keep the weights under {max_gib} GiB",
            cfg.intermediate_size
        );
    }
    let (h, i, e) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut randn = |n: usize, s: f32| -> Vec<bf16> {
        (0..n)
            .map(|_| bf16::from_f32(rng.random_range(-s..s)))
            .collect()
    };
    let hs = 1.0 / (h as f32).sqrt();
    let weights = MoeWeights {
        router: randn(e * h, hs),
        biases: None,
        correction_bias: cfg.routing.correction_bias.then(|| vec![0.0; e]),
        gate_up: randn(e * cfg.activation.up_rows(i) * h, 2.0 * hs),
        down: randn(e * h * i, 1.0 / (i as f32).sqrt()),
        shared: cfg
            .shared_experts
            .iter()
            .map(|s| SharedExpertWeights {
                gate_up: randn(cfg.activation.up_rows(s.intermediate_size) * h, 2.0 * hs),
                down: randn(
                    h * s.intermediate_size,
                    1.0 / (s.intermediate_size as f32).sqrt(),
                ),
                gate: s.sigmoid_gate.then(|| randn(h, hs)),
            })
            .collect(),
    };
    let x = randn(tokens * h, 1.0);

    let dev = Device::new(0).context("this example needs a GPU (or scripts/with-emulated-gpu)")?;
    let name_of = dev.context().name().unwrap_or_default();
    let layer = GpuMoeLayer::upload(&dev, &cfg, &weights)?;
    let mut ws = layer.workspace(&dev, tokens)?;
    let s = dev.stream();
    let x_dev = s.clone_htod(&x)?;
    let mut out = s.alloc_zeros::<bf16>(tokens * h)?;
    let start = Instant::now();
    layer.forward(
        &dev,
        &x_dev.as_view(),
        tokens,
        &mut ws,
        &mut out.as_view_mut(),
    )?;
    dev.synchronize()?;
    let gpu_time = start.elapsed();
    ws.status().check()?;
    let gpu_out = s.clone_dtoh(&out)?;
    let gpu_ids = s.clone_dtoh(&ws.topk_ids())?;

    let cpu = CpuMoeLayer::new(cfg.clone(), weights)?.forward(MatRef::new("x", &x, tokens, h)?)?;
    let (mut num, mut den) = (0f64, 0f64);
    for (g, c) in gpu_out.iter().zip(&cpu.hidden) {
        let (g, c) = (g.to_f64(), c.to_f64());
        num += (g - c) * (g - c);
        den += c * c;
    }
    let agree = gpu_ids
        .iter()
        .zip(&cpu.routing.ids)
        .filter(|(a, b)| a == b)
        .count();
    println!(
        "{name} (H {h}, I {i}, E {e}, k {}) x {tokens} tokens on {name_of}: {:.1} ms; relative L2 \
         error against the CPU layer {:.2e}; routing agreement {agree}/{}",
        cfg.routing.top_k,
        gpu_time.as_secs_f64() * 1e3,
        (num / den.max(f64::MIN_POSITIVE)).sqrt(),
        gpu_ids.len()
    );
    Ok(())
}
