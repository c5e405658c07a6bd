//! f32 / f64 add, sub, mul, fma, div, sqrt, rcp in all four rounding modes (and `.ftz` for
//! f32) against the exact big-integer reference.

use crate::common::arith::*;
use crate::common::*;
use ptx_emu::exec::float::*;

fn run_f32(op: Op, a: u64, b: u64, c: u64, r: Rounding, ftz: bool) -> u64 {
    let (a, b, c) = (
        f32::from_bits(a as u32),
        f32::from_bits(b as u32),
        f32::from_bits(c as u32),
    );
    let v = match op {
        Op::Add => add_f32(a, b, r, ftz),
        Op::Sub => sub_f32(a, b, r, ftz),
        Op::Mul => mul_f32(a, b, r, ftz),
        Op::Fma => fma_f32(a, b, c, r, ftz),
        Op::Div => div_f32(a, b, r, ftz),
        Op::Sqrt => sqrt_f32(a, r, ftz),
        Op::Rcp => rcp_f32(a, r, ftz),
    };
    u64::from(v.to_bits())
}

fn run_f64(op: Op, a: u64, b: u64, c: u64, r: Rounding) -> u64 {
    let (a, b, c) = (f64::from_bits(a), f64::from_bits(b), f64::from_bits(c));
    let v = match op {
        Op::Add => add_f64(a, b, r),
        Op::Sub => sub_f64(a, b, r),
        Op::Mul => mul_f64(a, b, r),
        Op::Fma => fma_f64(a, b, c, r),
        Op::Div => div_f64(a, b, r),
        Op::Sqrt => sqrt_f64(a, r),
        Op::Rcp => rcp_f64(a, r),
    };
    v.to_bits()
}

const N: usize = 600_000;

fn check_f32(op: Op) {
    let mut rng = Rng::new(&format!("f32 {op:?}"));
    for i in 0..N {
        let (a, b, c) = gen_operands(&mut rng, SINGLE, op);
        let ftz = i % 3 == 0;
        for r in MODES {
            let got = run_f32(op, a, b, c, r, ftz);
            let want = reference(SINGLE, op, a, b, c, r, ftz);
            assert_eq!(
                got,
                want,
                "{op:?}.{}{}.f32 a={a:#010x} b={b:#010x} c={c:#010x}: got {got:#010x} want {want:#010x}",
                mode_name(r),
                if ftz { ".ftz" } else { "" }
            );
        }
    }
}

fn check_f64(op: Op) {
    let mut rng = Rng::new(&format!("f64 {op:?}"));
    for _ in 0..N {
        let (a, b, c) = gen_operands(&mut rng, DOUBLE, op);
        for r in MODES {
            let got = run_f64(op, a, b, c, r);
            let want = reference(DOUBLE, op, a, b, c, r, false);
            assert_eq!(
                got,
                want,
                "{op:?}.{}.f64 a={a:#018x} b={b:#018x} c={c:#018x}: got {got:#018x} want {want:#018x}",
                mode_name(r)
            );
        }
    }
}

#[test]
fn f32_add() {
    check_f32(Op::Add);
}
#[test]
fn f32_sub() {
    check_f32(Op::Sub);
}
#[test]
fn f32_mul() {
    check_f32(Op::Mul);
}
#[test]
fn f32_fma() {
    check_f32(Op::Fma);
}
#[test]
fn f32_div() {
    check_f32(Op::Div);
}
#[test]
fn f32_sqrt() {
    check_f32(Op::Sqrt);
}
#[test]
fn f32_rcp() {
    check_f32(Op::Rcp);
}
#[test]
fn f64_add() {
    check_f64(Op::Add);
}
#[test]
fn f64_sub() {
    check_f64(Op::Sub);
}
#[test]
fn f64_mul() {
    check_f64(Op::Mul);
}
#[test]
fn f64_fma() {
    check_f64(Op::Fma);
}
#[test]
fn f64_div() {
    check_f64(Op::Div);
}
#[test]
fn f64_sqrt() {
    check_f64(Op::Sqrt);
}
#[test]
fn f64_rcp() {
    check_f64(Op::Rcp);
}

/// Cross products of edge values for every op, mode and ftz setting.
#[test]
fn edge_value_cross_products() {
    let e32: Vec<u64> = [
        0u32,
        0x8000_0000,
        1,
        0x8000_0001,
        0x007F_FFFF,
        0x807F_FFFF,
        0x0080_0000,
        0x8080_0000,
        0x3F80_0000,
        0xBF80_0000,
        0x3F80_0001,
        0x3F7F_FFFF,
        0x4000_0000,
        0x7F7F_FFFF,
        0xFF7F_FFFF,
        0x7F80_0000,
        0xFF80_0000,
        0x7FC0_0000,
        0xFFC0_0001,
        0x7F80_0001,
        0x3400_0000,
        0x3380_0000,
        0x4B80_0000,
        0x4B80_0001,
        0x0000_0003,
        0x3F00_0000,
        0x1F80_0000,
        0x5F80_0000,
    ]
    .iter()
    .map(|&x| u64::from(x))
    .collect();
    for op in ALL_OPS {
        for &a in &e32 {
            for &b in &e32 {
                for &c in &[
                    0u64,
                    0x8000_0000,
                    1,
                    0x8000_0001,
                    0x3F80_0000,
                    0xFF80_0000,
                    0x7F7F_FFFF,
                ] {
                    for r in MODES {
                        for ftz in [false, true] {
                            let got = run_f32(op, a, b, c, r, ftz);
                            let want = reference(SINGLE, op, a, b, c, r, ftz);
                            assert_eq!(got, want, "{op:?} {r:?} ftz={ftz} {a:#x} {b:#x} {c:#x}");
                        }
                    }
                }
            }
        }
    }
    let e64: Vec<u64> = vec![
        0,
        1 << 63,
        1,
        (1 << 63) | 1,
        0x000F_FFFF_FFFF_FFFF,
        0x0010_0000_0000_0000,
        0x3FF0_0000_0000_0000,
        0xBFF0_0000_0000_0000,
        0x3FF0_0000_0000_0001,
        0x3FEF_FFFF_FFFF_FFFF,
        0x7FEF_FFFF_FFFF_FFFF,
        0xFFEF_FFFF_FFFF_FFFF,
        0x7FF0_0000_0000_0000,
        0xFFF0_0000_0000_0000,
        0x7FF8_0000_0000_0000,
        0xFFF0_0000_0000_0001,
        0x3CA0_0000_0000_0000,
        0x4340_0000_0000_0001,
        0x1FF0_0000_0000_0000,
        0x5FF0_0000_0000_0000,
    ];
    for op in ALL_OPS {
        for &a in &e64 {
            for &b in &e64 {
                for &c in &[
                    0u64,
                    1 << 63,
                    1,
                    0x3FF0_0000_0000_0000,
                    0x7FEF_FFFF_FFFF_FFFF,
                ] {
                    for r in MODES {
                        let got = run_f64(op, a, b, c, r);
                        let want = reference(DOUBLE, op, a, b, c, r, false);
                        assert_eq!(got, want, "{op:?} {r:?} {a:#x} {b:#x} {c:#x}");
                    }
                }
            }
        }
    }
}

/// Hand-checked cases with the expected answer written out.
#[test]
fn named_cases() {
    use Rounding::*;
    // 1 + 2^-24 is a tie between 1 and 1 + 2^-23: RN -> 1 (even), RP -> next
    let t = 2f32.powi(-24);
    assert_eq!(add_f32(1.0, t, Nearest, false), 1.0);
    assert_eq!(add_f32(1.0, t, Up, false), 1.0f32.next_up());
    assert_eq!(add_f32(1.0, t, Down, false), 1.0);
    assert_eq!(
        add_f32(1.0f32.next_up(), t, Nearest, false),
        1.0f32.next_up().next_up()
    );
    assert_eq!(add_f32(-1.0, -t, Down, false), (-1.0f32).next_down());
    // exact cancellation: +0, except -0 in .rm
    for r in [Nearest, Zero, Up] {
        assert_eq!(sub_f32(1.5, 1.5, r, false).to_bits(), 0);
        assert_eq!(add_f32(0.0, -0.0, r, false).to_bits(), 0);
    }
    assert_eq!(sub_f32(1.5, 1.5, Down, false).to_bits(), 0x8000_0000);
    assert_eq!(add_f32(0.0, -0.0, Down, false).to_bits(), 0x8000_0000);
    assert_eq!(add_f32(-0.0, -0.0, Up, false).to_bits(), 0x8000_0000);
    // overflow per mode
    assert_eq!(mul_f32(f32::MAX, 2.0, Nearest, false), f32::INFINITY);
    assert_eq!(mul_f32(f32::MAX, 2.0, Zero, false), f32::MAX);
    assert_eq!(mul_f32(f32::MAX, 2.0, Down, false), f32::MAX);
    assert_eq!(mul_f32(f32::MAX, -2.0, Down, false), f32::NEG_INFINITY);
    assert_eq!(mul_f32(f32::MAX, -2.0, Up, false), -f32::MAX);
    assert_eq!(
        add_f32(
            f32::MAX,
            f32::MAX.next_down() - f32::MAX.next_down(),
            Up,
            false
        ),
        f32::MAX
    );
    // underflow and ftz
    let min_sub = f32::from_bits(1);
    assert_eq!(
        mul_f32(min_sub, 0.5, Nearest, false).to_bits(),
        0,
        "tie -> even 0"
    );
    assert_eq!(mul_f32(min_sub, 0.5, Up, false).to_bits(), 1);
    assert_eq!(mul_f32(-min_sub, 0.5, Down, false).to_bits(), 0x8000_0001);
    assert_eq!(mul_f32(min_sub, 0.75, Nearest, false).to_bits(), 1);
    assert_eq!(mul_f32(min_sub, 1.0, Nearest, true).to_bits(), 0);
    assert_eq!(mul_f32(-min_sub, 1.0, Nearest, true).to_bits(), 0x8000_0000);
    assert_eq!(add_f32(min_sub, min_sub, Nearest, false).to_bits(), 2);
    assert_eq!(add_f32(min_sub, min_sub, Nearest, true).to_bits(), 0);
    // result is subnormal -> flushed even though inputs are normal
    let m = f32::MIN_POSITIVE;
    assert_eq!(mul_f32(m, 0.5, Nearest, true).to_bits(), 0);
    assert_eq!(mul_f32(-m, 0.5, Up, true).to_bits(), 0x8000_0000);
    assert_eq!(mul_f32(m, 0.5, Nearest, false).to_bits(), 0x0040_0000);
    // fma: single rounding
    let a = 1.0 + 2f32.powi(-12);
    let p = f64::from(a) * f64::from(a); // exact
    let c = -(p as f32);
    assert_eq!(
        f64::from(fma_f32(a, a, c, Nearest, false)),
        p - f64::from(p as f32)
    );
    assert_eq!(fma_f32(0.0, 5.0, -0.0, Nearest, false).to_bits(), 0);
    assert_eq!(fma_f32(0.0, 5.0, -0.0, Down, false).to_bits(), 0x8000_0000);
    assert_eq!(fma_f32(-0.0, 5.0, -0.0, Up, false).to_bits(), 0x8000_0000);
    assert!(fma_f32(f32::INFINITY, 0.0, 1.0, Nearest, false).to_bits() == CANONICAL_NAN_F32);
    assert_eq!(
        fma_f32(f32::INFINITY, 1.0, f32::NEG_INFINITY, Zero, false).to_bits(),
        CANONICAL_NAN_F32
    );
    // f64 fma where only the sticky low bit of the product decides: (1+2^-26)(1-2^-26+2^-52)
    // = 1 + 2^-78; 2^53 + 1 + 2^-78 is just above the tie 2^53 + 1.
    let (fa, fb) = (1.0 + 2f64.powi(-26), 1.0 - 2f64.powi(-26) + 2f64.powi(-52));
    let big = 2f64.powi(53);
    assert_eq!(fma_f64(fa, fb, big, Nearest), big + 2.0);
    assert_eq!(fma_f64(fa, fb, big, Zero), big);
    assert_eq!(fma_f64(-fa, fb, big, Nearest), big - 1.0);
    assert_eq!(fma_f64(-fa, fb, big, Zero), big - 2.0);
    assert_eq!(fma_f64(-fa, fb, big, Down), big - 2.0);
    assert_eq!(fma_f64(-fa, fb, big, Up), big - 1.0);
    assert_eq!(fma_f64(fa, fb, -big, Up), -big + 2.0);
    // div/sqrt/rcp specials
    assert_eq!(div_f32(1.0, 3.0, Zero, false), f32::from_bits(0x3EAA_AAAA));
    assert_eq!(div_f32(1.0, 3.0, Up, false), f32::from_bits(0x3EAA_AAAB));
    assert_eq!(div_f32(-1.0, 3.0, Up, false), f32::from_bits(0xBEAA_AAAA));
    assert_eq!(div_f32(1.0, 0.0, Zero, false), f32::INFINITY);
    assert_eq!(div_f32(1.0, -0.0, Zero, false), f32::NEG_INFINITY);
    assert_eq!(div_f32(0.0, 0.0, Zero, false).to_bits(), CANONICAL_NAN_F32);
    assert_eq!(
        div_f32(1.0, min_sub, Nearest, true),
        f32::INFINITY,
        "ftz: 1/subnormal = 1/0"
    );
    assert_eq!(sqrt_f32(-0.0, Up, false).to_bits(), 0x8000_0000);
    assert_eq!(sqrt_f32(-1.0, Up, false).to_bits(), CANONICAL_NAN_F32);
    assert_eq!(
        sqrt_f32(-min_sub, Up, true).to_bits(),
        0x8000_0000,
        "ftz: -subnormal -> -0"
    );
    assert_eq!(sqrt_f32(2.0, Zero, false), f32::from_bits(0x3FB5_04F3));
    assert_eq!(sqrt_f32(2.0, Up, false), f32::from_bits(0x3FB5_04F4));
    assert_eq!(rcp_f32(3.0, Down, false), f32::from_bits(0x3EAA_AAAA));
    assert_eq!(rcp_f32(-0.0, Down, false), f32::NEG_INFINITY);
    // sqrt(2) = 1.41421356237309504880..., binary64 RN = 0x3FF6A09E667F3BCD lies above it
    assert_eq!(sqrt_f64(2.0, Up).to_bits(), 0x3FF6_A09E_667F_3BCD);
    assert_eq!(sqrt_f64(2.0, Down).to_bits(), 0x3FF6_A09E_667F_3BCC);
    assert_eq!(sqrt_f64(2.0, Zero).to_bits(), 0x3FF6_A09E_667F_3BCC);
    assert_eq!(rcp_f64(3.0, Zero), f64::from_bits(0x3FD5_5555_5555_5555));
    assert_eq!(rcp_f64(3.0, Up), f64::from_bits(0x3FD5_5555_5555_5556));
    // NaN canonicalisation: every NaN result is the canonical NaN
    let qnan = f32::from_bits(0xFFC1_2345);
    for r in MODES {
        assert_eq!(add_f32(qnan, 1.0, r, false).to_bits(), CANONICAL_NAN_F32);
        assert_eq!(
            mul_f32(1.0, f32::from_bits(0x7F80_0001), r, true).to_bits(),
            CANONICAL_NAN_F32
        );
        assert_eq!(
            sub_f32(f32::INFINITY, f32::INFINITY, r, false).to_bits(),
            CANONICAL_NAN_F32
        );
        assert_eq!(
            add_f64(f64::from_bits(0xFFF8_0000_0000_1234), 1.0, r).to_bits(),
            CANONICAL_NAN_F64
        );
        assert_eq!(sqrt_f64(-2.0, r).to_bits(), CANONICAL_NAN_F64);
        assert_eq!(
            fma_f64(f64::INFINITY, 0.0, 1.0, r).to_bits(),
            CANONICAL_NAN_F64
        );
    }
}
