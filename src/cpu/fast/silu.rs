//! The fast backend's SiLU epilogue: `silu(gate) * up` (or `silu(x)`) on an exponential written to
//! vectorise, where the reference calls the C library's `expf` once per value.
//!
//! `exp` follows the classic range reduction: `x = n ln 2 + r` with `n` the nearest integer to
//! `x / ln 2` and `|r| <= ln 2 / 2`, `ln 2` split in two so that `r` is exact, then `exp(r)` by a
//! degree-7 polynomial (the Cephes `expf` coefficients) and `2^n` built in the exponent bits. It
//! is within 2 ulp of `exp` from -87.3 to 88.3, `+inf` above, `0` below, and NaN for NaN, so
//! SiLU keeps the reference's special values: `silu(-inf) = NaN` (`-inf * 0`), `silu(+inf) = +inf`.
//! Results differ from the reference's in the last bits of the `f32` (the layer tests compare the
//! two backends within tolerance).

use super::Isa;
use crate::config::{Activation, ActivationKind};
use crate::dtype::Element;

/// Values converted at once: one AVX-512 register of `f32`.
const CHUNK: usize = 16;

/// Apply `act` to the `f32` up-projection row `up` into `out`, as
/// [`activation::activate_row`](crate::cpu::activation::activate_row) does, SiLU on the
/// vectorised exponential of `isa`'s build (every other activation on the reference's code).
#[inline]
pub(super) fn activate_row<Y: Element>(isa: Isa, act: Activation, up: &[f32], out: &mut [Y]) {
    if act.kind != ActivationKind::Silu {
        return crate::cpu::activation::activate_row(act, up, out);
    }
    let (gate, mul) = if act.gated {
        let (g, u) = up.split_at(out.len());
        (g, Some(u))
    } else {
        (&up[..out.len()], None)
    };
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512` and the builds above it include AVX-512 F (`Isa::check`ed by the GEMM).
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => unsafe { silu_avx512(gate, mul, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the `Avx2` build was checked available (AVX2 and FMA).
        Isa::Avx2 => unsafe { silu_avx2(gate, mul, out) },
        _ => silu(gate, mul, out),
    }
}

/// [`silu`] compiled for AVX-512.
///
/// # Safety
///
/// The CPU must support AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn silu_avx512<Y: Element>(gate: &[f32], mul: Option<&[f32]>, out: &mut [Y]) {
    silu(gate, mul, out)
}

/// [`silu`] compiled for AVX2 and FMA.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_avx2<Y: Element>(gate: &[f32], mul: Option<&[f32]>, out: &mut [Y]) {
    silu(gate, mul, out)
}

/// `out[j] = silu(gate[j]) * mul[j]` (or `silu(gate[j])`), `CHUNK` values at a time into `f32`,
/// then rounded to `Y`.
#[inline(always)]
fn silu<Y: Element>(gate: &[f32], mul: Option<&[f32]>, out: &mut [Y]) {
    let mut v = [0f32; CHUNK];
    for (c, o) in out.chunks_mut(CHUNK).enumerate() {
        let g = &gate[c * CHUNK..c * CHUNK + o.len()];
        for (v, &g) in v.iter_mut().zip(g) {
            *v = g / (1.0 + exp(-g));
        }
        if let Some(mul) = mul {
            for (v, &u) in v.iter_mut().zip(&mul[c * CHUNK..]) {
                *v *= u;
            }
        }
        for (o, &v) in o.iter_mut().zip(&v) {
            *o = Y::from_f32(v);
        }
    }
}

/// `e^x` within 2 ulp, branch-free (see the module docs).
#[inline(always)]
fn exp(x: f32) -> f32 {
    // Above HI e^x is within 0.5% of overflowing f32 (`+inf` from there on, which keeps
    // `2^n` in range); below LO it is below the smallest normal.
    const HI: f32 = 88.3;
    const LO: f32 = -87.336_55;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // `clamp` keeps NaN.
    let xc = x.clamp(LO, HI);
    let n = (xc * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // `n` is in -126..=127 here (NaN converts to 0 and stays NaN through `e`).
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x > HI {
        f32::INFINITY
    } else if x < LO {
        0.0
    } else {
        e * scale
    }
}

#[cfg(test)]
mod tests {
    use super::exp;

    /// Distance in units in the last place between `got` and the correctly rounded `want`.
    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let ulp = (f32::from_bits(w.to_bits() + 1) - w) as f64;
        ((got as f64) - want).abs() / ulp
    }

    #[test]
    fn exp_is_within_two_ulp_and_keeps_special_values() {
        // Every 2^-10 step over the finite range, plus the ends.
        let mut worst = (0f64, 0f32);
        let mut x = -87.3f32;
        while x <= 88.3 {
            let e = ulps(exp(x), (x as f64).exp());
            if e > worst.0 {
                worst = (e, x);
            }
            x += 1.0 / 1024.0;
        }
        assert!(worst.0 <= 2.0, "exp is {} ulp off at {}", worst.0, worst.1);
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(-88.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }
}
