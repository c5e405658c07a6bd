//! Shared test helpers: a seeded PRNG, input generators and an exact big-integer rounding
//! oracle written independently of `src/float.rs`.
#![allow(dead_code)]

use num_bigint::{BigInt, BigUint, Sign};
use num_traits::{One, Signed, Zero};
pub use ptx_emu::exec::float::Rounding;

pub mod arith;

pub const MODES: [Rounding; 4] = [
    Rounding::Nearest,
    Rounding::Zero,
    Rounding::Down,
    Rounding::Up,
];

// ------------------------------------------------------------------------------------------
// PRNG
// ------------------------------------------------------------------------------------------

/// SplitMix64.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `PTX_FLOAT_SEED` if set, else from the clock; the seed is printed so that a
    /// failing run can be reproduced.
    pub fn new(test: &str) -> Rng {
        let seed = match std::env::var("PTX_FLOAT_SEED") {
            Ok(s) => s.parse().expect("PTX_FLOAT_SEED must be a u64"),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        };
        println!("[{test}] random seed = {seed} (rerun with PTX_FLOAT_SEED={seed})");
        Rng(seed ^ fnv(test))
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
    pub fn range_i(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

fn fnv(s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

// ------------------------------------------------------------------------------------------
// Formats (test-side description, independent of the module)
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
pub struct Format {
    pub frac_bits: u32,
    pub exp_bits: u32,
}

pub const HALF: Format = Format {
    frac_bits: 10,
    exp_bits: 5,
};
pub const BFLOAT: Format = Format {
    frac_bits: 7,
    exp_bits: 8,
};
pub const SINGLE: Format = Format {
    frac_bits: 23,
    exp_bits: 8,
};
pub const DOUBLE: Format = Format {
    frac_bits: 52,
    exp_bits: 11,
};

impl Format {
    pub fn bias(self) -> i64 {
        (1i64 << (self.exp_bits - 1)) - 1
    }
    pub fn total_bits(self) -> u32 {
        1 + self.exp_bits + self.frac_bits
    }
    pub fn sign_mask(self) -> u64 {
        1u64 << (self.total_bits() - 1)
    }
    pub fn inf_bits(self) -> u64 {
        ((1u64 << self.exp_bits) - 1) << self.frac_bits
    }
    pub fn max_bits(self) -> u64 {
        self.inf_bits() - 1
    }
    pub fn canonical_nan(self) -> u64 {
        self.sign_mask() - 1
    }
    pub fn is_nan(self, b: u64) -> bool {
        (b & !self.sign_mask()) > self.inf_bits()
    }
    pub fn is_inf(self, b: u64) -> bool {
        (b & !self.sign_mask()) == self.inf_bits()
    }
    pub fn is_zero(self, b: u64) -> bool {
        (b & !self.sign_mask()) == 0
    }
    pub fn is_subnormal(self, b: u64) -> bool {
        let m = b & !self.sign_mask();
        m != 0 && m < (1u64 << self.frac_bits)
    }
    /// Test-side flush-to-zero.
    pub fn flush(self, b: u64) -> u64 {
        if self.is_subnormal(b) {
            b & self.sign_mask()
        } else {
            b
        }
    }
    /// Exact value of a finite encoding as a signed dyadic `mant * 2^exp`.
    pub fn to_dyadic(self, b: u64) -> Dyadic {
        assert!(!self.is_nan(b) && !self.is_inf(b));
        let neg = b & self.sign_mask() != 0;
        let e = ((b & !self.sign_mask()) >> self.frac_bits) as i64;
        let f = b & ((1u64 << self.frac_bits) - 1);
        let (m, ex) = if e == 0 {
            (f, 1 - self.bias() - self.frac_bits as i64)
        } else {
            (
                f + (1u64 << self.frac_bits),
                e - self.bias() - self.frac_bits as i64,
            )
        };
        let m = BigInt::from(m);
        Dyadic {
            mant: if neg { -m } else { m },
            exp: ex,
        }
    }
}

// ------------------------------------------------------------------------------------------
// Exact dyadic arithmetic
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Dyadic {
    pub mant: BigInt,
    pub exp: i64,
}

impl Dyadic {
    pub fn from_int(v: i128) -> Dyadic {
        Dyadic {
            mant: BigInt::from(v),
            exp: 0,
        }
    }
    pub fn add(&self, o: &Dyadic) -> Dyadic {
        let e = self.exp.min(o.exp);
        let a = &self.mant << (self.exp - e) as usize;
        let b = &o.mant << (o.exp - e) as usize;
        Dyadic {
            mant: a + b,
            exp: e,
        }
    }
    pub fn neg(&self) -> Dyadic {
        Dyadic {
            mant: -&self.mant,
            exp: self.exp,
        }
    }
    pub fn mul(&self, o: &Dyadic) -> Dyadic {
        Dyadic {
            mant: &self.mant * &o.mant,
            exp: self.exp + o.exp,
        }
    }
    pub fn is_zero(&self) -> bool {
        self.mant.is_zero()
    }
    pub fn is_neg(&self) -> bool {
        self.mant.sign() == Sign::Minus
    }
    pub fn to_exact(&self) -> Exact {
        Exact {
            neg: self.is_neg(),
            num: self.mant.abs().to_biguint().unwrap(),
            den: BigUint::one(),
            exp: self.exp,
        }
    }
}

/// `(-1)^neg * num / den * 2^exp`, `num > 0`.
#[derive(Clone, Debug)]
pub struct Exact {
    pub neg: bool,
    pub num: BigUint,
    pub den: BigUint,
    pub exp: i64,
}

impl Exact {
    pub fn quotient(a: &Dyadic, b: &Dyadic) -> Exact {
        Exact {
            neg: a.is_neg() != b.is_neg(),
            num: a.mant.abs().to_biguint().unwrap(),
            den: b.mant.abs().to_biguint().unwrap(),
            exp: a.exp - b.exp,
        }
    }
    /// Compares |self| with `k * 2^p` for a non-negative integer `k`.
    fn cmp_scaled(&self, k: &BigUint, p: i64) -> std::cmp::Ordering {
        // num * 2^exp / den  vs  k * 2^p   <=>  num * 2^(exp-p)  vs  k * den
        let (mut l, mut r) = (self.num.clone(), k * &self.den);
        let d = self.exp - p;
        if d >= 0 {
            l <<= d as usize;
        } else {
            r <<= (-d) as usize;
        }
        l.cmp(&r)
    }
    /// floor(log2 |self|).
    fn ilog2(&self) -> i64 {
        let est = self.exp + self.num.bits() as i64 - self.den.bits() as i64;
        if self.cmp_scaled(&BigUint::one(), est) == std::cmp::Ordering::Less {
            est - 1
        } else {
            est
        }
    }
}

/// Rounds an exact non-zero value into `fmt` with the IEEE 754 rounding-direction attribute
/// `mode`; returns the encoding.  Written from the definitions: find the two representable
/// neighbours around the value and pick one.
pub fn round_exact(fmt: Format, x: &Exact, mode: Rounding) -> u64 {
    assert!(!x.num.is_zero());
    let p = fmt.frac_bits as i64;
    let emin = 1 - fmt.bias();
    let emax = fmt.bias();
    let sign = if x.neg { fmt.sign_mask() } else { 0 };
    let l = x.ilog2();
    let quantum = l.max(emin) - p;
    // lo = m * 2^quantum <= |x| < (m+1) * 2^quantum
    let (mut n, mut d) = (x.num.clone(), x.den.clone());
    let s = x.exp - quantum;
    if s >= 0 {
        n <<= s as usize;
    } else {
        d <<= (-s) as usize;
    }
    let m = &n / &d;
    let rem = &n - &m * &d;
    let twice = &rem << 1usize;
    let pick_hi = if rem.is_zero() {
        false
    } else {
        match mode {
            Rounding::Zero => false,
            Rounding::Up => !x.neg,
            Rounding::Down => x.neg,
            Rounding::Nearest => match twice.cmp(&d) {
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal => m.bit(0),
            },
        }
    };
    let mut mag = if pick_hi { m + 1u32 } else { m };
    let mut q = quantum;
    if mag.bits() as i64 > p + 1 {
        mag >>= 1usize;
        q += 1;
    }
    if mag.is_zero() {
        return sign;
    }
    if (mag.bits() as i64) <= p {
        // subnormal
        assert_eq!(q, emin - p);
        return sign | u64::try_from(&mag).unwrap();
    }
    if q + p > emax {
        let to_inf = match mode {
            Rounding::Nearest => true,
            Rounding::Zero => false,
            Rounding::Up => !x.neg,
            Rounding::Down => x.neg,
        };
        return sign
            | if to_inf {
                fmt.inf_bits()
            } else {
                fmt.max_bits()
            };
    }
    let frac = u64::try_from(&mag).unwrap() - (1u64 << p);
    sign | (((q + p + fmt.bias()) as u64) << p) | frac
}

/// Rounds a dyadic value; an exact zero gets the sign `zero_neg`.
pub fn round_dyadic(fmt: Format, x: &Dyadic, mode: Rounding, zero_neg: bool) -> u64 {
    if x.is_zero() {
        return if zero_neg { fmt.sign_mask() } else { 0 };
    }
    round_exact(fmt, &x.to_exact(), mode)
}

/// Correctly rounded square root of a positive dyadic value.
pub fn round_sqrt(fmt: Format, x: &Dyadic, mode: Rounding) -> u64 {
    assert!(!x.is_neg() && !x.is_zero());
    let p = fmt.frac_bits as i64;
    let emin = 1 - fmt.bias();
    let xm = x.mant.to_biguint().unwrap();
    // floor(log2 x) and floor(log2 sqrt x) = floor(floor(log2 x) / 2)
    let lx = x.exp + xm.bits() as i64 - 1;
    let l = lx.div_euclid(2);
    let q = l.max(emin) - p;
    // m = floor(sqrt(x) / 2^q) = floor(sqrt(x * 2^-2q)) = isqrt(floor(x * 2^-2q))
    let s = x.exp - 2 * q;
    let scaled_floor = if s >= 0 {
        &xm << s as usize
    } else {
        &xm >> (-s) as usize
    };
    let m = scaled_floor.sqrt();
    // exact iff m^2 * 2^2q == x ; compare x with (m + 1/2)^2 * 2^2q  <=>  4x vs (2m+1)^2 2^2q
    let lhs_exp = x.exp + 2; // 4x = xm * 2^(exp+2)
    let cmp_with = |k: &BigUint, kexp: i64| -> std::cmp::Ordering {
        // xm * 2^lhs_exp  vs  k * 2^kexp
        let e = lhs_exp.min(kexp);
        let a = &xm << (lhs_exp - e) as usize;
        let b = k << (kexp - e) as usize;
        a.cmp(&b)
    };
    let exact = cmp_with(&(&m * &m * 4u32), 2 * q) == std::cmp::Ordering::Equal;
    let mid_cmp = cmp_with(&((&m * 2u32 + 1u32).pow(2)), 2 * q);
    let pick_hi = if exact {
        false
    } else {
        match mode {
            Rounding::Zero | Rounding::Down => false,
            Rounding::Up => true,
            Rounding::Nearest => match mid_cmp {
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal => m.bit(0),
            },
        }
    };
    let mut mag = if pick_hi { m + 1u32 } else { m };
    let mut qq = q;
    if mag.bits() as i64 > p + 1 {
        mag >>= 1usize;
        qq += 1;
    }
    if (mag.bits() as i64) <= p {
        return u64::try_from(&mag).unwrap();
    }
    let frac = u64::try_from(&mag).unwrap() - (1u64 << p);
    (((qq + p + fmt.bias()) as u64) << p) | frac
}

// ------------------------------------------------------------------------------------------
// Specification check: is `result` the correct rounding of `x` in `mode`?  Uses only the
// ordering of representable numbers (neighbours by encoding), no rounding arithmetic.
// ------------------------------------------------------------------------------------------

/// Value of a (non-NaN) encoding compared with exact `x`: returns ordering of enc vs x.
fn cmp_enc(fmt: Format, enc: u64, x: &Exact) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    let neg = enc & fmt.sign_mask() != 0;
    if fmt.is_inf(enc) {
        return if neg { Less } else { Greater };
    }
    if fmt.is_zero(enc) {
        return if x.neg { Greater } else { Less };
    }
    let d = fmt.to_dyadic(enc);
    let k = d.mant.abs().to_biguint().unwrap();
    match (neg, x.neg) {
        (true, false) => Less,
        (false, true) => Greater,
        (false, false) => x.cmp_scaled(&k, d.exp).reverse(),
        (true, true) => x.cmp_scaled(&k, d.exp),
    }
}

/// Next representable value toward +inf of a non-NaN encoding (+inf stays +inf).
pub fn succ(fmt: Format, enc: u64) -> u64 {
    let s = fmt.sign_mask();
    if enc == fmt.inf_bits() {
        enc
    } else if enc == s {
        1 // -0 -> smallest positive subnormal
    } else if enc & s == 0 {
        enc + 1
    } else {
        enc - 1
    }
}

/// Next representable value toward -inf.
pub fn pred(fmt: Format, enc: u64) -> u64 {
    let s = fmt.sign_mask();
    succ(fmt, enc ^ s) ^ s
}

/// Checks that `r` is the IEEE 754 rounding of the non-zero exact value `x`.
pub fn is_correct_rounding(fmt: Format, x: &Exact, mode: Rounding, r: u64) -> bool {
    use std::cmp::Ordering::*;
    if fmt.is_nan(r) {
        return false;
    }
    // A result that rounds to zero keeps the sign of the exact value.
    if fmt.is_zero(r) && ((r & fmt.sign_mask() != 0) != x.neg) {
        return false;
    }
    let max = fmt.max_bits();
    let down_ok = |r: u64| {
        // r = largest representable (or -inf) <= x
        cmp_enc(fmt, r, x) != Greater
            && (r == fmt.inf_bits() || cmp_enc(fmt, succ(fmt, r), x) == Greater)
            && r != fmt.inf_bits() // +inf can never be <= finite x
    };
    let up_ok = |r: u64| {
        cmp_enc(fmt, r, x) != Less
            && (r == fmt.inf_bits() | fmt.sign_mask() || cmp_enc(fmt, pred(fmt, r), x) == Less)
            && r != (fmt.inf_bits() | fmt.sign_mask())
    };
    match mode {
        Rounding::Down => {
            if r == (fmt.inf_bits() | fmt.sign_mask()) {
                // only if x < -max
                cmp_enc(fmt, max | fmt.sign_mask(), x) == Greater
            } else {
                down_ok(r)
            }
        }
        Rounding::Up => {
            if r == fmt.inf_bits() {
                cmp_enc(fmt, max, x) == Less
            } else {
                up_ok(r)
            }
        }
        Rounding::Zero => {
            if x.neg {
                if r == (fmt.inf_bits() | fmt.sign_mask()) {
                    return false;
                }
                up_ok(r) || (r == (max | fmt.sign_mask()) && cmp_enc(fmt, r, x) == Greater)
            } else {
                if r == fmt.inf_bits() {
                    return false;
                }
                down_ok(r) || (r == max && cmp_enc(fmt, r, x) == Less)
            }
        }
        Rounding::Nearest => {
            // Overflow threshold: |x| >= 2^emax * (2 - 2^-p) = max + ulp(max)/2 -> inf.
            let maxd = fmt.to_dyadic(max);
            let half_ulp_exp = maxd.exp - 1;
            let maxk = maxd.mant.abs().to_biguint().unwrap();
            let threshold = (&maxk << 1usize) + 1u32; // (2*maxk + 1) * 2^(exp-1)
            let over = x.cmp_scaled(&threshold, half_ulp_exp) != Less;
            if fmt.is_inf(r) {
                return over && ((r & fmt.sign_mask() != 0) == x.neg);
            }
            if over {
                return false;
            }
            // r must be one of the two neighbours and the nearer one (ties to even).
            let lo = largest_le(fmt, x);
            let hi = succ(fmt, lo);
            if r != lo && r != hi {
                return false;
            }
            // distance comparison: x - lo vs hi - x  <=> 2x vs lo + hi
            let dl = to_ex(fmt, lo);
            let dh = to_ex(fmt, hi);
            let sum = dl.add(&dh);
            let x2 = Exact {
                exp: x.exp + 1,
                ..x.clone()
            };
            // compare 2x with sum (signed)
            let c = cmp_signed(&x2, &sum);
            let want = match c {
                Less => lo,
                Greater => hi,
                Equal => {
                    if even(fmt, lo) {
                        lo
                    } else {
                        hi
                    }
                }
            };
            // `hi` may be +inf only when x is beyond max (handled by `over`), or `lo` -inf.
            r == want || (fmt.is_zero(r) && fmt.is_zero(want))
        }
    }
}

fn even(fmt: Format, enc: u64) -> bool {
    let _ = fmt;
    enc & 1 == 0
}

fn to_ex(fmt: Format, enc: u64) -> Dyadic {
    if fmt.is_inf(enc) {
        // Only reached for the far side of max; use 2^(emax+1) which is never the nearer one.
        let neg = enc & fmt.sign_mask() != 0;
        let m = BigInt::one();
        return Dyadic {
            mant: if neg { -m } else { m },
            exp: fmt.bias() + 1,
        };
    }
    fmt.to_dyadic(enc)
}

fn cmp_signed(x: &Exact, d: &Dyadic) -> std::cmp::Ordering {
    // x = ±num/den 2^exp, d = mant 2^dexp: compare x*den vs mant*den
    let xs = if x.neg {
        -BigInt::from(x.num.clone())
    } else {
        BigInt::from(x.num.clone())
    };
    let rhs = &d.mant * BigInt::from(x.den.clone());
    let e = x.exp.min(d.exp);
    let l = xs << (x.exp - e) as usize;
    let r = rhs << (d.exp - e) as usize;
    l.cmp(&r)
}

/// Largest encoding (possibly -inf) whose value is <= x (x finite, non-zero).
fn largest_le(fmt: Format, x: &Exact) -> u64 {
    // Binary search over the monotone ordering of encodings mapped to integers.
    let s = fmt.sign_mask();
    let from_key = |k: i128| -> u64 {
        if k < 0 {
            (-k) as u64 | s
        } else {
            k as u64
        }
    };
    let (mut lo, mut hi) = (-i128::from(fmt.inf_bits()), i128::from(fmt.inf_bits()));
    // invariant: value(lo) <= x < value(hi)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if cmp_enc(fmt, from_key(mid), x) != std::cmp::Ordering::Greater {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    from_key(lo)
}

// ------------------------------------------------------------------------------------------
// Input generators
// ------------------------------------------------------------------------------------------

/// A random encoding of `fmt` biased toward interesting regions.
pub fn gen_bits(rng: &mut Rng, fmt: Format) -> u64 {
    let frac_mask = (1u64 << fmt.frac_bits) - 1;
    let emax_field = (1u64 << fmt.exp_bits) - 1;
    let sign = if rng.bool() { fmt.sign_mask() } else { 0 };
    let field = |e: u64| e << fmt.frac_bits;
    match rng.below(16) {
        0..=3 => rng.next() & ((fmt.sign_mask() << 1).wrapping_sub(1)),
        4 => {
            // specials and extremes
            let table = [
                0,
                1,
                2,
                frac_mask,
                frac_mask - 1,
                1 << fmt.frac_bits,
                (1 << fmt.frac_bits) + 1,
                fmt.max_bits(),
                fmt.max_bits() - 1,
                fmt.inf_bits(),
                fmt.inf_bits() + 1,
                fmt.canonical_nan(),
                field(fmt.bias() as u64),
                field(fmt.bias() as u64) + 1,
                field(fmt.bias() as u64 - 1) | frac_mask,
            ];
            sign | table[rng.below(table.len() as u64) as usize]
        }
        5 => sign | (rng.next() & frac_mask), // subnormal
        6 => sign | field(emax_field - 1 - rng.below(3)) | (rng.next() & frac_mask), // huge
        7 => sign | field(1 + rng.below(3)) | (rng.next() & frac_mask), // tiny normal
        8 | 9 => {
            // few significant bits (creates exact results and ties)
            let e = 1 + rng.below(emax_field - 1);
            let nb = rng.below(4);
            let mut f = 0;
            for _ in 0..nb {
                f |= 1 << rng.below(u64::from(fmt.frac_bits));
            }
            sign | field(e) | f
        }
        10 | 11 => {
            // near 1
            let b = fmt.bias() as u64;
            let e = b - 4 + rng.below(9);
            sign | field(e) | (rng.next() & frac_mask)
        }
        _ => {
            // any finite normal
            sign | field(1 + rng.below(emax_field - 1)) | (rng.next() & frac_mask)
        }
    }
}

/// A second operand related to `a` (close in value for cancellation, or a few exponents
/// apart for ties), or independent.
pub fn gen_related(rng: &mut Rng, fmt: Format, a: u64) -> u64 {
    let mask = (fmt.sign_mask() << 1).wrapping_sub(1);
    match rng.below(6) {
        0 => {
            // close to -a or a
            let delta = rng.below(8) as i64 - 4;
            let b = (a as i64).wrapping_add(delta) as u64 & mask;
            if rng.bool() {
                b ^ fmt.sign_mask()
            } else {
                b
            }
        }
        1 => {
            // exponent differs by about the precision (tie-producing distances)
            let shift = fmt.frac_bits as i64 + rng.range_i(-2, 3);
            let e = ((a >> fmt.frac_bits) & ((1 << fmt.exp_bits) - 1)) as i64 - shift;
            if e <= 0 {
                return gen_bits(rng, fmt);
            }
            let nb = rng.below(3);
            let mut f = 0u64;
            for _ in 0..nb {
                f |= 1 << rng.below(u64::from(fmt.frac_bits));
            }
            (if rng.bool() { fmt.sign_mask() } else { 0 }) | ((e as u64) << fmt.frac_bits) | f
        }
        _ => gen_bits(rng, fmt),
    }
}

/// An operand whose exponent makes `a * b` land near the subnormal range or the overflow
/// threshold.
pub fn gen_product_partner(rng: &mut Rng, fmt: Format, a: u64) -> u64 {
    let emask = (1i64 << fmt.exp_bits) - 1;
    let ea = ((a >> fmt.frac_bits) as i64) & emask;
    if ea == 0 || ea == emask {
        return gen_bits(rng, fmt);
    }
    let bias = fmt.bias();
    let ua = ea - bias;
    // target exponent of product: near emin - p .. emin, or near emax
    let target = if rng.bool() {
        1 - bias - rng.range_i(-2, fmt.frac_bits as i64 + 2)
    } else {
        bias + rng.range_i(-2, 1)
    };
    let eb = target - ua + bias;
    if eb <= 0 || eb >= emask {
        return gen_bits(rng, fmt);
    }
    let sign = if rng.bool() { fmt.sign_mask() } else { 0 };
    sign | ((eb as u64) << fmt.frac_bits) | (rng.next() & ((1 << fmt.frac_bits) - 1))
}

pub fn mode_name(r: Rounding) -> &'static str {
    match r {
        Rounding::Nearest => "rn",
        Rounding::Zero => "rz",
        Rounding::Down => "rm",
        Rounding::Up => "rp",
    }
}
