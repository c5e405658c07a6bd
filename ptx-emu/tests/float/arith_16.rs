//! f16 / bf16 add, sub, mul, fma (result rounded once) against the exact reference.

use crate::common::arith::*;
use crate::common::*;
use ptx_emu::exec::float::*;

const OPS16: [Op; 4] = [Op::Add, Op::Sub, Op::Mul, Op::Fma];

fn run_f16(op: Op, a: u16, b: u16, c: u16, r: Rounding, ftz: bool) -> u16 {
    match op {
        Op::Add => add_f16(a, b, r, ftz),
        Op::Sub => sub_f16(a, b, r, ftz),
        Op::Mul => mul_f16(a, b, r, ftz),
        Op::Fma => fma_f16(a, b, c, r, ftz),
        _ => unreachable!(),
    }
}

fn run_bf16(op: Op, a: u16, b: u16, c: u16, r: Rounding) -> u16 {
    match op {
        Op::Add => add_bf16(a, b, r),
        Op::Sub => sub_bf16(a, b, r),
        Op::Mul => mul_bf16(a, b, r),
        Op::Fma => fma_bf16(a, b, c, r),
        _ => unreachable!(),
    }
}

#[test]
fn random_f16_and_bf16_ops() {
    let mut rng = Rng::new("random_f16_and_bf16_ops");
    for op in OPS16 {
        for i in 0..400_000 {
            let ftz = i % 3 == 0;
            let (a, b, c) = gen_operands(&mut rng, HALF, op);
            let (x, y, z) = gen_operands(&mut rng, BFLOAT, op);
            for r in MODES {
                let got = run_f16(op, a as u16, b as u16, c as u16, r, ftz);
                let want = reference(HALF, op, a, b, c, r, ftz) as u16;
                assert_eq!(
                    got,
                    want,
                    "{op:?}.{}{}.f16 {a:#06x} {b:#06x} {c:#06x}",
                    mode_name(r),
                    if ftz { ".ftz" } else { "" }
                );
                let got = run_bf16(op, x as u16, y as u16, z as u16, r);
                let want = reference(BFLOAT, op, x, y, z, r, false) as u16;
                assert_eq!(
                    got,
                    want,
                    "{op:?}.{}.bf16 {x:#06x} {y:#06x} {z:#06x}",
                    mode_name(r)
                );
            }
        }
    }
}

#[test]
fn edge_cross_products_16() {
    let edges: [u16; 16] = [
        0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x3C01, 0x7BFF, 0xFBFF,
        0x7C00, 0xFC00, 0x7E00, 0xFC01, 0x1400,
    ];
    let bedges: [u16; 16] = [
        0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x0080, 0x3F80, 0xBF80, 0x3F81, 0x7F7F, 0xFF7F,
        0x7F80, 0xFF80, 0x7FC0, 0xFF81, 0x3B80,
    ];
    for op in OPS16 {
        for a in edges {
            for b in edges {
                for c in edges {
                    for r in MODES {
                        for ftz in [false, true] {
                            let want =
                                reference(HALF, op, a.into(), b.into(), c.into(), r, ftz) as u16;
                            assert_eq!(
                                run_f16(op, a, b, c, r, ftz),
                                want,
                                "{op:?} {r:?} {ftz} {a:#x} {b:#x} {c:#x}"
                            );
                        }
                    }
                }
            }
        }
        for a in bedges {
            for b in bedges {
                for c in bedges {
                    for r in MODES {
                        let want =
                            reference(BFLOAT, op, a.into(), b.into(), c.into(), r, false) as u16;
                        assert_eq!(
                            run_bf16(op, a, b, c, r),
                            want,
                            "{op:?} {r:?} {a:#x} {b:#x} {c:#x}"
                        );
                    }
                }
            }
        }
    }
}

/// `mul.rn.f16` for every f16 `a` against 256 `b`s, using the `half` crate as an independent
/// oracle: the product of two binary16 numbers is exact in binary32, so one `f32 -> f16`
/// round-to-nearest-even conversion gives the correctly rounded product.
#[test]
fn mul_f16_rn_sweep_against_half_crate() {
    let mut rng = Rng::new("mul_f16_rn_sweep_against_half_crate");
    let bs: Vec<u16> = (0..256).map(|_| rng.next() as u16).collect();
    for a in 0..=u16::MAX {
        let fa = half::f16::from_bits(a).to_f32();
        for &b in &bs {
            let fb = half::f16::from_bits(b).to_f32();
            let p = fa * fb;
            let want = if p.is_nan() {
                CANONICAL_NAN_F16
            } else {
                half::f16::from_f32(p).to_bits()
            };
            assert_eq!(
                mul_f16(a, b, Rounding::Nearest, false),
                want,
                "{a:#06x} * {b:#06x}"
            );
        }
    }
}

#[test]
fn named_16bit_cases() {
    use Rounding::*;
    // 1 + 2^-11 is a tie in f16: 1.0 + 2^-11 -> 1.0 (even); 1+2^-10 + 2^-11 -> 1 + 2^-9
    assert_eq!(add_f16(0x3C00, 0x1000, Nearest, false), 0x3C00);
    assert_eq!(add_f16(0x3C01, 0x1000, Nearest, false), 0x3C02);
    assert_eq!(add_f16(0x3C00, 0x1000, Up, false), 0x3C01);
    assert_eq!(add_f16(0x7BFF, 0x7BFF, Nearest, false), 0x7C00);
    assert_eq!(add_f16(0x7BFF, 0x7BFF, Zero, false), 0x7BFF);
    assert_eq!(sub_f16(0x3C00, 0x3C00, Down, false), 0x8000);
    assert_eq!(sub_f16(0x3C00, 0x3C00, Nearest, false), 0x0000);
    // subnormal results and ftz
    assert_eq!(mul_f16(0x0400, 0x3800, Nearest, false), 0x0200);
    assert_eq!(mul_f16(0x0400, 0x3800, Nearest, true), 0x0000);
    assert_eq!(mul_f16(0x8400, 0x3800, Nearest, true), 0x8000);
    assert_eq!(add_f16(0x0001, 0x3C00, Nearest, true), 0x3C00);
    assert_eq!(add_f16(0x0001, 0x3C00, Up, false), 0x3C01);
    assert_eq!(add_f16(0x0001, 0x3C00, Up, true), 0x3C00);
    // fma rounds once: (1 + 2^-10)^2 - 1 = 2^-9 + 2^-20 exactly, a tie at 2^-9 (ulp 2^-19)
    assert_eq!(fma_f16(0x3C01, 0x3C01, 0xBC00, Nearest, false), 0x1800);
    assert_eq!(fma_f16(0x3C01, 0x3C01, 0xBC00, Up, false), 0x1801);
    // bf16
    assert_eq!(
        add_bf16(0x3F80, 0x3B80, Nearest),
        0x3F80,
        "1 + 2^-8 tie -> even"
    );
    assert_eq!(add_bf16(0x3F81, 0x3B80, Nearest), 0x3F82);
    assert_eq!(mul_bf16(0x7F7F, 0x4000, Nearest), 0x7F80);
    assert_eq!(mul_bf16(0x7F7F, 0x4000, Zero), 0x7F7F);
    assert_eq!(
        mul_bf16(0x0080, 0x3F00, Nearest),
        0x0040,
        "bf16 subnormals are kept"
    );
    // (1 + 2^-7)^2 - 1 = 2^-6 + 2^-14: a tie at 2^-6 (ulp 2^-13)
    assert_eq!(fma_bf16(0x3F81, 0x3F81, 0xBF80, Nearest), 0x3C80);
    assert_eq!(fma_bf16(0x3F81, 0x3F81, 0xBF80, Up), 0x3C81);
    // NaNs
    for r in MODES {
        assert_eq!(add_f16(0xFE01, 0x3C00, r, false), CANONICAL_NAN_F16);
        assert_eq!(sub_f16(0x3C00, 0x7C01, r, false), CANONICAL_NAN_F16);
        assert_eq!(mul_f16(0x7C00, 0x0000, r, false), CANONICAL_NAN_F16);
        assert_eq!(fma_bf16(0xFF80, 0x3F80, 0x7F80, r), CANONICAL_NAN_BF16);
        assert_eq!(sub_bf16(0x7F80, 0x7F80, r), CANONICAL_NAN_BF16);
    }
    // sat / relu helpers
    assert_eq!(sat_f16(0x4000), 0x3C00);
    assert_eq!(sat_f16(0x8001), 0x0000);
    assert_eq!(sat_f16(0x7E00), 0x0000);
    assert_eq!(sat_f16(0x3800), 0x3800);
    assert_eq!(relu_f16(0xC000), 0x0000);
    assert_eq!(relu_f16(0xFE00), CANONICAL_NAN_F16);
    assert_eq!(relu_f16(0x4000), 0x4000);
    assert_eq!(relu_bf16(0x8000), 0x0000);
    assert_eq!(relu_bf16(0xFFC1), CANONICAL_NAN_BF16);
}
