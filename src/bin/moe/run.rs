//! `moe run`: one layer's MoE block on hidden states read from a file.

use anyhow::Result;
use half::{bf16, f16};
use moe_kernels::cpu::routing::Routing;
use moe_kernels::gpu::Device;
use moe_kernels::hf::HfModel;
use moe_kernels::{DType, Element, HostTensor};
use std::collections::HashMap;
use std::path::PathBuf;

use super::common::{
    check_output_path, cpu_forward, gpu_layer_forward, resolve_device, Backend, CpuBackendArg,
    DTypeArg, DeviceArg, GpuCapable, ModelArgs,
};
use super::tensors::{read_hidden_states, write_atomic, OutTensor, HIDDEN};

/// `moe run` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The decoder layer whose MoE block runs (0-based).
    #[arg(long, value_name = "N")]
    layer: usize,
    /// Safetensors file with `hidden_states` [T, H] (f32, bf16 or f16).
    #[arg(long, value_name = "IN.safetensors")]
    input: PathBuf,
    /// Safetensors file to write: `hidden_states` [T, H] f32, `topk_ids` [T, k] i32, `topk_weights` [T, k]
    /// f32.
    #[arg(long, value_name = "OUT.safetensors")]
    output: PathBuf,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Element type of the weights and activations (default: the checkpoint's stored type).
    #[arg(long, value_enum)]
    dtype: Option<DTypeArg>,
    /// The CPU layer's expert GEMMs: the fast kernels or the reference (`--device cpu`).
    #[arg(long, value_enum, default_value_t = CpuBackendArg::Fast)]
    cpu_backend: CpuBackendArg,
}

/// Run the command.
pub fn main(args: Args) -> Result<()> {
    check_output_path(&args.output)?;
    let model = args.model.open()?;
    // Quantized experts run on the CPU only so far: `auto` picks it for them.
    let (backend, note) = match args.device {
        DeviceArg::Auto if model.is_quantized() => (
            Backend::Cpu,
            model.config().quantization.as_ref().map(|q| {
                format!(
                    "the experts are quantized ({}), which runs on the CPU only so far",
                    q.format().name()
                )
            }),
        ),
        device => resolve_device(device, "run")?,
    };
    let layer = args.layer;
    let cfg = model.config();
    cfg.check_moe_layer(layer)?;
    let (h, k) = (cfg.moe.hidden_size, cfg.moe.routing.top_k);
    let input = read_hidden_states(&args.input, h)?;
    let t = input.shape()[0];
    let dtype = match args.dtype {
        Some(d) => DType::from(d),
        None => model.stored_dtype(layer)?,
    };

    let (hidden, routing) = match &backend {
        Backend::Cpu => match dtype {
            DType::F32 => forward::<f32>(&model, layer, &input, None, args.cpu_backend)?,
            DType::BF16 => forward::<bf16>(&model, layer, &input, None, args.cpu_backend)?,
            DType::F16 => forward::<f16>(&model, layer, &input, None, args.cpu_backend)?,
        },
        Backend::Cuda(dev) => match dtype {
            DType::F32 => forward::<f32>(&model, layer, &input, Some(dev), args.cpu_backend)?,
            DType::BF16 => forward::<bf16>(&model, layer, &input, Some(dev), args.cpu_backend)?,
            DType::F16 => forward::<f16>(&model, layer, &input, Some(dev), args.cpu_backend)?,
        },
    };
    let device = match backend {
        Backend::Cpu => "cpu",
        Backend::Cuda(_) => "cuda",
    };

    let outputs = [
        OutTensor::f32(HIDDEN, vec![t, h], &hidden),
        OutTensor::i32("topk_ids", vec![t, k], &routing.ids),
        OutTensor::f32("topk_weights", vec![t, k], &routing.weights),
    ];
    let metadata = HashMap::from([
        ("model".to_string(), args.model.model.display().to_string()),
        ("layer".to_string(), layer.to_string()),
        ("device".to_string(), device.to_string()),
        ("dtype".to_string(), dtype.to_string()),
    ]);
    write_atomic(&args.output, &outputs, metadata)?;
    eprintln!(
        "moe: ran layer {layer} ({}) on the {} in {dtype}: {t} tokens -> {}{}",
        cfg.family,
        if device == "cpu" { "CPU" } else { "GPU" },
        args.output.display(),
        note.map(|n| format!(" (--device auto: {n})"))
            .unwrap_or_default()
    );
    Ok(())
}

/// Run the layer with weights of type `T` on `input` converted to `T` (on `gpu` when given, else on
/// the CPU with its expert GEMMs on `backend`), and widen the output.
fn forward<T: Element + GpuCapable>(
    model: &HfModel,
    layer: usize,
    input: &HostTensor,
    gpu: Option<&Device>,
    backend: CpuBackendArg,
) -> Result<(Vec<f32>, Routing)> {
    let t = input.shape()[0];
    let x: Vec<T> = input.to_vec();
    match gpu {
        Some(dev) => gpu_layer_forward(dev, model, layer, &x, t),
        None => cpu_forward(model, layer, &x, t, backend.into()),
    }
}
