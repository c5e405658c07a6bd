//! The emulator's profile: per kernel and per PTX line, instructions by class, warp execution
//! efficiency, global-memory sectors against bytes used, shared-memory wavefronts against the
//! conflict-free ideal, and `mma` counts; written as JSON and Markdown.

use crate::exec::interp::LaunchSummary;
use crate::exec::kernel::Kernel;
use crate::exec::stats::InstrStats;
use crate::ptx::ir::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Static facts of one instruction.
#[derive(Clone, Debug)]
struct InstrInfo {
    line: u32,
    source: Option<String>,
    class: &'static str,
    mnemonic: String,
}

/// One kernel's accumulated counters.
#[derive(Clone, Debug, Default)]
pub struct KernelProfile {
    launches: u64,
    summary: LaunchSummary,
    info: Vec<InstrInfo>,
    stats: Vec<InstrStats>,
}

/// Counters of every profiled kernel, by name.
#[derive(Debug)]
pub struct Profile {
    prefix: String,
    device: &'static str,
    kernels: BTreeMap<String, KernelProfile>,
}

fn float_class(ty: Ty) -> &'static str {
    match ty {
        Ty::F32 => "fp32",
        Ty::F64 => "fp64",
        Ty::F16 | Ty::F16x2 | Ty::Bf16 | Ty::Bf16x2 => "fp16",
        _ => "integer",
    }
}

fn space_class(space: Space) -> &'static str {
    match space {
        Space::Global => "global memory",
        Space::Shared => "shared memory",
        Space::Local => "local memory",
        Space::Param | Space::Const => "param/const memory",
        Space::Generic => "generic memory",
    }
}

/// The class and a short mnemonic of an instruction.
fn classify(op: &Op) -> (&'static str, String) {
    match op {
        Op::Mov { .. } => ("move", "mov".into()),
        Op::Un { op, ty, .. } => (float_class(*ty), format!("{op:?}").to_lowercase()),
        Op::Bin { op, ty, .. } => (float_class(*ty), format!("{op:?}").to_lowercase()),
        Op::Tern { op, ty, .. } => (float_class(*ty), format!("{op:?}").to_lowercase()),
        Op::Bfi { .. } => ("integer", "bfi".into()),
        Op::Lop3 { .. } => ("integer", "lop3".into()),
        Op::Selp { ty, .. } => (float_class(*ty), "selp".into()),
        Op::Slct { ty, .. } => (float_class(*ty), "slct".into()),
        Op::Setp { ty, .. } => (float_class(*ty), "setp".into()),
        Op::Set { ty, .. } => (float_class(*ty), "set".into()),
        Op::Testp { .. } => ("fp32", "testp".into()),
        Op::Cvt { .. } => ("conversion", "cvt".into()),
        Op::Cvta { .. } | Op::Isspacep { .. } => ("conversion", "cvta".into()),
        Op::Ld { space, .. } => (space_class(*space), format!("ld.{}", space.name())),
        Op::St { space, .. } => (space_class(*space), format!("st.{}", space.name())),
        Op::Atom { space, .. } => (space_class(*space), format!("atom.{}", space.name())),
        Op::CpAsync { .. } => ("cp.async", "cp.async".into()),
        Op::CpAsyncCommit => ("cp.async", "cp.async.commit_group".into()),
        Op::CpAsyncWait { .. } => ("cp.async", "cp.async.wait_group".into()),
        Op::Ldmatrix { .. } => ("ldmatrix", "ldmatrix".into()),
        Op::Mma { .. } => ("mma", "mma.sync".into()),
        Op::Bra { .. } => ("control", "bra".into()),
        Op::Call { .. } => ("control", "call".into()),
        Op::Ret | Op::Exit => ("control", "exit".into()),
        Op::Trap => ("control", "trap".into()),
        Op::Bar { .. } => ("barrier & warp collective", "bar.sync".into()),
        Op::BarWarp { .. } => ("barrier & warp collective", "bar.warp.sync".into()),
        Op::Shfl { .. } => ("barrier & warp collective", "shfl.sync".into()),
        Op::Vote { .. } => ("barrier & warp collective", "vote.sync".into()),
        Op::Match { .. } => ("barrier & warp collective", "match.sync".into()),
        Op::Redux { .. } => ("barrier & warp collective", "redux.sync".into()),
        Op::Activemask { .. } => ("barrier & warp collective", "activemask".into()),
        Op::Nop => ("other", "nop".into()),
    }
}

impl KernelProfile {
    fn totals(&self) -> InstrStats {
        let mut t = InstrStats::default();
        for s in &self.stats {
            t.add(s);
        }
        t
    }

    fn by_class(&self) -> BTreeMap<&'static str, u64> {
        let mut m = BTreeMap::new();
        for (i, s) in self.info.iter().zip(&self.stats) {
            *m.entry(i.class).or_insert(0) += s.warp_execs;
        }
        m
    }

    fn json(&self) -> Value {
        let t = self.totals();
        let lines: Vec<Value> = self
            .info
            .iter()
            .zip(&self.stats)
            .filter(|(_, s)| s.warp_execs > 0)
            .map(|(i, s)| {
                json!({
                    "ptx_line": i.line,
                    "source": i.source,
                    "instruction": i.mnemonic,
                    "class": i.class,
                    "warp_instructions": s.warp_execs,
                    "thread_instructions": s.thread_execs,
                    "thread_slots": s.thread_slots,
                    "global_requests": s.global_requests,
                    "global_sectors": s.global_sectors,
                    "global_bytes_requested": s.global_bytes,
                    "shared_requests": s.shared_requests,
                    "shared_wavefronts": s.shared_wavefronts,
                    "shared_wavefronts_ideal": s.shared_ideal,
                })
            })
            .collect();
        json!({
            "launches": self.launches,
            "warp_instructions": self.summary.warp_instructions,
            "thread_instructions": self.summary.thread_instructions,
            "mma": self.summary.mma,
            "instructions_per_mma": ratio(self.summary.warp_instructions, self.summary.mma),
            "warp_execution_efficiency": ratio(t.thread_slots, 32 * t.warp_execs),
            "warp_nonpredicated_execution_efficiency": ratio(t.thread_execs, 32 * t.warp_execs),
            "global_requests": t.global_requests,
            "global_sectors": t.global_sectors,
            "global_bytes_requested": t.global_bytes,
            "global_bytes_moved": t.global_sectors * 32,
            "global_efficiency": ratio(t.global_bytes, 32 * t.global_sectors),
            "shared_requests": t.shared_requests,
            "shared_wavefronts": t.shared_wavefronts,
            "shared_wavefronts_ideal": t.shared_ideal,
            "instructions_by_class": self.by_class(),
            "lines": lines,
        })
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn pct(a: u64, b: u64) -> String {
    match ratio(a, b) {
        Some(r) => format!("{:.1}%", 100.0 * r),
        None => "-".into(),
    }
}

impl Profile {
    pub(crate) fn new(prefix: String, device: &'static str) -> Self {
        Profile {
            prefix,
            device,
            kernels: BTreeMap::new(),
        }
    }

    /// Add one launch's counters.
    pub(crate) fn record(&mut self, k: &Kernel, stats: &[InstrStats], summary: &LaunchSummary) {
        let p = self.kernels.entry(k.name.clone()).or_default();
        if p.info.is_empty() {
            p.info = k
                .instrs
                .iter()
                .map(|i| {
                    let (class, mnemonic) = classify(&i.op);
                    InstrInfo {
                        line: i.line,
                        source: k.source_of(i),
                        class,
                        mnemonic,
                    }
                })
                .collect();
            p.stats = vec![InstrStats::default(); k.instrs.len()];
        }
        for (acc, s) in p.stats.iter_mut().zip(stats) {
            acc.add(s);
        }
        p.launches += 1;
        p.summary.warp_instructions += summary.warp_instructions;
        p.summary.thread_instructions += summary.thread_instructions;
        p.summary.mma += summary.mma;
        p.summary.global_requests += summary.global_requests;
        p.summary.global_sectors += summary.global_sectors;
        p.summary.shared_wavefronts += summary.shared_wavefronts;
        p.summary.shared_ideal += summary.shared_ideal;
    }

    /// The profile as JSON.
    pub fn to_json(&self) -> Value {
        let kernels: BTreeMap<&String, Value> =
            self.kernels.iter().map(|(n, k)| (n, k.json())).collect();
        json!({
            "device": self.device,
            "note": "emulated: counts come from the ptx-emu interpreter, not from a GPU; times are emulator times",
            "kernels": kernels,
        })
    }

    /// The profile as Markdown: a summary row per kernel, then each kernel's busiest lines and
    /// every line with uncoalesced global access or bank conflicts.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# ptx-emu profile (emulated: {})\n", self.device);
        let _ = writeln!(
            s,
            "Counts come from the interpreter, not from a GPU. Warp efficiency is the lanes \
             executing an instruction (guard true or false) over 32. Global efficiency is the \
             distinct bytes the threads asked for over the bytes of the 32-byte sectors touched; \
             shared conflicts are wavefronts over the conflict-free ideal.\n"
        );
        let _ = writeln!(
            s,
            "| kernel | launches | warp instr | warp eff. | mma | instr/mma | global req | global eff. | shared req | shared wavefronts / ideal |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (name, k) in &self.kernels {
            let t = k.totals();
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                k.launches,
                k.summary.warp_instructions,
                pct(t.thread_slots, 32 * t.warp_execs),
                k.summary.mma,
                ratio(k.summary.warp_instructions, k.summary.mma)
                    .map(|r| format!("{r:.1}"))
                    .unwrap_or_else(|| "-".into()),
                t.global_requests,
                pct(t.global_bytes, 32 * t.global_sectors),
                t.shared_requests,
                t.shared_wavefronts,
                t.shared_ideal
            );
        }
        for (name, k) in &self.kernels {
            let _ = writeln!(s, "\n## {name}\n");
            let classes = k.by_class();
            let total: u64 = classes.values().sum();
            let _ = writeln!(
                s,
                "Instructions by class: {}\n",
                classes
                    .iter()
                    .map(|(c, n)| format!("{c} {}", pct(*n, total)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let _ = writeln!(
                s,
                "| PTX line | source | instruction | warp instr | warp eff. | global eff. | shared wavefronts / ideal |"
            );
            let _ = writeln!(s, "|---:|---|---|---:|---:|---:|---:|");
            let mut rows: Vec<(usize, &InstrStats)> = k
                .stats
                .iter()
                .enumerate()
                .filter(|(_, st)| st.warp_execs > 0)
                .collect();
            rows.sort_by_key(|(_, st)| std::cmp::Reverse(st.warp_execs));
            let busiest: Vec<usize> = rows.iter().take(12).map(|(i, _)| *i).collect();
            let mut shown: Vec<usize> = busiest.clone();
            for (i, st) in &rows {
                let uncoalesced =
                    st.global_sectors > 0 && st.global_bytes * 10 < st.global_sectors * 32 * 8;
                let conflicted = st.shared_wavefronts > st.shared_ideal;
                if (uncoalesced || conflicted) && !shown.contains(i) {
                    shown.push(*i);
                }
            }
            shown.sort_unstable();
            for i in shown {
                let (info, st) = (&k.info[i], &k.stats[i]);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    info.line,
                    info.source.as_deref().unwrap_or(""),
                    info.mnemonic,
                    st.warp_execs,
                    pct(st.thread_slots, 32 * st.warp_execs),
                    if st.global_sectors > 0 {
                        pct(st.global_bytes, 32 * st.global_sectors)
                    } else {
                        String::new()
                    },
                    if st.shared_requests > 0 {
                        format!("{} / {}", st.shared_wavefronts, st.shared_ideal)
                    } else {
                        String::new()
                    }
                );
            }
        }
        s
    }

    /// Write `<prefix>.json` and `<prefix>.md` (`%p` in the prefix becomes the process id).
    pub(crate) fn write(&self) -> Result<(String, String), String> {
        let prefix = self.prefix.replace("%p", &std::process::id().to_string());
        let json_path = format!("{prefix}.json");
        let md_path = format!("{prefix}.md");
        let text = serde_json::to_string_pretty(&self.to_json()).map_err(|e| e.to_string())?;
        std::fs::write(&json_path, text).map_err(|e| format!("cannot write {json_path}: {e}"))?;
        std::fs::write(&md_path, self.to_markdown())
            .map_err(|e| format!("cannot write {md_path}: {e}"))?;
        Ok((json_path, md_path))
    }
}
