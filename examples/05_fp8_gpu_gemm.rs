//! The weight-only FP8 grouped GEMM on the GPU against the bf16 one, at a decode shape: random FP8
//! e4m3 expert weights with 128-column block scales (seeded), the FP8 GEMM on the codes, and the
//! bf16 GEMM on the same weights dequantized on the host and rounded to bf16, which is exactly what
//! the FP8 kernel feeds its tensor cores: the two outputs must be identical, bit for bit. Prints the
//! weight bytes each one reads.
//!
//! Run with `cargo run --release --example 05_fp8_gpu_gemm -- [experts] [rows per expert] [N] [K]`
//! on a GPU machine, or on the emulated GPU with its profiler (whose report gives the global bytes
//! each kernel moved):
//!
//! ```text
//! PTX_EMU_PROFILE=prof scripts/with-emulated-gpu target/release/examples/05_fp8_gpu_gemm
//! ```

use anyhow::{ensure, Context, Result};
use half::bf16;
use moe_kernels::gpu::{
    grouped_gemm, grouped_gemm_fp8, Device, Fp8Weights, GemmEpilogue, GroupedGemmShape,
};
use moe_kernels::quant::fp8_e4m3_to_f32;
use moe_kernels::Activation;
use rand::{Rng, SeedableRng};

/// Columns per scale: DeepSeek-V3's 128 x 128 blocks, as per-row groups.
const GROUP: usize = 128;

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("arguments are sizes"))
        .collect::<Result<_>>()?;
    let arg = |i: usize, default: usize| args.get(i).copied().unwrap_or(default);
    // Qwen3-30B-A3B's gate-up projection of 8 routed experts, 2 rows each (decode).
    let (e, per_expert, n, k) = (arg(0, 8), arg(1, 2), arg(2, 2 * 768), arg(3, 2048));
    let rows = e * per_expert;
    let shape = GroupedGemmShape {
        rows,
        n,
        k,
        num_experts: e,
    };
    let epilogue = GemmEpilogue::Activation(Activation::SWIGLU);

    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    // Codes of magnitude 1/8 to 8 (no NaN), scales of about 1/sqrt(K).
    let codes: Vec<u8> = (0..e * n * k)
        .map(|_| (u8::from(rng.random_bool(0.5)) << 7) | rng.random_range(0x20..0x58u8))
        .collect();
    let groups = k.div_ceil(GROUP);
    let scales: Vec<f32> = (0..e * n * groups)
        .map(|_| rng.random_range(0.5..2.0f32) / (k as f32).sqrt())
        .collect();
    let x: Vec<bf16> = (0..rows * k)
        .map(|_| bf16::from_f32(rng.random_range(-1.0..1.0)))
        .collect();
    let offsets: Vec<i64> = (0..=e).map(|j| (j * per_expert) as i64).collect();
    // The same weights in bf16: each code times its scale, rounded once.
    let w: Vec<bf16> = codes
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let (row, col) = (i / k, i % k);
            bf16::from_f32(fp8_e4m3_to_f32(c) * scales[row * groups + col / GROUP])
        })
        .collect();

    let dev = Device::new(0).context("no GPU (try scripts/with-emulated-gpu)")?;
    let stream = dev.stream();
    let x_dev = stream.clone_htod(&x)?;
    let offsets_dev = stream.clone_htod(&offsets)?;
    let codes_dev = stream.clone_htod(&codes)?;
    let scales_dev = stream.clone_htod(&scales)?;
    let w_dev = stream.clone_htod(&w)?;
    let cols = shape.out_cols(epilogue);
    let mut out_fp8 = stream.alloc_zeros::<bf16>(rows * cols)?;
    let mut out_bf16 = stream.alloc_zeros::<bf16>(rows * cols)?;
    grouped_gemm_fp8(
        &dev,
        &x_dev.as_view(),
        Some(&offsets_dev.as_view()),
        Fp8Weights {
            codes: &codes_dev.as_view(),
            scales: &scales_dev.as_view(),
            group: GROUP,
        },
        shape,
        epilogue,
        &mut out_fp8.as_view_mut(),
    )?;
    grouped_gemm(
        &dev,
        &x_dev.as_view(),
        Some(&offsets_dev.as_view()),
        &w_dev.as_view(),
        shape,
        epilogue,
        &mut out_bf16.as_view_mut(),
    )?;
    let fp8: Vec<bf16> = stream.clone_dtoh(&out_fp8)?;
    let plain: Vec<bf16> = stream.clone_dtoh(&out_bf16)?;
    let differ = fp8
        .iter()
        .zip(&plain)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    println!(
        "{e} experts x {per_expert} rows, N = {n}, K = {k}: weights read by the FP8 GEMM {:.2} MiB \
         (codes {:.2} + scales {:.2}), by the bf16 GEMM {:.2} MiB",
        (codes.len() + 4 * scales.len()) as f64 / (1 << 20) as f64,
        codes.len() as f64 / (1 << 20) as f64,
        (4 * scales.len()) as f64 / (1 << 20) as f64,
        (2 * w.len()) as f64 / (1 << 20) as f64
    );
    ensure!(
        differ == 0,
        "{differ} of {} outputs differ between the FP8 and the bf16 GEMM",
        fp8.len()
    );
    println!("outputs identical, bit for bit ({} values)", fp8.len());
    Ok(())
}
