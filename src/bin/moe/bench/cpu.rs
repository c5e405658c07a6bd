//! The CPU side of the benchmark: the CPU path (its expert GEMMs on the layer's backend) timed stage
//! by stage on the host clock.

use anyhow::Result;
use half::bf16;
use moe_kernels::cpu::combine::combine;
use moe_kernels::cpu::layer::{shared_experts, CpuMoeLayer, MoeWeights, SharedExpertWeights};
use moe_kernels::cpu::permute::{gather, permute};
use moe_kernels::cpu::routing::route;
use moe_kernels::{ExpertsRef, MatMut, MatRef, MoeConfig};

use super::super::common::FastRng;
use super::measure::{time_host, Budget, Stage, Stats};

/// Bytes of the block's bf16 weights (router, experts, shared experts).
pub fn weight_bytes(cfg: &MoeConfig) -> usize {
    let (h, i, e) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
    );
    let mut n = e * h + e * (cfg.activation.up_rows(i) + i) * h;
    for s in &cfg.shared_experts {
        n += (cfg.activation.up_rows(s.intermediate_size) + s.intermediate_size + 1) * h;
    }
    2 * n
}

/// Random bf16 weights for `cfg`, scaled like a trained layer (unit-variance activations stay so).
pub fn random_weights(cfg: &MoeConfig, seed: u64) -> MoeWeights<bf16> {
    let (h, i, e) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
    );
    let mut rng = FastRng::new(seed);
    let sh = (3.0 / h as f32).sqrt();
    MoeWeights {
        router: rng.values::<bf16>(e * h, sh),
        biases: None,
        correction_bias: cfg
            .routing
            .correction_bias
            .then(|| (0..e).map(|_| rng.uniform(0.05)).collect()),
        gate_up: rng.values::<bf16>(e * cfg.activation.up_rows(i) * h, sh),
        down: rng.values::<bf16>(e * h * i, (3.0 / i as f32).sqrt()),
        shared: cfg
            .shared_experts
            .iter()
            .map(|s| SharedExpertWeights {
                gate_up: rng.values::<bf16>(cfg.activation.up_rows(s.intermediate_size) * h, sh),
                down: rng.values::<bf16>(
                    h * s.intermediate_size,
                    (3.0 / s.intermediate_size as f32).sqrt(),
                ),
                gate: s.sigmoid_gate.then(|| rng.values::<bf16>(h, sh)),
            })
            .collect(),
    }
}

/// Time every stage and the whole layer for `t` tokens of random input. Returns the timings and the
/// number of distinct experts the routing touched.
pub fn bench_tokens(
    layer: &CpuMoeLayer<bf16>,
    t: usize,
    seed: u64,
    budget: Budget,
) -> Result<(Vec<(Stage, Stats)>, usize)> {
    let cfg = layer.config();
    let w = layer.weights();
    let (h, i, e) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
    );
    let x = FastRng::new(seed).values::<bf16>(t * h, 1.7);
    let xv = MatRef::new("hidden states", &x, t, h)?;
    let logits = layer.router_logits(xv)?;
    let lv = MatRef::new("router logits", &logits, t, e)?;
    let bias = w.correction_bias.as_deref();
    let routing = route(&cfg.routing, lv, bias)?;
    let perm = permute(routing.ids_view(), e, 1)?;
    let rows = perm.num_rows();
    let touched = perm.expert_counts().iter().filter(|&&c| c > 0).count();

    let gate_up = ExpertsRef::new(
        "expert gate_up weights",
        &w.gate_up,
        e,
        cfg.activation.up_rows(i),
        h,
    )?;
    let down = ExpertsRef::new("expert down weights", &w.down, e, h, i)?;
    let mut gathered = vec![bf16::ZERO; rows * h];
    let mut act = vec![bf16::ZERO; rows * i];
    let mut y = vec![bf16::ZERO; rows * h];
    let mut out = vec![bf16::ZERO; t * h];
    let shared = (!cfg.shared_experts.is_empty())
        .then(|| shared_experts(cfg, xv, &w.shared))
        .transpose()?;

    let mut timings = Vec::new();
    for stage in Stage::ALL {
        let mut result = Ok(());
        let stats = match stage {
            Stage::Routing => time_host(budget, || {
                result = route(&cfg.routing, lv, bias).map(drop);
            }),
            Stage::Permute => time_host(budget, || {
                result = permute(routing.ids_view(), e, 1).and_then(|p| {
                    gather(
                        xv,
                        &p,
                        &mut MatMut::new("gathered", &mut gathered, rows, h)?,
                    )
                });
            }),
            Stage::UpGemm => time_host(budget, || {
                result = MatMut::new("activated", &mut act, rows, i).and_then(|mut o| {
                    layer.backend().grouped_gemm_activation(
                        MatRef::new("gathered", &gathered, rows, h)?,
                        perm.expert_offsets(),
                        gate_up,
                        cfg.activation,
                        &mut o,
                    )
                });
            }),
            Stage::DownGemm => time_host(budget, || {
                result = MatMut::new("expert outputs", &mut y, rows, h).and_then(|mut o| {
                    layer.backend().grouped_gemm(
                        MatRef::new("activated", &act, rows, i)?,
                        perm.expert_offsets(),
                        down,
                        &mut o,
                    )
                });
            }),
            Stage::Combine => time_host(budget, || {
                result = MatMut::new("output", &mut out, t, h).and_then(|mut o| {
                    combine(
                        MatRef::new("expert outputs", &y, rows, h)?,
                        &perm,
                        routing.weights_view(),
                        shared
                            .as_deref()
                            .map(|s| MatRef::new("shared", s, t, h))
                            .transpose()?,
                        &mut o,
                    )
                });
            }),
            Stage::Layer => time_host(budget, || {
                result = layer.forward(xv).map(drop);
            }),
        };
        result?;
        timings.push((stage, stats));
    }
    Ok((timings, touched))
}
