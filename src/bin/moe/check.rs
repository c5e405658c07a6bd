//! `moe check`: a layer on seeded random input, candidate path against the CPU f32 reference.
//!
//! The reference is the CPU layer in f32 on the reference backend. On a GPU the candidate is the GPU
//! layer; on a machine without one (or `--device cpu`) it is the CPU layer in bf16 on `--cpu-backend`
//! (fast by default), which measures how far bf16 rounding and the fast kernels move this layer.

use anyhow::{bail, Result};
use half::bf16;
use moe_kernels::cpu::fast::CpuBackend;
use moe_kernels::cpu::routing::Routing;
use moe_kernels::hf::HfModel;
use std::time::{SystemTime, UNIX_EPOCH};

use super::common::{
    cpu_forward, gpu_layer_forward, rel_l2, resolve_device, Backend, CpuBackendArg, DeviceArg,
    FastRng, GpuCapable, ModelArgs,
};
use moe_kernels::gpu::Device;

/// `moe check` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The decoder layer whose MoE block is checked (0-based).
    #[arg(long, value_name = "N")]
    layer: usize,
    /// Number of random tokens.
    #[arg(long, value_name = "T", default_value_t = 64)]
    tokens: usize,
    /// Seed of the random input (default: from the clock; printed either way).
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Where to run the candidate.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// The CPU candidate's expert GEMMs: the fast kernels or the reference (`--device cpu`).
    #[arg(long, value_enum, default_value_t = CpuBackendArg::Fast)]
    cpu_backend: CpuBackendArg,
}

/// Run the command.
pub fn main(args: Args) -> Result<()> {
    let (backend, note) = resolve_device(args.device, "check")?;
    if args.tokens == 0 {
        bail!("--tokens must be at least 1");
    }
    let model = args.model.open()?;
    let layer = args.layer;
    let cfg = model.config();
    cfg.check_moe_layer(layer)?;
    let (t, h) = (args.tokens, cfg.moe.hidden_size);
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed)
    });
    let x: Vec<f32> = FastRng::new(seed).values(t * h, 3f32.sqrt());

    let cpu_backend = CpuBackend::from(args.cpu_backend);
    let reference = forward::<f32>(&model, layer, &x, t, None, CpuBackend::Reference)?;
    let (candidate_name, candidate) = match &backend {
        Backend::Cpu => (
            format!("CPU bf16 ({} backend)", cpu_backend.name()),
            forward::<bf16>(&model, layer, &x, t, None, cpu_backend)?,
        ),
        Backend::Cuda(dev) => (
            "GPU bf16".to_string(),
            forward::<bf16>(&model, layer, &x, t, Some(dev), cpu_backend)?,
        ),
    };

    let err = rel_l2(
        candidate
            .0
            .iter()
            .zip(&reference.0)
            .map(|(&g, &w)| (g as f64, w as f64)),
    );
    if !err.is_finite() {
        bail!("the {candidate_name} output is not finite (relative L2 error {err})");
    }
    let (same_choices, routed_alike) = agreement(&reference.1, &candidate.1);
    let same_tokens = routed_alike.iter().filter(|&&same| same).count();
    // A token whose experts differ (a near-tie that bf16 rounding decides) differs by whole expert
    // outputs; the kernels' accuracy is the error over the tokens routed alike.
    let err_alike = rel_l2(
        candidate
            .0
            .chunks(h)
            .zip(reference.0.chunks(h))
            .zip(&routed_alike)
            .filter(|(_, &same)| same)
            .flat_map(|((g, w), _)| g.iter().zip(w))
            .map(|(&g, &w)| (g as f64, w as f64)),
    );
    println!(
        "layer:             {layer} ({}), {t} random tokens, seed {seed}",
        cfg.family
    );
    match (&backend, note) {
        (Backend::Cuda(dev), _) => println!(
            "GPU:               {}",
            dev.context()
                .name()
                .unwrap_or_else(|e| format!("(name unavailable: {e})"))
        ),
        (Backend::Cpu, Some(n)) => println!("GPU:               {n}; comparing CPU bf16 instead"),
        (Backend::Cpu, None) => {
            println!("GPU:               not used (--device cpu); comparing CPU bf16 instead")
        }
    }
    println!("reference:         CPU f32 (reference backend)");
    println!("candidate:         {candidate_name}");
    println!("relative L2 error: {err:.3e}");
    println!("  tokens routed alike: {err_alike:.3e}");
    println!(
        "routing agreement: {:.2}% of expert choices; {same_tokens} of {t} tokens chose the same experts",
        100.0 * same_choices
    );
    Ok(())
}

/// The layer with weights and activations of type `T` on `x` `[t, H]` (on `gpu` when given, else on
/// the CPU with its expert GEMMs on `backend`): output (widened) and routing.
fn forward<T: GpuCapable>(
    model: &HfModel,
    layer: usize,
    x: &[f32],
    t: usize,
    gpu: Option<&Device>,
    backend: CpuBackend,
) -> Result<(Vec<f32>, Routing)> {
    let xt: Vec<T> = x.iter().map(|&v| T::from_f32(v)).collect();
    match gpu {
        Some(dev) => gpu_layer_forward(dev, model, layer, &xt, t),
        None => cpu_forward(model, layer, &xt, t, backend),
    }
}

/// The fraction of (token, chosen expert) pairs both routings share, and for each token whether its
/// chosen expert sets are identical.
fn agreement(a: &Routing, b: &Routing) -> (f64, Vec<bool>) {
    let k = a.top_k.max(1);
    let mut shared = 0usize;
    let mut same = Vec::with_capacity(a.ids.len() / k);
    for (ra, rb) in a.ids.chunks(k).zip(b.ids.chunks(k)) {
        let common = ra.iter().filter(|id| rb.contains(id)).count();
        shared += common;
        same.push(common == k);
    }
    (shared as f64 / a.ids.len().max(1) as f64, same)
}
