//! `moe bench`: how fast each stage and the whole MoE layer run, against what, and how close to the
//! hardware, on the standard model shapes and token counts.
//!
//! For each preset and token count it times every stage alone (routing, permutation, up GEMM with the
//! fused activation, down GEMM, combine) and the whole layer, reports the median and spread, useful
//! TFLOP/s and GB/s and their percentage of ceilings measured in the same run, runs the PyTorch peers
//! (`scripts/bench_torch.py`) on the same shapes, and writes `results.json`, `results.md` and SVG plots.
//!
//! On a CPU-only machine it times the CPU path (smaller token counts by default) against the Hugging
//! Face-style block run by PyTorch on the CPU; with a GPU it times the CUDA kernels.

mod cpu;
mod gpu;
mod measure;
mod presets;
mod report;
mod torch;

use anyhow::{bail, Context, Result};
use half::bf16;
use indicatif::{ProgressBar, ProgressStyle};
use moe_kernels::cpu::fast::{CpuBackend, Isa};
use moe_kernels::cpu::layer::CpuMoeLayer;
use moe_kernels::gpu::{GpuMoeLayer, UploadExperts};
use moe_kernels::MoeError;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::common::{resolve_device, Backend, CpuBackendArg, DeviceArg};
use gpu::StageWeights;
use measure::{Budget, Stage, Stats};
use presets::{Preset, Weights};
use report::{Ceilings, Record, Report};

/// Token counts timed on the CPU when `--tokens` is not given.
const CPU_TOKENS: &[usize] = &[1, 4, 16];
/// Token counts timed on a GPU when `--tokens` is not given.
const GPU_TOKENS: &[usize] = &[
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384,
];

/// `moe bench` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Presets to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    preset: Vec<Preset>,
    /// Token counts, comma-separated (default: 1,4,16 on the CPU; 1,2,4,...,16384 on a GPU).
    #[arg(long, value_delimiter = ',')]
    tokens: Vec<usize>,
    /// Directory for results.json, results.md and the plots.
    #[arg(long, value_name = "DIR", default_value = "bench-out")]
    out: PathBuf,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Minimum measuring time per configuration, in seconds (default: 0.3 on the CPU, 0.05 on a GPU;
    /// at least --min-samples runs are always timed).
    #[arg(long)]
    min_seconds: Option<f64>,
    /// Minimum timed runs per configuration, after one untimed warm-up run (default: 3 on the CPU, 10
    /// on a GPU; also passed to the PyTorch peers when given). 1 with `--min-seconds 0` is a smoke
    /// run: every configuration checked and run twice, its timing a single sample.
    #[arg(long)]
    min_samples: Option<usize>,
    /// Skip the PyTorch peers.
    #[arg(long)]
    no_peers: bool,
    /// The Python interpreter for the PyTorch peers (default: MOE_BENCH_PYTHON, then
    /// .toolchain/bench-venv/bin/python, then python3).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// The CPU layer's expert GEMMs: the fast kernels or the reference (`--device cpu` only).
    #[arg(long, value_enum, default_value_t = CpuBackendArg::Fast)]
    cpu_backend: CpuBackendArg,
    /// How the expert matrices are stored (default: as each preset's model ships them: fp8 for
    /// deepseek-v3 and kimi-k2, mxfp4 for gpt-oss-120b, bf16 for the others). Quantized weights are
    /// random codes with scales; their GEMMs' GB/s count the bytes stored (codes and scales).
    #[arg(long, value_enum)]
    weights: Option<Weights>,
    /// Seed of the random weights and inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Where the benchmark runs.
enum Side {
    Cpu,
    Gpu(Box<gpu::Gpu>),
}

impl Side {
    /// This crate's implementation name in the results.
    fn ours(&self) -> &'static str {
        match self {
            Side::Cpu => "moe-kernels cpu",
            Side::Gpu(_) => "moe-kernels cuda",
        }
    }

    /// The `--device` of the PyTorch peers.
    fn torch_device(&self) -> &'static str {
        match self {
            Side::Cpu => "cpu",
            Side::Gpu(_) => "cuda",
        }
    }
}

/// Run the command.
pub fn main(args: Args) -> Result<()> {
    let (backend, note) = resolve_device(args.device, "bench")?;
    if let Some(note) = &note {
        eprintln!("moe bench: running on the CPU ({note})");
    }
    let presets = if args.preset.is_empty() {
        Preset::ALL.to_vec()
    } else {
        args.preset.clone()
    };
    let mut notes = Vec::new();
    let (mut side, default_tokens, budget) = match backend {
        Backend::Cpu => (
            Side::Cpu,
            CPU_TOKENS,
            Budget {
                min_samples: args.min_samples.unwrap_or(3),
                min_seconds: args.min_seconds.unwrap_or(0.3),
                max_samples: 1000,
            },
        ),
        Backend::Cuda(dev) => {
            let (g, blas_note) = gpu::Gpu::new(dev)?;
            notes.extend(blas_note);
            (
                Side::Gpu(Box::new(g)),
                GPU_TOKENS,
                Budget {
                    min_samples: args.min_samples.unwrap_or(10),
                    min_seconds: args.min_seconds.unwrap_or(0.05),
                    max_samples: 1000,
                },
            )
        }
    };
    let tokens = if args.tokens.is_empty() {
        default_tokens.to_vec()
    } else {
        args.tokens.clone()
    };
    if tokens.contains(&0) {
        bail!("--tokens values must be at least 1");
    }
    if !(budget.min_seconds >= 0.0 && budget.min_seconds.is_finite()) {
        bail!("--min-seconds must be a finite, non-negative number");
    }
    if budget.min_samples == 0 {
        bail!("--min-samples must be at least 1");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;

    let (device, ceilings) = match &mut side {
        Side::Cpu => {
            report_notes_cpu(&mut notes, args.cpu_backend.into());
            (cpu_name(), cpu_ceilings())
        }
        Side::Gpu(g) => (g.name()?, g.ceilings(budget)?),
    };
    let mut report = Report {
        date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        commit: commit(),
        device,
        dtype: "bf16".into(),
        ceilings,
        records: Vec::new(),
        notes,
        skipped: Vec::new(),
    };
    let peer = (!args.no_peers).then(|| torch::TorchPeer::locate(args.python.clone()));
    let progress = ProgressBar::new((presets.len() * tokens.len()) as u64);
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    progress.enable_steady_tick(Duration::from_millis(200));
    let mut worst_check = 0f64;

    for preset in presets {
        let cfg = preset.config();
        let weights = args.weights.unwrap_or_else(|| preset.shipped_weights());
        let need = cpu::weight_bytes(&cfg, weights);
        if let Some(avail) = available_memory() {
            if need as f64 > 0.7 * avail as f64 {
                report.skipped.push(format!(
                    "{}: its {} weights take {:.1} GB, more than 70% of the {:.1} GB of host \
                     memory available",
                    preset.name(),
                    weights.name(),
                    need as f64 / 1e9,
                    avail as f64 / 1e9
                ));
                progress.inc(tokens.len() as u64);
                continue;
            }
        }
        progress.set_message(format!(
            "{}: generating {} weights",
            preset.name(),
            weights.name()
        ));
        let mut run = PresetRun {
            side: &mut side,
            report: &mut report,
            preset,
            weights,
            tokens: &tokens,
            seed: args.seed,
            budget,
            progress: &progress,
            worst_check: &mut worst_check,
        };
        match weights.quantized() {
            None => run.layer(
                CpuMoeLayer::new(cfg.clone(), cpu::random_weights(&cfg, args.seed))?
                    .with_backend(args.cpu_backend.into()),
            )?,
            Some(format) => run.layer(
                CpuMoeLayer::new(
                    cfg.clone(),
                    cpu::random_quant_weights(&cfg, args.seed, format)?,
                )?
                .with_backend(args.cpu_backend.into()),
            )?,
        }
        if weights != Weights::Bf16 && peer.is_some() {
            report.skipped.push(format!(
                "PyTorch peers for {}: they run bf16 weights only, not {}",
                preset.name(),
                weights.name()
            ));
            continue;
        }
        if let Some(peer) = &peer {
            progress.set_message(format!("{}: PyTorch peers", preset.name()));
            let file = args.out.join(format!("torch-{}.json", preset.name()));
            match peer.run(
                &cfg,
                &tokens,
                side.torch_device(),
                budget.min_seconds,
                args.min_samples,
                &file,
            )? {
                Ok(run) => {
                    let note = format!(
                        "PyTorch peers: torch {} on {}, same shapes, random bf16 weights",
                        run.torch_version, run.device
                    );
                    if !report.notes.contains(&note) {
                        report.notes.push(note);
                    }
                    report.skipped.extend(
                        run.skipped
                            .iter()
                            .map(|s| format!("{}: {s}", preset.name())),
                    );
                    for r in &run.records {
                        // The peers run the whole block; count its work with every token's k
                        // experts distinct (as many experts touched as tokens * k allows).
                        let touched = cfg.routing.num_experts.min(r.tokens * cfg.routing.top_k);
                        let work =
                            measure::work(&cfg, Stage::Layer, r.tokens, touched, Weights::Bf16);
                        report.records.push(Record::new(
                            preset.name(),
                            r.tokens,
                            Weights::Bf16.name(),
                            &r.implementation,
                            Stage::Layer.name(),
                            r.stats(),
                            work,
                            &report.ceilings,
                        ));
                    }
                }
                Err(why) => report
                    .skipped
                    .push(format!("PyTorch peers for {}: {why}", preset.name())),
            }
        }
    }
    progress.finish_and_clear();
    if let Side::Gpu(_) = side {
        report.notes.push(format!(
            "every timed GPU configuration was first checked against the CPU reference on sampled \
             tokens: worst relative L2 error {worst_check:.2e}"
        ));
    }

    report.compare_with_peers();
    print!("{}", report.table());
    for why in &report.skipped {
        println!("not run: {why}");
    }
    let plots = report.write(&args.out)?;
    println!(
        "wrote {}/results.json, results.md and {} plots ({})",
        args.out.display(),
        plots.len(),
        side.ours()
    );
    Ok(())
}

/// One preset's timings at every token count, into the report.
struct PresetRun<'a> {
    side: &'a mut Side,
    report: &'a mut Report,
    preset: Preset,
    weights: Weights,
    tokens: &'a [usize],
    seed: u64,
    budget: Budget,
    progress: &'a ProgressBar,
    worst_check: &'a mut f64,
}

impl PresetRun<'_> {
    /// Time `cpu_layer` (on a GPU, its upload) at every token count. On a GPU, weights the GPU
    /// kernels do not run ([`MoeError::Unsupported`]) are reported as not run.
    fn layer<S: UploadExperts>(&mut self, cpu_layer: CpuMoeLayer<bf16, S>) -> Result<()>
    where
        S::Gpu: StageWeights,
    {
        let (preset, tokens) = (self.preset, self.tokens);
        let cfg = cpu_layer.config().clone();
        let gpu_layer = match &*self.side {
            Side::Cpu => None,
            Side::Gpu(g) => match GpuMoeLayer::upload(&g.dev, &cfg, cpu_layer.weights()) {
                Ok(layer) => Some(layer),
                Err(MoeError::Unsupported(why)) => {
                    self.report.skipped.push(format!(
                        "{} with {} weights: {why}",
                        preset.name(),
                        self.weights.name()
                    ));
                    self.progress.inc(tokens.len() as u64);
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            },
        };
        for &t in tokens {
            self.progress
                .set_message(format!("{}: {t} tokens", preset.name()));
            let seed = self.seed ^ (t as u64).wrapping_mul(0x9E37_79B9);
            let (report, weights) = (&mut *self.report, self.weights);
            let mut push = |implementation: &str, stage: Stage, stats: Stats, touched: usize| {
                let work = measure::work(&cfg, stage, t, touched, weights);
                report.records.push(Record::new(
                    preset.name(),
                    t,
                    weights.name(),
                    implementation,
                    stage.name(),
                    stats,
                    work,
                    &report.ceilings,
                ));
            };
            match (&mut *self.side, &gpu_layer) {
                (Side::Gpu(g), Some(layer)) => {
                    match gpu::bench_tokens(g, &cpu_layer, layer, t, seed, self.budget) {
                        Ok(r) => {
                            *self.worst_check = self.worst_check.max(r.check_error);
                            for (stage, stats) in r.stages {
                                push("moe-kernels cuda", stage, stats, r.touched);
                            }
                            if let Some(s) = r.graph {
                                push("moe-kernels cuda graph", Stage::Layer, s, r.touched);
                            }
                            for (name, pair) in [
                                ("cuBLAS per expert", r.cublas_per_expert),
                                ("cuBLAS dense (equal FLOPs)", r.cublas_dense),
                            ] {
                                if let Some((up, down)) = pair {
                                    push(name, Stage::UpGemm, up, r.touched);
                                    push(name, Stage::DownGemm, down, r.touched);
                                }
                            }
                        }
                        Err(e) => self
                            .report
                            .skipped
                            .push(format!("{} at {t} tokens: {e:#}", preset.name())),
                    }
                }
                _ => {
                    let (timings, touched) = cpu::bench_tokens(&cpu_layer, t, seed, self.budget)?;
                    for (stage, stats) in timings {
                        push("moe-kernels cpu", stage, stats, touched);
                    }
                }
            }
            self.progress.inc(1);
        }
        Ok(())
    }
}

/// The CPU's copy bandwidth from memory: a buffer of twice the last-level cache (at least 256 MiB)
/// copied repeatedly, bytes read plus written per second. A smaller buffer would be partly served
/// by a large cache (this project's machine reports 480 MiB of L3) and overstate what streaming
/// weights from memory can reach.
fn cpu_ceilings() -> Ceilings {
    let llc = last_level_cache_bytes();
    let bytes = (2 * llc.unwrap_or(0)).max(256 << 20);
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let budget = Budget {
        min_samples: 5,
        min_seconds: 0.5,
        max_samples: 50,
    };
    let stats = measure::time_host(budget, || {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    });
    let cache = match llc {
        Some(b) => format!("twice the {} MiB last-level cache", b >> 20),
        None => "no cache size found".into(),
    };
    Ceilings {
        copy_gbps: 2.0 * bytes as f64 / (stats.median_us * 1e-6) / 1e9,
        gemm_tflops: None,
        method: format!(
            "CPU: median of {} MiB memcpy ({cache}), one thread",
            bytes >> 20
        ),
    }
}

/// The size of CPU 0's largest cache level, from Linux's sysfs (`None` elsewhere, or when it does
/// not say).
fn last_level_cache_bytes() -> Option<usize> {
    let dirs = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dirs.filter_map(|d| {
        let path = d.ok()?.path();
        let level: u32 = std::fs::read_to_string(path.join("level"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let size = std::fs::read_to_string(path.join("size")).ok()?;
        let size = size.trim();
        let (digits, unit) = match size.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((i, _)) => size.split_at(i),
            None => (size, ""),
        };
        let scale = match unit {
            "" => 1,
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            _ => return None,
        };
        Some((level, digits.parse::<usize>().ok()? * scale))
    })
    .max()
    .map(|(_, bytes)| bytes)
}

/// The CPU backend of the expert GEMMs, and the kernels' build, as a note of the report.
fn report_notes_cpu(notes: &mut Vec<String>, backend: CpuBackend) {
    notes.push(match backend {
        CpuBackend::Fast => format!(
            "CPU expert GEMMs: the fast backend, {} kernels, {} threads",
            Isa::best().name(),
            rayon::current_num_threads()
        ),
        CpuBackend::Reference => "CPU expert GEMMs: the reference backend".into(),
    });
}

/// `MemAvailable` from /proc/meminfo, in bytes, where the system has it.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The CPU model and the number of cores available.
fn cpu_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model} ({cores} cores available)")
}

/// The source commit: `MOE_BENCH_COMMIT` (set where the binary was built elsewhere), else git.
fn commit() -> String {
    if let Ok(c) = std::env::var("MOE_BENCH_COMMIT") {
        return c;
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
