//! The `moe` command: `run` on the CPU for every family and key layout in bf16 and f32 against the layer
//! computed directly from the same weights, every error path (one line on stderr, non-zero exit, no
//! output left behind), `info` and `check`.

mod common;
mod hf_util;

use half::{bf16, f16};
use hf_util::{write_safetensors, Stored, TempDir, TinyModel, H};
use moe_kernels::cpu::layer::{CpuMoeLayer, MoeWeights, SharedExpertWeights};
use moe_kernels::hf::{ModelFamily, SafetensorsFile};
use moe_kernels::{DType, Element, MatRef};
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn moe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moe"))
        .args(args)
        .output()
        .expect("run moe")
}

/// `moe` with the tests' GPU: the system driver, or the emulated GPU through `LD_LIBRARY_PATH`
/// (see tests/common/backend.rs). None when there is no GPU of either kind.
fn moe_on_gpu(args: &[&str]) -> Option<Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moe"));
    cmd.args(args);
    Some(common::backend::on_gpu(cmd)?.output().expect("run moe"))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Write `hidden_states` `[t, H]` stored as `dtype` into `path`; return the stored values.
fn write_input(rng: &mut rand::rngs::StdRng, path: &Path, t: usize, dtype: DType) -> Vec<f32> {
    let x = hf_util::round_to(dtype, &common::randn(rng, t * H, 1.0));
    let mut m = BTreeMap::new();
    m.insert(
        "hidden_states".to_string(),
        Stored::float(dtype, vec![t, H], &x),
    );
    write_safetensors(path, &m);
    x
}

fn conv<W: Element>(v: &[f32]) -> Vec<W> {
    v.iter().map(|&x| W::from_f32(x)).collect()
}

fn weights_as<W: Element>(w: &MoeWeights<f32>) -> MoeWeights<W> {
    MoeWeights {
        router: conv(&w.router),
        biases: w.biases.clone(),
        correction_bias: w.correction_bias.clone(),
        gate_up: conv(&w.gate_up),
        down: conv(&w.down),
        shared: w
            .shared
            .iter()
            .map(|s| SharedExpertWeights {
                gate_up: conv(&s.gate_up),
                down: conv(&s.down),
                gate: s.gate.as_deref().map(conv),
            })
            .collect(),
    }
}

/// The layer computed directly from the test's own config and f32 weights, in element type `W`.
fn direct<W: Element>(m: &TinyModel, layer: usize, x: &[f32]) -> (Vec<f32>, Vec<i32>, Vec<f32>) {
    let cpu = CpuMoeLayer::<W>::new(m.moe.clone(), weights_as(&m.layers[&layer])).unwrap();
    let xw: Vec<W> = conv(x);
    let out = cpu
        .forward(MatRef::new("x", &xw, x.len() / H, H).unwrap())
        .unwrap();
    (
        out.hidden.iter().map(|v| v.to_f32()).collect(),
        out.routing.ids,
        out.routing.weights,
    )
}

/// Read `moe run`'s output file.
fn read_output(path: &Path, t: usize, k: usize) -> (Vec<f32>, Vec<i32>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let get = |name: &str, dtype: Dtype, shape: &[usize]| {
        let v = st.tensor(name).unwrap();
        assert_eq!(v.dtype(), dtype, "{name}");
        assert_eq!(v.shape(), shape, "{name}");
        v.data().to_vec()
    };
    let f32s = |b: Vec<u8>| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let hidden = f32s(get("hidden_states", Dtype::F32, &[t, H]));
    let ids = get("topk_ids", Dtype::I32, &[t, k])
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let weights = f32s(get("topk_weights", Dtype::F32, &[t, k]));
    (hidden, ids, weights)
}

/// `moe run` of `layer` of the checkpoint in `dir` from `input` to `output` on `device`.
fn run_args(dir: &Path, layer: usize, input: &Path, output: &Path, device: &str) -> Vec<String> {
    [
        "run",
        "--model",
        p(dir),
        "--layer",
        &layer.to_string(),
        "--input",
        p(input),
        "--output",
        p(output),
        "--device",
        device,
    ]
    .map(String::from)
    .to_vec()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: moe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `moe run` on the CPU for one family: per-expert and fused keys, bf16 and f32 checkpoints (run in their
/// stored type), sharded and unsharded, against the directly computed layer.
fn run_family(family: ModelFamily) {
    let mut rng = common::rng(&format!("run_{family}"));
    for (n, (fused, dtype)) in [
        (false, DType::BF16),
        (false, DType::F32),
        (true, DType::BF16),
        (true, DType::F32),
    ]
    .into_iter()
    .enumerate()
    {
        let m = TinyModel::new(&mut rng, family, dtype, fused);
        let dir = m.write_temp("run", if n % 2 == 0 { 2 } else { 1 });
        let work = TempDir::new("run-io");
        let input = work.path().join("in.safetensors");
        let output = work.path().join("out.safetensors");
        let t = 7;
        let x = write_input(&mut rng, &input, t, dtype);
        let what = format!("{family} fused={fused} {dtype}");
        for &layer in m.layers.keys() {
            let args = run_args(dir.path(), layer, &input, &output, "cpu");
            let out = moe(&args.iter().map(String::as_str).collect::<Vec<_>>());
            assert_ok(&out, &what);
            let k = m.moe.routing.top_k;
            let (hidden, ids, weights) = read_output(&output, t, k);
            let (want_h, want_ids, want_w) = match dtype {
                DType::F32 => direct::<f32>(&m, layer, &x),
                _ => direct::<bf16>(&m, layer, &x),
            };
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-2 };
            assert_eq!(ids, want_ids, "{what} layer {layer}: topk_ids");
            common::assert_close(
                &format!("{what} layer {layer}: topk_weights"),
                &common::f64s(&weights),
                &common::f64s(&want_w),
                1e-6,
            );
            common::assert_close(
                &format!("{what} layer {layer}: hidden_states"),
                &common::f64s(&hidden),
                &common::f64s(&want_h),
                tol,
            );
        }
        assert_no_temp_files(work.path());
    }
}

#[test]
fn run_mixtral() {
    run_family(ModelFamily::Mixtral);
}
#[test]
fn run_qwen2_moe() {
    run_family(ModelFamily::Qwen2Moe);
}
#[test]
fn run_qwen3_moe() {
    run_family(ModelFamily::Qwen3Moe);
}
#[test]
fn run_olmoe() {
    run_family(ModelFamily::Olmoe);
}
#[test]
fn run_deepseek_v2() {
    run_family(ModelFamily::DeepseekV2);
}
#[test]
fn run_deepseek_v3() {
    run_family(ModelFamily::DeepseekV3);
}
#[test]
fn run_minimax_m2() {
    run_family(ModelFamily::MinimaxM2);
}
#[test]
fn run_granitemoe() {
    run_family(ModelFamily::GraniteMoe);
}
#[test]
fn run_hunyuan_v1_moe() {
    run_family(ModelFamily::HunyuanV1Moe);
}
#[test]
fn run_ernie4_5_moe() {
    run_family(ModelFamily::Ernie45Moe);
}
#[test]
fn run_llama4() {
    run_family(ModelFamily::Llama4);
}
#[test]
fn run_dbrx() {
    run_family(ModelFamily::Dbrx);
}
#[test]
fn run_phimoe() {
    run_family(ModelFamily::Phimoe);
}
#[test]
fn run_gpt_oss() {
    run_family(ModelFamily::GptOss);
}

/// `moe run --device cuda` (on the emulated GPU when there is no real one) gives the same routing
/// and, within bf16 tolerance, the same output as `--device cpu`, for every family, per-expert and
/// fused keys.
#[test]
fn run_on_the_gpu_matches_the_cpu() {
    let mut rng = common::rng("run_on_the_gpu");
    if common::gpu("cli_moe", "run_on_the_gpu_matches_the_cpu").is_none() {
        return;
    }
    for (n, family) in [
        ModelFamily::Mixtral,
        ModelFamily::Qwen2Moe,
        ModelFamily::Qwen3Moe,
        ModelFamily::Olmoe,
        ModelFamily::DeepseekV2,
        ModelFamily::DeepseekV3,
        ModelFamily::MinimaxM2,
        ModelFamily::GraniteMoe,
        ModelFamily::HunyuanV1Moe,
        ModelFamily::Ernie45Moe,
        ModelFamily::Llama4,
        ModelFamily::Dbrx,
        ModelFamily::Phimoe,
        ModelFamily::GptOss,
    ]
    .into_iter()
    .enumerate()
    {
        let fused = n % 2 == 1;
        let m = TinyModel::new(&mut rng, family, DType::BF16, fused);
        let dir = m.write_temp("gpu-run", 1);
        let work = TempDir::new("gpu-run-io");
        let input = work.path().join("in.safetensors");
        let t = 9;
        write_input(&mut rng, &input, t, DType::BF16);
        let layer = *m.layers.keys().next().unwrap();
        let k = m.moe.routing.top_k;
        let mut results = Vec::new();
        for device in ["cpu", "cuda"] {
            let output = work.path().join(format!("out-{device}.safetensors"));
            let args = run_args(dir.path(), layer, &input, &output, device);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = if device == "cpu" {
                moe(&args)
            } else {
                moe_on_gpu(&args).expect("the GPU the tests found")
            };
            assert_ok(&out, &format!("{family} fused={fused} --device {device}"));
            let said = String::from_utf8_lossy(&out.stderr);
            let on = if device == "cpu" {
                "on the CPU"
            } else {
                "on the GPU"
            };
            assert!(said.contains(on), "{family} --device {device}: {said}");
            results.push(read_output(&output, t, k));
        }
        let what = format!("{family} fused={fused}: --device cuda against --device cpu");
        assert_eq!(results[1].1, results[0].1, "{what}: topk_ids");
        common::assert_close(
            &format!("{what}: topk_weights"),
            &common::f64s(&results[1].2),
            &common::f64s(&results[0].2),
            1e-2,
        );
        common::assert_close(
            &format!("{what}: hidden_states"),
            &common::f64s(&results[1].0),
            &common::f64s(&results[0].0),
            1e-2,
        );
    }
}

/// `--dtype` overrides the stored type; an f16 checkpoint runs in f16 by default; inputs of any float type
/// are converted.
#[test]
fn run_dtype_choices() {
    let mut rng = common::rng("run_dtype_choices");
    let m = TinyModel::new(&mut rng, ModelFamily::DeepseekV3, DType::BF16, false);
    let dir = m.write_temp("dtype", 1);
    let work = TempDir::new("dtype-io");
    let (input, output) = (work.path().join("in.st"), work.path().join("out.st"));
    let x = write_input(&mut rng, &input, 5, DType::F32);
    let run = |extra: &[&str]| {
        let mut a = vec![
            "run",
            "--model",
            p(dir.path()),
            "--layer",
            "2",
            "--input",
            p(&input),
            "--output",
            p(&output),
        ];
        a.extend_from_slice(extra);
        let out = moe(&a);
        assert_ok(&out, &format!("{extra:?}"));
        read_output(&output, 5, 3)
    };
    // bf16 weights widened to f32 exactly: the f32 layer.
    let (h, ids, _) = run(&["--dtype", "f32"]);
    let (wh, wids, _) = direct::<f32>(&m, 2, &x);
    assert_eq!(ids, wids);
    common::assert_close("--dtype f32", &common::f64s(&h), &common::f64s(&wh), 1e-5);
    // Default: the stored bf16, with the f32 input rounded to bf16.
    let (h, ids, _) = run(&[]);
    let (wh, wids, _) = direct::<bf16>(&m, 2, &x);
    assert_eq!(ids, wids);
    common::assert_close("default bf16", &common::f64s(&h), &common::f64s(&wh), 1e-2);

    // An f16 checkpoint with a bf16 input runs in f16.
    let m = TinyModel::new(&mut rng, ModelFamily::Olmoe, DType::F16, true);
    let dir = m.write_temp("dtype16", 1);
    let x = write_input(&mut rng, &input, 4, DType::BF16);
    let out = moe(&[
        "run",
        "--model",
        p(dir.path()),
        "--layer",
        "0",
        "--input",
        p(&input),
        "--output",
        p(&output),
    ]);
    assert_ok(&out, "f16");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in f16") && stderr.contains("CPU"),
        "{stderr}"
    );
    let (h, ids, _) = read_output(&output, 4, 2);
    let (wh, wids, _) = direct::<f16>(&m, 0, &x);
    assert_eq!(ids, wids);
    common::assert_close("f16", &common::f64s(&h), &common::f64s(&wh), 1e-2);
}

fn assert_no_temp_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            !name.contains(".tmp-"),
            "temporary file {name} left in {}",
            dir.display()
        );
    }
}

/// Expect failure: non-zero exit, exactly one line on stderr starting with `error:` and containing every
/// needle, no output file, no temporary file.
fn expect_error(args: &[&str], output: &Path, needles: &[&str]) {
    let out = moe(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: stderr is not one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{args:?}: `{}` lacks `{n}`", lines[0]);
    }
    assert!(
        !output.exists(),
        "{args:?}: {} was written",
        output.display()
    );
    if let Some(d) = output.parent().filter(|d| d.is_dir()) {
        assert_no_temp_files(d);
    }
}

#[test]
fn run_errors() {
    let mut rng = common::rng("run_errors");
    let m = TinyModel::new(&mut rng, ModelFamily::Qwen2Moe, DType::BF16, false);
    let dir = m.write_temp("cli-err", 2);
    let model = p(dir.path()).to_string();
    let work = TempDir::new("cli-err-io");
    let input = work.path().join("in.safetensors");
    write_input(&mut rng, &input, 3, DType::BF16);
    let out_path = work.path().join("out.safetensors");
    let (inp, out) = (p(&input).to_string(), p(&out_path).to_string());
    let run =
        |model: &str, layer: &str, input: &str, output: &str, extra: &[&str]| -> Vec<String> {
            let mut a: Vec<String> = [
                "run", "--model", model, "--layer", layer, "--input", input, "--output", output,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            a.extend(extra.iter().map(|s| s.to_string()));
            a
        };
    let check = |args: Vec<String>, output: &Path, needles: &[&str]| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_error(&a, output, needles);
    };

    // Sanity: the good invocation works (and is removed again).
    let ok = moe(&run(&model, "1", &inp, &out, &[])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert_ok(&ok, "good run");
    std::fs::remove_file(&out_path).unwrap();

    // Input problems.
    let other = work.path().join("other.safetensors");
    let mut t = BTreeMap::new();
    t.insert(
        "x".to_string(),
        Stored::float(DType::F32, vec![2, H], &[0.0; 2 * H]),
    );
    write_safetensors(&other, &t);
    check(
        run(&model, "1", p(&other), &out, &[]),
        &out_path,
        &["hidden_states", "`x`"],
    );
    let mut t = BTreeMap::new();
    t.insert(
        "hidden_states".to_string(),
        Stored::float(DType::F32, vec![2, H + 1], &[0.0; 2 * (H + 1)]),
    );
    write_safetensors(&other, &t);
    check(
        run(&model, "1", p(&other), &out, &[]),
        &out_path,
        &["[2, 25]", "[T, 24]"],
    );
    let mut t = BTreeMap::new();
    t.insert(
        "hidden_states".to_string(),
        Stored::float(DType::F32, vec![1, 2, H], &[0.0; 2 * H]),
    );
    write_safetensors(&other, &t);
    check(
        run(&model, "1", p(&other), &out, &[]),
        &out_path,
        &["[1, 2, 24]"],
    );
    let mut t = BTreeMap::new();
    t.insert(
        "hidden_states".to_string(),
        Stored {
            dtype: Dtype::I32,
            shape: vec![2, H],
            bytes: vec![0; 2 * H * 4],
        },
    );
    write_safetensors(&other, &t);
    check(run(&model, "1", p(&other), &out, &[]), &out_path, &["I32"]);
    std::fs::write(&other, b"garbage!garbage!").unwrap();
    check(
        run(&model, "1", p(&other), &out, &[]),
        &out_path,
        &["malformed"],
    );
    let missing_in = work.path().join("nope.safetensors");
    check(
        run(&model, "1", p(&missing_in), &out, &[]),
        &out_path,
        &["nope.safetensors"],
    );

    // Model problems.
    let gone = work.path().join("no-model");
    check(
        run(p(&gone), "1", &inp, &out, &[]),
        &out_path,
        &["no-model"],
    );
    check(
        run(p(work.path()), "1", &inp, &out, &[]),
        &out_path,
        &["config.json"],
    );
    check(
        run(&model, "0", &inp, &out, &[]),
        &out_path,
        &["layer 0", "dense", "mlp_only_layers"],
    );
    check(
        run(&model, "9", &inp, &out, &[]),
        &out_path,
        &["layer 9", "out of range"],
    );
    {
        let mut m2 = TinyModel::new(&mut rng, ModelFamily::Qwen2Moe, DType::BF16, false);
        let key = "model.layers.2.mlp.experts.6.gate_proj.weight";
        m2.tensors.remove(key);
        let dir2 = m2.write_temp("cli-missing", 1);
        check(
            run(p(dir2.path()), "2", &inp, &out, &[]),
            &out_path,
            &[key, "missing"],
        );
        let mut m3 = TinyModel::new(&mut rng, ModelFamily::Mixtral, DType::F32, false);
        m3.config["model_type"] = serde_json::json!("llama");
        let dir3 = m3.write_temp("cli-llama", 1);
        check(
            run(p(dir3.path()), "0", &inp, &out, &[]),
            &out_path,
            &["`llama`"],
        );
        // ... which --family makes loadable.
        let ok = moe(&[
            "run",
            "--model",
            p(dir3.path()),
            "--family",
            "mixtral",
            "--layer",
            "0",
            "--input",
            &inp,
            "--output",
            &out,
        ]);
        assert_ok(&ok, "--family");
        std::fs::remove_file(&out_path).unwrap();
    }

    // Output problems: a missing directory, a path under a regular file, a directory.
    let nodir = work.path().join("missing-dir").join("out.safetensors");
    check(
        run(&model, "1", &inp, p(&nodir), &[]),
        &nodir,
        &["missing-dir"],
    );
    let under_file = input.join("out.safetensors");
    check(
        run(&model, "1", &inp, p(&under_file), &[]),
        &under_file,
        &["out.safetensors"],
    );
    let out_is_dir = work.path().join("adir");
    std::fs::create_dir(&out_is_dir).unwrap();
    let out_out = moe(&run(&model, "1", &inp, p(&out_is_dir), &[])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(!out_out.status.success());
    assert!(out_is_dir.is_dir());

    // Device and argument problems: without a usable GPU, --device cuda is a one-line error.
    if let Err(why) = moe_kernels::gpu::Device::new(0) {
        eprintln!("(no GPU here: {why}; checking the --device cuda error)");
        check(
            run(&model, "1", &inp, &out, &["--device", "cuda"]),
            &out_path,
            &["needs a usable GPU"],
        );
    }
    check(
        run(&model, "1", &inp, &out, &["--dtype", "f64"]),
        &out_path,
        &["f64"],
    );
    expect_error(
        &["run", "--model", &model, "--layer", "1", "--output", &out],
        &out_path,
        &["--input"],
    );
    expect_error(
        &[
            "run", "--model", &model, "--layer", "x", "--input", &inp, "--output", &out,
        ],
        &out_path,
        &["--layer"],
    );

    // A failing run leaves an existing output untouched.
    std::fs::write(&out_path, b"old").unwrap();
    let o = moe(&run(&model, "0", &inp, &out, &[])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&out_path).unwrap(), b"old");
    assert_no_temp_files(work.path());
}

#[test]
fn info_prints_settings_and_moe_layers() {
    let mut rng = common::rng("info");
    let m = TinyModel::new(&mut rng, ModelFamily::DeepseekV3, DType::BF16, true);
    let dir = m.write_temp("info", 2);
    let out = moe(&["info", "--model", p(dir.path())]);
    assert_ok(&out, "info");
    let s = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "deepseek_v3",
        "MoE layers:",
        "1-2 (2 of 3; first_k_dense_replace = 1, moe_layer_freq = 1)",
        "sigmoid",
        "sum of top-2",
        "routed_scaling_factor:",
        "2.5",
        "intermediate_size 16",
        "2 shards",
    ] {
        assert!(s.contains(needle), "info lacks `{needle}`:\n{s}");
    }
    // Parameters, counted here from the tiny model's sizes: router and bias, 8 experts (3 active),
    // one ungated shared expert.
    let (h, i, e, k, is) = (24u64, 16, 8, 3, 16);
    let (router, expert, shared) = (e * h + e, 3 * i * h, 3 * is * h);
    let (total, active) = (router + e * expert + shared, router + k * expert + shared);
    assert_eq!((total, active), (10568, 4808));
    assert!(
        s.contains("10.6K per MoE block, 4.8K active per token (45.5%)"),
        "{s}"
    );
    // Bytes per layer: every stored tensor under the layer's block prefix.
    let bytes: usize = m
        .tensors
        .iter()
        .filter(|(key, _)| key.starts_with(&format!("{}.", m.prefix(1))))
        .map(|(_, t)| t.bytes.len())
        .sum();
    let want = format!(
        "1-2: experts BF16 (fused, under model.layers.{{L}}.mlp), router BF16, {:.1} KiB per layer",
        bytes as f64 / 1024.0
    );
    assert!(s.contains(&want), "info lacks `{want}`:\n{s}");

    // Config only: still prints, says the checkpoint is not usable.
    std::fs::remove_file(dir.path().join("model.safetensors.index.json")).unwrap();
    let out = moe(&["info", "--model", p(dir.path())]);
    assert_ok(&out, "info without weights");
    assert!(String::from_utf8_lossy(&out.stdout).contains("not usable"));

    let gone = dir.path().join("nothing");
    expect_error(
        &["info", "--model", p(&gone)],
        &gone.join("x"),
        &["config.json"],
    );

    // The later families' own settings and layouts.
    for (family, needles) in [
        (
            ModelFamily::Llama4,
            &[
                "1, 3 (2 of 4; moe_layers = [1, 3])",
                "top-1 per token",
                "the expert inputs",
                "fused, transposed per expert, under model.layers.{L}.feed_forward",
            ][..],
        ),
        (
            ModelFamily::Dbrx,
            &[
                "top-3 per token",
                "the expert outputs",
                "w1/v1/w2 stacked [E * I, H], under transformer.blocks.{L}.ffn",
            ][..],
        ),
        (
            ModelFamily::Phimoe,
            &[
                "sparse mixer, 2 experts (jitter_eps = 0.4)",
                "top-2 per token",
            ][..],
        ),
        (
            ModelFamily::GptOss,
            &[
                "clamped silu (alpha 1.702, limit 7), gated",
                "fused, transposed per expert, gate/up interleaved, with biases, under \
                 model.layers.{L}.mlp",
            ][..],
        ),
    ] {
        let m = TinyModel::new(&mut rng, family, DType::BF16, true);
        let dir = m.write_temp("info", 1);
        let out = moe(&["info", "--model", p(dir.path())]);
        assert_ok(&out, &format!("info {family}"));
        let s = String::from_utf8_lossy(&out.stdout);
        for needle in needles {
            assert!(s.contains(needle), "{family}: info lacks `{needle}`:\n{s}");
        }
    }
}

#[test]
fn check_on_cpu() {
    let mut rng = common::rng("check");
    let m = TinyModel::new(&mut rng, ModelFamily::Qwen3Moe, DType::BF16, false);
    let dir = m.write_temp("check", 1);
    let out = moe(&[
        "check",
        "--model",
        p(dir.path()),
        "--layer",
        "3",
        "--tokens",
        "16",
        "--seed",
        "7",
    ]);
    assert_ok(&out, "check");
    let s = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "seed 7",
        "CPU f32",
        "CPU bf16",
        "relative L2 error:",
        "tokens routed alike:",
        "routing agreement:",
        "GPU:",
    ] {
        assert!(s.contains(needle), "check lacks `{needle}`:\n{s}");
    }
    // The error over the tokens routed alike: a token whose experts differ (a near-tie that bf16
    // rounding decides) differs by whole expert outputs, whatever the kernels' accuracy.
    let err: f64 = s
        .lines()
        .find_map(|l| l.trim().strip_prefix("tokens routed alike:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(err < 3e-2, "bf16 vs f32 relative error {err}:\n{s}");

    let none = PathBuf::from("/nonexistent-out");
    expect_error(
        &[
            "check",
            "--model",
            p(dir.path()),
            "--layer",
            "3",
            "--device",
            "cuda",
        ],
        &none,
        &["GPU"],
    );
    expect_error(
        &["check", "--model", p(dir.path()), "--layer", "2"],
        &none,
        &["dense"],
    );
    expect_error(
        &[
            "check",
            "--model",
            p(dir.path()),
            "--layer",
            "3",
            "--tokens",
            "0",
        ],
        &none,
        &["--tokens"],
    );
}

/// The library reads the command's output back with the same dtype checks.
#[test]
fn output_is_readable_by_the_library() {
    let mut rng = common::rng("output_readable");
    let m = TinyModel::new(&mut rng, ModelFamily::Olmoe, DType::F32, false);
    let dir = m.write_temp("readback", 1);
    let work = TempDir::new("readback-io");
    let (input, output) = (work.path().join("in.st"), work.path().join("out.st"));
    write_input(&mut rng, &input, 2, DType::F32);
    let out = moe(&[
        "run",
        "--model",
        p(dir.path()),
        "--layer",
        "1",
        "--input",
        p(&input),
        "--output",
        p(&output),
    ]);
    assert_ok(&out, "run");
    let f = SafetensorsFile::open(&output).unwrap();
    assert_eq!(f.keys(), vec!["hidden_states", "topk_ids", "topk_weights"]);
    assert_eq!(f.tensor("hidden_states").unwrap().shape(), &[2, H]);
    assert!(matches!(
        f.tensor("topk_ids"),
        Err(moe_kernels::MoeError::TensorDType { .. })
    ));
}
