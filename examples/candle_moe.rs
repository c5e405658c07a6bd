//! A Qwen3-MoE-shaped block (scaled down: hidden 256, 16 experts, top-8, intermediate 64, softmax
//! top-k renormalised, SwiGLU) built from candle tensors the way a candle model holds them (a router
//! and per-expert `gate_proj`, `up_proj`, `down_proj`), run through `moe_kernels::candle::MoeBlock` as
//! a candle `Module` on `[batch, seq, hidden]`, and checked against the CPU reference
//! (`CpuMoeLayer`) built from the same numbers. Exits non-zero when they do not match.
//!
//! ```text
//! cargo run --release --features candle --example candle_moe [-- --dtype bf16 --tokens 64]
//! cargo run --release --features candle-cuda --example candle_moe -- --device cuda --dtype bf16
//! ```
//!
//! The seed is printed; `MOE_TEST_SEED=<seed>` replays it.

use candle_core::{DType, Device, Tensor};
use half::bf16;
use moe_kernels::candle::MoeBlock;
use moe_kernels::cpu::layer::{CpuMoeLayer, MoeWeights};
use moe_kernels::{Element, MatRef, MoeConfig, RoutingConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const HIDDEN: usize = 256;
const EXPERTS: usize = 16;
const TOP_K: usize = 8;
const INTERMEDIATE: usize = 64;

struct Args {
    device: String,
    dtype: DType,
    tokens: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        device: "cpu".into(),
        dtype: DType::F32,
        tokens: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--device" => args.device = value,
            "--dtype" => {
                args.dtype = match value.as_str() {
                    "f32" => DType::F32,
                    "bf16" => DType::BF16,
                    other => return Err(format!("--dtype {other}: f32 or bf16")),
                }
            }
            "--tokens" => args.tokens = value.parse().map_err(|e| format!("--tokens: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn device(name: &str) -> Result<Device, String> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|e| format!("no CUDA device for candle: {e}")),
        other => Err(format!("--device {other}: cpu or cuda")),
    }
}

/// `n` values uniform with standard deviation `scale`.
fn randn(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    let a = scale * 3f32.sqrt();
    (0..n).map(|_| rng.random_range(-a..a)).collect()
}

/// The weights of one expert as a candle model holds them: `gate_proj` and `up_proj` `[I, H]`,
/// `down_proj` `[H, I]` (f32 values; the tensors are made in the block's dtype).
struct Expert {
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let dev = device(&args.device)?;
    let seed = match std::env::var("MOE_TEST_SEED") {
        Ok(s) => s.parse::<u64>()?,
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64,
    };
    println!("seed = {seed} (replay with MOE_TEST_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    // Qwen3-MoE routing and SwiGLU experts, scaled down.
    let mut cfg = MoeConfig::qwen3_30b_a3b();
    cfg.hidden_size = HIDDEN;
    cfg.intermediate_size = INTERMEDIATE;
    cfg.routing = RoutingConfig::softmax_topk(EXPERTS, TOP_K, true);
    let (h, i) = (HIDDEN, INTERMEDIATE);
    let hs = 1.0 / (h as f32).sqrt();
    let router = randn(&mut rng, EXPERTS * h, hs);
    let experts: Vec<Expert> = (0..EXPERTS)
        .map(|_| Expert {
            gate: randn(&mut rng, i * h, 2.0 * hs),
            up: randn(&mut rng, i * h, 2.0 * hs),
            down: randn(&mut rng, h * i, 1.0 / (i as f32).sqrt()),
        })
        .collect();
    let (batch, seq) = (2, args.tokens.div_ceil(2));
    let x = randn(&mut rng, batch * seq * h, 1.0);

    // The model's tensors, stacked into the block's fused layout with candle ops: gate_up [E, 2I, H]
    // (every expert's gate rows, then its up rows), down [E, H, I].
    let tensor = |v: &[f32], shape: &[usize]| -> candle_core::Result<Tensor> {
        Tensor::from_slice(v, shape, &dev)?.to_dtype(args.dtype)
    };
    let stack = |part: fn(&Expert) -> &[f32], shape: &[usize]| -> candle_core::Result<Tensor> {
        let per_expert = experts
            .iter()
            .map(|ex| tensor(part(ex), shape))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::stack(&per_expert, 0)
    };
    let gate = stack(|ex| ex.gate.as_slice(), &[i, h])?;
    let up = stack(|ex| ex.up.as_slice(), &[i, h])?;
    let gate_up = Tensor::cat(&[&gate, &up], 1)?;
    let down = stack(|ex| ex.down.as_slice(), &[h, i])?;
    let router_t = tensor(&router, &[EXPERTS, h])?;
    let block = MoeBlock::from_tensors(cfg.clone(), &router_t, &gate_up, &down)?;
    println!(
        "block: H {h}, E {EXPERTS}, top-{TOP_K}, I {i}, softmax renormalised, SwiGLU; {:?} on {:?}",
        block.dtype(),
        dev.location()
    );

    // The forward, as a model calls its MoE block.
    let xs = tensor(&x, &[batch, seq, h])?;
    let start = Instant::now();
    let out = xs.apply(&block)?;
    let got = out.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let elapsed = start.elapsed();
    block.check_device_status()?;
    assert_eq!(out.dims(), xs.dims());

    // The CPU reference from the same numbers, fused on the host (not with candle), in the block's
    // element type.
    let gate_up_host: Vec<f32> = experts
        .iter()
        .flat_map(|ex| ex.gate.iter().chain(&ex.up).copied())
        .collect();
    let down_host: Vec<f32> = experts.iter().flat_map(|ex| ex.down.clone()).collect();
    let want = match args.dtype {
        DType::F32 => reference::<f32>(&cfg, &router, &gate_up_host, &down_host, &x)?,
        _ => reference::<bf16>(&cfg, &router, &gate_up_host, &down_host, &x)?,
    };

    let (num, den) = got
        .iter()
        .zip(&want)
        .fold((0f64, 0f64), |(n, d), (&g, &w)| {
            let (g, w) = (g as f64, w as f64);
            (n + (g - w) * (g - w), d + w * w)
        });
    let rel = (num / den).sqrt();
    let tol = if args.dtype == DType::F32 { 1e-5 } else { 1e-2 };
    let ok = got.iter().all(|v| v.is_finite()) && rel <= tol;
    println!(
        "[{batch}, {seq}, {h}] in {:.2} ms: relative L2 error against CpuMoeLayer {rel:.3e} \
         (tolerance {tol:e}): {}",
        elapsed.as_secs_f64() * 1e3,
        if ok { "match" } else { "MISMATCH" }
    );
    Ok(ok)
}

/// `CpuMoeLayer<W>`'s output for `x` `[T, H]` (values rounded to `W` first), widened to f32.
fn reference<W: Element>(
    cfg: &MoeConfig,
    router: &[f32],
    gate_up: &[f32],
    down: &[f32],
    x: &[f32],
) -> moe_kernels::Result<Vec<f32>> {
    let conv = |v: &[f32]| v.iter().map(|&f| W::from_f32(f)).collect::<Vec<W>>();
    let weights = MoeWeights {
        router: conv(router),
        biases: None,
        correction_bias: None,
        gate_up: conv(gate_up),
        down: conv(down),
        shared: vec![],
    };
    let layer = CpuMoeLayer::new(cfg.clone(), weights)?;
    let x = conv(x);
    let t = x.len() / cfg.hidden_size;
    let out = layer.forward(MatRef::new("hidden states", &x, t, cfg.hidden_size)?)?;
    Ok(out.hidden.iter().map(|v| v.to_f32()).collect())
}
