//! What a benchmark measures: the stages, their useful work (FLOPs and bytes), and timing statistics.

use moe_kernels::MoeConfig;

use super::presets::Weights;
use serde::Serialize;
use std::time::Instant;

/// A timed part of the MoE forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Router logits to top-k ids and weights (the router GEMM is part of `Layer` only).
    Routing,
    /// Sorting rows by expert and gathering the activations.
    Permute,
    /// The up projection with the fused activation.
    UpGemm,
    /// The down projection.
    DownGemm,
    /// The weighted sum back to token order.
    Combine,
    /// The whole block: router GEMM, the five stages above, and the shared experts.
    Layer,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 6] = [
        Stage::Routing,
        Stage::Permute,
        Stage::UpGemm,
        Stage::DownGemm,
        Stage::Combine,
        Stage::Layer,
    ];

    /// Name used in tables and files.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Routing => "routing",
            Stage::Permute => "permute",
            Stage::UpGemm => "up_gemm",
            Stage::DownGemm => "down_gemm",
            Stage::Combine => "combine",
            Stage::Layer => "layer",
        }
    }
}

/// The useful work of one stage at one token count.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Work {
    /// Useful floating-point operations (multiply-adds count 2); 0 for stages that only move data.
    pub flops: f64,
    /// Bytes that must cross memory at least once: the weights actually touched plus activations,
    /// each read or written once.
    pub bytes: f64,
}

/// The useful work of `stage` for `t` tokens whose routing touches `touched` distinct experts, with
/// bf16 activations and router and the expert matrices stored as `weights` (their bytes are those
/// stored: codes and scales for quantized weights).
pub fn work(cfg: &MoeConfig, stage: Stage, t: usize, touched: usize, weights: Weights) -> Work {
    let (h, i, e, k) = (
        cfg.hidden_size as f64,
        cfg.intermediate_size as f64,
        cfg.routing.num_experts as f64,
        cfg.routing.top_k as f64,
    );
    let eb = 2.0;
    let matrix = |n: usize, k: usize| weights.matrix_bytes(n, k) as f64;
    let up_bytes = matrix(
        cfg.activation.up_rows(cfg.intermediate_size),
        cfg.hidden_size,
    );
    let down_bytes = matrix(cfg.hidden_size, cfg.intermediate_size);
    let (t, touched) = (t as f64, touched as f64);
    let up = cfg.activation.up_rows(cfg.intermediate_size) as f64;
    let rows = t * k;
    match stage {
        Stage::Routing => Work {
            flops: 0.0,
            bytes: t * e * 4.0 + rows * 8.0,
        },
        Stage::Permute => Work {
            flops: 0.0,
            bytes: rows * 4.0 + t * h * eb + rows * h * eb + rows * 16.0,
        },
        Stage::UpGemm => Work {
            flops: 2.0 * rows * up * h,
            bytes: touched * up_bytes + rows * h * eb + rows * i * eb,
        },
        Stage::DownGemm => Work {
            flops: 2.0 * rows * h * i,
            bytes: touched * down_bytes + rows * i * eb + rows * h * eb,
        },
        Stage::Combine => Work {
            flops: 2.0 * rows * h,
            bytes: rows * h * eb + rows * 4.0 + t * h * eb,
        },
        Stage::Layer => {
            let (mut flops, mut bytes) = (
                2.0 * rows * (up * h + h * i) + 2.0 * t * h * e,
                touched * (up_bytes + down_bytes) + e * h * eb + 2.0 * t * h * eb,
            );
            for s in &cfg.shared_experts {
                let (si, sup) = (
                    s.intermediate_size as f64,
                    cfg.activation.up_rows(s.intermediate_size),
                );
                flops += 2.0 * t * (sup as f64 * h + h * si);
                bytes +=
                    matrix(sup, cfg.hidden_size) + matrix(cfg.hidden_size, s.intermediate_size);
            }
            Work { flops, bytes }
        }
    }
}

/// Timing statistics of repeated runs, in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// Median.
    pub median_us: f64,
    /// Fastest run.
    pub min_us: f64,
    /// Slowest run.
    pub max_us: f64,
    /// Number of timed runs.
    pub samples: usize,
}

impl Stats {
    /// Statistics of `samples_us` (at least one sample).
    pub fn from_samples(mut samples_us: Vec<f64>) -> Stats {
        samples_us.sort_by(f64::total_cmp);
        let n = samples_us.len();
        let median = if n % 2 == 1 {
            samples_us[n / 2]
        } else {
            0.5 * (samples_us[n / 2 - 1] + samples_us[n / 2])
        };
        Stats {
            median_us: median,
            min_us: samples_us[0],
            max_us: samples_us[n - 1],
            samples: n,
        }
    }
}

/// How long to time each configuration.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// At least this many timed runs...
    pub min_samples: usize,
    /// ...and at least this much total time, in seconds...
    pub min_seconds: f64,
    /// ...but never more than this many runs.
    pub max_samples: usize,
}

/// Time `f` on the host clock: one warm-up run, then runs until the budget is met.
pub fn time_host(budget: Budget, mut f: impl FnMut()) -> Stats {
    f();
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < budget.max_samples
        && (samples.len() < budget.min_samples
            || start.elapsed().as_secs_f64() < budget.min_seconds)
    {
        let t0 = Instant::now();
        f();
        samples.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    Stats::from_samples(samples)
}
