//! cvt: f16/bf16/f32/f64 conversions, saturation, relu, round-to-integral.

use crate::common::*;
use ptx_emu::exec::float::*;

fn f16_is_nan(h: u16) -> bool {
    (h & 0x7C00) == 0x7C00 && (h & 0x03FF) != 0
}

fn bf16_is_nan(h: u16) -> bool {
    (h & 0x7F80) == 0x7F80 && (h & 0x007F) != 0
}

type Narrow = fn(f32, Rounding, bool, bool) -> u16;

struct Target {
    name: &'static str,
    fmt: Format,
    conv: Narrow,
    is_nan: fn(u16) -> bool,
    to_f32: fn(u16) -> f32,
    reference_to_f32: fn(u16) -> f32,
    f64_conv: fn(f64, Rounding, bool) -> u16,
    to_f64: fn(u16) -> f64,
}

const TARGETS: [Target; 2] = [
    Target {
        name: "f16",
        fmt: HALF,
        conv: f32_to_f16,
        is_nan: f16_is_nan,
        to_f32: f16_to_f32,
        reference_to_f32: |h| half::f16::from_bits(h).to_f32(),
        f64_conv: f64_to_f16,
        to_f64: f16_to_f64,
    },
    Target {
        name: "bf16",
        fmt: BFLOAT,
        conv: f32_to_bf16,
        is_nan: bf16_is_nan,
        to_f32: bf16_to_f32,
        reference_to_f32: |h| half::bf16::from_bits(h).to_f32(),
        f64_conv: f64_to_bf16,
        to_f64: bf16_to_f64,
    },
];

/// Every 16-bit pattern widens exactly (checked against the `half` crate) and converts back to
/// itself in every rounding mode; NaNs become the canonical NaNs; sat/relu post-processing.
#[test]
fn all_16bit_patterns_roundtrip() {
    for t in &TARGETS {
        let one = if t.fmt.exp_bits == 5 {
            0x3C00u16
        } else {
            0x3F80u16
        };
        for h in 0..=u16::MAX {
            let f = (t.to_f32)(h);
            let d = (t.to_f64)(h);
            if (t.is_nan)(h) {
                assert_eq!(f.to_bits(), CANONICAL_NAN_F32, "{} {h:#06x}", t.name);
                assert_eq!(d.to_bits(), CANONICAL_NAN_F64, "{} {h:#06x}", t.name);
            } else {
                let want = (t.reference_to_f32)(h);
                assert_eq!(f.to_bits(), want.to_bits(), "{} widen {h:#06x}", t.name);
                assert_eq!(
                    d.to_bits(),
                    f64::from(want).to_bits(),
                    "{} widen64 {h:#06x}",
                    t.name
                );
            }
            let neg = h & 0x8000 != 0;
            for r in MODES {
                let back = (t.conv)(f, r, false, false);
                let back64 = (t.f64_conv)(d, r, false);
                let expect = if (t.is_nan)(h) { 0x7FFF } else { h };
                assert_eq!(back, expect, "{} {h:#06x} {r:?}", t.name);
                assert_eq!(back64, expect, "{} f64 {h:#06x} {r:?}", t.name);
                // .sat: clamp to [+0, 1], NaN -> +0
                let sat = (t.conv)(f, r, true, false);
                let want_sat = if (t.is_nan)(h) || neg {
                    0
                } else if h > one {
                    one
                } else {
                    h
                };
                assert_eq!(sat, want_sat, "{} sat {h:#06x} {r:?}", t.name);
                assert_eq!(
                    (t.f64_conv)(d, r, true),
                    want_sat,
                    "{} sat64 {h:#06x}",
                    t.name
                );
                // .relu: negative -> +0, NaN -> canonical NaN
                let relu = (t.conv)(f, r, false, true);
                let want_relu = if (t.is_nan)(h) {
                    0x7FFF
                } else if neg {
                    0
                } else {
                    h
                };
                assert_eq!(relu, want_relu, "{} relu {h:#06x} {r:?}", t.name);
            }
        }
    }
}

/// For every pair of adjacent non-negative finite values (lo, hi) of the 16-bit format (hi may be
/// +Inf, standing for 2^(emax+1)), test the exact tie, one f32 ulp either side of the tie, the
/// value lo itself and one f32 ulp above lo, with both signs and in every mode.  Expected results
/// follow directly from the definitions of the rounding directions.
#[test]
fn every_tie_and_neighbour_f32_to_16bit() {
    for t in &TARGETS {
        let fmt = t.fmt;
        let value = |b: u64| -> f64 {
            if b == fmt.inf_bits() {
                2f64.powi(fmt.bias() as i32 + 1)
            } else {
                f64::from((t.to_f32)(b as u16))
            }
        };
        for b in 0..=fmt.max_bits() {
            let (lo, hi) = (value(b), value(b + 1));
            let mid = (lo + hi) / 2.0;
            let mid32 = mid as f32;
            assert_eq!(f64::from(mid32), mid, "midpoint must be an f32");
            let lo32 = lo as f32;
            // (point, position): 0 = exactly lo, 1 = strictly between lo and mid,
            // 2 = tie, 3 = strictly between mid and hi
            let points = [
                (lo32, 0),
                (lo32.next_up(), 1),
                (mid32.next_down(), 1),
                (mid32, 2),
                (mid32.next_up(), 3),
            ];
            for (p, pos) in points {
                for neg in [false, true] {
                    let x = if neg { -p } else { p };
                    let s = if neg { 0x8000u16 } else { 0 };
                    let (bl, bh) = (b as u16 | s, (b + 1) as u16 | s);
                    for r in MODES {
                        let toward_hi = match (r, pos) {
                            (_, 0) => false,
                            (Rounding::Nearest, 1) => false,
                            (Rounding::Nearest, 2) => b & 1 == 1,
                            (Rounding::Nearest, _) => true,
                            (Rounding::Zero, _) => false,
                            (Rounding::Up, _) => !neg,
                            (Rounding::Down, _) => neg,
                        };
                        let want = if toward_hi { bh } else { bl };
                        let got = (t.conv)(x, r, false, false);
                        assert_eq!(
                            got,
                            want,
                            "{} x={x:e} ({:#010x}) {r:?} pos={pos}",
                            t.name,
                            x.to_bits()
                        );
                        // the same value given as an f64 must round identically
                        assert_eq!((t.f64_conv)(f64::from(x), r, false), want, "{} f64", t.name);
                    }
                }
            }
        }
    }
}

#[test]
fn f16_boundary_cases() {
    use Rounding::*;
    let c = |x: f32, r| f32_to_f16(x, r, false, false);
    // largest finite 65504 = 0x7BFF; next f16 step would be 65536; RN overflow threshold 65520
    assert_eq!(c(65504.0, Nearest), 0x7BFF);
    assert_eq!(c(65519.996, Nearest), 0x7BFF);
    assert_eq!(
        c(65520.0, Nearest),
        0x7C00,
        "tie at the threshold rounds to even = Inf"
    );
    assert_eq!(c(-65520.0, Nearest), 0xFC00);
    for r in [Zero, Down] {
        assert_eq!(c(65536.0, r), 0x7BFF);
        assert_eq!(c(1e30, r), 0x7BFF);
        assert_eq!(c(f32::MAX, r), 0x7BFF);
    }
    assert_eq!(c(1e30, Up), 0x7C00);
    assert_eq!(c(65504.0f32.next_up(), Up), 0x7C00);
    assert_eq!(c(65504.0f32.next_up(), Down), 0x7BFF);
    assert_eq!(c(-1e30, Up), 0xFBFF);
    assert_eq!(c(-1e30, Zero), 0xFBFF);
    assert_eq!(c(-1e30, Down), 0xFC00);
    assert_eq!(c((-65504.0f32).next_down(), Down), 0xFC00);
    assert_eq!(c((-65504.0f32).next_down(), Up), 0xFBFF);
    // infinities are exact in every mode
    for r in MODES {
        assert_eq!(c(f32::INFINITY, r), 0x7C00);
        assert_eq!(c(f32::NEG_INFINITY, r), 0xFC00);
        assert_eq!(c(-0.0, r), 0x8000);
        assert_eq!(c(0.0, r), 0x0000);
        for nan in [
            0x7FC0_0000u32,
            0xFFC0_0000,
            0x7F80_0001,
            0xFFFF_FFFF,
            0x7FBF_FFFF,
        ] {
            assert_eq!(c(f32::from_bits(nan), r), CANONICAL_NAN_F16);
            assert_eq!(
                f32_to_f16(f32::from_bits(nan), r, true, false),
                0,
                "sat NaN -> +0"
            );
            assert_eq!(
                f32_to_f16(f32::from_bits(nan), r, false, true),
                CANONICAL_NAN_F16
            );
        }
    }
    // subnormals: smallest 2^-24 = 0x0001; 2^-25 is a tie between 0 and 0x0001
    let two = |e: i32| 2f32.powi(e);
    assert_eq!(c(two(-24), Nearest), 0x0001);
    assert_eq!(c(two(-25), Nearest), 0x0000);
    assert_eq!(c(two(-25).next_up(), Nearest), 0x0001);
    assert_eq!(c(two(-25), Up), 0x0001);
    assert_eq!(c(two(-25), Zero), 0x0000);
    assert_eq!(c(-two(-25), Nearest), 0x8000);
    assert_eq!(c(-two(-25), Down), 0x8001);
    assert_eq!(c(-two(-25), Up), 0x8000);
    assert_eq!(c(3.0 * two(-25), Nearest), 0x0002, "1.5 ulp tie -> even 2");
    assert_eq!(c(f32::from_bits(1), Up), 0x0001);
    assert_eq!(c(f32::from_bits(1), Nearest), 0x0000);
    assert_eq!(c(f32::from_bits(0x8000_0001), Down), 0x8001);
    assert_eq!(c(f32::from_bits(0x8000_0001), Zero), 0x8000);
    // largest subnormal 0x03FF rounding up into the smallest normal 0x0400 = 2^-14
    assert_eq!(c(two(-14) - two(-25), Nearest), 0x0400);
    assert_eq!(c(two(-14) - two(-25), Zero), 0x03FF);
    assert_eq!(c(two(-14), Nearest), 0x0400);
    // 1 + 2^-11 is a tie between 1.0 and 1+2^-10
    assert_eq!(c(1.0 + two(-11), Nearest), 0x3C00);
    assert_eq!(c(1.0 + 3.0 * two(-11), Nearest), 0x3C02);
    // sat and relu
    assert_eq!(f32_to_f16(1.5, Nearest, true, false), 0x3C00);
    assert_eq!(f32_to_f16(-0.0, Nearest, true, false), 0x0000);
    assert_eq!(f32_to_f16(-3.0, Nearest, true, false), 0x0000);
    assert_eq!(f32_to_f16(0.5, Nearest, true, false), 0x3800);
    assert_eq!(f32_to_f16(1.0004, Up, true, false), 0x3C00);
    assert_eq!(f32_to_f16(-3.0, Nearest, false, true), 0x0000);
    assert_eq!(f32_to_f16(-0.0, Nearest, false, true), 0x0000);
    assert_eq!(f32_to_f16(-1e-30, Down, false, true), 0x0000);
    assert_eq!(f32_to_f16(3.0, Nearest, false, true), 0x4200);
    assert_eq!(f32_to_f16(1e9, Nearest, false, true), 0x7C00);
    // satfinite
    assert_eq!(f32_to_f16_satfinite(1e9, Nearest, false), 0x7BFF);
    assert_eq!(
        f32_to_f16_satfinite(f32::NEG_INFINITY, Nearest, false),
        0xFBFF
    );
    assert_eq!(
        f32_to_f16_satfinite(f32::NEG_INFINITY, Nearest, true),
        0x0000
    );
    assert_eq!(
        f32_to_f16_satfinite(f32::NAN, Nearest, false),
        CANONICAL_NAN_F16
    );
    assert_eq!(f32_to_f16_satfinite(1.0, Zero, false), 0x3C00);
}

#[test]
fn bf16_boundary_cases() {
    use Rounding::*;
    let c = |x: f32, r| f32_to_bf16(x, r, false, false);
    let f = f32::from_bits;
    // largest finite bf16 0x7F7F = f32 0x7F7F0000; RN threshold (tie) = 0x7F7F8000
    assert_eq!(c(f(0x7F7F_0000), Nearest), 0x7F7F);
    assert_eq!(c(f(0x7F7F_7FFF), Nearest), 0x7F7F);
    assert_eq!(c(f(0x7F7F_8000), Nearest), 0x7F80);
    assert_eq!(c(f32::MAX, Nearest), 0x7F80);
    assert_eq!(c(f32::MAX, Zero), 0x7F7F);
    assert_eq!(c(f32::MAX, Down), 0x7F7F);
    assert_eq!(c(f32::MAX, Up), 0x7F80);
    assert_eq!(c(f(0x7F7F_0001), Up), 0x7F80);
    assert_eq!(c(-f32::MAX, Up), 0xFF7F);
    assert_eq!(c(-f32::MAX, Down), 0xFF80);
    assert_eq!(c(-f32::MAX, Nearest), 0xFF80);
    // ties to even in the normal range: 0x3F80_8000 is halfway between 0x3F80 and 0x3F81
    assert_eq!(c(f(0x3F80_8000), Nearest), 0x3F80);
    assert_eq!(c(f(0x3F81_8000), Nearest), 0x3F82);
    assert_eq!(c(f(0x3F80_8001), Nearest), 0x3F81);
    assert_eq!(c(f(0x3F80_7FFF), Nearest), 0x3F80);
    assert_eq!(c(f(0xBF80_8000), Nearest), 0xBF80);
    assert_eq!(c(f(0xBF80_8000), Down), 0xBF81);
    // subnormals: bf16 0x0001 = f32 0x0001_0000 = 2^-133; 0x0000_8000 is the tie with 0
    assert_eq!(c(f(0x0001_0000), Nearest), 0x0001);
    assert_eq!(c(f(0x0000_8000), Nearest), 0x0000);
    assert_eq!(c(f(0x0000_8001), Nearest), 0x0001);
    assert_eq!(c(f(0x0001_8000), Nearest), 0x0002);
    assert_eq!(c(f(0x0000_0001), Up), 0x0001);
    assert_eq!(c(f(0x8000_0001), Down), 0x8001);
    assert_eq!(c(f(0x8000_0001), Nearest), 0x8000);
    assert_eq!(
        c(f(0x007F_FFFF), Nearest),
        0x0080,
        "largest f32 subnormal -> smallest normal"
    );
    assert_eq!(c(f(0x007F_FFFF), Zero), 0x007F);
    for r in MODES {
        assert_eq!(c(f32::INFINITY, r), 0x7F80);
        assert_eq!(c(f32::NEG_INFINITY, r), 0xFF80);
        assert_eq!(c(-0.0, r), 0x8000);
        assert_eq!(c(f(0xFFC0_0001), r), CANONICAL_NAN_BF16);
        assert_eq!(c(f(0x7F80_0001), r), CANONICAL_NAN_BF16);
    }
    assert_eq!(f32_to_bf16_satfinite(f32::MAX, Nearest, false), 0x7F7F);
    assert_eq!(f32_to_bf16_satfinite(-f32::MAX, Nearest, false), 0xFF7F);
    assert_eq!(f32_to_bf16_satfinite(f32::INFINITY, Zero, false), 0x7F7F);
    assert_eq!(
        f32_to_bf16_satfinite(f32::NAN, Zero, true),
        CANONICAL_NAN_BF16
    );
}

/// Independent f32 -> narrow oracle using integer arithmetic on the significand.
fn narrow_oracle(x: f32, fmt: Format, r: Rounding) -> u16 {
    let b = x.to_bits();
    let neg = b >> 31 == 1;
    let sign: u16 = if neg { 0x8000 } else { 0 };
    let e = ((b >> 23) & 0xFF) as i64;
    let f = u64::from(b & 0x7F_FFFF);
    if e == 0xFF {
        return if f != 0 {
            0x7FFF
        } else {
            sign | fmt.inf_bits() as u16
        };
    }
    if e == 0 && f == 0 {
        return sign;
    }
    // value = m * 2^ex
    let (m, ex) = if e == 0 {
        (f, -149i64)
    } else {
        (f | 1 << 23, e - 150)
    };
    let p = i64::from(fmt.frac_bits);
    let emin = 1 - fmt.bias();
    let top = ex + 63 - i64::from(m.leading_zeros()); // floor(log2)
    let q = top.max(emin) - p;
    let (mut kept, rest_cmp, inexact) = if q <= ex {
        (m << (ex - q), std::cmp::Ordering::Less, false)
    } else {
        let sh = (q - ex) as u32;
        if sh >= 64 {
            (0, std::cmp::Ordering::Less, true)
        } else {
            let kept = m >> sh;
            let rest = m - (kept << sh);
            let half = 1u64 << (sh - 1);
            (kept, rest.cmp(&half), rest != 0)
        }
    };
    let up = inexact
        && match r {
            Rounding::Nearest => {
                rest_cmp == std::cmp::Ordering::Greater
                    || (rest_cmp == std::cmp::Ordering::Equal && kept & 1 == 1)
            }
            Rounding::Zero => false,
            Rounding::Up => !neg,
            Rounding::Down => neg,
        };
    let mut q = q;
    if up {
        kept += 1;
        if kept == 1 << (p + 1) {
            kept >>= 1;
            q += 1;
        }
    }
    if kept < 1 << p {
        return sign | kept as u16;
    }
    let biased = q + p + fmt.bias();
    if biased >= (1 << fmt.exp_bits) - 1 {
        let inf = match r {
            Rounding::Nearest => true,
            Rounding::Zero => false,
            Rounding::Up => !neg,
            Rounding::Down => neg,
        };
        return sign | if inf { fmt.inf_bits() } else { fmt.max_bits() } as u16;
    }
    sign | ((biased as u16) << fmt.frac_bits) | (kept as u16 & ((1 << p) - 1))
}

/// A few million random f32 through both narrowing conversions in all modes, against the
/// integer oracle (and, for `.rn`, against the `half` crate).
#[test]
fn random_f32_to_16bit_against_oracles() {
    let mut rng = Rng::new("random_f32_to_16bit_against_oracles");
    for _ in 0..3_000_000 {
        let x = if rng.bool() {
            f32::from_bits(rng.next() as u32)
        } else {
            f32::from_bits(gen_bits(&mut rng, SINGLE) as u32)
        };
        for r in MODES {
            let h = f32_to_f16(x, r, false, false);
            assert_eq!(
                h,
                narrow_oracle(x, HALF, r),
                "f16 {:#010x} {r:?}",
                x.to_bits()
            );
            let b = f32_to_bf16(x, r, false, false);
            assert_eq!(
                b,
                narrow_oracle(x, BFLOAT, r),
                "bf16 {:#010x} {r:?}",
                x.to_bits()
            );
        }
        if !x.is_nan() {
            assert_eq!(
                f32_to_f16(x, Rounding::Nearest, false, false),
                half::f16::from_f32(x).to_bits(),
                "half crate f16 {:#010x}",
                x.to_bits()
            );
            assert_eq!(
                f32_to_bf16(x, Rounding::Nearest, false, false),
                half::bf16::from_f32(x).to_bits(),
                "half crate bf16 {:#010x}",
                x.to_bits()
            );
        }
    }
}

/// f64 -> f16 / bf16 / f32 against the big-integer oracle; `.rn` f64 -> f32 against the host.
#[test]
fn random_f64_narrowing_against_oracle() {
    let mut rng = Rng::new("random_f64_narrowing_against_oracle");
    for i in 0..600_000 {
        let r = MODES[i % 4];
        let b = match rng.below(4) {
            0 => rng.next(),
            1 => gen_bits(&mut rng, DOUBLE),
            _ => {
                // exponents inside/around the narrow formats' ranges
                let e = rng.range_i(1023 - 160, 1023 + 130) as u64;
                let nb = rng.below(5);
                let mut f = rng.next() & ((1 << 52) - 1);
                if nb < 3 {
                    // few bits after a narrow-format rounding point -> near-ties
                    f &= !((1u64 << (52 - 24)) - 1) >> rng.below(30);
                    f |= rng.below(2) << rng.below(52);
                }
                (rng.next() & (1 << 63)) | (e << 52) | f
            }
        };
        let x = f64::from_bits(b);
        let (h, bf, s) = (
            u64::from(f64_to_f16(x, r, false)),
            u64::from(f64_to_bf16(x, r, false)),
            u64::from(f64_to_f32(x, r, false, false).to_bits()),
        );
        for (fmt, got, name) in [(HALF, h, "f16"), (BFLOAT, bf, "bf16"), (SINGLE, s, "f32")] {
            let want = if x.is_nan() {
                fmt.canonical_nan()
            } else if x.is_infinite() {
                fmt.inf_bits() | if x < 0.0 { fmt.sign_mask() } else { 0 }
            } else if x == 0.0 {
                if x.is_sign_negative() {
                    fmt.sign_mask()
                } else {
                    0
                }
            } else {
                round_exact(fmt, &DOUBLE.to_dyadic(b).to_exact(), r)
            };
            assert_eq!(got, want, "{name} x={b:#018x} {r:?}");
        }
        if r == Rounding::Nearest && !x.is_nan() {
            assert_eq!(s as u32, (x as f32).to_bits());
        }
    }
}

#[test]
fn f64_narrowing_is_a_single_rounding() {
    use Rounding::*;
    // 1 + 2^-11 + 2^-40: rounding to f32 first would give the tie 1 + 2^-11 and then 1.0.
    let x = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
    assert_eq!(f64_to_f16(x, Nearest, false), 0x3C01);
    assert_eq!(f64_to_f16(1.0 + 2f64.powi(-11), Nearest, false), 0x3C00);
    let y = 1.0 + 2f64.powi(-8) + 2f64.powi(-45);
    assert_eq!(f64_to_bf16(y, Nearest, false), 0x3F81);
    // f64 -> f32 directed and ftz/sat
    let tiny = 2f64.powi(-140);
    assert_eq!(f64_to_f32(tiny, Nearest, false, false).to_bits(), 1 << 9);
    assert_eq!(f64_to_f32(tiny, Nearest, true, false).to_bits(), 0);
    assert_eq!(
        f64_to_f32(-tiny, Nearest, true, false).to_bits(),
        0x8000_0000
    );
    assert_eq!(f64_to_f32(2f64.powi(-150), Up, false, false).to_bits(), 1);
    assert_eq!(
        f64_to_f32(2f64.powi(-150), Nearest, false, false).to_bits(),
        0
    );
    assert_eq!(
        f64_to_f32(-2f64.powi(-150), Down, false, false).to_bits(),
        0x8000_0001
    );
    assert_eq!(f64_to_f32(1e300, Zero, false, false), f32::MAX);
    assert_eq!(f64_to_f32(1e300, Nearest, false, false), f32::INFINITY);
    assert_eq!(f64_to_f32(-1e300, Up, false, false), -f32::MAX);
    assert_eq!(f64_to_f32(-1e300, Down, false, false), f32::NEG_INFINITY);
    assert_eq!(f64_to_f32(f64::MAX, Down, false, false), f32::MAX);
    assert_eq!(
        f64_to_f32(f64::NAN, Zero, false, false).to_bits(),
        CANONICAL_NAN_F32
    );
    assert_eq!(f64_to_f32(f64::NAN, Zero, false, true).to_bits(), 0);
    assert_eq!(f64_to_f32(-0.5, Zero, false, true).to_bits(), 0);
    assert_eq!(f64_to_f32(7.0, Zero, false, true), 1.0);
    assert_eq!(f64_to_f32(0.25, Zero, false, true), 0.25);
    // f32 -> f64
    assert_eq!(f32_to_f64(f32::from_bits(1), false), 2f64.powi(-149));
    assert_eq!(
        f32_to_f64(f32::from_bits(0xFFC0_1234), false).to_bits(),
        CANONICAL_NAN_F64
    );
    assert_eq!(f32_to_f64(f32::NAN, true).to_bits(), 0);
    assert_eq!(f32_to_f64(-0.0, true).to_bits(), 0);
    assert_eq!(f32_to_f64(2.5, true), 1.0);
    assert_eq!(f32_to_f64(-0.0, false).to_bits(), 0x8000_0000_0000_0000);
    assert_eq!(sat_f32(f32::NAN).to_bits(), 0);
    assert_eq!(sat_f32(-0.0).to_bits(), 0);
    assert_eq!(sat_f32(f32::INFINITY), 1.0);
    assert_eq!(sat_f32(f32::NEG_INFINITY).to_bits(), 0);
    assert_eq!(sat_f32(0.75), 0.75);
    assert_eq!(sat_f32(f32::from_bits(1)).to_bits(), 1);
    assert_eq!(sat_f64(-2.0).to_bits(), 0);
    assert_eq!(sat_f64(1.0 + f64::EPSILON), 1.0);
}

fn std_round_f32(x: f32, r: Rounding) -> f32 {
    match r {
        Rounding::Nearest => x.round_ties_even(),
        Rounding::Zero => x.trunc(),
        Rounding::Down => x.floor(),
        Rounding::Up => x.ceil(),
    }
}

fn std_round_f64(x: f64, r: Rounding) -> f64 {
    match r {
        Rounding::Nearest => x.round_ties_even(),
        Rounding::Zero => x.trunc(),
        Rounding::Down => x.floor(),
        Rounding::Up => x.ceil(),
    }
}

/// cvt.rni/rzi/rmi/rpi.f32.f32 (and f64, f16) against the host's IEEE roundToIntegral.
#[test]
fn round_to_integral_against_host() {
    let mut rng = Rng::new("round_to_integral_against_host");
    for i in 0..1_000_000 {
        let r = MODES[i % 4];
        let x = f32::from_bits(gen_bits(&mut rng, SINGLE) as u32);
        let got = round_to_integral_f32(x, r, false, false);
        let want = if x.is_nan() {
            CANONICAL_NAN_F32
        } else {
            std_round_f32(x, r).to_bits()
        };
        assert_eq!(got.to_bits(), want, "{:#010x} {r:?}", x.to_bits());
        // ftz: subnormal input becomes a signed zero first
        let got = round_to_integral_f32(x, r, true, false);
        let want = if x.is_nan() {
            CANONICAL_NAN_F32
        } else {
            std_round_f32(ftz_f32(x), r).to_bits()
        };
        assert_eq!(got.to_bits(), want, "ftz {:#010x} {r:?}", x.to_bits());
        // sat
        let got = round_to_integral_f32(x, r, false, true);
        assert_eq!(got.to_bits(), sat_f32(std_round_f32(x, r)).to_bits());

        let y = f64::from_bits(gen_bits(&mut rng, DOUBLE));
        let want = if y.is_nan() {
            CANONICAL_NAN_F64
        } else {
            std_round_f64(y, r).to_bits()
        };
        assert_eq!(
            round_to_integral_f64(y, r).to_bits(),
            want,
            "{:#018x} {r:?}",
            y.to_bits()
        );

        let hb = rng.next() as u16;
        let hv = f16_to_f32(hb);
        let want = if hv.is_nan() {
            CANONICAL_NAN_F16
        } else {
            f32_to_f16(std_round_f32(hv, r), Rounding::Nearest, false, false)
        };
        assert_eq!(round_to_integral_f16(hb, r), want, "f16 {hb:#06x} {r:?}");
        let bv = bf16_to_f32(hb);
        let want = if bv.is_nan() {
            CANONICAL_NAN_BF16
        } else {
            f32_to_bf16(std_round_f32(bv, r), Rounding::Nearest, false, false)
        };
        assert_eq!(round_to_integral_bf16(hb, r), want, "bf16 {hb:#06x} {r:?}");
    }
    use Rounding::*;
    assert_eq!(round_to_integral_f32(2.5, Nearest, false, false), 2.0);
    assert_eq!(round_to_integral_f32(3.5, Nearest, false, false), 4.0);
    assert_eq!(round_to_integral_f32(-2.5, Nearest, false, false), -2.0);
    assert_eq!(
        round_to_integral_f32(-0.4, Nearest, false, false).to_bits(),
        0x8000_0000
    );
    assert_eq!(
        round_to_integral_f32(-0.4, Up, false, false).to_bits(),
        0x8000_0000
    );
    assert_eq!(round_to_integral_f32(-0.4, Down, false, false), -1.0);
    assert_eq!(round_to_integral_f32(0.4, Up, false, false), 1.0);
    assert_eq!(
        round_to_integral_f32(f32::from_bits(1), Up, false, false),
        1.0
    );
    assert_eq!(
        round_to_integral_f32(f32::from_bits(1), Up, true, false).to_bits(),
        0
    );
    assert_eq!(
        round_to_integral_f32(f32::from_bits(0x8000_0001), Down, true, false).to_bits(),
        0x8000_0000
    );
    assert_eq!(
        round_to_integral_f32(8388607.5, Nearest, false, false),
        8388608.0
    );
    assert_eq!(round_to_integral_f32(-0.7, Zero, false, true).to_bits(), 0);
    assert_eq!(
        round_to_integral_f32(f32::NAN, Zero, false, true).to_bits(),
        0
    );
}
