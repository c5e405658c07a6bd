//! The PyTorch peers: `scripts/bench_torch.py` times the Hugging Face-style eager MoE block (and, on a
//! GPU, `torch._grouped_mm`) on the same shapes and writes JSON that the report merges.

use anyhow::{bail, Context, Result};
use moe_kernels::{GroupScore, MoeConfig, ScoringFunc};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::measure::Stats;

/// Exit status of the script when PyTorch cannot be imported.
const NO_TORCH_EXIT: i32 = 3;

/// One timing from the script.
#[derive(Debug, Deserialize)]
pub struct TorchRecord {
    /// Token count.
    pub tokens: usize,
    /// Implementation name (`torch hf-eager`, `torch grouped_mm`).
    pub implementation: String,
    /// Median time in microseconds.
    pub median_us: f64,
    /// Fastest run.
    pub min_us: f64,
    /// Slowest run.
    pub max_us: f64,
    /// Timed runs.
    pub samples: usize,
}

impl TorchRecord {
    /// The timing as statistics.
    pub fn stats(&self) -> Stats {
        Stats {
            median_us: self.median_us,
            min_us: self.min_us,
            max_us: self.max_us,
            samples: self.samples,
        }
    }
}

/// The script's output file.
#[derive(Debug, Deserialize)]
pub struct TorchRun {
    /// `torch.__version__`.
    pub torch_version: String,
    /// What ran it (`cpu`, or the GPU's name).
    pub device: String,
    /// The timings.
    pub records: Vec<TorchRecord>,
    /// Implementations the script could not run, with the reason.
    #[serde(default)]
    pub skipped: Vec<String>,
}

/// Where to find the script and the Python that runs it.
pub struct TorchPeer {
    /// The interpreter.
    pub python: PathBuf,
    /// `scripts/bench_torch.py`.
    pub script: PathBuf,
}

impl TorchPeer {
    /// `python`: the `--python` argument, else `MOE_BENCH_PYTHON`, else the project's bench environment
    /// `.toolchain/bench-venv` (made by `scripts/install-bench-deps.sh`), else `python3`. The script is
    /// `scripts/bench_torch.py` under the current directory, else under the source tree.
    pub fn locate(python: Option<PathBuf>) -> TorchPeer {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = python
            .or_else(|| std::env::var_os("MOE_BENCH_PYTHON").map(PathBuf::from))
            .or_else(|| {
                [Path::new("."), root]
                    .iter()
                    .map(|d| d.join(".toolchain/bench-venv/bin/python"))
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| PathBuf::from("python3"));
        let script = [Path::new("."), root]
            .iter()
            .map(|d| d.join("scripts/bench_torch.py"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("scripts/bench_torch.py"));
        TorchPeer { python, script }
    }

    /// Time the peers for `cfg` at `tokens` on `device` (`cpu` or `cuda`), for at least `min_seconds`
    /// and `min_samples` runs (the script's default when `None`), writing the script's JSON to `out`.
    /// `Ok(Err(reason))` when PyTorch is not installed.
    pub fn run(
        &self,
        cfg: &MoeConfig,
        tokens: &[usize],
        device: &str,
        min_seconds: f64,
        min_samples: Option<usize>,
        out: &Path,
    ) -> Result<Result<TorchRun, String>> {
        let r = &cfg.routing;
        let join = |v: &[usize]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let scoring = match r.scoring {
            ScoringFunc::Softmax => "softmax",
            ScoringFunc::Sigmoid => "sigmoid",
            ScoringFunc::SparseMixer { .. } => {
                return Ok(Err("the PyTorch peer has no sparse mixer routing".into()))
            }
        };
        if r.scale_input {
            return Ok(Err("the PyTorch peer does not scale expert inputs".into()));
        }
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script)
            .args(["--device", device])
            .args(["--hidden", &cfg.hidden_size.to_string()])
            .args(["--inter", &cfg.intermediate_size.to_string()])
            .args(["--experts", &r.num_experts.to_string()])
            .args(["--topk", &r.top_k.to_string()])
            .args(["--scoring", scoring])
            .args(["--scale", &r.routed_scaling_factor.to_string()])
            .args(["--tokens", &join(tokens)])
            .args(["--min-seconds", &min_seconds.to_string()])
            .arg("--out")
            .arg(out);
        if let Some(n) = min_samples {
            cmd.args(["--min-samples", &n.to_string()]);
        }
        if r.renormalize {
            cmd.arg("--renorm");
        }
        if r.correction_bias {
            cmd.arg("--bias");
        }
        if let Some(g) = r.grouping {
            cmd.args(["--n-group", &g.n_group.to_string()])
                .args(["--topk-group", &g.topk_group.to_string()])
                .args([
                    "--group-score",
                    match g.score {
                        GroupScore::Max => "max",
                        GroupScore::SumTop2 => "sum_top2",
                    },
                ]);
        }
        if !cfg.activation.gated {
            bail!("the PyTorch peer only implements gated experts");
        }
        for s in &cfg.shared_experts {
            cmd.args(["--shared-inter", &s.intermediate_size.to_string()]);
            if s.sigmoid_gate {
                cmd.arg("--shared-gate");
            }
        }
        let output = match cmd.output() {
            Ok(o) => o,
            Err(e) => return Ok(Err(format!("cannot start {}: {e}", self.python.display()))),
        };
        if output.status.code() == Some(NO_TORCH_EXIT) {
            let why = String::from_utf8_lossy(&output.stderr);
            return Ok(Err(why.trim().to_string()));
        }
        if !output.status.success() {
            bail!(
                "{} {} failed ({}): {}",
                self.python.display(),
                self.script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let text = std::fs::read_to_string(out)
            .with_context(|| format!("cannot read {}", out.display()))?;
        let run: TorchRun = serde_json::from_str(&text)
            .with_context(|| format!("malformed peer results in {}", out.display()))?;
        Ok(Ok(run))
    }
}
