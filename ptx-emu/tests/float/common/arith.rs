//! Reference semantics for the arithmetic instructions, built on the exact oracle.
use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Fma,
    Div,
    Sqrt,
    Rcp,
}

pub const ALL_OPS: [Op; 7] = [
    Op::Add,
    Op::Sub,
    Op::Mul,
    Op::Fma,
    Op::Div,
    Op::Sqrt,
    Op::Rcp,
];

fn neg_of(fmt: Format, b: u64) -> bool {
    b & fmt.sign_mask() != 0
}

fn inf(fmt: Format, neg: bool) -> u64 {
    fmt.inf_bits() | if neg { fmt.sign_mask() } else { 0 }
}

fn zero(fmt: Format, neg: bool) -> u64 {
    if neg {
        fmt.sign_mask()
    } else {
        0
    }
}

/// IEEE 754-2008 result of `op` in rounding `r` with PTX `.ftz` (flush subnormal inputs and the
/// rounded result) and canonical NaNs.
pub fn reference(fmt: Format, op: Op, a: u64, b: u64, c: u64, r: Rounding, ftz: bool) -> u64 {
    let fl = |x: u64| if ftz { fmt.flush(x) } else { x };
    let (a, b, c) = (fl(a), fl(b), fl(c));
    let nan = fmt.canonical_nan();
    let res = match op {
        Op::Add => add(fmt, a, b, r),
        Op::Sub => {
            if fmt.is_nan(b) {
                nan
            } else {
                add(fmt, a, b ^ fmt.sign_mask(), r)
            }
        }
        Op::Mul => mul(fmt, a, b, r),
        Op::Fma => fma(fmt, a, b, c, r),
        Op::Div => div(fmt, a, b, r),
        Op::Rcp => div(fmt, (fmt.bias() as u64) << fmt.frac_bits, a, r),
        Op::Sqrt => sqrt(fmt, a, r),
    };
    fl(res)
}

fn add(fmt: Format, a: u64, b: u64, r: Rounding) -> u64 {
    if fmt.is_nan(a) || fmt.is_nan(b) {
        return fmt.canonical_nan();
    }
    let (na, nb) = (neg_of(fmt, a), neg_of(fmt, b));
    match (fmt.is_inf(a), fmt.is_inf(b)) {
        (true, true) if na != nb => return fmt.canonical_nan(),
        (true, _) => return a,
        (_, true) => return b,
        _ => {}
    }
    let s = fmt.to_dyadic(a).add(&fmt.to_dyadic(b));
    let zero_neg = if na == nb { na } else { r == Rounding::Down };
    round_dyadic(fmt, &s, r, zero_neg)
}

fn mul(fmt: Format, a: u64, b: u64, r: Rounding) -> u64 {
    if fmt.is_nan(a) || fmt.is_nan(b) {
        return fmt.canonical_nan();
    }
    let neg = neg_of(fmt, a) != neg_of(fmt, b);
    if fmt.is_inf(a) || fmt.is_inf(b) {
        if fmt.is_zero(a) || fmt.is_zero(b) {
            return fmt.canonical_nan();
        }
        return inf(fmt, neg);
    }
    let p = fmt.to_dyadic(a).mul(&fmt.to_dyadic(b));
    round_dyadic(fmt, &p, r, neg)
}

fn fma(fmt: Format, a: u64, b: u64, c: u64, r: Rounding) -> u64 {
    if fmt.is_nan(a) || fmt.is_nan(b) || fmt.is_nan(c) {
        return fmt.canonical_nan();
    }
    let pneg = neg_of(fmt, a) != neg_of(fmt, b);
    let cneg = neg_of(fmt, c);
    if fmt.is_inf(a) || fmt.is_inf(b) {
        if fmt.is_zero(a) || fmt.is_zero(b) {
            return fmt.canonical_nan();
        }
        if fmt.is_inf(c) && cneg != pneg {
            return fmt.canonical_nan();
        }
        return inf(fmt, pneg);
    }
    if fmt.is_inf(c) {
        return c;
    }
    let s = fmt
        .to_dyadic(a)
        .mul(&fmt.to_dyadic(b))
        .add(&fmt.to_dyadic(c));
    let zero_neg = if pneg == cneg {
        pneg
    } else {
        r == Rounding::Down
    };
    round_dyadic(fmt, &s, r, zero_neg)
}

fn div(fmt: Format, a: u64, b: u64, r: Rounding) -> u64 {
    if fmt.is_nan(a) || fmt.is_nan(b) {
        return fmt.canonical_nan();
    }
    let neg = neg_of(fmt, a) != neg_of(fmt, b);
    match (fmt.is_inf(a), fmt.is_inf(b), fmt.is_zero(a), fmt.is_zero(b)) {
        (true, true, _, _) | (_, _, true, true) => fmt.canonical_nan(),
        (true, _, _, _) | (_, _, _, true) => inf(fmt, neg),
        (_, true, _, _) | (_, _, true, _) => zero(fmt, neg),
        _ => round_exact(
            fmt,
            &Exact::quotient(&fmt.to_dyadic(a), &fmt.to_dyadic(b)),
            r,
        ),
    }
}

fn sqrt(fmt: Format, a: u64, r: Rounding) -> u64 {
    if fmt.is_nan(a) {
        return fmt.canonical_nan();
    }
    if fmt.is_zero(a) {
        return a;
    }
    if neg_of(fmt, a) {
        return fmt.canonical_nan();
    }
    if fmt.is_inf(a) {
        return a;
    }
    round_sqrt(fmt, &fmt.to_dyadic(a), r)
}

/// Random operands for `op`, biased toward hard cases for that operation.
pub fn gen_operands(rng: &mut Rng, fmt: Format, op: Op) -> (u64, u64, u64) {
    let a = gen_bits(rng, fmt);
    match op {
        Op::Add | Op::Sub => (a, gen_related(rng, fmt, a), 0),
        Op::Mul | Op::Div => {
            let b = if rng.below(3) == 0 {
                gen_product_partner(rng, fmt, a)
            } else {
                gen_related(rng, fmt, a)
            };
            if op == Op::Div && rng.below(4) == 0 {
                // b * small integer -> exact quotients
                let k = rng.below(16) + 1;
                let x = fmt.to_dyadic_or(b).mul(&Dyadic::from_int(k as i128));
                let q = round_dyadic(fmt, &x, Rounding::Nearest, false);
                return (q, b, 0);
            }
            (a, b, 0)
        }
        Op::Fma if fmt.frac_bits == 52 && rng.below(5) == 0 => {
            // (1 + x)(1 - x + x^2) = 1 + x^3 with x = 2^-k: a product whose low bit lies far
            // below the rounding point of a much larger addend placed so that the product's
            // leading bit sits at (or next to) the addend's half-ulp: only the sticky
            // information from the product's lowest bit decides the rounding.
            let k = rng.range_i(18, 26) as i32;
            let x = 2f64.powi(-k);
            let ea = rng.range_i(-30, 30) as i32;
            let eb = rng.range_i(-30, 30) as i32;
            let a = (1.0 + x) * 2f64.powi(ea);
            let b = (1.0 - x + x * x) * 2f64.powi(eb);
            let m = ea + eb + 53 + rng.range_i(-1, 1) as i32;
            let mut c = 2f64.powi(m);
            if rng.bool() {
                c = f64::from_bits(c.to_bits() + rng.below(3)); // odd/even neighbours
            }
            let sa = if rng.bool() { -1.0 } else { 1.0 };
            let sc = if rng.bool() { -1.0 } else { 1.0 };
            ((sa * a).to_bits(), b.to_bits(), (sc * c).to_bits())
        }
        Op::Fma => {
            let b = if rng.bool() {
                gen_product_partner(rng, fmt, a)
            } else {
                gen_bits(rng, fmt)
            };
            let c = match rng.below(3) {
                0 => gen_bits(rng, fmt),
                1 => gen_related(rng, fmt, a),
                _ => {
                    // near -(a*b): massive cancellation
                    let (da, db) = (fmt.to_dyadic_or(a), fmt.to_dyadic_or(b));
                    let p = da.mul(&db).neg();
                    let base = round_dyadic(fmt, &p, Rounding::Nearest, false);
                    if fmt.is_nan(base) || fmt.is_inf(base) {
                        gen_bits(rng, fmt)
                    } else {
                        let d = rng.below(5) as i64 - 2;
                        let mask = (fmt.sign_mask() << 1).wrapping_sub(1);
                        (base as i64).wrapping_add(d) as u64 & mask
                    }
                }
            };
            (a, b, c)
        }
        Op::Sqrt => {
            if rng.below(3) == 0 {
                // squares of short significands -> exact roots
                let y = gen_bits(rng, fmt) & !fmt.sign_mask();
                let dy = fmt.to_dyadic_or(y);
                let sq = round_dyadic(fmt, &dy.mul(&dy), Rounding::Nearest, false);
                (sq, 0, 0)
            } else {
                (a, 0, 0)
            }
        }
        Op::Rcp => (a, 0, 0),
    }
}

impl Format {
    /// Like `to_dyadic` but NaN/Inf map to 1 (only used to steer generators).
    pub fn to_dyadic_or(self, b: u64) -> Dyadic {
        if self.is_nan(b) || self.is_inf(b) {
            Dyadic::from_int(1)
        } else {
            self.to_dyadic(b)
        }
    }
}
