//! cvt float<->integer, and min/max.

use crate::common::*;
use ptx_emu::exec::float::*;

fn std_round(x: f64, r: Rounding) -> f64 {
    match r {
        Rounding::Nearest => x.round_ties_even(),
        Rounding::Zero => x.trunc(),
        Rounding::Down => x.floor(),
        Rounding::Up => x.ceil(),
    }
}

/// Reference float -> int: IEEE rounding of the host, then clamp (PTX always saturates).
fn ref_to_int(x: f64, r: Rounding, bits: u32, signed: bool, src_f64: bool) -> u64 {
    let (min, max): (i128, i128) = if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    let ext = |v: i128| if signed { v as i64 as u64 } else { v as u64 };
    if x.is_nan() {
        return if src_f64 || bits == 64 {
            ext(if signed { min } else { 1 << (bits - 1) })
        } else {
            0
        };
    }
    let y = std_round(x, r);
    let v = if y >= (max + 1) as f64 {
        max
    } else if y < min as f64 {
        min
    } else {
        y as i128
    };
    ext(v)
}

#[test]
fn float_to_int_random() {
    let mut rng = Rng::new("float_to_int_random");
    for i in 0..1_000_000 {
        let x = match rng.below(4) {
            0 => f64::from(f32::from_bits(gen_bits(&mut rng, SINGLE) as u32)),
            1 => f64::from_bits(gen_bits(&mut rng, DOUBLE)),
            2 => (rng.next() as i64 as f64) / 2f64.powi(rng.below(70) as i32),
            _ => (rng.range_i(-1000, 1000) as f64) / 4.0,
        };
        let r = MODES[i % 4];
        for bits in [8, 16, 32, 64] {
            for signed in [false, true] {
                assert_eq!(
                    float_to_int(x, r, bits, signed),
                    ref_to_int(x, r, bits, signed, false),
                    "{x:e} {r:?} {bits} {signed}"
                );
                assert_eq!(
                    f64_to_int(x, r, bits, signed),
                    ref_to_int(x, r, bits, signed, true),
                    "f64 {x:e} {r:?} {bits} {signed}"
                );
            }
        }
    }
}

#[test]
fn float_to_int_named() {
    use Rounding::*;
    let s = |x: f64, r, b| float_to_int(x, r, b, true);
    let u = |x: f64, r, b| float_to_int(x, r, b, false);
    assert_eq!(s(3e9, Zero, 32), 0x7FFF_FFFF);
    assert_eq!(s(-3e9, Zero, 32), 0xFFFF_FFFF_8000_0000);
    assert_eq!(u(-1.5, Zero, 32), 0);
    assert_eq!(u(-0.5, Nearest, 32), 0);
    assert_eq!(u(300.0, Nearest, 8), 255);
    assert_eq!(s(-200.0, Nearest, 8), 0xFFFF_FFFF_FFFF_FF80);
    assert_eq!(s(127.5, Nearest, 8), 127, "rounds to 128 then saturates");
    assert_eq!(s(2.5, Nearest, 32), 2);
    assert_eq!(s(3.5, Nearest, 32), 4);
    assert_eq!(s(-2.5, Nearest, 32), u64::MAX - 1);
    assert_eq!(s(-0.5, Down, 32), u64::MAX);
    assert_eq!(s(-0.5, Up, 32), 0);
    assert_eq!(s(f64::from(f32::from_bits(1)), Up, 32), 1);
    assert_eq!(s(f64::from(f32::from_bits(1)), Nearest, 32), 0);
    assert_eq!(u(2f64.powi(64), Nearest, 64), u64::MAX);
    assert_eq!(u(2f64.powi(64) - 2048.0, Nearest, 64), u64::MAX - 2047);
    assert_eq!(s(2f64.powi(63), Nearest, 64), i64::MAX as u64);
    assert_eq!(s(-(2f64.powi(63)), Nearest, 64), i64::MIN as u64);
    assert_eq!(s(f64::INFINITY, Zero, 16), 0x7FFF);
    assert_eq!(s(f64::NEG_INFINITY, Zero, 16), 0xFFFF_FFFF_FFFF_8000);
    assert_eq!(u(f64::INFINITY, Zero, 16), 0xFFFF);
    assert_eq!(u(f64::NEG_INFINITY, Zero, 16), 0);
    // NaN: zero unless the source is .f64 or the destination is 64-bit; then 1 << (bits-1)
    for r in MODES {
        for bits in [8, 16, 32] {
            assert_eq!(float_to_int(f64::NAN, r, bits, true), 0);
            assert_eq!(float_to_int(f64::NAN, r, bits, false), 0);
            assert_eq!(f64_to_int(f64::NAN, r, bits, false), 1 << (bits - 1));
            assert_eq!(
                f64_to_int(f64::NAN, r, bits, true),
                (-(1i64 << (bits - 1))) as u64
            );
        }
        assert_eq!(float_to_int(f64::NAN, r, 64, true), 1 << 63);
        assert_eq!(float_to_int(f64::NAN, r, 64, false), 1 << 63);
        assert_eq!(f64_to_int(-f64::NAN, r, 64, false), 1 << 63);
        assert_eq!(f64_to_int(f64::NAN, r, 32, true), 0xFFFF_FFFF_8000_0000);
    }
}

#[test]
fn int_to_float_named() {
    use Rounding::*;
    let t = 1i128 << 24;
    // 2^24 + 1 is a tie between 2^24 and 2^24 + 2
    assert_eq!(int_to_f32(t + 1, Nearest), 16_777_216.0);
    assert_eq!(int_to_f32(t + 1, Zero), 16_777_216.0);
    assert_eq!(int_to_f32(t + 1, Down), 16_777_216.0);
    assert_eq!(int_to_f32(t + 1, Up), 16_777_218.0);
    assert_eq!(
        int_to_f32(t + 3, Nearest),
        16_777_220.0,
        "tie -> even significand"
    );
    assert_eq!(int_to_f32(-(t + 1), Nearest), -16_777_216.0);
    assert_eq!(int_to_f32(-(t + 1), Down), -16_777_218.0);
    assert_eq!(int_to_f32(-(t + 1), Up), -16_777_216.0);
    assert_eq!(int_to_f32(0, Down).to_bits(), 0, "integer zero is +0.0");
    assert_eq!(int_to_f32(u64::MAX as i128, Nearest), 2f32.powi(64));
    assert_eq!(int_to_f32(u64::MAX as i128, Zero).to_bits(), 0x5F7F_FFFF);
    assert_eq!(int_to_f32(i64::MIN as i128, Zero), -(2f32.powi(63)));
    assert_eq!(int_to_f32(i128::MAX, Nearest), 2f32.powi(127));
    assert_eq!(int_to_f32(i128::MIN, Up), -(2f32.powi(127)));
    let t53 = 1i128 << 53;
    assert_eq!(int_to_f64(t53 + 1, Nearest), 2f64.powi(53));
    assert_eq!(int_to_f64(t53 + 1, Up), 2f64.powi(53) + 2.0);
    assert_eq!(int_to_f64(t53 + 3, Nearest), 2f64.powi(53) + 4.0);
    assert_eq!(
        int_to_f64(u64::MAX as i128, Zero).to_bits(),
        0x43EF_FFFF_FFFF_FFFF
    );
    // f16: 2049 is a tie between 2048 and 2050
    assert_eq!(int_to_f16(2049, Nearest), 0x6800);
    assert_eq!(int_to_f16(2049, Up), 0x6801);
    assert_eq!(int_to_f16(2051, Nearest), 0x6802);
    assert_eq!(int_to_f16(65504, Nearest), 0x7BFF);
    assert_eq!(int_to_f16(65519, Nearest), 0x7BFF);
    assert_eq!(int_to_f16(65520, Nearest), 0x7C00);
    assert_eq!(int_to_f16(70000, Zero), 0x7BFF);
    assert_eq!(int_to_f16(70000, Up), 0x7C00);
    assert_eq!(int_to_f16(-70000, Up), 0xFBFF);
    assert_eq!(int_to_f16(-70000, Down), 0xFC00);
    assert_eq!(int_to_bf16(257, Nearest), 0x4380);
    assert_eq!(int_to_bf16(259, Nearest), 0x4382);
    assert_eq!(int_to_bf16(257, Up), 0x4381);
    assert_eq!(int_to_bf16(-1, Nearest), 0xBF80);
}

#[test]
fn int_to_float_random() {
    let mut rng = Rng::new("int_to_float_random");
    for i in 0..1_000_000 {
        let r = MODES[i % 4];
        let bits = 1 + rng.below(127) as u32;
        let mag = (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> (128 - bits);
        let v = if rng.bool() {
            -(mag as i128)
        } else {
            mag as i128
        };
        let d = Dyadic::from_int(v);
        assert_eq!(
            u64::from(int_to_f32(v, r).to_bits()),
            round_dyadic(SINGLE, &d, r, false),
            "f32 {v} {r:?}"
        );
        assert_eq!(
            int_to_f64(v, r).to_bits(),
            round_dyadic(DOUBLE, &d, r, false),
            "f64 {v} {r:?}"
        );
        assert_eq!(
            u64::from(int_to_f16(v, r)),
            round_dyadic(HALF, &d, r, false),
            "f16 {v} {r:?}"
        );
        assert_eq!(
            u64::from(int_to_bf16(v, r)),
            round_dyadic(BFLOAT, &d, r, false),
            "bf16 {v} {r:?}"
        );
        if r == Rounding::Nearest {
            assert_eq!(int_to_f32(v, r).to_bits(), (v as f32).to_bits());
            assert_eq!(int_to_f64(v, r).to_bits(), (v as f64).to_bits());
        }
    }
}

/// Reference min/max on f64 values: NaN rules, -0 < +0.
fn ref_minmax(a: f64, b: f64, nan_prop: bool, max: bool) -> Option<f64> {
    // None = NaN result
    match (a.is_nan(), b.is_nan()) {
        (true, true) => return None,
        (true, false) | (false, true) if nan_prop => return None,
        (true, false) => return Some(b),
        (false, true) => return Some(a),
        _ => {}
    }
    let less = a < b || (a == 0.0 && b == 0.0 && a.is_sign_negative() && !b.is_sign_negative());
    Some(if less != max { a } else { b })
}

#[test]
fn min_max_random_and_named() {
    let mut rng = Rng::new("min_max_random_and_named");
    for _ in 0..200_000 {
        let a = f32::from_bits(gen_bits(&mut rng, SINGLE) as u32);
        let b = if rng.bool() {
            f32::from_bits(gen_related(&mut rng, SINGLE, u64::from(a.to_bits())) as u32)
        } else {
            f32::from_bits(gen_bits(&mut rng, SINGLE) as u32)
        };
        for nan_prop in [false, true] {
            for ftz in [false, true] {
                for max in [false, true] {
                    let (x, y) = if ftz {
                        (ftz_f32(a), ftz_f32(b))
                    } else {
                        (a, b)
                    };
                    let want = ref_minmax(f64::from(x), f64::from(y), nan_prop, max)
                        .map_or(CANONICAL_NAN_F32, |v| (v as f32).to_bits());
                    let got = if max {
                        max_f32(a, b, nan_prop, ftz)
                    } else {
                        min_f32(a, b, nan_prop, ftz)
                    };
                    assert_eq!(
                        got.to_bits(),
                        want,
                        "{:#x} {:#x} nan={nan_prop} ftz={ftz} max={max}",
                        a.to_bits(),
                        b.to_bits()
                    );
                }
            }
        }
        let (c, d) = (
            f64::from_bits(gen_bits(&mut rng, DOUBLE)),
            f64::from_bits(gen_bits(&mut rng, DOUBLE)),
        );
        for max in [false, true] {
            let want = ref_minmax(c, d, false, max).map_or(CANONICAL_NAN_F64, f64::to_bits);
            let got = if max { max_f64(c, d) } else { min_f64(c, d) };
            assert_eq!(got.to_bits(), want);
        }
        let (h1, h2) = (rng.next() as u16, gen_bits(&mut rng, HALF) as u16);
        for nan_prop in [false, true] {
            for max in [false, true] {
                let want16 = ref_minmax(
                    f64::from(f16_to_f32(h1)),
                    f64::from(f16_to_f32(h2)),
                    nan_prop,
                    max,
                )
                .map_or(CANONICAL_NAN_F16, |v| {
                    f64_to_f16(v, Rounding::Nearest, false)
                });
                let got = if max {
                    max_f16(h1, h2, nan_prop, false)
                } else {
                    min_f16(h1, h2, nan_prop, false)
                };
                assert_eq!(got, want16, "f16 {h1:#x} {h2:#x}");
                let wantb = ref_minmax(
                    f64::from(bf16_to_f32(h1)),
                    f64::from(bf16_to_f32(h2)),
                    nan_prop,
                    max,
                )
                .map_or(CANONICAL_NAN_BF16, |v| {
                    f64_to_bf16(v, Rounding::Nearest, false)
                });
                let got = if max {
                    max_bf16(h1, h2, nan_prop)
                } else {
                    min_bf16(h1, h2, nan_prop)
                };
                assert_eq!(got, wantb, "bf16 {h1:#x} {h2:#x}");
            }
        }
    }
    // "If values of both inputs are 0.0, then +0.0 > -0.0"
    for (a, b) in [(0.0f32, -0.0f32), (-0.0, 0.0)] {
        for nan in [false, true] {
            for ftz in [false, true] {
                assert_eq!(min_f32(a, b, nan, ftz).to_bits(), 0x8000_0000);
                assert_eq!(max_f32(a, b, nan, ftz).to_bits(), 0);
            }
        }
        assert_eq!(min_f64(f64::from(a), f64::from(b)).to_bits(), 1 << 63);
        assert_eq!(max_f64(f64::from(a), f64::from(b)).to_bits(), 0);
    }
    assert_eq!(min_f16(0x0000, 0x8000, false, false), 0x8000);
    assert_eq!(max_bf16(0x8000, 0x0000, false), 0x0000);
    let nan = f32::from_bits(0xFFC0_BEEF);
    assert_eq!(min_f32(nan, 2.0, false, false), 2.0);
    assert_eq!(min_f32(2.0, nan, false, false), 2.0);
    assert_eq!(max_f32(nan, -2.0, false, false), -2.0);
    assert_eq!(min_f32(nan, nan, false, false).to_bits(), CANONICAL_NAN_F32);
    assert_eq!(min_f32(nan, 2.0, true, false).to_bits(), CANONICAL_NAN_F32);
    assert_eq!(max_f32(2.0, nan, true, false).to_bits(), CANONICAL_NAN_F32);
    assert_eq!(min_f64(f64::NAN, 1.0), 1.0);
    assert_eq!(
        max_f64(f64::from_bits(0x7FF0_0000_0000_0001), f64::NAN).to_bits(),
        CANONICAL_NAN_F64
    );
    // ftz: subnormals become signed zeros before comparing
    let sub = f32::from_bits(5);
    assert_eq!(min_f32(sub, 1.0, false, true).to_bits(), 0);
    assert_eq!(min_f32(-sub, 0.0, false, true).to_bits(), 0x8000_0000);
    assert_eq!(max_f32(-sub, -0.0, false, true).to_bits(), 0x8000_0000);
    assert_eq!(max_f32(sub, -1.0, false, true).to_bits(), 0);
    assert_eq!(max_f32(sub, -1.0, false, false).to_bits(), 5);
    assert_eq!(min_f16(0x0001, 0x3C00, false, true), 0x0000);
    assert_eq!(min_f16(0x0001, 0x3C00, false, false), 0x0001);
}
