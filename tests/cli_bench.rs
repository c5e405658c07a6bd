//! `moe bench` end to end on the CPU: one small preset at one token count, without the PyTorch peers;
//! checks the report files and that every stage was timed, and the one-line errors of bad arguments.

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
        md.contains("| olmoe-1b-7b | 2 | moe-kernels cpu | layer |"),
        "{md}"
    );
    assert!(out.join("olmoe-1b-7b-layer-time.svg").is_file());
    assert!(out.join("olmoe-1b-7b-pct-of-ceiling.svg").is_file());
    assert!(stdout.contains("olmoe-1b-7b"), "{stdout}");
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
            "--min-seconds",
            "-1",
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
