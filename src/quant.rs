//! Quantized expert weights: stacks of matrices stored as 8-bit or 4-bit codes with scales, as the
//! shipped checkpoints hold them, dequantized a row at a time inside the GEMM (never into a
//! full-precision copy of the layer).
//!
//! | format | code | scales | checkpoints |
//! |---|---|---|---|
//! | FP8 block | e4m3 (`F8_E4M3`) | one per block of `block_rows x block_cols` (`weight_scale_inv`) | DeepSeek-V3/R1, Kimi-K2, GLM-4.5 FP8, Qwen3-FP8, MiniMax-M2 |
//! | FP8 channel | e4m3 | one per output row (`weight_scale` `[N, 1]`) | compressed-tensors `strategy: channel` |
//! | FP8 tensor | e4m3 | one per matrix (`weight_scale` `[1]` or `[]`) | compressed-tensors `strategy: tensor` |
//! | MXFP4 | e2m1, two per byte (`U8` `*_blocks` `[.., N, K / 32, 16]`) | e8m0, one per 32 values along K (`U8` `*_scales` `[.., N, K / 32]`) | gpt-oss |
//!
//! Every format has the same dequantisation, `w[r][c] = decode(code[r][c]) * scale(r, c)`, and is
//! kept in one representation, [`QuantExperts`]: the codes `[E, N, K]` and, for every row, one `f32`
//! scale per group of `group` columns (`[E, N, ceil(K / group)]`). A block scale is repeated for
//! each row of its block (3% of the codes' bytes at 128 x 128), which lets the gate and up
//! projections of an expert stack into one `[2I, H]` matrix even when `I` is not a multiple of the
//! block height, and serves partial edge blocks without a special case.

use crate::error::{MoeError, Result};
use crate::view::{checked_mul, expect_len};

/// How the codes of a [`QuantExperts`] encode values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodeFormat {
    /// FP8 e4m3 (the `fn` variant: no infinities, `0x7f` and `0xff` are NaN), one code per byte.
    Fp8E4M3,
    /// MXFP4's FP4 e2m1 ([`fp4_e2m1_to_f32`]), two codes per byte: value `2c` of a row in the low
    /// nibble of its byte `c`, value `2c + 1` in the high nibble (as transformers'
    /// `convert_moe_packed_tensors` unpacks gpt-oss); a row of odd `K` ends in a half-used byte.
    Mxfp4E2M1,
}

impl CodeFormat {
    /// The safetensors name of the stored code type.
    pub fn stored_name(self) -> &'static str {
        match self {
            CodeFormat::Fp8E4M3 => "F8_E4M3",
            CodeFormat::Mxfp4E2M1 => "U8",
        }
    }

    /// The bytes of a row of `k` codes.
    pub fn row_bytes(self, k: usize) -> usize {
        match self {
            CodeFormat::Fp8E4M3 => k,
            CodeFormat::Mxfp4E2M1 => k.div_ceil(2),
        }
    }

    /// A short name for messages and `moe info` (`FP8 e4m3`, `MXFP4 e2m1`).
    pub fn name(self) -> &'static str {
        match self {
            CodeFormat::Fp8E4M3 => "FP8 e4m3",
            CodeFormat::Mxfp4E2M1 => "MXFP4 e2m1",
        }
    }
}

/// The value of an FP4 e2m1 code (the low 4 bits of `code`): sign (bit 3), 2 exponent bits
/// (bias 1), 1 mantissa bit; codes 0..7 are `0, 0.5, 1, 1.5, 2, 3, 4, 6`, codes 8..15 their
/// negatives (8 is `-0`).
pub const fn fp4_e2m1_to_f32(code: u8) -> f32 {
    const E2M1: [f32; 16] = [
        0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
    ];
    E2M1[(code & 0xf) as usize]
}

/// The value of an e8m0 scale (MXFP4's): `2^(code - 127)`, exact in `f32` (code 0 is the
/// subnormal `2^-127`); code 255, NaN in the OCP MX spec and `2^128` in transformers, is `+inf`
/// here, which [`QuantExperts::new`] refuses as a bad scale.
pub fn e8m0_to_f32(code: u8) -> f32 {
    match code {
        0 => f32::from_bits(1 << 22),
        255 => f32::INFINITY,
        c => f32::from_bits(u32::from(c) << 23),
    }
}

/// The e8m0 code of a finite scale, the inverse of [`e8m0_to_f32`]: `Some(code)` when `value` is
/// `2^(code - 127)` for a code of 0 to 254, `None` for any other value (not a power of two, out of
/// range, zero, negative or not finite).
pub fn f32_to_e8m0(value: f32) -> Option<u8> {
    let bits = value.to_bits();
    match (bits >> 23, bits & 0x7f_ffff) {
        (0, 0x40_0000) => Some(0),
        (exponent @ 1..=254, 0) => Some(exponent as u8),
        _ => None,
    }
}

/// The value of an FP8 e4m3 code (exact in `f32`): sign, 4 exponent bits (bias 7), 3 mantissa bits;
/// exponent 0 is subnormal (`m / 8 * 2^-6`); `S.1111.111` is NaN; the largest finite value is 448.
pub fn fp8_e4m3_to_f32(code: u8) -> f32 {
    FP8_E4M3[code as usize]
}

/// Whether any of `codes` is an FP8 e4m3 NaN (`S.1111.111`: `0x7f` or `0xff`).
pub fn fp8_e4m3_has_nan(codes: &[u8]) -> bool {
    // `(c & 0x7f) + 1` has bit 7 set for the NaNs alone. An OR of every code, without a branch,
    // so that the loop is vectorised: it runs once over a checkpoint's codes.
    codes.iter().fold(0u8, |bits, &c| bits | ((c & 0x7f) + 1)) & 0x80 != 0
}

/// The largest finite FP8 e4m3 value (code `0x7e`).
pub const FP8_E4M3_MAX: f32 = 448.0;

/// Columns per scale of FP8 activations and of the weight scale blocks of the FP8 x FP8 GEMM
/// (DeepSeek-V3's 128 x 128 blocks): see [`cpu::fp8_act::quantize_fp8_per_token_group`](crate::cpu::fp8_act::quantize_fp8_per_token_group).
pub const FP8_BLOCK: usize = 128;

/// The FP8 e4m3 code nearest to `x`, ties to the even code (round to nearest even), magnitudes past
/// [`FP8_E4M3_MAX`] (infinities too) saturating to it, NaN to `0x7f`: the rounding of the GPU's
/// `cvt.rn.satfinite.e4m3x2.f32`. The sign is kept (`-0.0` is `0x80`).
pub fn f32_to_fp8_e4m3(x: f32) -> u8 {
    if x.is_nan() {
        return 0x7f;
    }
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    let a = x.abs();
    // The finite magnitudes, codes 0x00..=0x7e, increase with the code: the last code at or below
    // `a`, then whichever neighbour is nearer.
    let below = FP8_E4M3[..0x7f].partition_point(|&v| v <= a) - 1;
    if below == 0x7e {
        return sign | 0x7e;
    }
    let (lo, hi) = (FP8_E4M3[below], FP8_E4M3[below + 1]);
    let code = match (a - lo).partial_cmp(&(hi - a)) {
        Some(std::cmp::Ordering::Less) => below,
        Some(std::cmp::Ordering::Greater) => below + 1,
        _ => below + (below & 1), // a tie: the even code
    };
    sign | code as u8
}

/// Every e4m3 code's value, built at compile time.
static FP8_E4M3: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut c = 0;
    while c < 256 {
        let (e, m) = ((c >> 3) & 0xf, c & 7);
        let mag = if e == 0xf && m == 7 {
            f32::NAN
        } else if e == 0 {
            m as f32 / 8.0 / 64.0
        } else {
            // 2^(e - 7) as a product of exact powers of two.
            let mut p = 1.0f32;
            let mut i = 0;
            while i < e {
                p *= 2.0;
                i += 1;
            }
            (1.0 + m as f32 / 8.0) * p / 128.0
        };
        t[c] = if c & 0x80 != 0 { -mag } else { mag };
        c += 1;
    }
    t
};

/// A stack of `E` quantized matrices `[E, N, K]` (a layer's routed experts' gate-up or down
/// projections, or one shared expert's as `E = 1`), with a scale per row and group of `group`
/// columns. See the module docs. Each row's codes take [`CodeFormat::row_bytes`] bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantExperts {
    format: CodeFormat,
    experts: usize,
    n: usize,
    k: usize,
    group: usize,
    codes: Vec<u8>,
    scales: Vec<f32>,
    /// Whether a code is an FP8 NaN, found once in [`QuantExperts::new`] (always `false` for
    /// MXFP4, which has none).
    nan_codes: bool,
}

impl QuantExperts {
    /// Codes `[E, N, row_bytes(K)]` and scales `[E, N, ceil(K / group)]`, checked: the lengths,
    /// `group >= 1`, and every scale finite and positive ([`MoeError::BadScale`] otherwise).
    pub fn new(
        format: CodeFormat,
        [experts, n, k]: [usize; 3],
        group: usize,
        codes: Vec<u8>,
        scales: Vec<f32>,
    ) -> Result<Self> {
        if group == 0 {
            return Err(MoeError::InvalidConfig(
                "a quantization scale group of 0 columns".into(),
            ));
        }
        expect_len(
            "quantized codes",
            codes.len(),
            &[experts, n, format.row_bytes(k)],
        )?;
        expect_len(
            "quantization scales",
            scales.len(),
            &[experts, n, k.div_ceil(group)],
        )?;
        check_scales("quantization scales", &scales)?;
        let nan_codes = format == CodeFormat::Fp8E4M3 && fp8_e4m3_has_nan(&codes);
        Ok(QuantExperts {
            format,
            experts,
            n,
            k,
            group,
            codes,
            scales,
            nan_codes,
        })
    }

    /// The code format.
    pub fn format(&self) -> CodeFormat {
        self.format
    }

    /// `[E, N, K]`.
    pub fn shape(&self) -> [usize; 3] {
        [self.experts, self.n, self.k]
    }

    /// Columns per scale.
    pub fn group(&self) -> usize {
        self.group
    }

    /// The codes `[E, N, row_bytes(K)]`.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// The scales `[E, N, ceil(K / group)]`.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Whether any code is a NaN (FP8's `0x7f` and `0xff`; MXFP4 has none), as found when the
    /// experts were built.
    pub fn has_nan_codes(&self) -> bool {
        self.nan_codes
    }

    /// Row `j` of matrix `e`, dequantized into `out` (`K` values).
    #[inline]
    pub fn row_into(&self, e: usize, j: usize, out: &mut [f32]) {
        let row = e * self.n + j;
        let bytes = self.format.row_bytes(self.k);
        let codes = &self.codes[row * bytes..(row + 1) * bytes];
        let groups = self.k.div_ceil(self.group);
        let scales = &self.scales[row * groups..(row + 1) * groups];
        match self.format {
            CodeFormat::Mxfp4E2M1 => {
                for (c, o) in out[..self.k].iter_mut().enumerate() {
                    let nibble = codes[c / 2] >> (4 * (c % 2));
                    *o = fp4_e2m1_to_f32(nibble) * scales[c / self.group];
                }
            }
            CodeFormat::Fp8E4M3 => {
                for ((o, c), &s) in out
                    .chunks_mut(self.group)
                    .zip(codes.chunks(self.group))
                    .zip(scales)
                {
                    for (o, &c) in o.iter_mut().zip(c) {
                        *o = fp8_e4m3_to_f32(c) * s;
                    }
                }
            }
        }
    }
}

/// Every scale must be finite and positive.
pub(crate) fn check_scales(what: &str, scales: &[f32]) -> Result<()> {
    match scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        None => Ok(()),
        Some(index) => Err(MoeError::BadScale {
            what: what.to_string(),
            index,
            value: scales[index],
        }),
    }
}

/// One stored quantized matrix `[N, K]` with its scale tensor as the checkpoint holds it, to be
/// stacked into a [`QuantExperts`]: `scales` is `[ceil(N / block_rows), ceil(K / block_cols)]`
/// (block), `[N, 1]` (channel) or `[1]` / `[]` (tensor), told apart by its shape.
#[derive(Clone, Copy, Debug)]
pub struct StoredScales<'a> {
    /// The scale values, row-major.
    pub values: &'a [f32],
    /// Their stored shape.
    pub shape: &'a [usize],
}

/// The per-row scales `[N, ceil(K / group)]` of one stored matrix `[n, k]`, from its stored scale
/// tensor, for scale groups of `group` columns along K; `block` is the checkpoint's block size
/// `[rows, cols]` for block scales (`group` must then be `block[1]`).
///
/// Errors: [`MoeError::ShapeMismatch`] when the scale tensor's shape is none of the three forms for
/// `[n, k]`, or its values are not as many as its shape says.
pub fn expand_scales(
    what: &str,
    scales: StoredScales<'_>,
    [n, k]: [usize; 2],
    block: Option<[usize; 2]>,
    group: usize,
) -> Result<Vec<f32>> {
    expect_len(what, scales.values.len(), scales.shape)?;
    let groups = k.div_ceil(group.max(1));
    let mut out = Vec::with_capacity(checked_mul(n, groups, what)?);
    match (scales.shape, block) {
        ([] | [1], _) => out.resize(n * groups, scales.values[0]),
        ([rows, 1], _) if *rows == n => {
            for &s in scales.values {
                out.extend(std::iter::repeat_n(s, groups));
            }
        }
        ([rb, cb], Some([br, bc]))
            if br > 0 && bc == group && *rb == n.div_ceil(br) && *cb == groups =>
        {
            for r in 0..n {
                let b = r / br;
                out.extend_from_slice(&scales.values[b * cb..(b + 1) * cb]);
            }
        }
        (shape, _) => {
            let block_form = match block {
                Some([br, bc]) => format!(
                    "[{}, {}] (blocks of {br} x {bc}), ",
                    n.div_ceil(br.max(1)),
                    k.div_ceil(bc.max(1))
                ),
                None => String::new(),
            };
            return Err(MoeError::shape(
                what,
                format!("{block_form}[{n}, 1] (per channel) or [1] (per tensor) for a [{n}, {k}] matrix"),
                format!("{shape:?}"),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_rounding_round_trips_ties_to_even_and_saturates() {
        for c in (0..=255u8).filter(|c| c & 0x7f != 0x7f) {
            let v = fp8_e4m3_to_f32(c);
            assert_eq!(f32_to_fp8_e4m3(v), c, "code {c:#04x} ({v})");
        }
        // The midpoint between two neighbours goes to the even code; just off it, to the nearer.
        for c in 0..0x7eu8 {
            let (lo, hi) = (fp8_e4m3_to_f32(c) as f64, fp8_e4m3_to_f32(c + 1) as f64);
            let mid = ((lo + hi) / 2.0) as f32; // exact: both have 3 fraction bits
            let even = if c % 2 == 0 { c } else { c + 1 };
            assert_eq!(
                f32_to_fp8_e4m3(mid),
                even,
                "midpoint of {c:#04x} and the next"
            );
            assert_eq!(f32_to_fp8_e4m3(-mid), even | 0x80);
            let below = f32::from_bits(mid.to_bits() - 1);
            let above = f32::from_bits(mid.to_bits() + 1);
            assert_eq!((f32_to_fp8_e4m3(below), f32_to_fp8_e4m3(above)), (c, c + 1));
        }
        for big in [448.5f32, 464.0, 1e9, f32::INFINITY] {
            assert_eq!((f32_to_fp8_e4m3(big), f32_to_fp8_e4m3(-big)), (0x7e, 0xfe));
        }
        assert_eq!(f32_to_fp8_e4m3(f32::NAN), 0x7f);
        assert_eq!(f32_to_fp8_e4m3(1e-30), 0x00);
    }

    #[test]
    fn e4m3_special_values() {
        assert_eq!(fp8_e4m3_to_f32(0x00), 0.0);
        assert_eq!(fp8_e4m3_to_f32(0x80).to_bits(), (-0.0f32).to_bits());
        assert_eq!(fp8_e4m3_to_f32(0x7e), 448.0);
        assert_eq!(fp8_e4m3_to_f32(0xfe), -448.0);
        assert_eq!(fp8_e4m3_to_f32(0x38), 1.0);
        assert_eq!(fp8_e4m3_to_f32(0x01), 2f32.powi(-9));
        assert!(fp8_e4m3_to_f32(0x7f).is_nan() && fp8_e4m3_to_f32(0xff).is_nan());
    }

    #[test]
    fn e4m3_nan_codes_are_found_anywhere() {
        // Against the decoder: each code alone, then each code at every position of 200 others
        // (every lane of the vectorised loop and of its tail).
        let filler: Vec<u8> = (0..200u32).map(|i| (i * 37 % 255) as u8 & 0xfe).collect();
        assert!(!fp8_e4m3_has_nan(&filler) && !fp8_e4m3_has_nan(&[]));
        for code in 0..=255u8 {
            let nan = fp8_e4m3_to_f32(code).is_nan();
            assert_eq!(fp8_e4m3_has_nan(&[code]), nan, "code {code:#04x}");
            for pos in 0..filler.len() {
                let mut codes = filler.clone();
                codes[pos] = code;
                assert_eq!(fp8_e4m3_has_nan(&codes), nan, "code {code:#04x} at {pos}");
            }
        }
    }

    #[test]
    fn mxfp4_codes_and_scales() {
        assert_eq!(fp4_e2m1_to_f32(0x7), 6.0);
        assert_eq!(fp4_e2m1_to_f32(0x8).to_bits(), (-0.0f32).to_bits());
        assert_eq!(fp4_e2m1_to_f32(0xf1), 0.5);
        assert_eq!(e8m0_to_f32(127), 1.0);
        assert_eq!(e8m0_to_f32(0), 2f32.powi(-127));
        assert_eq!(e8m0_to_f32(254), 2f32.powi(127));
        assert_eq!(e8m0_to_f32(255), f32::INFINITY);
        for code in 0..=254u8 {
            assert_eq!(f32_to_e8m0(e8m0_to_f32(code)), Some(code));
        }
        for bad in [
            0.0,
            -1.0,
            3.0,
            0.75,
            f32::INFINITY,
            f32::NAN,
            2f32.powi(-128),
        ] {
            assert_eq!(f32_to_e8m0(bad), None, "{bad}");
        }
        // One row of 3 values (a half-used last byte): low nibble first.
        let q = QuantExperts::new(
            CodeFormat::Mxfp4E2M1,
            [1, 1, 3],
            32,
            vec![0x9f, 0x03],
            vec![4.0],
        )
        .unwrap();
        let mut row = [0f32; 3];
        q.row_into(0, 0, &mut row);
        assert_eq!(row, [-24.0, -2.0, 6.0]);
    }
}
