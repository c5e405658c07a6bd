//! Every kernel family on fixed inputs, dumped and compared between two runs: the real GPU against
//! the emulated one (`scripts/compare-emulator.sh`, on a GPU machine), or, on every machine with the
//! emulator, two emulated runs with different block orders (results must not depend on the order
//! blocks run in).
//!
//! - `dump`: with `MOE_KERNELS_DUMP_DIR=DIR`, runs the cases on this process's GPU and writes one
//!   file per output plus `DIR/index.txt`; otherwise does nothing.
//! - `compare`: with `MOE_KERNELS_COMPARE=A:B`, compares two dumps: integer outputs and outputs
//!   computed without `mma` or `.approx` functions bit for bit, outputs through `.approx`
//!   functions within a few ulps, outputs through `mma` within a relative L2 tolerance, and top-k
//!   ids after a GEMM router allowing near-tie flips; prints a table and fails on a mismatch.
//! - `results_do_not_depend_on_block_order`: on the emulator, runs `dump` in two child processes
//!   with `PTX_EMU_SEED` 1 and 2 and requires every output to be identical.
//!
//! Inputs are seeded by a fixed seed (both sides of a comparison must see the same data).

mod common;

use half::{bf16, f16};
use moe_kernels::gpu::{
    combine, gather, grouped_gemm, permute, route, shared_expert_accumulate, Device, DeviceStatus,
    GemmElement, GemmEpilogue, GemmOutput, GpuElement, GpuMoeLayer, GpuPermutation,
    GroupedGemmShape,
};
use moe_kernels::{
    Activation, GroupScore, GroupedTopK, MoeConfig, RoutingConfig, ScoringFunc, SharedExpertConfig,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// How two runs of an output must agree.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Bit for bit.
    Exact,
    /// f32 values within this many units in the last place (outputs of `.approx` functions).
    Ulps(u32),
    /// Relative L2 error at most this (outputs of `mma`).
    RelL2(f64),
    /// i32 top-k ids whose rows may differ in at most this fraction of tokens (near-ties after a
    /// router GEMM on `mma`).
    Ids(f64),
}

impl Kind {
    fn encode(self) -> String {
        match self {
            Kind::Exact => "exact".into(),
            Kind::Ulps(u) => format!("ulps:{u}"),
            Kind::RelL2(t) => format!("rel_l2:{t}"),
            Kind::Ids(f) => format!("ids:{f}"),
        }
    }

    fn decode(s: &str) -> Kind {
        let (k, v) = s.split_once(':').unwrap_or((s, ""));
        match k {
            "exact" => Kind::Exact,
            "ulps" => Kind::Ulps(v.parse().unwrap()),
            "rel_l2" => Kind::RelL2(v.parse().unwrap()),
            "ids" => Kind::Ids(v.parse().unwrap()),
            _ => panic!("unknown comparison kind {s}"),
        }
    }
}

/// Element type of a dumped output.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Elem {
    I32,
    I64,
    F32,
    Bf16,
    F16,
}

impl Elem {
    fn name(self) -> &'static str {
        match self {
            Elem::I32 => "i32",
            Elem::I64 => "i64",
            Elem::F32 => "f32",
            Elem::Bf16 => "bf16",
            Elem::F16 => "f16",
        }
    }

    fn parse(s: &str) -> Elem {
        match s {
            "i32" => Elem::I32,
            "i64" => Elem::I64,
            "f32" => Elem::F32,
            "bf16" => Elem::Bf16,
            _ => Elem::F16,
        }
    }

    fn size(self) -> usize {
        match self {
            Elem::I32 | Elem::F32 => 4,
            Elem::I64 => 8,
            Elem::Bf16 | Elem::F16 => 2,
        }
    }

    /// The values as f64 (floats) for tolerance comparisons.
    fn floats(self, bytes: &[u8]) -> Vec<f64> {
        bytes
            .chunks_exact(self.size())
            .map(|c| match self {
                Elem::F32 => f32::from_le_bytes(c.try_into().unwrap()) as f64,
                Elem::Bf16 => bf16::from_bits(u16::from_le_bytes(c.try_into().unwrap())).to_f64(),
                Elem::F16 => f16::from_bits(u16::from_le_bytes(c.try_into().unwrap())).to_f64(),
                Elem::I32 => i32::from_le_bytes(c.try_into().unwrap()) as f64,
                Elem::I64 => i64::from_le_bytes(c.try_into().unwrap()) as f64,
            })
            .collect()
    }
}

/// A dumped output.
struct Output {
    name: String,
    kind: Kind,
    elem: Elem,
    bytes: Vec<u8>,
}

trait Dumpable: Copy {
    const ELEM: Elem;
    fn le_bytes(v: &[Self]) -> Vec<u8>;
}

macro_rules! dumpable {
    ($t:ty, $e:expr, $conv:expr) => {
        impl Dumpable for $t {
            const ELEM: Elem = $e;
            fn le_bytes(v: &[Self]) -> Vec<u8> {
                v.iter().flat_map($conv).collect()
            }
        }
    };
}
dumpable!(i32, Elem::I32, |x: &i32| x.to_le_bytes());
dumpable!(i64, Elem::I64, |x: &i64| x.to_le_bytes());
dumpable!(f32, Elem::F32, |x: &f32| x.to_le_bytes());
dumpable!(bf16, Elem::Bf16, |x: &bf16| x.to_bits().to_le_bytes());
dumpable!(f16, Elem::F16, |x: &f16| x.to_bits().to_le_bytes());

#[derive(Default)]
struct Dump {
    outputs: Vec<Output>,
}

impl Dump {
    fn add<T: Dumpable>(&mut self, name: impl Into<String>, kind: Kind, values: &[T]) {
        self.outputs.push(Output {
            name: name.into(),
            kind,
            elem: T::ELEM,
            bytes: T::le_bytes(values),
        });
    }

    fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let mut index = String::new();
        for o in &self.outputs {
            std::fs::write(dir.join(format!("{}.bin", o.name)), &o.bytes).unwrap();
            writeln!(index, "{} {} {}", o.name, o.kind.encode(), o.elem.name()).unwrap();
        }
        std::fs::write(dir.join("index.txt"), index).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------------

fn routing_cases<T: GpuElement>(dev: &Device, rng: &mut StdRng, d: &mut Dump) {
    let s = dev.stream();
    let t = 50;
    for e in [8usize, 60, 128, 256, 512, 1024] {
        let plain = RoutingConfig::softmax_topk(e, 2.min(e), true);
        let mut configs = vec![("softmax", plain)];
        if e % 8 == 0 && e >= 64 {
            let mut grouped = RoutingConfig::softmax_topk(e, 8, true);
            grouped.scoring = ScoringFunc::Sigmoid;
            grouped.correction_bias = true;
            grouped.grouping = Some(GroupedTopK {
                n_group: 8,
                topk_group: 4,
                score: GroupScore::SumTop2,
            });
            grouped.routed_scaling_factor = 2.5;
            configs.push(("sigmoid_grouped_bias", grouped));
        }
        for (label, cfg) in configs {
            let logits: Vec<T> = common::values(rng, t * e, 4.0);
            let bias: Vec<f32> = (0..e).map(|_| rng.random_range(-0.5..0.5)).collect();
            let logits_d = s.clone_htod(&logits).unwrap();
            let bias_d = s.clone_htod(&bias).unwrap();
            let k = cfg.top_k;
            let mut ids = s.alloc_zeros::<i32>(t * k).unwrap();
            let mut w = s.alloc_zeros::<f32>(t * k).unwrap();
            let mut status = DeviceStatus::new(dev).unwrap();
            let b = cfg.correction_bias.then(|| bias_d.as_view());
            route(
                dev,
                &cfg,
                &logits_d.as_view(),
                t,
                b.as_ref(),
                &mut ids.as_view_mut(),
                &mut w.as_view_mut(),
                &mut status,
            )
            .unwrap();
            status.check().unwrap();
            let name = format!("route_{}_e{e}_{label}", T::DTYPE);
            d.add(
                format!("{name}_ids"),
                Kind::Exact,
                &s.clone_dtoh(&ids).unwrap(),
            );
            // Softmax and sigmoid go through ex2.approx: within a few ulps of the hardware.
            d.add(
                format!("{name}_weights"),
                Kind::Ulps(8),
                &s.clone_dtoh(&w).unwrap(),
            );
        }
    }
}

fn permute_gather_combine_cases(dev: &Device, rng: &mut StdRng, d: &mut Dump) {
    let s = dev.stream();
    // Decode-sized (one block) and prefill-sized (count, scan, scatter).
    for (t, k, e, block) in [(37usize, 4usize, 60usize, 16usize), (3000, 8, 256, 1)] {
        let ids: Vec<i32> = common::random_ids(rng, t, e, k, false, true);
        let ids_d = s.clone_htod(&ids).unwrap();
        let mut perm = GpuPermutation::new(dev, t, k, e, block).unwrap();
        let mut status = DeviceStatus::new(dev).unwrap();
        permute(dev, &ids_d.as_view(), t, e, block, &mut perm, &mut status).unwrap();
        status.check().unwrap();
        let name = format!("permute_t{t}_e{e}_b{block}");
        d.add(
            format!("{name}_offsets"),
            Kind::Exact,
            &s.clone_dtoh(&perm.expert_offsets()).unwrap(),
        );
        d.add(
            format!("{name}_row_source"),
            Kind::Exact,
            &s.clone_dtoh(&perm.row_source()).unwrap(),
        );
        d.add(
            format!("{name}_slot_row"),
            Kind::Exact,
            &s.clone_dtoh(&perm.slot_row()).unwrap(),
        );
        // Gather in the three unit widths: 16-byte rows, 4-byte rows, 2-byte rows.
        for hidden in [64usize, 6, 7] {
            let x: Vec<bf16> = common::values(rng, t * hidden, 1.0);
            let x_d = s.clone_htod(&x).unwrap();
            let rows = perm.num_rows_bound();
            let mut out = s.alloc_zeros::<bf16>(rows * hidden).unwrap();
            gather(dev, &x_d.as_view(), hidden, &perm, &mut out.as_view_mut()).unwrap();
            d.add(
                format!("{name}_gather_h{hidden}"),
                Kind::Exact,
                &s.clone_dtoh(&out).unwrap(),
            );
        }
        // Combine (multiplies and adds rounded separately): bit for bit, with and without shared.
        for hidden in [64usize, 9] {
            let rows = perm.num_rows_bound();
            let y: Vec<bf16> = common::values(rng, rows * hidden, 1.0);
            let weights: Vec<f32> = (0..t * k).map(|_| rng.random_range(0.0..1.0)).collect();
            let shared: Vec<f32> = (0..t * hidden)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let (y_d, w_d, sh_d) = (
                s.clone_htod(&y).unwrap(),
                s.clone_htod(&weights).unwrap(),
                s.clone_htod(&shared).unwrap(),
            );
            let mut out = s.alloc_zeros::<bf16>(t * hidden).unwrap();
            combine::<bf16, f32, bf16>(
                dev,
                &y_d.as_view(),
                hidden,
                &perm,
                &w_d.as_view(),
                None,
                &mut out.as_view_mut(),
            )
            .unwrap();
            d.add(
                format!("{name}_combine_h{hidden}"),
                Kind::Exact,
                &s.clone_dtoh(&out).unwrap(),
            );
            let mut out32 = s.alloc_zeros::<f32>(t * hidden).unwrap();
            combine::<bf16, f32, f32>(
                dev,
                &y_d.as_view(),
                hidden,
                &perm,
                &w_d.as_view(),
                Some(&sh_d.as_view()),
                &mut out32.as_view_mut(),
            )
            .unwrap();
            d.add(
                format!("{name}_combine_shared_h{hidden}"),
                Kind::Exact,
                &s.clone_dtoh(&out32).unwrap(),
            );
        }
    }
    // Shared experts: a plain accumulation (bit for bit) and a sigmoid-gated one (expf: ulps).
    let (t, h) = (33usize, 96usize);
    let x: Vec<bf16> = common::values(rng, t * h, 1.0);
    let gate: Vec<bf16> = common::values(rng, h, 0.2);
    let part: Vec<f32> = (0..t * h).map(|_| rng.random_range(-1.0..1.0)).collect();
    let (x_d, g_d, p_d) = (
        s.clone_htod(&x).unwrap(),
        s.clone_htod(&gate).unwrap(),
        s.clone_htod(&part).unwrap(),
    );
    for gated in [false, true] {
        let mut sum = s.clone_htod(&vec![0.5f32; t * h]).unwrap();
        let g = gated.then(|| g_d.as_view());
        shared_expert_accumulate(
            dev,
            &x_d.as_view(),
            t,
            h,
            g.as_ref(),
            &p_d.as_view(),
            true,
            &mut sum.as_view_mut(),
        )
        .unwrap();
        let kind = if gated { Kind::Ulps(64) } else { Kind::Exact };
        d.add(
            format!("shared_accumulate_gated_{gated}"),
            kind,
            &s.clone_dtoh(&sum).unwrap(),
        );
    }
}

fn gemm_case<T: GemmElement, O: GemmOutput<T> + Dumpable + cudarc::driver::ValidAsZeroBits>(
    dev: &Device,
    rng: &mut StdRng,
    d: &mut Dump,
    (e, rows, n, k): (usize, usize, usize, usize),
    epilogue: GemmEpilogue,
    label: &str,
) {
    let s = dev.stream();
    let x: Vec<T> = common::values(rng, rows * k, 1.0);
    let w: Vec<T> = common::values(rng, e * n * k, 1.0 / (k as f32).sqrt());
    // Uneven segments: expert j gets about rows * (j + 1) / sum.
    let total: usize = (1..=e).sum();
    let mut offsets = vec![0i64];
    for j in 0..e {
        let next = if j + 1 == e {
            rows
        } else {
            (offsets[j] as usize + rows * (j + 1) / total).min(rows)
        };
        offsets.push(next as i64);
    }
    let (x_d, w_d, o_d) = (
        s.clone_htod(&x).unwrap(),
        s.clone_htod(&w).unwrap(),
        s.clone_htod(&offsets).unwrap(),
    );
    let out_n = if epilogue.is_gated() { n / 2 } else { n };
    let mut out = s.alloc_zeros::<O>(rows * out_n).unwrap();
    let shape = GroupedGemmShape {
        rows,
        n,
        k,
        num_experts: e,
    };
    grouped_gemm(
        dev,
        &x_d.as_view(),
        Some(&o_d.as_view()),
        &w_d.as_view(),
        shape,
        epilogue,
        &mut out.as_view_mut(),
    )
    .unwrap();
    let tol = if O::ELEM == Elem::F32 { 1e-4 } else { 1e-2 };
    d.add(
        format!("gemm_{label}_{}_{}", T::DTYPE, O::ELEM.name()),
        Kind::RelL2(tol),
        &s.clone_dtoh(&out).unwrap(),
    );
}

fn gemm_cases(dev: &Device, rng: &mut StdRng, d: &mut Dump) {
    let swiglu = GemmEpilogue::Activation(Activation::SWIGLU);
    let geglu = GemmEpilogue::Activation(Activation::GEGLU);
    // The small, medium, large and generic (K % 8 != 0) tiles (tests/gpu_gemm.rs sanitizer_smoke
    // checks the plan picks each for these shapes).
    gemm_case::<bf16, bf16>(dev, rng, d, (8, 8, 128, 64), swiglu, "small");
    gemm_case::<f16, f32>(dev, rng, d, (8, 8, 128, 64), GemmEpilogue::Store, "small");
    gemm_case::<bf16, f32>(
        dev,
        rng,
        d,
        (8, 300, 256, 96),
        GemmEpilogue::Store,
        "medium",
    );
    gemm_case::<bf16, bf16>(dev, rng, d, (2, 1024, 2 * 512, 64), geglu, "large");
    gemm_case::<f16, f16>(
        dev,
        rng,
        d,
        (8, 100, 96, 33),
        GemmEpilogue::Store,
        "generic",
    );
}

fn layer_case<T: GemmElement + GemmOutput<T> + Dumpable + cudarc::driver::ValidAsZeroBits>(
    dev: &Device,
    rng: &mut StdRng,
    d: &mut Dump,
    label: &str,
    cfg: &MoeConfig,
    t: usize,
) {
    let s = dev.stream();
    let h = cfg.hidden_size;
    let weights = common::random_layer_weights::<T>(rng, cfg, false);
    let x: Vec<T> = common::values(rng, t * h, 1.0);
    let layer = GpuMoeLayer::upload(dev, cfg, &weights).unwrap();
    let mut ws = layer.workspace(dev, t).unwrap();
    let x_d = s.clone_htod(&x).unwrap();
    let mut out = s.alloc_zeros::<T>(t * h).unwrap();
    layer
        .forward(dev, &x_d.as_view(), t, &mut ws, &mut out.as_view_mut())
        .unwrap();
    ws.status().check().unwrap();
    let name = format!("layer_{label}_{}_t{t}", T::DTYPE);
    d.add(
        format!("{name}_out"),
        Kind::RelL2(2e-2),
        &s.clone_dtoh(&out).unwrap(),
    );
    d.add(
        format!("{name}_ids"),
        Kind::Ids(0.05),
        &s.clone_dtoh(&ws.topk_ids()).unwrap(),
    );
    d.add(
        format!("{name}_weights"),
        Kind::RelL2(2e-2),
        &s.clone_dtoh(&ws.topk_weights()).unwrap(),
    );
}

fn layer_cases(dev: &Device, rng: &mut StdRng, d: &mut Dump) {
    let mut mixtral = MoeConfig::mixtral_8x7b();
    mixtral.hidden_size = 128;
    mixtral.intermediate_size = 96;
    let mut ds = MoeConfig::deepseek_v3();
    ds.hidden_size = 64;
    ds.intermediate_size = 32;
    ds.shared_experts = vec![SharedExpertConfig {
        intermediate_size: 64,
        sigmoid_gate: false,
    }];
    for t in [1usize, 300] {
        layer_case::<bf16>(dev, rng, d, "mixtral", &mixtral, t);
        layer_case::<f16>(dev, rng, d, "deepseek_v3", &ds, t);
    }
}

/// Run every case on `dev` (fixed seed) into a dump.
fn dump_all(dev: &Device) -> Dump {
    let mut rng = StdRng::seed_from_u64(20261129);
    let mut d = Dump::default();
    routing_cases::<f32>(dev, &mut rng, &mut d);
    routing_cases::<bf16>(dev, &mut rng, &mut d);
    routing_cases::<f16>(dev, &mut rng, &mut d);
    permute_gather_combine_cases(dev, &mut rng, &mut d);
    gemm_cases(dev, &mut rng, &mut d);
    layer_cases(dev, &mut rng, &mut d);
    d
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

/// Compare one output; None when it agrees, else why.
fn compare_output(kind: Kind, elem: Elem, a: &[u8], b: &[u8]) -> (String, bool) {
    if a.len() != b.len() {
        return (
            format!("sizes differ: {} and {} bytes", a.len(), b.len()),
            false,
        );
    }
    match kind {
        Kind::Exact => {
            let n = elem.size();
            let diff = a.chunks(n).zip(b.chunks(n)).filter(|(x, y)| x != y).count();
            (format!("{diff} of {} differ", a.len() / n), diff == 0)
        }
        Kind::Ulps(max) => {
            let worst = a
                .chunks(4)
                .zip(b.chunks(4))
                .map(|(x, y)| {
                    let x = i32::from_le_bytes(x.try_into().unwrap());
                    let y = i32::from_le_bytes(y.try_into().unwrap());
                    (x as i64 - y as i64).unsigned_abs()
                })
                .max()
                .unwrap_or(0);
            (
                format!("max {worst} ulps (allowed {max})"),
                worst <= max as u64,
            )
        }
        Kind::RelL2(tol) => {
            let (x, y) = (elem.floats(a), elem.floats(b));
            let err = common::rel_l2(&x, &y);
            (
                format!("relative L2 {err:.2e} (allowed {tol:.0e})"),
                err <= tol && err.is_finite(),
            )
        }
        Kind::Ids(frac) => {
            // Rows of k ids: a row counts as different when its id set differs.
            let (x, y) = (elem.floats(a), elem.floats(b));
            let diff = x.iter().zip(&y).filter(|(p, q)| p != q).count();
            let f = diff as f64 / x.len().max(1) as f64;
            (
                format!(
                    "{diff} of {} ids differ ({:.1}%, allowed {:.0}%)",
                    x.len(),
                    100.0 * f,
                    100.0 * frac
                ),
                f <= frac,
            )
        }
    }
}

/// Compare two dump folders; returns the report and whether everything agreed.
fn compare_dirs(a: &Path, b: &Path) -> (String, bool) {
    let index = std::fs::read_to_string(a.join("index.txt")).unwrap();
    let mut report = String::from("| output | kind | result |\n|---|---|---|\n");
    let mut ok = true;
    for line in index.lines() {
        let mut it = line.split_whitespace();
        let (name, kind, elem) = (
            it.next().unwrap(),
            Kind::decode(it.next().unwrap()),
            Elem::parse(it.next().unwrap()),
        );
        let x = std::fs::read(a.join(format!("{name}.bin"))).unwrap();
        let y = std::fs::read(b.join(format!("{name}.bin"))).unwrap_or_default();
        let (what, agree) = compare_output(kind, elem, &x, &y);
        ok &= agree;
        writeln!(
            report,
            "| {name} | {} | {}{what} |",
            kind.encode(),
            if agree { "" } else { "**MISMATCH** " }
        )
        .unwrap();
    }
    (report, ok)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn dump() {
    let Ok(dir) = std::env::var("MOE_KERNELS_DUMP_DIR") else {
        return;
    };
    let Some(dev) = common::gpu("emulator_compare", "dump") else {
        return;
    };
    let d = dump_all(&dev);
    d.write(Path::new(&dir));
    eprintln!("dumped {} outputs to {dir}", d.outputs.len());
}

#[test]
fn compare() {
    let Ok(dirs) = std::env::var("MOE_KERNELS_COMPARE") else {
        return;
    };
    let (a, b) = dirs.split_once(':').expect("MOE_KERNELS_COMPARE=A:B");
    let (report, ok) = compare_dirs(Path::new(a), Path::new(b));
    println!("{report}");
    if let Ok(out) = std::env::var("MOE_KERNELS_COMPARE_REPORT") {
        std::fs::write(out, &report).unwrap();
    }
    assert!(ok, "the two runs disagree:\n{report}");
}

#[test]
fn results_do_not_depend_on_block_order() {
    if common::gpu("emulator_compare", "results_do_not_depend_on_block_order").is_none() {
        return;
    }
    if !common::emulated() {
        // On a real GPU the order is the hardware's; scripts/compare-emulator.sh compares there.
        return;
    }
    let base: PathBuf =
        std::env::temp_dir().join(format!("moe-block-order-{}", std::process::id()));
    let exe = std::env::current_exe().unwrap();
    for seed in ["1", "2"] {
        let dir = base.join(seed);
        let out = std::process::Command::new(&exe)
            .args(["--exact", "dump", "--nocapture"])
            .env("MOE_KERNELS_DUMP_DIR", &dir)
            .env("MOE_KERNELS_EMULATOR", "1")
            .env("PTX_EMU_SEED", seed)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dump with seed {seed}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Identical bits everywhere: every kernel is deterministic whatever the block order.
    let index = std::fs::read_to_string(base.join("1").join("index.txt")).unwrap();
    let mut differing = Vec::new();
    for line in index.lines() {
        let name = line.split_whitespace().next().unwrap();
        let a = std::fs::read(base.join("1").join(format!("{name}.bin"))).unwrap();
        let b = std::fs::read(base.join("2").join(format!("{name}.bin"))).unwrap();
        if a != b {
            differing.push(name.to_string());
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    assert!(index.lines().count() > 50, "every case was dumped");
    assert!(
        differing.is_empty(),
        "outputs that depend on the block order: {differing:?}"
    );
}

#[test]
fn the_comparison_catches_differences() {
    // A changed bit fails an exact output; 2 ulps pass Ulps(8); a 1% change fails RelL2(1e-4).
    let a: Vec<u8> = [1.0f32, 2.0, 3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut b = a.clone();
    b[0] ^= 1;
    assert!(!compare_output(Kind::Exact, Elem::F32, &a, &b).1);
    assert!(compare_output(Kind::Ulps(8), Elem::F32, &a, &b).1);
    let c: Vec<u8> = [1.01f32, 2.0, 3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert!(!compare_output(Kind::RelL2(1e-4), Elem::F32, &a, &c).1);
    assert!(compare_output(Kind::RelL2(1e-2), Elem::F32, &a, &c).1);
    let ids: Vec<u8> = [1i32, 2, 3, 4]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let ids2: Vec<u8> = [1i32, 2, 4, 3]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert!(!compare_output(Kind::Ids(0.25), Elem::I32, &ids, &ids2).1);
    assert!(compare_output(Kind::Ids(0.5), Elem::I32, &ids, &ids2).1);
}
