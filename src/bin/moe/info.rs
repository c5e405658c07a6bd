//! `moe info`: the parsed MoE settings and which layers are MoE layers.

use anyhow::{Context, Result};
use moe_kernels::hf::{Checkpoint, ExpertLayout, HfModelConfig, MoeBlockKeys};
use moe_kernels::{ActivationKind, GroupScore, ScoringFunc};

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
            "activation",
            format!(
                "{}{} (hidden_act = {})",
                match m.activation.kind {
                    ActivationKind::Silu => "silu",
                    ActivationKind::GeluTanh => "gelu (tanh)",
                },
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
            if let Some(&first) = moe_layers.first() {
                lines.push(("first MoE layer", describe_block(&ckpt, &cfg, first)));
            }
        }
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in lines {
        println!("{:width$}  {v}", format!("{k}:"), width = width + 1);
    }
    Ok(())
}

/// Layer `layer`'s keys and stored dtype, or why they cannot be found.
fn describe_block(ckpt: &Checkpoint, cfg: &HfModelConfig, layer: usize) -> String {
    let keys = match MoeBlockKeys::resolve(ckpt, cfg, layer) {
        Ok(k) => k,
        Err(e) => return format!("layer {layer}: {e}"),
    };
    let layout = match keys.layout {
        ExpertLayout::PerExpert => "per-expert",
        ExpertLayout::Fused => "fused",
    };
    let dtype = match ckpt.meta(&keys.representative()) {
        Ok(m) => m.stored,
        Err(e) => format!("unknown ({e})"),
    };
    format!(
        "layer {layer}: {layout} expert keys under {}, stored as {dtype}",
        keys.prefix
    )
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
