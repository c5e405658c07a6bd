//! `moe bench` end to end on the CPU: one small preset at one token count, without the PyTorch peers;
//! checks the report files and that every stage was timed, the quantized weights' records (their
//! format and the bytes they store), the MXFP4 stages on the GPU (on the emulated GPU when there is
//! no real one), and the one-line errors of bad arguments.

mod common;

use std::process::Command;

fn moe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_moe"))
        .args(args)
        .output()
        .expect("run moe")
}

#[test]
fn bench_writes_its_report_on_the_cpu() {
    let out = std::env::temp_dir().join(format!("moe-test-bench-{}", std::process::id()));
    let o = moe(&[
        "bench",
        "--device",
        "cpu",
        "--preset",
        "olmoe-1b-7b",
        "--tokens",
        "2",
        "--min-seconds",
        "0",
        "--no-peers",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "moe bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let records = json["records"].as_array().unwrap();
    let stages: Vec<&str> = records
        .iter()
        .map(|r| r["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "routing",
            "permute",
            "up_gemm",
            "down_gemm",
            "combine",
            "layer"
        ]
    );
    for r in records {
        assert_eq!(r["preset"], "olmoe-1b-7b");
        assert_eq!(r["weights"], "bf16");
        assert_eq!(r["tokens"], 2);
        assert_eq!(r["implementation"], "moe-kernels cpu");
        let median = r["median_us"].as_f64().unwrap();
        assert!(median > 0.0 && median.is_finite(), "{r}");
        assert!(r["samples"].as_u64().unwrap() >= 3, "{r}");
    }
    let layer = &records[5];
    // OLMoE: 2 tokens x 8 experts x (2*1024*2048 + 2048*1024) x 2 FLOPs, plus the router.
    let flops = 2.0 * 2.0 * 8.0 * (3.0 * 2048.0 * 1024.0) + 2.0 * 2.0 * 2048.0 * 64.0;
    assert_eq!(layer["work"]["flops"].as_f64().unwrap(), flops);
    assert!(json["ceilings"]["copy_gbps"].as_f64().unwrap() > 0.0);
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("| olmoe-1b-7b | 2 | bf16 | moe-kernels cpu | layer |"),
        "{md}"
    );
    assert!(out.join("olmoe-1b-7b-layer-time.svg").is_file());
    assert!(out.join("olmoe-1b-7b-pct-of-ceiling.svg").is_file());
    assert!(stdout.contains("olmoe-1b-7b"), "{stdout}");
    std::fs::remove_dir_all(&out).unwrap();
}

/// `moe bench --device cpu --preset olmoe-1b-7b --tokens 1 --weights <weights>` (no peers), into
/// `out`: its results.json.
fn quantized_run(weights: &str, out: &std::path::Path) -> serde_json::Value {
    let o = moe(&[
        "bench",
        "--device",
        "cpu",
        "--preset",
        "olmoe-1b-7b",
        "--weights",
        weights,
        "--tokens",
        "1",
        "--min-seconds",
        "0",
        "--no-peers",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "moe bench --weights {weights} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

#[test]
fn bench_quantized_weights_count_their_stored_bytes() {
    let out = std::env::temp_dir().join(format!("moe-test-bench-quant-{}", std::process::id()));
    // OLMoE at one token: 8 rows, 8 distinct experts; up [2048, 2048] and down [2048, 1024] per
    // expert. Stored bytes per row of K values: FP8 K codes and an f32 scale per 128; MXFP4 K / 2
    // codes and an f32 scale per 32.
    let (h, i, rows) = (2048.0, 1024.0, 8.0);
    for (weights, row_bytes) in [
        ("fp8", (|k: f64| k + 4.0 * (k / 128.0)) as fn(f64) -> f64),
        ("mxfp4", |k: f64| k / 2.0 + 4.0 * (k / 32.0)),
    ] {
        let json = quantized_run(weights, &out);
        let records = json["records"].as_array().unwrap();
        assert_eq!(records.len(), 6, "{json}");
        for r in records {
            assert_eq!(r["weights"], weights, "{r}");
            let median = r["median_us"].as_f64().unwrap();
            assert!(median > 0.0 && median.is_finite(), "{r}");
            let bytes = r["work"]["bytes"].as_f64().unwrap();
            let gbps = r["gbps"].as_f64().unwrap();
            assert!((gbps - bytes / median / 1e3).abs() <= 1e-9 * gbps, "{r}");
        }
        let bytes = |stage: &str| {
            records.iter().find(|r| r["stage"] == stage).unwrap()["work"]["bytes"]
                .as_f64()
                .unwrap()
        };
        let up = 8.0 * 2.0 * i * row_bytes(h) + rows * h * 2.0 + rows * i * 2.0;
        let down = 8.0 * h * row_bytes(i) + rows * i * 2.0 + rows * h * 2.0;
        assert_eq!(bytes("up_gemm"), up, "{weights}");
        assert_eq!(bytes("down_gemm"), down, "{weights}");
        let md = std::fs::read_to_string(out.join("results.md")).unwrap();
        assert!(
            md.contains(&format!(
                "| olmoe-1b-7b | 1 | {weights} | moe-kernels cpu | up_gemm |"
            )),
            "{md}"
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn bench_on_the_gpu_runs_mxfp4() {
    // The GPU GEMMs decode MXFP4: the stages run on the MXFP4 experts and report their stored
    // bytes (codes and e8m0 scale bytes are what the device holds, but the records count the
    // crate's stored format, as on the CPU).
    let out = std::env::temp_dir().join(format!("moe-test-bench-gpu-{}", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moe"));
    cmd.args([
        "bench",
        "--device",
        "cuda",
        "--preset",
        "olmoe-1b-7b",
        "--weights",
        "mxfp4",
        "--tokens",
        "1",
        "--min-seconds",
        "0",
        // One timed run per stage: on the emulated GPU each run of the layer takes seconds.
        "--min-samples",
        "1",
        "--no-peers",
        "--out",
        out.to_str().unwrap(),
    ]);
    let Some(mut cmd) = common::backend::on_gpu(cmd) else {
        eprintln!("(no GPU, real or emulated: not run)");
        return;
    };
    let o = cmd.output().expect("run moe");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "moe bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let records = json["records"].as_array().unwrap();
    assert!(!records.is_empty(), "{json}");
    for r in records {
        assert_eq!(r["weights"], "mxfp4", "{r}");
    }
    assert!(
        records.iter().any(|r| r["stage"] == "up_gemm"),
        "no up_gemm record: {json}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn bench_argument_errors_are_one_line() {
    for args in [
        &["bench", "--device", "cpu", "--tokens", "0", "--no-peers"][..],
        &["bench", "--device", "cpu", "--preset", "no-such-model"][..],
        &[
            "bench",
            "--device",
            "cpu",
            "--weights",
            "int3",
            "--no-peers",
        ][..],
        &[
            "bench",
            "--device",
            "cpu",
            "--min-seconds",
            "-1",
            "--no-peers",
        ][..],
        &[
            "bench",
            "--device",
            "cpu",
            "--min-samples",
            "0",
            "--no-peers",
        ][..],
    ] {
        let o = moe(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].starts_with("error: "), "{args:?}: {err}");
    }
}
