//! The CPU side of the benchmark: the CPU path (its expert GEMMs on the layer's backend) timed stage
//! by stage on the host clock.

use anyhow::Result;
use half::bf16;
use moe_kernels::cpu::combine::combine;
use moe_kernels::cpu::layer::{
    shared_experts, CpuMoeLayer, ExpertStorage, MoeWeights, SharedExpertWeights,
};
use moe_kernels::cpu::permute::{gather, permute};
use moe_kernels::cpu::routing::route;
use moe_kernels::quant::{fp4_e2m1_to_f32, fp8_e4m3_to_f32, CodeFormat, QuantExperts};
use moe_kernels::{MatMut, MatRef, MoeConfig};

use super::super::common::FastRng;
use super::measure::{time_host, Budget, Stage, Stats};
use super::presets::Weights;

/// Bytes of the block's weights: the router in bf16, the expert matrices (routed and shared)
/// stored as `weights`.
pub fn weight_bytes(cfg: &MoeConfig, weights: Weights) -> usize {
    let (h, i, e) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
    );
    let mut n = 2 * e * h
        + e * (weights.matrix_bytes(cfg.activation.up_rows(i), h) + weights.matrix_bytes(h, i));
    for s in &cfg.shared_experts {
        let si = s.intermediate_size;
        n += weights.matrix_bytes(cfg.activation.up_rows(si), h)
            + weights.matrix_bytes(h, si)
            + 2 * h;
    }
    n
}

/// Random bf16 weights for `cfg`, scaled like a trained layer (unit-variance activations stay so).
pub fn random_weights(cfg: &MoeConfig, seed: u64) -> MoeWeights<bf16> {
    let (h, i, e) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
    );
    let mut rng = FastRng::new(seed);
    let (router, correction_bias) = random_router(cfg, &mut rng);
    let sh = (3.0 / h as f32).sqrt();
    MoeWeights {
        router,
        biases: None,
        correction_bias,
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

/// The random router `[E, H]` and correction bias (when `cfg` has one) of [`random_weights`].
fn random_router(cfg: &MoeConfig, rng: &mut FastRng) -> (Vec<bf16>, Option<Vec<f32>>) {
    let (h, e) = (cfg.hidden_size, cfg.routing.num_experts);
    (
        rng.values::<bf16>(e * h, (3.0 / h as f32).sqrt()),
        cfg.routing
            .correction_bias
            .then(|| (0..e).map(|_| rng.uniform(0.05)).collect()),
    )
}

/// Root mean square of the values of `codes` (those that are numbers) decoded by `decode`.
fn code_rms(codes: impl Iterator<Item = u8>, decode: impl Fn(u8) -> f32) -> f32 {
    let (mut sum, mut n) = (0f64, 0f64);
    for v in codes.map(decode).filter(|v| !v.is_nan()) {
        sum += f64::from(v) * f64::from(v);
        n += 1.0;
    }
    (sum / n).sqrt() as f32
}

/// Random quantized weights for `cfg`: the router (and any shared-expert gate) as
/// [`random_weights`] makes them, the expert matrices as random `format` codes (no NaN codes) with
/// scales per row and `group` columns that give them the root mean square of [`random_weights`]'
/// (times a random factor in [0.5, 2) per FP8 scale; for MXFP4, whose scales are e8m0, the nearest
/// power of two times 1 or 2).
pub fn random_quant_weights(
    cfg: &MoeConfig,
    seed: u64,
    (format, group): (CodeFormat, usize),
) -> Result<MoeWeights<bf16, QuantExperts>> {
    let mut rng = FastRng::new(seed);
    let (router, correction_bias) = random_router(cfg, &mut rng);
    let fp8_rms = code_rms(0..=255, fp8_e4m3_to_f32);
    let fp4_rms = code_rms(0..16, fp4_e2m1_to_f32);
    let (h, i, e) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
    );
    let quant = |rng: &mut FastRng, [e, n, k]: [usize; 3]| -> Result<QuantExperts> {
        // The root mean square of `random_weights`' values: theirs are uniform in
        // [-sqrt(3 / K), sqrt(3 / K)).
        let rms = 1.0 / (k as f32).sqrt();
        let (codes, scales): (Vec<u8>, Vec<f32>) = match format {
            CodeFormat::Fp8E4M3 => (
                rng.fill(e * n * k, |r| {
                    let c = r.next_u64() as u8;
                    if c & 0x7f == 0x7f {
                        c ^ 1
                    } else {
                        c
                    }
                }),
                rng.fill(e * n * k.div_ceil(group), |r| {
                    rms / fp8_rms * 2f32.powf(r.uniform(1.0))
                }),
            ),
            CodeFormat::Mxfp4E2M1 => (
                rng.fill(e * n * format.row_bytes(k), |r| r.next_u64() as u8),
                rng.fill(e * n * k.div_ceil(group), |r| {
                    2f32.powi((rms / fp4_rms).log2().round() as i32 + (r.next_u64() % 2) as i32)
                }),
            ),
        };
        Ok(QuantExperts::new(format, [e, n, k], group, codes, scales)?)
    };
    let up = |i: usize| cfg.activation.up_rows(i);
    Ok(MoeWeights {
        router,
        biases: None,
        correction_bias,
        gate_up: quant(&mut rng, [e, up(i), h])?,
        down: quant(&mut rng, [e, h, i])?,
        shared: cfg
            .shared_experts
            .iter()
            .map(|s| {
                Ok(SharedExpertWeights {
                    gate_up: quant(&mut rng, [1, up(s.intermediate_size), h])?,
                    down: quant(&mut rng, [1, h, s.intermediate_size])?,
                    gate: s
                        .sigmoid_gate
                        .then(|| rng.values::<bf16>(h, (3.0 / h as f32).sqrt())),
                })
            })
            .collect::<Result<_>>()?,
    })
}

/// Time every stage and the whole layer for `t` tokens of random input. Returns the timings and the
/// number of distinct experts the routing touched.
pub fn bench_tokens<S: ExpertStorage>(
    layer: &CpuMoeLayer<bf16, S>,
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

    let gate_up = w
        .gate_up
        .rows("expert gate_up weights", [e, cfg.activation.up_rows(i), h])?;
    let down = w.down.rows("expert down weights", [e, h, i])?;
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
                        &gate_up,
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
                        &down,
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
