//! `.approx` functions: every special value from the ISA tables, and the documented maximum
//! error over sweeps of inputs (references computed in f64 with formulas that differ from the
//! implementation's).

use crate::common::*;
use ptx_emu::exec::float::*;

const NAN32: u32 = CANONICAL_NAN_F32;

fn b(x: f32) -> u32 {
    x.to_bits()
}

/// ulp of an f32 result of magnitude |y| (subnormal ulp below 2^-126).
fn ulp32(y: f64) -> f64 {
    let a = y.abs();
    if a < 2f64.powi(-126) {
        2f64.powi(-149)
    } else {
        2f64.powi(a.log2().floor() as i32 - 23)
    }
}

/// Sweep of f32 inputs: a strided walk over all bit patterns plus random ones.
fn sweep(name: &str) -> Vec<f32> {
    let mut rng = Rng::new(name);
    let mut v: Vec<f32> = (0u64..(1 << 32))
        .step_by(4099)
        .map(|x| f32::from_bits(x as u32))
        .collect();
    v.extend((0..200_000).map(|_| f32::from_bits(gen_bits(&mut rng, SINGLE) as u32)));
    v
}

#[test]
fn f32_special_values_from_isa_tables() {
    let (inf, ninf) = (f32::INFINITY, f32::NEG_INFINITY);
    let nan = f32::from_bits(0xFFC0_0123);
    let sub = f32::from_bits(0x0000_0100);
    for ftz in [false, true] {
        // ex2: -Inf -> +0, -0 -> 1, +0 -> 1, +Inf -> +Inf, NaN -> NaN
        assert_eq!(b(ex2_approx_f32(ninf, ftz)), 0);
        assert_eq!(ex2_approx_f32(-0.0, ftz), 1.0);
        assert_eq!(ex2_approx_f32(0.0, ftz), 1.0);
        assert_eq!(ex2_approx_f32(inf, ftz), inf);
        assert_eq!(b(ex2_approx_f32(nan, ftz)), NAN32);
        // lg2: -Inf -> NaN, -normal -> NaN, -0 -> -Inf, +0 -> -Inf, +Inf -> +Inf, NaN -> NaN
        assert_eq!(b(lg2_approx_f32(ninf, ftz)), NAN32);
        assert_eq!(b(lg2_approx_f32(-1.5, ftz)), NAN32);
        assert_eq!(lg2_approx_f32(-0.0, ftz), ninf);
        assert_eq!(lg2_approx_f32(0.0, ftz), ninf);
        assert_eq!(lg2_approx_f32(inf, ftz), inf);
        assert_eq!(b(lg2_approx_f32(nan, ftz)), NAN32);
        // rcp: -Inf -> -0, -0 -> -Inf, +0 -> +Inf, +Inf -> +0, NaN -> NaN
        assert_eq!(b(rcp_approx_f32(ninf, ftz)), 0x8000_0000);
        assert_eq!(rcp_approx_f32(-0.0, ftz), ninf);
        assert_eq!(rcp_approx_f32(0.0, ftz), inf);
        assert_eq!(b(rcp_approx_f32(inf, ftz)), 0);
        assert_eq!(b(rcp_approx_f32(nan, ftz)), NAN32);
        // rsqrt: -Inf -> NaN, -normal -> NaN, -0 -> -Inf, +0 -> +Inf, +Inf -> +0, NaN -> NaN
        assert_eq!(b(rsqrt_approx_f32(ninf, ftz)), NAN32);
        assert_eq!(b(rsqrt_approx_f32(-4.0, ftz)), NAN32);
        assert_eq!(rsqrt_approx_f32(-0.0, ftz), ninf);
        assert_eq!(rsqrt_approx_f32(0.0, ftz), inf);
        assert_eq!(b(rsqrt_approx_f32(inf, ftz)), 0);
        assert_eq!(b(rsqrt_approx_f32(nan, ftz)), NAN32);
        // sqrt: -Inf -> NaN, -normal -> NaN, -0 -> -0, +0 -> +0, +Inf -> +Inf, NaN -> NaN
        assert_eq!(b(sqrt_approx_f32(ninf, ftz)), NAN32);
        assert_eq!(b(sqrt_approx_f32(-4.0, ftz)), NAN32);
        assert_eq!(b(sqrt_approx_f32(-0.0, ftz)), 0x8000_0000);
        assert_eq!(b(sqrt_approx_f32(0.0, ftz)), 0);
        assert_eq!(sqrt_approx_f32(inf, ftz), inf);
        assert_eq!(b(sqrt_approx_f32(nan, ftz)), NAN32);
        // sin: ±Inf -> NaN, -0 -> -0, +0 -> +0, NaN -> NaN
        assert_eq!(b(sin_approx_f32(ninf, ftz)), NAN32);
        assert_eq!(b(sin_approx_f32(inf, ftz)), NAN32);
        assert_eq!(b(sin_approx_f32(-0.0, ftz)), 0x8000_0000);
        assert_eq!(b(sin_approx_f32(0.0, ftz)), 0);
        assert_eq!(b(sin_approx_f32(nan, ftz)), NAN32);
        // cos: ±Inf -> NaN, ±0 -> +1, NaN -> NaN
        assert_eq!(b(cos_approx_f32(ninf, ftz)), NAN32);
        assert_eq!(b(cos_approx_f32(inf, ftz)), NAN32);
        assert_eq!(cos_approx_f32(-0.0, ftz), 1.0);
        assert_eq!(cos_approx_f32(0.0, ftz), 1.0);
        assert_eq!(b(cos_approx_f32(nan, ftz)), NAN32);
    }
    // tanh: -Inf -> -1, -0 -> -0, +0 -> +0, +Inf -> 1, NaN -> NaN; subnormals pass through
    assert_eq!(tanh_approx_f32(ninf), -1.0);
    assert_eq!(b(tanh_approx_f32(-0.0)), 0x8000_0000);
    assert_eq!(b(tanh_approx_f32(0.0)), 0);
    assert_eq!(tanh_approx_f32(inf), 1.0);
    assert_eq!(b(tanh_approx_f32(nan)), NAN32);
    assert_eq!(b(tanh_approx_f32(sub)), b(sub));
    assert_eq!(b(tanh_approx_f32(-sub)), b(-sub));
    // ftz behaviour on subnormal inputs / results
    assert_eq!(ex2_approx_f32(sub, true), 1.0);
    assert_eq!(ex2_approx_f32(-149.0, false), f32::from_bits(1));
    assert_eq!(b(ex2_approx_f32(-149.0, true)), 0);
    assert_eq!(b(ex2_approx_f32(-127.0, true)), 0);
    assert_eq!(ex2_approx_f32(-126.0, true), f32::MIN_POSITIVE);
    assert_eq!(lg2_approx_f32(sub, true), ninf);
    assert_eq!(lg2_approx_f32(-sub, true), ninf);
    assert_eq!(lg2_approx_f32(sub, false), -141.0);
    assert_eq!(b(lg2_approx_f32(-sub, false)), NAN32);
    assert_eq!(rcp_approx_f32(sub, true), inf);
    assert_eq!(rcp_approx_f32(-sub, true), ninf);
    assert_eq!(
        b(rcp_approx_f32(f32::MAX, true)),
        0,
        "1/MAX is subnormal -> flushed"
    );
    assert!(rcp_approx_f32(f32::MAX, false).is_subnormal());
    assert_eq!(rsqrt_approx_f32(-sub, true), ninf);
    assert_eq!(b(rsqrt_approx_f32(-sub, false)), NAN32);
    assert_eq!(rsqrt_approx_f32(sub, false), 2f32.powi(70) * 2f32.sqrt());
    assert_eq!(b(sqrt_approx_f32(-sub, true)), 0x8000_0000);
    assert_eq!(b(sqrt_approx_f32(-sub, false)), NAN32);
    assert_eq!(b(sin_approx_f32(sub, true)), 0);
    assert_eq!(b(sin_approx_f32(-sub, true)), 0x8000_0000);
    assert_eq!(b(sin_approx_f32(sub, false)), b(sub));
    assert_eq!(cos_approx_f32(sub, true), 1.0);
}

#[test]
fn div_approx_and_full() {
    let big = f32::from_bits(0x7F00_0000); // 2^127, in (2^126, 2^128)
    assert_eq!(b(div_approx_f32(3.0, big, false)), 0);
    assert_eq!(b(div_approx_f32(-3.0, big, false)), 0x8000_0000);
    assert_eq!(b(div_approx_f32(3.0, -big, false)), 0x8000_0000);
    assert_eq!(b(div_approx_f32(f32::INFINITY, big, false)), NAN32);
    assert_eq!(b(div_approx_f32(f32::NEG_INFINITY, -f32::MAX, true)), NAN32);
    assert_eq!(
        b(div_approx_f32(f32::MAX, f32::MAX, false)),
        0,
        "documented: zero, not 1"
    );
    assert_eq!(div_full_f32(f32::MAX, f32::MAX, false), 1.0);
    assert_eq!(div_approx_f32(1.0, 0.0, false), f32::INFINITY);
    assert_eq!(b(div_approx_f32(0.0, 0.0, false)), NAN32);
    assert_eq!(b(div_approx_f32(5.0, f32::INFINITY, false)), 0);
    assert_eq!(div_approx_f32(1.0, f32::from_bits(1), true), f32::INFINITY);
    let mut rng = Rng::new("div_approx_and_full");
    for _ in 0..300_000 {
        let x = f32::from_bits(gen_bits(&mut rng, SINGLE) as u32);
        let y = f32::from_bits(gen_bits(&mut rng, SINGLE) as u32);
        if !x.is_finite() || !y.is_finite() || y == 0.0 {
            continue;
        }
        let exact = f64::from(x) / f64::from(y);
        if exact.abs() > f64::from(f32::MAX) || exact.abs() < 2f64.powi(-126) {
            continue;
        }
        let tol = 2.0 * ulp32(exact);
        if y.abs() >= f32::MIN_POSITIVE && y.abs() <= 2f32.powi(126) {
            let got = f64::from(div_approx_f32(x, y, false));
            assert!(
                (got - exact).abs() <= tol,
                "div.approx {x:e}/{y:e}: {got:e} vs {exact:e}"
            );
        }
        let got = f64::from(div_full_f32(x, y, false));
        assert!((got - exact).abs() <= tol, "div.full {x:e}/{y:e}");
    }
}

/// |x| range reduction and Taylor series, independent of libm's sin/cos.
fn taylor_sin_cos(x: f64) -> (f64, f64) {
    let two_pi = std::f64::consts::TAU;
    let r = x - (x / two_pi).round() * two_pi;
    let (mut s, mut c) = (0.0, 0.0);
    let (mut ts, mut tc) = (r, 1.0);
    for k in 0..30 {
        s += ts;
        c += tc;
        let n = 2.0 * k as f64;
        ts *= -r * r / ((n + 2.0) * (n + 3.0));
        tc *= -r * r / ((n + 1.0) * (n + 2.0));
    }
    (s, c)
}

#[test]
fn f32_error_bounds_over_sweep() {
    let xs = sweep("f32_error_bounds_over_sweep");
    let pi = std::f64::consts::PI;
    for &x in &xs {
        if x.is_nan() {
            continue;
        }
        let xd = f64::from(x);
        // ex2: 2 ulp from the correctly rounded result
        if x.is_finite() {
            let want = (xd * std::f64::consts::LN_2).exp();
            let got = ex2_approx_f32(x, false);
            if want > f64::from(f32::MAX) * (1.0 + 1e-9) {
                assert_eq!(got, f32::INFINITY, "ex2({x:e})");
            } else {
                let err = (f64::from(got) - want).abs() / ulp32(want);
                assert!(
                    err <= 2.0 + 1e-6,
                    "ex2({x:e}) = {got:e}, want {want:e}, {err} ulp"
                );
            }
        }
        // lg2: abs 2^-22 on (0.5, 2), rel 2^-22 elsewhere (positive finite)
        if x > 0.0 && x.is_finite() {
            let want = xd.ln() / std::f64::consts::LN_2;
            let got = f64::from(lg2_approx_f32(x, false));
            let err = (got - want).abs();
            if xd > 0.5 && xd < 2.0 {
                assert!(err <= 2f64.powi(-22), "lg2({x:e})");
            } else {
                assert!(err <= 2f64.powi(-22) * want.abs(), "lg2({x:e})");
            }
            // rsqrt: rel 2^-22.9 ; sqrt: rel 2^-23 ; rcp: 1 ulp
            let want = xd.powf(-0.5);
            let got = f64::from(rsqrt_approx_f32(x, false));
            assert!(
                (got - want).abs() <= 2f64.powf(-22.9) * want,
                "rsqrt({x:e})"
            );
            let want = xd.powf(0.5);
            let got = f64::from(sqrt_approx_f32(x, false));
            assert!((got - want).abs() <= 2f64.powi(-23) * want, "sqrt({x:e})");
        }
        if x.is_finite() && x != 0.0 {
            let want = 1.0 / xd;
            let got = rcp_approx_f32(x, false);
            if want.abs() > f64::from(f32::MAX) {
                assert!(got.is_infinite() || got.abs() == f32::MAX);
            } else {
                assert!((f64::from(got) - want).abs() <= ulp32(want), "rcp({x:e})");
            }
            // tanh: relative 2^-11
            let want = if xd.abs() > 20.0 {
                xd.signum()
            } else {
                let e = (2.0 * xd).exp_m1();
                e / (e + 2.0)
            };
            let got = f64::from(tanh_approx_f32(x));
            assert!(
                (got - want).abs() <= 2f64.powi(-11) * want.abs(),
                "tanh({x:e}) = {got} vs {want}"
            );
        }
        // sin/cos: absolute 2^-20.5 on [-2pi, 2pi], 2^-14.7 on [-100pi, 100pi]
        if xd.abs() <= 100.0 * pi {
            let bound = if xd.abs() <= 2.0 * pi {
                2f64.powf(-20.5)
            } else {
                2f64.powf(-14.7)
            };
            let (s, c) = taylor_sin_cos(xd);
            assert!(
                (f64::from(sin_approx_f32(x, false)) - s).abs() <= bound,
                "sin({x:e})"
            );
            assert!(
                (f64::from(cos_approx_f32(x, false)) - c).abs() <= bound,
                "cos({x:e})"
            );
        }
    }
}

fn h16(x: u16) -> f64 {
    f64::from(f16_to_f32(x))
}

fn bf(x: u16) -> f64 {
    f64::from(bf16_to_f32(x))
}

#[test]
fn half_precision_approx_all_inputs() {
    // special values
    assert_eq!(ex2_approx_f16(0xFC00), 0x0000);
    assert_eq!(ex2_approx_f16(0x8000), 0x3C00);
    assert_eq!(ex2_approx_f16(0x0000), 0x3C00);
    assert_eq!(ex2_approx_f16(0x7C00), 0x7C00);
    assert_eq!(ex2_approx_f16(0x7E01), CANONICAL_NAN_F16);
    assert_eq!(ex2_approx_ftz_bf16(0xFF80), 0x0000);
    assert_eq!(ex2_approx_ftz_bf16(0x8001), 0x3F80, "-subnormal -> +1.0");
    assert_eq!(ex2_approx_ftz_bf16(0x8000), 0x3F80);
    assert_eq!(ex2_approx_ftz_bf16(0x0000), 0x3F80);
    assert_eq!(ex2_approx_ftz_bf16(0x0001), 0x3F80, "+subnormal -> +1.0");
    assert_eq!(ex2_approx_ftz_bf16(0x7F80), 0x7F80);
    assert_eq!(ex2_approx_ftz_bf16(0xFFC0), CANONICAL_NAN_BF16);
    assert_eq!(
        ex2_approx_ftz_bf16(0xC302),
        0x0000,
        "2^-130 is subnormal in bf16 -> flushed"
    );
    for (t, one, none, nan) in [
        (
            tanh_approx_f16 as fn(u16) -> u16,
            0x3C00u16,
            0xBC00u16,
            CANONICAL_NAN_F16,
        ),
        (tanh_approx_bf16, 0x3F80, 0xBF80, CANONICAL_NAN_BF16),
    ] {
        let inf = if one == 0x3C00 { 0x7C00 } else { 0x7F80 };
        assert_eq!(t(0x8000 | inf), none);
        assert_eq!(t(0x8000), 0x8000);
        assert_eq!(t(0x0000), 0x0000);
        assert_eq!(t(inf), one);
        assert_eq!(t(inf | 1), nan);
        assert_eq!(t(0x0001), 0x0001, "subnormals supported");
    }
    for x in 0..=u16::MAX {
        // ex2.f16: relative error 2^-9.9
        let v = h16(x);
        if v.is_finite() {
            let want = v.exp2();
            let got = h16(ex2_approx_f16(x));
            if want >= 65520.0 {
                assert!(got.is_infinite(), "ex2.f16 {x:#06x}");
            } else if want >= 2f64.powi(-14) {
                assert!(
                    (got - want).abs() <= 2f64.powf(-9.9) * want,
                    "ex2.f16 {x:#06x}"
                );
            } else {
                assert!(
                    (got - want).abs() <= 2f64.powi(-25),
                    "ex2.f16 {x:#06x} (subnormal result)"
                );
            }
            // tanh.f16: absolute 2^-10.987
            let got = h16(tanh_approx_f16(x));
            assert!(
                (got - v.tanh()).abs() <= 2f64.powf(-10.987),
                "tanh.f16 {x:#06x}"
            );
        }
        let w = bf(x);
        if w.is_finite() {
            let wf = if (x & 0x7F80) == 0 { 0.0 } else { w }; // ftz input
            let want = wf.exp2();
            let got = bf(ex2_approx_ftz_bf16(x));
            if want > f64::from(f32::from_bits(0x7F7F_8000)) {
                assert!(got.is_infinite(), "ex2.bf16 {x:#06x}");
            } else if want >= 2f64.powi(-126) {
                assert!(
                    (got - want).abs() <= 2f64.powi(-7) * want,
                    "ex2.bf16 {x:#06x}"
                );
            } else {
                assert!(
                    got == 0.0,
                    "ex2.ftz.bf16 {x:#06x}: subnormal result flushed"
                );
            }
            let got = bf(tanh_approx_bf16(x));
            assert!(
                (got - w.tanh()).abs() <= 2f64.powi(-8),
                "tanh.bf16 {x:#06x}"
            );
        }
    }
}

#[test]
fn f64_approx() {
    let nan_ftz = CANONICAL_NAN_F64_APPROX_FTZ;
    let sub = f64::from_bits(0x0000_0001_0000_0000);
    let tiny_low = f64::from_bits(0x0000_0000_0000_0001);
    // rcp.approx.ftz.f64 table
    assert_eq!(rcp_approx_ftz_f64(f64::NEG_INFINITY).to_bits(), 1 << 63);
    assert_eq!(rcp_approx_ftz_f64(-sub), f64::NEG_INFINITY);
    assert_eq!(rcp_approx_ftz_f64(-0.0), f64::NEG_INFINITY);
    assert_eq!(rcp_approx_ftz_f64(0.0), f64::INFINITY);
    assert_eq!(rcp_approx_ftz_f64(sub), f64::INFINITY);
    assert_eq!(rcp_approx_ftz_f64(tiny_low), f64::INFINITY);
    assert_eq!(rcp_approx_ftz_f64(f64::INFINITY).to_bits(), 0);
    assert_eq!(rcp_approx_ftz_f64(f64::NAN).to_bits(), nan_ftz);
    assert_eq!(
        rcp_approx_ftz_f64(f64::from_bits(0xFFF8_0000_0000_0000)).to_bits(),
        nan_ftz
    );
    assert_eq!(
        rcp_approx_ftz_f64(f64::from_bits(0xFFF0_0001_0000_0000)).to_bits(),
        nan_ftz
    );
    // classified on a[63:32]: a NaN whose payload is only in the low word looks like -Inf
    assert_eq!(
        rcp_approx_ftz_f64(f64::from_bits(0xFFF0_0000_0000_0001)).to_bits(),
        1 << 63
    );
    assert_eq!(
        rsqrt_approx_ftz_f64(f64::from_bits(0x7FF0_0000_0000_0001)).to_bits(),
        0
    );
    assert_eq!(rcp_approx_ftz_f64(2.0), 0.5);
    assert_eq!(
        rcp_approx_ftz_f64(2.0f64.powi(1023)).to_bits(),
        0,
        "subnormal result flushed"
    );
    assert_eq!(rcp_approx_ftz_f64(-(2.0f64.powi(1023))).to_bits(), 1 << 63);
    // rsqrt.approx.ftz.f64 table
    assert_eq!(rsqrt_approx_ftz_f64(f64::NEG_INFINITY).to_bits(), nan_ftz);
    assert_eq!(rsqrt_approx_ftz_f64(-sub), f64::NEG_INFINITY);
    assert_eq!(rsqrt_approx_ftz_f64(-0.0), f64::NEG_INFINITY);
    assert_eq!(rsqrt_approx_ftz_f64(0.0), f64::INFINITY);
    assert_eq!(rsqrt_approx_ftz_f64(sub), f64::INFINITY);
    assert_eq!(rsqrt_approx_ftz_f64(f64::INFINITY).to_bits(), 0);
    assert_eq!(rsqrt_approx_ftz_f64(f64::NAN).to_bits(), nan_ftz);
    assert_eq!(rsqrt_approx_ftz_f64(-4.0).to_bits(), nan_ftz);
    assert_eq!(rsqrt_approx_ftz_f64(4.0), 0.5);
    // rsqrt.approx.f64
    assert_eq!(rsqrt_approx_f64(-0.0), f64::NEG_INFINITY);
    assert_eq!(rsqrt_approx_f64(0.0), f64::INFINITY);
    assert_eq!(rsqrt_approx_f64(f64::INFINITY).to_bits(), 0);
    assert_eq!(rsqrt_approx_f64(-1.0).to_bits(), CANONICAL_NAN_F64);
    assert_eq!(
        rsqrt_approx_f64(f64::NEG_INFINITY).to_bits(),
        CANONICAL_NAN_F64
    );
    assert_eq!(
        rsqrt_approx_f64(f64::from_bits(0x7FF4_0000_0000_0000)).to_bits(),
        CANONICAL_NAN_F64
    );
    assert_eq!(rsqrt_approx_f64(tiny_low), 2f64.powi(537));
    let mut rng = Rng::new("f64_approx");
    for _ in 0..200_000 {
        let x = f64::from_bits(gen_bits(&mut rng, DOUBLE));
        if !x.is_finite() || x == 0.0 {
            continue;
        }
        let tmp = f64::from_bits(x.to_bits() & 0xFFFF_FFFF_0000_0000);
        let r = rcp_approx_ftz_f64(x);
        assert_eq!(r.to_bits() & 0xFFFF_FFFF, 0, "low word must be zero");
        if tmp.is_subnormal() || tmp == 0.0 {
            assert!(r.is_infinite() && r.is_sign_negative() == x.is_sign_negative());
        } else {
            let want = 1.0 / tmp;
            if want.abs() < f64::MIN_POSITIVE {
                assert_eq!(r.to_bits() & !(1 << 63), 0);
            } else {
                assert!(
                    (r - want).abs() <= 2f64.powi(-21) * want.abs(),
                    "rcp.approx.ftz.f64({x:e})"
                );
            }
        }
        if x > 0.0 {
            let s = rsqrt_approx_ftz_f64(x);
            assert_eq!(s.to_bits() & 0xFFFF_FFFF, 0);
            if tmp.is_subnormal() || tmp == 0.0 {
                assert_eq!(s, f64::INFINITY);
            } else {
                let want = 1.0 / tmp.sqrt();
                assert!(
                    (s - want).abs() <= 2f64.powi(-20) * want,
                    "rsqrt.approx.ftz.f64({x:e})"
                );
            }
            let want = x.powf(-0.5);
            assert!(
                (rsqrt_approx_f64(x) - want).abs() <= 2f64.powi(-50) * want,
                "rsqrt.approx.f64({x:e})"
            );
        }
    }
}
