//! Validates the test oracle (`round_exact`, `round_sqrt`) against a definition-only checker
//! (`is_correct_rounding`), so that the arithmetic tests rest on two independent formulations.

use crate::common::*;
use num_bigint::{BigInt, BigUint};
use num_traits::One;

fn random_biguint(rng: &mut Rng, max_bits: u64) -> BigUint {
    let bits = 1 + rng.below(max_bits);
    let mut v = BigUint::from(0u32);
    let mut left = bits;
    while left > 0 {
        let take = left.min(64);
        v = (v << take as usize) | BigUint::from(rng.next() >> (64 - take));
        left -= take;
    }
    if v == BigUint::from(0u32) {
        BigUint::one()
    } else {
        v
    }
}

#[test]
fn oracle_agrees_with_definition() {
    let mut rng = Rng::new("oracle_agrees_with_definition");
    for fmt in [HALF, BFLOAT, SINGLE, DOUBLE] {
        let emin = 1 - fmt.bias();
        let emax = fmt.bias();
        for i in 0..50_000 {
            let mode = MODES[i % 4];
            let x = if rng.below(3) == 0 {
                // a neighbour-midpoint of a random encoding, nudged
                let b = gen_bits(&mut rng, fmt) & !fmt.sign_mask();
                if fmt.is_nan(b) || fmt.is_inf(b) || b == fmt.max_bits() {
                    continue;
                }
                let lo = fmt.to_dyadic(b);
                let hi = fmt.to_dyadic(b + 1);
                let mut mid = lo.add(&hi);
                mid.exp -= 1;
                let nudge = rng.below(3) as i64 - 1;
                let tiny = Dyadic {
                    mant: BigInt::from(nudge),
                    exp: mid.exp - 40,
                };
                let mut v = mid.add(&tiny);
                if rng.bool() {
                    v = v.neg();
                }
                if v.is_zero() {
                    continue;
                }
                v.to_exact()
            } else {
                let num = random_biguint(&mut rng, 130);
                let den = if rng.bool() {
                    BigUint::one()
                } else {
                    random_biguint(&mut rng, 70)
                };
                let target = rng.range_i(emin - fmt.frac_bits as i64 - 4, emax + 3);
                let exp = target - num.bits() as i64 + den.bits() as i64;
                Exact {
                    neg: rng.bool(),
                    num,
                    den,
                    exp,
                }
            };
            let r = round_exact(fmt, &x, mode);
            assert!(
                is_correct_rounding(fmt, &x, mode, r),
                "oracle disagrees with definition: fmt={fmt:?} mode={mode:?} x={x:?} r={r:#x}"
            );
        }
    }
}

#[test]
fn sqrt_oracle_agrees_with_definition() {
    // sqrt(x) rounded: check r = round_sqrt satisfies pred/succ bracketing by squaring.
    let mut rng = Rng::new("sqrt_oracle_agrees_with_definition");
    for fmt in [HALF, BFLOAT, SINGLE, DOUBLE] {
        for i in 0..20_000 {
            let mode = MODES[i % 4];
            let b = gen_bits(&mut rng, fmt) & !fmt.sign_mask();
            if fmt.is_nan(b) || fmt.is_inf(b) || fmt.is_zero(b) {
                continue;
            }
            let x = fmt.to_dyadic(b);
            let r = round_sqrt(fmt, &x, mode);
            // r^2 vs x and neighbours: for RZ/RM r^2 <= x < succ(r)^2 ; RP pred(r)^2 < x <= r^2
            let sq = |e: u64| {
                let d = fmt.to_dyadic(e);
                d.mul(&d)
            };
            let le = |a: &Dyadic, b: &Dyadic| !b.add(&a.neg()).is_neg();
            let lt = |a: &Dyadic, b: &Dyadic| {
                let d = b.add(&a.neg());
                !d.is_neg() && !d.is_zero()
            };
            match mode {
                Rounding::Zero | Rounding::Down => {
                    assert!(
                        le(&sq(r), &x) && lt(&x, &sq(r + 1)),
                        "{fmt:?} {b:#x} {r:#x}"
                    )
                }
                Rounding::Up => {
                    assert!(
                        le(&x, &sq(r)) && lt(&sq(r - 1), &x),
                        "{fmt:?} {b:#x} {r:#x}"
                    )
                }
                Rounding::Nearest => {
                    // |sqrt(x) - r| <= |sqrt(x) - r'| for r' = r±1  <=>  x vs midpoints^2
                    let mid = |e1: u64, e2: u64| {
                        let mut m = fmt.to_dyadic(e1).add(&fmt.to_dyadic(e2));
                        m.exp -= 1;
                        m.mul(&m)
                    };
                    assert!(
                        le(&mid(r - 1, r), &x) && le(&x, &mid(r, r + 1)),
                        "{fmt:?} {b:#x} {r:#x}"
                    );
                }
            }
        }
    }
}
