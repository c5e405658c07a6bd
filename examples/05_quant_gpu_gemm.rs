//! The weight-only quantized grouped GEMM on the GPU against the bf16 one, at a decode shape: random
//! FP8 e4m3 expert weights with 128-column block scales, or MXFP4 e2m1 weights with e8m0 scales per
//! 32 columns (seeded), the quantized GEMM on the codes, and the bf16 GEMM on the same weights
//! dequantized on the host and rounded to bf16, which is exactly what the quantized kernel feeds its
//! tensor cores: the two outputs must be identical, bit for bit. Prints the weight bytes each one
//! reads.
//!
//! Run with `cargo run --release --example 05_quant_gpu_gemm -- [fp8|mxfp4] [experts] [rows per
//! expert] [N] [K]` on a GPU machine, or on the emulated GPU with its profiler (whose report gives
//! the global bytes each kernel moved):
//!
//! ```text
//! PTX_EMU_PROFILE=prof scripts/with-emulated-gpu target/release/examples/05_quant_gpu_gemm mxfp4
//! ```

use anyhow::{bail, ensure, Context, Result};
use half::bf16;
use moe_kernels::gpu::{
    grouped_gemm, grouped_gemm_quant, Device, Fp8Weights, GemmEpilogue, GroupedGemmShape,
    Mxfp4Weights, QuantWeights,
};
use moe_kernels::quant::{f32_to_e8m0, CodeFormat, QuantExperts};
use moe_kernels::Activation;
use rand::{Rng, SeedableRng};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let format = match args.next().as_deref() {
        None | Some("fp8") => CodeFormat::Fp8E4M3,
        Some("mxfp4") => CodeFormat::Mxfp4E2M1,
        Some(other) => bail!("the format is fp8 or mxfp4, not {other}"),
    };
    let args: Vec<usize> = args
        .map(|a| a.parse().context("arguments after the format are sizes"))
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
    // Columns per scale: DeepSeek-V3's 128 x 128 blocks as per-row groups, or MXFP4's 32.
    let (group, codes) = match format {
        // Codes of magnitude 1/8 to 8 (no NaN).
        CodeFormat::Fp8E4M3 => (
            128,
            (0..e * n * k)
                .map(|_| (u8::from(rng.random_bool(0.5)) << 7) | rng.random_range(0x20..0x58u8))
                .collect::<Vec<u8>>(),
        ),
        // Every e2m1 code.
        CodeFormat::Mxfp4E2M1 => (
            32,
            (0..e * n * k.div_ceil(2)).map(|_| rng.random()).collect(),
        ),
    };
    // Scales of about 1/sqrt(K) (powers of two for MXFP4's e8m0).
    let scales: Vec<f32> = (0..e * n * k.div_ceil(group))
        .map(|_| {
            let s = rng.random_range(0.5..2.0f32) / (k as f32).sqrt();
            match format {
                CodeFormat::Fp8E4M3 => s,
                CodeFormat::Mxfp4E2M1 => 2f32.powi(s.log2().round() as i32 - 1),
            }
        })
        .collect();
    let quant = QuantExperts::new(format, [e, n, k], group, codes, scales)?;
    let x: Vec<bf16> = (0..rows * k)
        .map(|_| bf16::from_f32(rng.random_range(-1.0..1.0)))
        .collect();
    let offsets: Vec<i64> = (0..=e).map(|j| (j * per_expert) as i64).collect();
    // The same weights in bf16: each code times its scale (the CPU reference's dequantisation),
    // rounded once.
    let mut row = vec![0f32; k];
    let mut w: Vec<bf16> = Vec::with_capacity(e * n * k);
    for j in 0..e * n {
        quant.row_into(j / n, j % n, &mut row);
        w.extend(row.iter().map(|&v| bf16::from_f32(v)));
    }
    // The scales as the kernels read them: f32 (FP8) or e8m0 bytes (MXFP4, exact: powers of two).
    let scale_bytes: Vec<u8> = match format {
        CodeFormat::Fp8E4M3 => vec![],
        CodeFormat::Mxfp4E2M1 => quant
            .scales()
            .iter()
            .map(|&s| f32_to_e8m0(s).context("an MXFP4 scale that is no power of two"))
            .collect::<Result<_>>()?,
    };

    let dev = Device::new(0).context("no GPU (try scripts/with-emulated-gpu)")?;
    let stream = dev.stream();
    let x_dev = stream.clone_htod(&x)?;
    let offsets_dev = stream.clone_htod(&offsets)?;
    let codes_dev = stream.clone_htod(quant.codes())?;
    let f32_scales_dev = stream.clone_htod(quant.scales())?;
    let byte_scales_dev = match format {
        CodeFormat::Fp8E4M3 => None,
        CodeFormat::Mxfp4E2M1 => Some(stream.clone_htod(&scale_bytes)?),
    };
    let w_dev = stream.clone_htod(&w)?;
    let cols = shape.out_cols(epilogue);
    let mut out_quant = stream.alloc_zeros::<bf16>(rows * cols)?;
    let mut out_bf16 = stream.alloc_zeros::<bf16>(rows * cols)?;
    let (codes_view, f32_view) = (codes_dev.as_view(), f32_scales_dev.as_view());
    let bytes_view = byte_scales_dev.as_ref().map(|d| d.as_view());
    let (weights, scale_size) = match format {
        CodeFormat::Fp8E4M3 => (
            QuantWeights::Fp8E4M3(Fp8Weights {
                codes: &codes_view,
                scales: &f32_view,
                group,
            }),
            4,
        ),
        CodeFormat::Mxfp4E2M1 => (
            QuantWeights::Mxfp4E2M1(Mxfp4Weights {
                codes: &codes_view,
                scales: bytes_view.as_ref().context("MXFP4 scale bytes")?,
                group,
            }),
            1,
        ),
    };
    grouped_gemm_quant(
        &dev,
        &x_dev.as_view(),
        Some(&offsets_dev.as_view()),
        weights,
        shape,
        epilogue,
        &mut out_quant.as_view_mut(),
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
    let quantized: Vec<bf16> = stream.clone_dtoh(&out_quant)?;
    let plain: Vec<bf16> = stream.clone_dtoh(&out_bf16)?;
    let differ = quantized
        .iter()
        .zip(&plain)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
    let (code_bytes, scale_bytes) = (quant.codes().len(), scale_size * quant.scales().len());
    println!(
        "{e} experts x {per_expert} rows, N = {n}, K = {k}: weights read by the {} GEMM {:.2} MiB \
         (codes {:.2} + scales {:.2}), by the bf16 GEMM {:.2} MiB",
        format.name(),
        mib(code_bytes + scale_bytes),
        mib(code_bytes),
        mib(scale_bytes),
        mib(2 * w.len())
    );
    ensure!(
        differ == 0,
        "{differ} of {} outputs differ between the {} and the bf16 GEMM",
        quantized.len(),
        format.name()
    );
    println!(
        "outputs identical, bit for bit ({} values)",
        quantized.len()
    );
    Ok(())
}
