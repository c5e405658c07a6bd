//! The loader never panics: seeded random mutations of tiny checkpoints of every family, plain and
//! FP8-quantized (their `config.json`, safetensors files, scales and shard index) each end in a loaded layer or a typed, one-line
//! error. No allocation may be sized by an untrusted number: this binary's allocator records the
//! largest request and refuses any over 256 MiB (the process then aborts, failing the test), and each
//! case checks that nothing larger than the files justify was asked for. A sample of the cases also
//! runs `moe run`, which must fail with one line on stderr and write no output file.
//!
//! `MOE_FUZZ_CASES=<n>` sets the case count (default 3000); the seed is printed and
//! `MOE_TEST_SEED=<seed>` replays it.

mod common;
mod hf_util;

use hf_util::{Fp8Scheme, TempDir, TinyModel};
use moe_kernels::hf::{HfModel, ModelFamily};
use moe_kernels::DType;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, recording the largest single request and refusing any over [`REFUSE`].
struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
const REFUSE: usize = 256 << 20;

// SAFETY: every method forwards to the system allocator with the caller's layout; a refused request
// returns null, which the GlobalAlloc contract allows.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        if layout.size() > REFUSE {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's valid layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        if layout.size() > REFUSE {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's valid layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from System) with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        if new_size > REFUSE {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from System with `layout`; the caller guarantees `new_size` is valid.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// Values that break parsers and size arithmetic.
fn weird_value(rng: &mut StdRng) -> Value {
    let choices = [
        json!(-1),
        json!(0),
        json!(1),
        json!(3),
        json!(1u64 << 31),
        json!(1u64 << 40),
        json!(1u64 << 62),
        json!(u64::MAX),
        json!(1e300),
        json!(-0.5),
        json!(f64::MIN_POSITIVE),
        json!("8"),
        json!(""),
        json!(null),
        json!(true),
        json!([]),
        json!([1, 2]),
        json!({}),
        json!({"a": 1}),
    ];
    choices.choose(rng).unwrap().clone()
}

/// The config keys worth mutating: the model's own, and those other families or aliases read.
const CONFIG_KEYS: &[&str] = &[
    "model_type",
    "hidden_size",
    "intermediate_size",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "num_experts",
    "num_local_experts",
    "n_routed_experts",
    "n_shared_experts",
    "num_experts_per_tok",
    "num_hidden_layers",
    "norm_topk_prob",
    "decoder_sparse_step",
    "mlp_only_layers",
    "first_k_dense_replace",
    "moe_layer_freq",
    "topk_method",
    "n_group",
    "topk_group",
    "scoring_func",
    "routed_scaling_factor",
    "hidden_act",
    "torch_dtype",
    "text_config",
];

fn mutate_config(rng: &mut StdRng, dir: &Path) -> String {
    let path = dir.join("config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return "config: (not text, left alone)".into();
    };
    // A config an earlier mutation broke gets byte-level mutations only.
    let parsed: Option<Value> = serde_json::from_str(&text).ok();
    let kind = match parsed {
        Some(_) => rng.random_range(0..6),
        None => rng.random_range(4..6),
    };
    let mut v = parsed.unwrap_or(Value::Null);
    if text.is_empty() {
        return "config: (empty, left alone)".into();
    }
    let what = match kind {
        0 => {
            let key = *CONFIG_KEYS.choose(rng).unwrap();
            v.as_object_mut().unwrap().remove(key);
            format!("config: remove `{key}`")
        }
        1 | 2 => {
            let key = *CONFIG_KEYS.choose(rng).unwrap();
            let val = weird_value(rng);
            v[key] = val.clone();
            format!("config: `{key}` = {val}")
        }
        3 => {
            let wrapped = json!({"model_type": "wrapper_vl", "text_config": v});
            v = wrapped;
            "config: nested under text_config".into()
        }
        4 => {
            let cut = rng.random_range(0..text.len());
            std::fs::write(&path, &text.as_bytes()[..cut]).unwrap();
            return format!("config: truncated to {cut} bytes");
        }
        _ => {
            let mut bytes = text.into_bytes();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            std::fs::write(&path, bytes).unwrap();
            return "config: random bytes".into();
        }
    };
    std::fs::write(&path, v.to_string()).unwrap();
    what
}

/// The safetensors files in `dir`.
fn weight_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    files
}

/// A safetensors file split into its header (parsed) and data; `None` when an earlier mutation broke
/// it.
fn split(bytes: &[u8]) -> Option<(Value, Vec<u8>)> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header: Value = serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    header.as_object()?;
    Some((header, bytes[8 + n..].to_vec()))
}

fn join(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = header.to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

fn mutate_weights(rng: &mut StdRng, dir: &Path) -> String {
    let files = weight_files(dir);
    let Some(path) = files.choose(rng).cloned() else {
        return "weights: (no file left)".into();
    };
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let bytes = std::fs::read(&path).unwrap();
    let Some((mut header, data)) = split(&bytes) else {
        // Broken by an earlier mutation: truncate it further.
        let cut = rng.random_range(0..=bytes.len());
        std::fs::write(&path, &bytes[..cut]).unwrap();
        return format!("{name}: truncated to {cut} bytes");
    };
    let keys: Vec<String> = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let Some(key) = keys.choose(rng).cloned() else {
        return format!("{name}: (no tensor left)");
    };
    let scale_keys: Vec<&String> = keys.iter().filter(|k| k.contains("scale")).collect();
    let (what, out) = match rng.random_range(0..10) {
        9 if !scale_keys.is_empty() => {
            // A NaN, infinite, zero or negative scale.
            let key = (*scale_keys.choose(rng).unwrap()).clone();
            let bad: f32 = *[f32::NAN, f32::INFINITY, 0.0, -0.5].choose(rng).unwrap();
            let a = header[&key]["data_offsets"][0].as_u64().unwrap() as usize;
            let mut d = data.clone();
            match header[&key]["dtype"].as_str() {
                Some("F32") => d[a..a + 4].copy_from_slice(&bad.to_le_bytes()),
                _ => d[a..a + 2].copy_from_slice(&half::bf16::from_f32(bad).to_le_bytes()),
            }
            (format!("`{key}` scale {bad}"), join(&header, &d))
        }
        0 => {
            let cut = rng.random_range(0..bytes.len());
            (format!("truncated to {cut} bytes"), bytes[..cut].to_vec())
        }
        1 => {
            let n: u64 = *[0u64, 1, 7, u64::MAX, 1 << 40, bytes.len() as u64]
                .choose(rng)
                .unwrap();
            let mut b = bytes.clone();
            b[..8].copy_from_slice(&n.to_le_bytes());
            (format!("header length {n}"), b)
        }
        2 => {
            let mut b = bytes.clone();
            let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(8..8 + n);
                b[at] = rng.random();
            }
            ("random header bytes".into(), b)
        }
        3 => {
            let d = *["I64", "F8_E4M3", "U8", "BOOL", "F64", "XX", "F8_E8M0"]
                .choose(rng)
                .unwrap();
            header[&key]["dtype"] = json!(d);
            (format!("`{key}` dtype {d}"), join(&header, &data))
        }
        4 => {
            let shape = header[&key]["shape"].as_array().unwrap().clone();
            let mut s: Vec<Value> = shape;
            let r = rng.random_range(0..4);
            match r {
                0 => s.reverse(),
                1 => s.push(json!(1)),
                2 => {
                    s.pop();
                }
                _ => {
                    if let Some(x) = s.first_mut() {
                        *x = json!(1u64 << 40);
                    }
                }
            }
            header[&key]["shape"] = json!(s);
            (format!("`{key}` shape {s:?}"), join(&header, &data))
        }
        5 => {
            let o: [u64; 2] = *[
                [0, u64::MAX],
                [u64::MAX - 1, u64::MAX],
                [8, 4],
                [0, data.len() as u64 + 2],
            ]
            .choose(rng)
            .unwrap();
            header[&key]["data_offsets"] = json!(o);
            (format!("`{key}` offsets {o:?}"), join(&header, &data))
        }
        6 => {
            header.as_object_mut().unwrap().remove(&key);
            (format!("`{key}` removed"), join(&header, &data))
        }
        7 => {
            // NaN and infinite weights: data, which the loader reads as it is stored.
            let mut b = bytes.clone();
            let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            if b.len() > 8 + n + 4 {
                let at = rng.random_range(8 + n..b.len() - 3);
                b[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
            }
            ("non-finite data".into(), b)
        }
        8 => {
            std::fs::remove_file(&path).unwrap();
            return format!("{name}: deleted");
        }
        _ => {
            header.as_object_mut().unwrap().remove(&key);
            (format!("`{key}` removed"), join(&header, &data))
        }
    };
    std::fs::write(&path, out).unwrap();
    format!("{name}: {what}")
}

fn mutate_index(rng: &mut StdRng, dir: &Path) -> String {
    let path = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let Some(mut v) = serde_json::from_str::<Value>(&text)
        .ok()
        .filter(|v| v["weight_map"].is_object())
    else {
        return "index: (broken already, left alone)".into();
    };
    let keys: Vec<String> = v["weight_map"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let Some(key) = keys.choose(rng).cloned() else {
        return "index: (empty weight_map, left alone)".into();
    };
    let what = match rng.random_range(0..5) {
        0 => {
            v.as_object_mut().unwrap().remove("weight_map");
            "no weight_map".to_string()
        }
        1 => {
            let f = *[
                "../escape.safetensors",
                "/etc/passwd",
                "",
                "missing.safetensors",
            ]
            .choose(rng)
            .unwrap();
            v["weight_map"][&key] = json!(f);
            format!("`{key}` -> `{f}`")
        }
        2 => {
            v["weight_map"][&key] = weird_value(rng);
            format!("`{key}` -> {}", v["weight_map"][&key])
        }
        3 => {
            v["weight_map"].as_object_mut().unwrap().remove(&key);
            format!("`{key}` unlisted")
        }
        _ => {
            v["weight_map"] = weird_value(rng);
            format!("weight_map = {}", v["weight_map"])
        }
    };
    std::fs::write(&path, v.to_string()).unwrap();
    format!("index: {what}")
}

/// Total bytes of the files in `dir`.
fn dir_bytes(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len() as usize)
        .sum()
}

/// Open the model and load every layer (and one past the end) as f32 and bf16; every error must be
/// one line. Returns how many layers loaded.
fn load_all(dir: &Path, case: &str) -> usize {
    let one_line = |e: moe_kernels::MoeError| {
        let msg = e.to_string();
        assert!(
            !msg.is_empty() && !msg.contains('\n'),
            "{case}: error is not one line: {msg:?}"
        );
    };
    let model = match HfModel::open(dir) {
        Ok(m) => m,
        Err(e) => {
            one_line(e);
            return 0;
        }
    };
    let layers = model.config().num_hidden_layers.min(8);
    let mut loaded = 0;
    for l in 0..=layers {
        let layer = if model.is_quantized() {
            model.quantized_cpu_layer::<f32>(l).map(|_| ())
        } else {
            model.cpu_layer::<f32>(l).map(|_| ())
        };
        match layer {
            Ok(()) => loaded += 1,
            Err(e) => one_line(e),
        }
        // Plain weights of a quantized model (and the reverse) are a typed error too.
        if let Err(e) = model.moe_weights::<half::bf16>(l) {
            one_line(e);
        }
        if let Err(e) = model.quantized_cpu_layer::<half::bf16>(l) {
            one_line(e);
        }
    }
    loaded
}

#[test]
fn mutated_checkpoints_load_or_fail_with_one_line() {
    let mut rng = common::rng("mutated_checkpoints_load_or_fail_with_one_line");
    let cases: usize = std::env::var("MOE_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let mut bases: Vec<(TinyModel, usize)> = ModelFamily::ALL
        .iter()
        .enumerate()
        .flat_map(|(n, &family)| {
            let dtype = [DType::BF16, DType::F32, DType::F16][n % 3];
            [(false, 1), (true, 3)]
                .map(|(fused, shards)| (TinyModel::new(&mut rng, family, dtype, fused), shards))
        })
        .collect::<Vec<_>>();
    for (family, scheme, shards) in [
        (ModelFamily::DeepseekV3, Fp8Scheme::Block([16, 16]), 2),
        (ModelFamily::Qwen2Moe, Fp8Scheme::Channel, 1),
        (ModelFamily::Mixtral, Fp8Scheme::Tensor, 1),
    ] {
        let mut m = TinyModel::new(&mut rng, family, DType::BF16, false);
        m.quantize_fp8(&mut rng, scheme);
        bases.push((m, shards));
    }
    let work = TempDir::new("fuzz-io");
    let input = work.path().join("in.safetensors");
    let output = work.path().join("out.safetensors");
    hf_util::write_safetensors(
        &input,
        &[(
            "hidden_states".to_string(),
            hf_util::Stored::float(DType::F32, vec![2, hf_util::H], &[0.25; 2 * hf_util::H]),
        )]
        .into_iter()
        .collect(),
    );
    let (mut loaded, mut failed_cli) = (0, 0);
    for case in 0..cases {
        let (base, shards) = &bases[case % bases.len()];
        let dir = TempDir::new("fuzz");
        base.write(dir.path(), *shards);
        let mut what = vec![];
        for _ in 0..rng.random_range(1..=2) {
            what.push(match rng.random_range(0..10) {
                0..=3 => mutate_config(&mut rng, dir.path()),
                4..=8 => mutate_weights(&mut rng, dir.path()),
                _ if *shards > 1 => mutate_index(&mut rng, dir.path()),
                _ => mutate_config(&mut rng, dir.path()),
            });
        }
        let desc = format!("case {case} ({} shards={shards}): {what:?}", base.family);
        let files = dir_bytes(dir.path());
        LARGEST.store(0, Ordering::Relaxed);
        let ok = std::panic::catch_unwind(|| load_all(dir.path(), &desc))
            .unwrap_or_else(|_| panic!("{desc}: the loader panicked"));
        loaded += (ok > 0) as usize;
        let largest = LARGEST.load(Ordering::Relaxed);
        assert!(
            largest <= 4 * files + (1 << 20),
            "{desc}: an allocation of {largest} bytes for {files} bytes of files"
        );

        // Every 50th case through `moe run`: a failure is one line and writes nothing.
        if case % 50 == 0 {
            let out = Command::new(env!("CARGO_BIN_EXE_moe"))
                .args(["run", "--model"])
                .arg(dir.path())
                .args(["--layer", "1", "--input"])
                .arg(&input)
                .arg("--output")
                .arg(&output)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                std::fs::remove_file(&output).unwrap();
            } else {
                failed_cli += 1;
                assert_eq!(stderr.lines().count(), 1, "{desc}: moe run: {stderr}");
                assert!(stderr.starts_with("error: "), "{desc}: {stderr}");
                assert!(!output.exists(), "{desc}: moe run wrote {output:?}");
            }
        }
    }
    println!(
        "{cases} mutated checkpoints: {loaded} still loaded a layer, the rest failed with a typed \
         one-line error; {failed_cli} `moe run` failures, each one line with no output"
    );
    assert!(
        loaded < cases,
        "no mutation broke anything: the mutations are too weak"
    );
}
