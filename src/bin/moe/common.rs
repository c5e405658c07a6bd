//! Arguments and helpers shared by the subcommands.

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use moe_kernels::hf::{HfModel, ModelFamily};
use moe_kernels::DType;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where to run the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The GPU when there is one (and its path is built), else the CPU.
    Auto,
    /// The CPU reference path.
    Cpu,
    /// The GPU (CUDA).
    Cuda,
}

/// The element type to compute in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    /// IEEE single precision.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl From<DTypeArg> for DType {
    fn from(d: DTypeArg) -> DType {
        match d {
            DTypeArg::F32 => DType::F32,
            DTypeArg::Bf16 => DType::BF16,
            DTypeArg::F16 => DType::F16,
        }
    }
}

/// `--model DIR` and `--family`.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// The model directory: config.json plus model.safetensors or model.safetensors.index.json with
    /// its shards.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Load the model as this family's MoE layout, whatever its config's model_type (mixtral, qwen2_moe,
    /// qwen3_moe, olmoe, deepseek_v2, deepseek_v3).
    #[arg(long, value_name = "FAMILY")]
    pub family: Option<ModelFamily>,
}

impl ModelArgs {
    /// Open the model (config and checkpoint).
    pub fn open(&self) -> Result<HfModel> {
        HfModel::open_as(&self.model, self.family)
            .with_context(|| format!("cannot open the model in {}", self.model.display()))
    }
}

/// The device a command runs on, once resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The CPU reference path.
    Cpu,
}

/// Resolve `--device` for `command`. While the GPU path of the command is not built, `cuda` is an error
/// and `auto` runs on the CPU, returning a note that says why: no usable GPU (with the reason), or a GPU
/// that the command cannot use yet.
pub fn resolve_device(device: DeviceArg, command: &str) -> Result<(Backend, Option<String>)> {
    match device {
        DeviceArg::Cpu => Ok((Backend::Cpu, None)),
        DeviceArg::Cuda => bail!(
            "the GPU path of `moe {command}` is not built yet (issue 3); use --device cpu or --device auto"
        ),
        DeviceArg::Auto => {
            let note = match moe_kernels::gpu::Device::new(0) {
                Ok(_) => format!(
                    "a GPU is present but the GPU path of `moe {command}` is not built yet (issue 3)"
                ),
                Err(e) => format!("no usable GPU: {e}"),
            };
            Ok((Backend::Cpu, Some(note)))
        }
    }
}

/// Collapse every run of whitespace that contains a line break into one space, so a message fits on one
/// line.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (n, line) in s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if n > 0 {
            out.push(' ');
        }
        out.push_str(line);
    }
    out
}

/// Report a command-line error from clap: help and version print as usual; every other error is one line.
pub fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(e.exit_code().clamp(0, 255) as u8)
        }
        _ => {
            let text = e.render().to_string();
            // Drop the usage block and the "For more information" hint; keep the message itself.
            let msg = text.split("\n\nUsage:").next().unwrap_or(&text);
            let msg = msg.split("\n\nFor more information").next().unwrap_or(msg);
            let msg = one_line(msg);
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
            eprintln!("error: {msg} (see `moe --help`)");
            ExitCode::from(2)
        }
    }
}

/// Check, before any work, that `out` can be created: its directory exists and it is not a directory.
pub fn check_output_path(out: &Path) -> Result<()> {
    if out.is_dir() {
        bail!("output {} is a directory", out.display());
    }
    let dir = parent_dir(out);
    if !dir.is_dir() {
        bail!(
            "cannot write output {}: {} {}",
            out.display(),
            dir.display(),
            if dir.exists() {
                "is not a directory"
            } else {
                "does not exist"
            }
        );
    }
    Ok(())
}

/// The directory a file path lives in (`.` for a bare file name).
pub fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
