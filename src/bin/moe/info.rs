//! `moe info`: the parsed MoE settings and which layers are MoE layers.

use anyhow::{Context, Result};
use moe_kernels::hf::{Checkpoint, ExpertLayout, HfModelConfig, MoeBlockKeys};
use moe_kernels::{GroupScore, ScoringFunc};

use super::common::ModelArgs;

/// `moe info` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
}

/// Run the command. Only `config.json` is required; the checkpoint is described when it can be opened.
pub fn main(args: Args) -> Result<()> {
    let dir = &args.model.model;
    let cfg = HfModelConfig::from_file(dir.join("config.json"), args.model.family)
        .with_context(|| format!("cannot read the model config in {}", dir.display()))?;
    let m = &cfg.moe;
    let r = &m.routing;
    let moe_layers = cfg.moe_layers();

    let mut lines: Vec<(&str, String)> = vec![
        ("model", dir.display().to_string()),
        (
            "model_type",
            if cfg.model_type == cfg.family.name() {
                cfg.model_type.clone()
            } else {
                format!("{} (loaded as {})", cfg.model_type, cfg.family)
            },
        ),
        ("layers", cfg.num_hidden_layers.to_string()),
        (
            "MoE layers",
            format!(
                "{} ({} of {}; {})",
                ranges(&moe_layers),
                moe_layers.len(),
                cfg.num_hidden_layers,
                cfg.placement.describe()
            ),
        ),
        ("hidden_size", m.hidden_size.to_string()),
        (
            "experts",
            format!("{}, top-{} per token", r.num_experts, r.top_k),
        ),
        ("expert intermediate_size", m.intermediate_size.to_string()),
        (
            "scoring",
            match r.scoring {
                ScoringFunc::Softmax => "softmax".into(),
                ScoringFunc::Sigmoid => "sigmoid".into(),
                ScoringFunc::SparseMixer { jitter_eps } => {
                    format!("sparse mixer, 2 experts (jitter_eps = {jitter_eps})")
                }
            },
        ),
        (
            "selection",
            match &r.grouping {
                None => "top-k".into(),
                Some(g) => format!(
                    "grouped top-k: {} groups, keep {}, group score = {}",
                    g.n_group,
                    g.topk_group,
                    match g.score {
                        GroupScore::Max => "max (group_limited_greedy)",
                        GroupScore::SumTop2 => "sum of top-2 (noaux_tc)",
                    }
                ),
            },
        ),
        (
            "correction bias",
            if r.correction_bias {
                "yes (e_score_correction_bias)"
            } else {
                "no"
            }
            .into(),
        ),
        (
            "renormalize",
            if r.renormalize { "yes" } else { "no" }.into(),
        ),
        ("routed_scaling_factor", r.routed_scaling_factor.to_string()),
        (
            "weights scale",
            if r.scale_input {
                "the expert inputs (outputs summed with weight 1)"
            } else {
                "the expert outputs"
            }
            .into(),
        ),
        (
            "activation",
            format!(
                "{}{} (hidden_act = {})",
                m.activation.kind.name(),
                if m.activation.gated { ", gated" } else { "" },
                cfg.hidden_act
            ),
        ),
        (
            "shared experts",
            if m.shared_experts.is_empty() {
                "none".into()
            } else {
                m.shared_experts
                    .iter()
                    .map(|s| {
                        format!(
                            "intermediate_size {}{}",
                            s.intermediate_size,
                            if s.sigmoid_gate {
                                ", sigmoid-gated"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ),
        ("parameters", {
            let p = m.parameter_counts();
            format!(
                "{} per MoE block, {} active per token ({:.1}%)",
                count(p.total),
                count(p.active_per_token),
                100.0 * p.active_per_token as f64 / p.total.max(1) as f64
            )
        }),
        (
            "quantization",
            cfg.quantization
                .as_ref()
                .map_or("none".into(), |q| q.describe()),
        ),
        (
            "config dtype",
            cfg.torch_dtype
                .clone()
                .unwrap_or_else(|| "not given".into()),
        ),
    ];
    match Checkpoint::open(dir) {
        Err(e) => lines.push(("checkpoint", format!("not usable: {e}"))),
        Ok(ckpt) => {
            lines.push((
                "checkpoint",
                if ckpt.is_sharded() {
                    format!(
                        "{} shards (model.safetensors.index.json)",
                        ckpt.files().len()
                    )
                } else {
                    "model.safetensors".into()
                },
            ));
            for (layers, what) in layer_formats(&ckpt, &cfg, &moe_layers) {
                lines.push(("weights", format!("{}: {what}", ranges(&layers))));
            }
        }
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in lines {
        println!("{:width$}  {v}", format!("{k}:"), width = width + 1);
    }
    Ok(())
}

/// Each MoE layer's weight format and bytes, consecutive layers that agree merged: the expert key
/// layout and prefix, the stored types of the experts and the router, and the bytes of every tensor of
/// the block; or why the layer cannot be read.
fn layer_formats(
    ckpt: &Checkpoint,
    cfg: &HfModelConfig,
    layers: &[usize],
) -> Vec<(Vec<usize>, String)> {
    let mut out: Vec<(Vec<usize>, String)> = Vec::new();
    for &layer in layers {
        let what = layer_format(ckpt, cfg, layer).unwrap_or_else(|e| e.to_string());
        match out.last_mut() {
            Some((ls, w)) if *w == what && ls.last() == Some(&(layer - 1)) => ls.push(layer),
            _ => out.push((vec![layer], what)),
        }
    }
    out
}

fn layer_format(
    ckpt: &Checkpoint,
    cfg: &HfModelConfig,
    layer: usize,
) -> moe_kernels::Result<String> {
    let keys = MoeBlockKeys::resolve(ckpt, cfg, layer)?;
    let mut bytes = 0u64;
    for (key, _) in keys.tensors(&cfg.moe) {
        let meta = ckpt.meta(&key)?;
        bytes += meta.bytes as u64;
        // A quantized weight's scales count too.
        if let (Some(q), None, false) = (
            &cfg.quantization,
            meta.dtype,
            keys.layout == ExpertLayout::Mxfp4Interleaved,
        ) {
            bytes += ckpt.meta(&q.scale_key(&key))?.bytes as u64;
        }
    }
    if cfg.moe.shared_experts.iter().any(|s| s.sigmoid_gate) {
        bytes += ckpt.meta(&keys.shared_gate())?.bytes as u64;
    }
    let layout = match keys.layout {
        ExpertLayout::PerExpert => "per-expert",
        ExpertLayout::Fused => "fused",
        ExpertLayout::FusedTransposed => "fused, transposed per expert",
        ExpertLayout::Stacked2d => "w1/v1/w2 stacked [E * I, H]",
        ExpertLayout::FusedTransposedInterleaved => {
            "fused, transposed per expert, gate/up interleaved, with biases"
        }
        ExpertLayout::Mxfp4Interleaved => {
            "MXFP4 blocks and e8m0 scales, gate/up interleaved, with biases"
        }
    };
    let experts = ckpt.meta(&keys.representative())?.stored;
    let router = ckpt.meta(&keys.router())?.stored;
    // Replace the layer number in the prefix, so that equal layers merge.
    let prefix = keys.prefix.replace(&format!(".{layer}."), ".{L}.");
    Ok(format!(
        "experts {experts} ({layout}, under {prefix}), router {router}, {} per layer",
        size(bytes)
    ))
}

/// A parameter count in K, M or B.
fn count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}

/// Bytes in KiB, MiB or GiB.
fn size(b: u64) -> String {
    let f = b as f64;
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", f / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", f / 1_048_576.0),
        _ => format!("{:.2} GiB", f / 1_073_741_824.0),
    }
}

/// `[0, 1, 2, 5, 7, 8]` as `0-2, 5, 7-8`.
fn ranges(v: &[usize]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    let mut parts = Vec::new();
    let mut start = v[0];
    let mut prev = v[0];
    for &x in &v[1..] {
        if x != prev + 1 {
            parts.push(span(start, prev));
            start = x;
        }
        prev = x;
    }
    parts.push(span(start, prev));
    parts.join(", ")
}

fn span(a: usize, b: usize) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}
