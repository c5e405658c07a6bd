//! Arguments and helpers shared by the subcommands.

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use cudarc::driver::ValidAsZeroBits;
use moe_kernels::cpu::fast::CpuBackend;
use moe_kernels::cpu::layer::CpuMoeLayer;
use moe_kernels::cpu::routing::Routing;
use moe_kernels::gpu::{Device, GemmElement, GemmOutput, GpuElement, GpuMoeLayer, UploadExperts};
use moe_kernels::hf::{HfModel, ModelFamily};
use moe_kernels::DType;
use moe_kernels::{Element, MatRef};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where to run the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The GPU when there is one (and the kernels were built), else the CPU.
    Auto,
    /// The CPU path.
    Cpu,
    /// The GPU (CUDA).
    Cuda,
}

/// `--cpu-backend`: which implementation runs the CPU layer's expert GEMMs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum CpuBackendArg {
    /// The fast kernels (SIMD, chosen for the CPU at run time, and threads).
    #[default]
    Fast,
    /// The plain reference GEMMs that every other result is checked against.
    Reference,
}

impl From<CpuBackendArg> for CpuBackend {
    fn from(b: CpuBackendArg) -> CpuBackend {
        match b {
            CpuBackendArg::Fast => CpuBackend::Fast,
            CpuBackendArg::Reference => CpuBackend::Reference,
        }
    }
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
pub enum Backend {
    /// The CPU path.
    Cpu,
    /// The GPU kernels on CUDA device 0.
    Cuda(Device),
}

/// Resolve `--device` for `command`: `cuda` opens GPU 0 or fails with the reason; `auto` uses the GPU
/// when one can be opened and otherwise runs on the CPU, returning a note that says why.
pub fn resolve_device(device: DeviceArg, command: &str) -> Result<(Backend, Option<String>)> {
    match device {
        DeviceArg::Cpu => Ok((Backend::Cpu, None)),
        DeviceArg::Cuda => {
            let dev = Device::new(0)
                .with_context(|| format!("`moe {command} --device cuda` needs a usable GPU"))?;
            Ok((Backend::Cuda(dev), None))
        }
        DeviceArg::Auto => match Device::new(0) {
            Ok(dev) => Ok((Backend::Cuda(dev), None)),
            Err(e) => Ok((Backend::Cpu, Some(format!("no usable GPU: {e}")))),
        },
    }
}

/// Layer `layer` of `model` on the CPU, with weights (the router's, for quantized experts, which stay
/// quantized) and activations of type `T`, on `x` `[t, H]`, its expert GEMMs on `backend`: the
/// output widened to `f32`, and the routing.
pub fn cpu_forward<T: Element>(
    model: &HfModel,
    layer: usize,
    x: &[T],
    t: usize,
    backend: CpuBackend,
) -> Result<(Vec<f32>, Routing)> {
    let x = MatRef::new("hidden_states", x, t, model.config().moe.hidden_size)?;
    let loading = || format!("cannot load layer {layer} in {}", T::DTYPE);
    let failed = || format!("layer {layer} failed in {}", T::DTYPE);
    let out = if model.is_quantized() {
        let cpu = model
            .quantized_cpu_layer::<T>(layer)
            .with_context(loading)?
            .with_backend(backend);
        cpu.forward(x).with_context(failed)?
    } else {
        let cpu = model
            .cpu_layer::<T>(layer)
            .with_context(loading)?
            .with_backend(backend);
        cpu.forward(x).with_context(failed)?
    };
    Ok((out.hidden.iter().map(|v| v.to_f32()).collect(), out.routing))
}

/// Layer `layer` of `model` on the GPU with weights and activations of type `T`, on `x` `[t, H]`
/// ([`gpu_forward`]); quantized (FP8) experts stay quantized and run on the FP8 GEMM.
pub fn gpu_layer_forward<T: GpuCapable>(
    dev: &Device,
    model: &HfModel,
    layer: usize,
    x: &[T],
    t: usize,
) -> Result<(Vec<f32>, Routing)> {
    let loading = || format!("cannot load layer {layer} in {}", T::DTYPE);
    let failed = || format!("layer {layer} failed on the GPU");
    if model.is_quantized() {
        let cpu = model
            .quantized_cpu_layer::<T>(layer)
            .with_context(loading)?;
        T::gpu_forward(dev, &cpu, x, t).with_context(failed)
    } else {
        let cpu = model.cpu_layer::<T>(layer).with_context(loading)?;
        T::gpu_forward(dev, &cpu, x, t).with_context(failed)
    }
}

/// Run `cpu`'s layer on the GPU: upload its weights, run one forward on `x` `[t, H]`, check the
/// device-side status, and return the output widened to f32 with the routing decision.
pub fn gpu_forward<T, H>(
    dev: &Device,
    cpu: &CpuMoeLayer<T, H>,
    x: &[T],
    t: usize,
) -> Result<(Vec<f32>, Routing)>
where
    T: GemmElement + GemmOutput<T> + ValidAsZeroBits,
    f32: GemmOutput<T>,
    H: UploadExperts,
{
    let cfg = cpu.config();
    let layer =
        GpuMoeLayer::upload(dev, cfg, cpu.weights()).context("cannot upload the weights")?;
    let stream = dev.stream();
    let xd = stream.clone_htod(x)?;
    let mut out = stream.alloc_zeros::<T>(x.len().max(1))?;
    let mut ws = layer.workspace(dev, t)?;
    layer.forward(
        dev,
        &xd.as_view(),
        t,
        &mut ws,
        &mut out.slice_mut(..x.len()),
    )?;
    ws.status()
        .check()
        .context("the GPU forward reported bad input")?;
    let hidden: Vec<T> = stream.clone_dtoh(&out.slice(..x.len()))?;
    let k = cfg.routing.top_k;
    let ids: Vec<i32> = stream.clone_dtoh(&ws.topk_ids().slice(..t * k))?;
    let weights: Vec<f32> = stream.clone_dtoh(&ws.topk_weights().slice(..t * k))?;
    let routing = Routing::from_parts(t, k, ids, weights, cfg.routing.num_experts)?;
    Ok((hidden.iter().map(|v| v.to_f32()).collect(), routing))
}

/// An element type `moe` computes in, with its GPU path: bf16 and f16 run on the tensor-core kernels,
/// f32 only on the CPU.
pub trait GpuCapable: Element + GpuElement {
    /// [`gpu_forward`] for this type, or an error saying the GPU cannot compute in it.
    fn gpu_forward<H: UploadExperts>(
        dev: &Device,
        cpu: &CpuMoeLayer<Self, H>,
        x: &[Self],
        t: usize,
    ) -> Result<(Vec<f32>, Routing)>;
}

impl GpuCapable for f32 {
    fn gpu_forward<H: UploadExperts>(
        _: &Device,
        _: &CpuMoeLayer<f32, H>,
        _: &[f32],
        _: usize,
    ) -> Result<(Vec<f32>, Routing)> {
        bail!("the GPU kernels compute in bf16 or f16 (tensor cores); use --dtype bf16, --dtype f16 or --device cpu")
    }
}

impl GpuCapable for half::bf16 {
    fn gpu_forward<H: UploadExperts>(
        dev: &Device,
        cpu: &CpuMoeLayer<Self, H>,
        x: &[Self],
        t: usize,
    ) -> Result<(Vec<f32>, Routing)> {
        gpu_forward(dev, cpu, x, t)
    }
}

impl GpuCapable for half::f16 {
    fn gpu_forward<H: UploadExperts>(
        dev: &Device,
        cpu: &CpuMoeLayer<Self, H>,
        x: &[Self],
        t: usize,
    ) -> Result<(Vec<f32>, Routing)> {
        gpu_forward(dev, cpu, x, t)
    }
}

/// A small, fast generator of random test data (xorshift64*): values uniform in `[-scale, scale)`.
pub struct FastRng(u64);

impl FastRng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        FastRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// `n` values uniform in `[-scale, scale)`, rounded to `T`. Generated as [`FastRng::fill`]
    /// does: the result depends only on the seed, not on the number of threads.
    pub fn values<T: Element>(&mut self, n: usize, scale: f32) -> Vec<T> {
        self.fill(n, |rng| T::from_f32(rng.uniform(scale)))
    }

    /// `n` values of `gen`, in fixed chunks of 2^20 values, each from its own generator seeded by
    /// this one and the chunk's index, spread over the machine's cores: the result depends only on
    /// the seed, not on the number of threads.
    pub fn fill<T: Clone + Default + Send>(
        &mut self,
        n: usize,
        gen: impl Fn(&mut FastRng) -> T + Sync,
    ) -> Vec<T> {
        const CHUNK: usize = 1 << 20;
        let base = self.next_u64();
        let mut out = vec![T::default(); n];
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let per_thread = n.div_ceil(CHUNK).div_ceil(threads).max(1) * CHUNK;
        let gen = &gen;
        std::thread::scope(|s| {
            for (w, part) in out.chunks_mut(per_thread).enumerate() {
                s.spawn(move || {
                    for (c, chunk) in part.chunks_mut(CHUNK).enumerate() {
                        let index = (w * per_thread / CHUNK + c) as u64;
                        let mut rng =
                            FastRng::new(base ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
                        for v in chunk {
                            *v = gen(&mut rng);
                        }
                    }
                });
            }
        });
        out
    }

    /// The next raw 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// One value uniform in `[-scale, scale)`.
    pub fn uniform(&mut self, scale: f32) -> f32 {
        let bits = self.next_u64() >> 40;
        (bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
}

/// Relative L2 error `|got - want| / |want|` over `(got, want)` pairs, in f64 (absolute when `want` is
/// zero).
pub fn rel_l2(pairs: impl IntoIterator<Item = (f64, f64)>) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (g, w) in pairs {
        num += (g - w) * (g - w);
        den += w * w;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
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
