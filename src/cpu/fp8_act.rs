//! FP8 activation quantisation, per token and group of [`FP8_BLOCK`] columns: DeepSeek-V3's
//! `act_quant`, the input of the FP8 x FP8 GEMM (`gpu::grouped_gemm_w8a8`). The CPU twin of
//! `gpu::quantize_fp8_per_token_group`, with the same `f32` operations in the same order, so the two
//! agree bit for bit.

use crate::dtype::Element;
use crate::error::Result;
use crate::quant::{f32_to_fp8_e4m3, FP8_BLOCK, FP8_E4M3_MAX};
use crate::view::{MatMut, MatRef};

/// Quantise `x` `[rows, K]` to FP8 e4m3 `codes` `[rows, K]` and `f32` `scales`
/// `[rows, ceil(K / 128)]`: per row and group of 128 columns (the last group of a row may be
/// shorter), `scale = amax / 448` and `code = e4m3(x / scale)`, rounded to nearest even and saturated
/// to +-448 ([`f32_to_fp8_e4m3`]), so `x ≈ e4m3(code) * scale`. A group of zeros gets scale 1 and
/// zero codes. NaN inputs are skipped by the amax and give NaN codes; an infinite input makes the
/// scale infinite and the group's codes zero or NaN.
///
/// Errors: [`MoeError::ShapeMismatch`](crate::MoeError::ShapeMismatch) for `codes` or `scales` of
/// another shape.
pub fn quantize_fp8_per_token_group<T: Element>(
    x: MatRef<'_, T>,
    codes: &mut MatMut<'_, u8>,
    scales: &mut MatMut<'_, f32>,
) -> Result<()> {
    let (rows, k) = (x.rows(), x.cols());
    codes.expect_shape("FP8 activation codes", rows, k)?;
    scales.expect_shape("FP8 activation scales", rows, k.div_ceil(FP8_BLOCK))?;
    for r in 0..rows {
        let row = x.row(r);
        let scale_row = scales.row_mut(r);
        let mut group_scales = Vec::with_capacity(scale_row.len());
        for group in row.chunks(FP8_BLOCK) {
            let amax = group.iter().fold(0f32, |m, v| m.max(v.to_f32().abs()));
            group_scales.push(if amax > 0.0 { amax / FP8_E4M3_MAX } else { 1.0 });
        }
        scale_row.copy_from_slice(&group_scales);
        for ((group, out), &scale) in row
            .chunks(FP8_BLOCK)
            .zip(codes.row_mut(r).chunks_mut(FP8_BLOCK))
            .zip(&group_scales)
        {
            for (c, v) in out.iter_mut().zip(group) {
                *c = f32_to_fp8_e4m3(v.to_f32() / scale);
            }
        }
    }
    Ok(())
}
