//! The benchmark's results: the table printed at the end, `results.json`, `results.md` and SVG plots.

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::measure::{Stats, Work};

/// The hardware limits measured in the same run.
#[derive(Clone, Debug, Serialize)]
pub struct Ceilings {
    /// Copy bandwidth (bytes read plus bytes written per second), GB/s.
    pub copy_gbps: f64,
    /// Dense GEMM rate at the grouped GEMM's size (cuBLAS on a GPU), TFLOP/s; `None` where not measured.
    pub gemm_tflops: Option<f64>,
    /// How they were measured.
    pub method: String,
}

/// One timed (preset, tokens, implementation, stage).
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// Preset name.
    pub preset: String,
    /// Token count.
    pub tokens: usize,
    /// How the expert matrices were stored: `bf16`, `fp8` or `mxfp4` (the work's weight bytes
    /// are those stored: codes and scales).
    pub weights: String,
    /// Who ran it: `moe-kernels cpu`, `moe-kernels cuda`, or a peer.
    pub implementation: String,
    /// Stage name (`layer` for peers, which run the whole block).
    pub stage: String,
    /// Timing.
    #[serde(flatten)]
    pub stats: Stats,
    /// Useful work.
    pub work: Work,
    /// Useful TFLOP/s at the median time.
    pub tflops: f64,
    /// Useful GB/s at the median time.
    pub gbps: f64,
    /// GB/s as a percentage of the copy bandwidth.
    pub pct_copy_bandwidth: f64,
    /// TFLOP/s as a percentage of the GEMM ceiling, where there is one.
    pub pct_gemm_ceiling: Option<f64>,
    /// For this crate's layer rows: each peer's median time divided by this one (above 1: this crate
    /// is faster).
    pub speedup_over: BTreeMap<String, f64>,
}

impl Record {
    /// A record with its rates derived from `stats`, `work` and `ceilings`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        preset: &str,
        tokens: usize,
        weights: &str,
        implementation: &str,
        stage: &str,
        stats: Stats,
        work: Work,
        ceilings: &Ceilings,
    ) -> Record {
        let secs = stats.median_us * 1e-6;
        let tflops = work.flops / secs / 1e12;
        let gbps = work.bytes / secs / 1e9;
        Record {
            preset: preset.into(),
            tokens,
            weights: weights.into(),
            implementation: implementation.into(),
            stage: stage.into(),
            stats,
            work,
            tflops,
            gbps,
            pct_copy_bandwidth: 100.0 * gbps / ceilings.copy_gbps,
            pct_gemm_ceiling: ceilings
                .gemm_tflops
                .filter(|_| work.flops > 0.0)
                .map(|c| 100.0 * tflops / c),
            speedup_over: BTreeMap::new(),
        }
    }

    /// The speed-ups over peers, as `name 1.23x, ...`.
    fn peers_text(&self) -> String {
        let peers: Vec<String> = self
            .speedup_over
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}x"))
            .collect();
        peers.join(", ")
    }

    /// Whether this row is one of this crate's implementations.
    pub fn is_ours(&self) -> bool {
        self.implementation.starts_with("moe-kernels")
    }

    /// The larger of the two ceiling percentages: how close this stage is to its limit.
    pub fn pct_of_ceiling(&self) -> f64 {
        self.pct_copy_bandwidth
            .max(self.pct_gemm_ceiling.unwrap_or(0.0))
    }
}

/// Everything one `moe bench` run produced.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When it ran (UTC, RFC 3339).
    pub date: String,
    /// The commit of the source tree, where git could tell.
    pub commit: String,
    /// What it ran on.
    pub device: String,
    /// Element type of the activations and the router (each record says how the experts were
    /// stored).
    pub dtype: String,
    /// The ceilings measured in the same run.
    pub ceilings: Ceilings,
    /// Every timing.
    pub records: Vec<Record>,
    /// Facts about the run worth keeping with the numbers (peer versions, substitutions).
    pub notes: Vec<String>,
    /// What did not run, and why.
    pub skipped: Vec<String>,
}

impl Report {
    /// Fill `speedup_over` of this crate's rows (implementations named `moe-kernels ...`) from every
    /// other implementation's row of the same preset, token count and stage.
    pub fn compare_with_peers(&mut self) {
        let peers: Vec<(String, usize, String, String, String, f64)> = self
            .records
            .iter()
            .filter(|r| !r.is_ours())
            .map(|r| {
                (
                    r.preset.clone(),
                    r.tokens,
                    r.weights.clone(),
                    r.stage.clone(),
                    r.implementation.clone(),
                    r.stats.median_us,
                )
            })
            .collect();
        for r in self.records.iter_mut().filter(|r| r.is_ours()) {
            for (preset, tokens, weights, stage, name, us) in &peers {
                if *preset == r.preset
                    && *tokens == r.tokens
                    && *weights == r.weights
                    && *stage == r.stage
                {
                    r.speedup_over.insert(name.clone(), us / r.stats.median_us);
                }
            }
        }
    }

    /// The results table, one row per record.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<14} {:>6} {:<7} {:<22} {:<9} {:>12} {:>7} {:>9} {:>9} {:>7}  peers (their time / ours)",
            "preset",
            "tokens",
            "weights",
            "implementation",
            "stage",
            "median",
            "spread",
            "TFLOP/s",
            "GB/s",
            "%ceil"
        );
        for r in &self.records {
            let spread = 100.0 * (r.stats.max_us - r.stats.min_us) / r.stats.median_us;
            let _ = writeln!(
                s,
                "{:<14} {:>6} {:<7} {:<22} {:<9} {:>12} {:>6.1}% {:>9} {:>9.1} {:>6.1}%  {}",
                r.preset,
                r.tokens,
                r.weights,
                r.implementation,
                r.stage,
                format_us(r.stats.median_us),
                spread,
                format_tflops(r.tflops),
                r.gbps,
                r.pct_of_ceiling(),
                r.peers_text()
            );
        }
        s
    }

    /// Write `results.json`, `results.md` and the plots into `dir`.
    pub fn write(&self, dir: &Path) -> Result<Vec<String>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        write(&dir.join("results.json"), &json)?;
        let plots = self.plot(dir)?;
        write(&dir.join("results.md"), &self.markdown(&plots))?;
        Ok(plots)
    }

    fn markdown(&self, plots: &[String]) -> String {
        let mut s = String::new();
        let c = &self.ceilings;
        let _ = writeln!(s, "# moe bench\n");
        let _ = writeln!(
            s,
            "- date: {}\n- commit: {}\n- device: {}\n- dtype: {}",
            self.date, self.commit, self.device, self.dtype
        );
        let _ = writeln!(
            s,
            "- ceilings (measured in this run, {}): copy {:.1} GB/s{}\n",
            c.method,
            c.copy_gbps,
            c.gemm_tflops
                .map(|t| format!(", GEMM {t:.1} TFLOP/s"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "| preset | tokens | weights | implementation | stage | median | min | max | TFLOP/s | GB/s | % copy BW | % GEMM | peers (their time / ours) |"
        );
        let _ = writeln!(
            s,
            "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for r in &self.records {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {} |",
                r.preset,
                r.tokens,
                r.weights,
                r.implementation,
                r.stage,
                format_us(r.stats.median_us),
                format_us(r.stats.min_us),
                format_us(r.stats.max_us),
                format_tflops(r.tflops),
                r.gbps,
                r.pct_copy_bandwidth,
                r.pct_gemm_ceiling
                    .map(|p| format!("{p:.1}"))
                    .unwrap_or_else(|| "-".into()),
                r.peers_text()
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\n## Notes\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(s, "\n## Not run\n");
            for why in &self.skipped {
                let _ = writeln!(s, "- {why}");
            }
        }
        if !plots.is_empty() {
            let _ = writeln!(s, "\n## Plots\n");
            for p in plots {
                let _ = writeln!(s, "![{p}]({p})");
            }
        }
        s
    }

    /// Per preset: layer time against tokens (one line per implementation) and % of ceiling against
    /// tokens (one line per stage of this crate). Returns the file names written.
    fn plot(&self, dir: &Path) -> Result<Vec<String>> {
        let mut files = Vec::new();
        let mut presets: Vec<&str> = self.records.iter().map(|r| r.preset.as_str()).collect();
        presets.dedup();
        for preset in presets {
            let rows: Vec<&Record> = self.records.iter().filter(|r| r.preset == preset).collect();
            let layer_lines = lines(
                &rows,
                |r| r.stage == "layer",
                |r| r.implementation.clone(),
                |r| r.stats.median_us,
            );
            let name = format!("{preset}-layer-time.svg");
            if plot_lines(
                &dir.join(&name),
                &format!("{preset}: whole layer"),
                "median time (us)",
                &layer_lines,
            )? {
                files.push(name);
            }
            let ceiling_lines = lines(
                &rows,
                Record::is_ours,
                |r| format!("{} {}", r.implementation, r.stage),
                Record::pct_of_ceiling,
            );
            let name = format!("{preset}-pct-of-ceiling.svg");
            if plot_lines(
                &dir.join(&name),
                &format!("{preset}: % of the measured ceiling"),
                "% of ceiling",
                &ceiling_lines,
            )? {
                files.push(name);
            }
        }
        Ok(files)
    }
}

/// Group records into named series of (tokens, value), sorted by tokens.
fn lines(
    rows: &[&Record],
    keep: impl Fn(&Record) -> bool,
    series: impl Fn(&Record) -> String,
    value: impl Fn(&Record) -> f64,
) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows.iter().filter(|r| keep(r)) {
        out.entry(series(r))
            .or_default()
            .push((r.tokens as f64, value(r)));
    }
    for points in out.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// A log-log line plot; `false` (nothing written) when there is nothing positive to draw.
fn plot_lines(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &BTreeMap<String, Vec<(f64, f64)>>,
) -> Result<bool> {
    let points = || series.values().flatten().filter(|p| p.1 > 0.0);
    let (Some(x_max), Some(y_min), Some(y_max)) = (
        points().map(|p| p.0).max_by(f64::total_cmp),
        points().map(|p| p.1).min_by(f64::total_cmp),
        points().map(|p| p.1).max_by(f64::total_cmp),
    ) else {
        return Ok(false);
    };
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (1f64..(x_max * 1.5).max(2.0)).log_scale(),
                ((y_min / 1.5)..(y_max * 1.5)).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("tokens")
            .y_desc(y_desc)
            .draw()?;
        for (n, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(n).stroke_width(2);
            let pts: Vec<(f64, f64)> = pts.iter().copied().filter(|p| p.1 > 0.0).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))?;
    Ok(true)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A TFLOP/s figure with three significant digits (`-` for stages that do no arithmetic).
fn format_tflops(t: f64) -> String {
    if t == 0.0 {
        "-".into()
    } else {
        let digits = (2 - t.abs().log10().floor() as i32).clamp(0, 8) as usize;
        format!("{t:.digits$}")
    }
}

/// A duration in microseconds, in the unit that reads best.
pub fn format_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.3} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.3} ms", us / 1e3)
    } else {
        format!("{us:.2} us")
    }
}
