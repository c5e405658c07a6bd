//! Floating-point semantics of PTX instructions, bit-exact where the PTX ISA defines exact
//! results.
//!
//! References are to the *PTX ISA 9.1* ("Parallel Thread Execution ISA", NVIDIA), chiefly
//! §9.7.3 "Floating-Point Instructions", §9.7.4 "Half Precision Floating-Point Instructions" and
//! §9.7.9.21 "Data Movement and Conversion Instructions: cvt".
//!
//! # Design
//!
//! Every correctly rounded operation goes through one software rounding core
//! (private) that takes an exact value `(-1)^s * sig * 2^exp` (plus a sticky
//! bit for values that are not dyadic at the computed precision, e.g. quotients and square roots)
//! and rounds it once into a target format (`f16`, `bf16`, `f32`, `f64`) in one of the four IEEE
//! rounding directions, handling subnormal results, ties-to-even and the per-mode overflow result.
//! Exact sums, products and fused products are formed in `u128` arithmetic; quotients and square
//! roots are formed with an integer remainder that becomes the sticky bit.  The default `.rn`
//! `f32`/`f64` arithmetic uses the host's IEEE round-to-nearest-even operations (Rust's `+ - * /`,
//! `sqrt` and `mul_add` are correctly rounded), which is the same result, only faster (this
//! assumes IEEE binary32/binary64 host arithmetic, true of every SSE2/NEON Rust target; it is
//! not true of x87-only targets such as `i586`).
//!
//! # NaNs
//!
//! NVIDIA GPUs return a canonical NaN for any NaN result of `f32`/`f16`/`bf16` arithmetic
//! (`0x7FFFFFFF`, `0x7FFF`, `0x7FFF`); x86 hosts produce other NaNs, so every NaN result here
//! is canonicalised.  For `f64` the ISA says "NaN payloads are supported for double-precision
//! instructions" (§9.7.3); this emulator *chooses* to canonicalise `f64` NaNs to
//! [`CANONICAL_NAN_F64`] as well.  `rcp.approx.ftz.f64` and `rsqrt.approx.ftz.f64` return the
//! ISA-documented `0x7fffffff00000000` ([`CANONICAL_NAN_F64_APPROX_FTZ`]).
//!
//! # Flush to zero
//!
//! With `.ftz`, subnormal inputs are replaced by a zero of the same sign before the operation,
//! and a subnormal *rounded* result is replaced by a zero of the same sign (§9.7.3: "`.ftz`
//! ... flushing subnormal inputs and results to sign-preserving zero").  The ISA does not say
//! whether the result test happens before or after rounding; this module tests the rounded
//! result.
#![warn(missing_docs)]

use std::cmp::Ordering;

// ---------------------------------------------------------------------------------------------
// Public constants and types
// ---------------------------------------------------------------------------------------------

/// A PTX floating-point rounding modifier.
///
/// PTX ISA §9.7.3.3 (add): "`.rn` mantissa LSB rounds to nearest even, `.rz` ... towards zero,
/// `.rm` ... towards negative infinity, `.rp` ... towards positive infinity".  For `cvt` the
/// integer-rounding modifiers `.rni/.rzi/.rmi/.rpi` map onto the same four directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// `.rn` (and `.rni`): round to nearest, ties to even.
    Nearest,
    /// `.rz` (and `.rzi`): round toward zero.
    Zero,
    /// `.rm` (and `.rmi`): round toward negative infinity.
    Down,
    /// `.rp` (and `.rpi`): round toward positive infinity.
    Up,
}

/// Canonical `f32` NaN produced by NVIDIA GPUs for every NaN result.
pub const CANONICAL_NAN_F32: u32 = 0x7FFF_FFFF;
/// Canonical `f16` NaN produced by NVIDIA GPUs for every NaN result.
pub const CANONICAL_NAN_F16: u16 = 0x7FFF;
/// Canonical `bf16` NaN produced by NVIDIA GPUs for every NaN result.
pub const CANONICAL_NAN_BF16: u16 = 0x7FFF;
/// Canonical `f64` NaN used by this emulator for every `f64` NaN result.
///
/// This is the emulator's choice: the ISA (§9.7.3) says double-precision instructions support
/// NaN payloads, so real hardware may propagate an input payload instead.
pub const CANONICAL_NAN_F64: u64 = 0x7FFF_FFFF_FFFF_FFFF;
/// NaN returned by `rcp.approx.ftz.f64` and `rsqrt.approx.ftz.f64`.
///
/// PTX ISA §9.7.3.14 / §9.7.3.17: "Input NaNs map to a canonical NaN with encoding
/// `0x7fffffff00000000`".
pub const CANONICAL_NAN_F64_APPROX_FTZ: u64 = 0x7FFF_FFFF_0000_0000;

// ---------------------------------------------------------------------------------------------
// Binary formats
// ---------------------------------------------------------------------------------------------

/// An IEEE-style binary format: `man` explicit fraction bits, `exp` exponent bits.
#[derive(Clone, Copy)]
struct Fmt {
    man: u32,
    exp: u32,
}

const F16: Fmt = Fmt { man: 10, exp: 5 };
const BF16: Fmt = Fmt { man: 7, exp: 8 };
const F32: Fmt = Fmt { man: 23, exp: 8 };
const F64: Fmt = Fmt { man: 52, exp: 11 };
/// The 32-bit "1.11.20" upper word of an `f64`, used by `rcp/rsqrt.approx.ftz.f64`.
const F64_HI: Fmt = Fmt { man: 20, exp: 11 };

impl Fmt {
    const fn bias(self) -> i32 {
        (1 << (self.exp - 1)) - 1
    }
    const fn emin(self) -> i32 {
        1 - self.bias()
    }
    const fn sign_bit(self) -> u64 {
        1 << (self.man + self.exp)
    }
    const fn exp_mask(self) -> u64 {
        ((1 << self.exp) - 1) << self.man
    }
    const fn frac_mask(self) -> u64 {
        (1 << self.man) - 1
    }
    const fn inf(self) -> u64 {
        self.exp_mask()
    }
    const fn max_finite(self) -> u64 {
        self.exp_mask() - 1
    }
    /// All bits set except the sign: `0x7FFF` / `0x7FFFFFFF` / `0x7FFF_FFFF_FFFF_FFFF`.
    const fn nan(self) -> u64 {
        self.sign_bit() - 1
    }
    const fn one(self) -> u64 {
        (self.bias() as u64) << self.man
    }
    const fn sign_of(self, neg: bool) -> u64 {
        if neg {
            self.sign_bit()
        } else {
            0
        }
    }
    const fn is_nan(self, b: u64) -> bool {
        (b & self.exp_mask()) == self.exp_mask() && (b & self.frac_mask()) != 0
    }
    const fn is_subnormal(self, b: u64) -> bool {
        (b & self.exp_mask()) == 0 && (b & self.frac_mask()) != 0
    }
    /// Subnormal -> zero of the same sign.
    const fn flush(self, b: u64) -> u64 {
        if self.is_subnormal(b) {
            b & self.sign_bit()
        } else {
            b
        }
    }
    const fn flush_if(self, b: u64, ftz: bool) -> u64 {
        if ftz {
            self.flush(b)
        } else {
            b
        }
    }
    /// NaN -> canonical NaN, anything else unchanged.
    const fn canon(self, b: u64) -> u64 {
        if self.is_nan(b) {
            self.nan()
        } else {
            b
        }
    }
}

/// A finite non-zero exact value `(-1)^neg * sig * 2^exp` (`sig != 0`).
#[derive(Clone, Copy, Debug)]
struct Num {
    neg: bool,
    sig: u128,
    exp: i32,
}

/// A decoded floating-point datum.
#[derive(Clone, Copy, Debug)]
enum Val {
    Nan,
    Inf(bool),
    Zero(bool),
    Fin(Num),
}

impl Val {
    fn neg(self) -> bool {
        match self {
            Val::Nan => false,
            Val::Inf(n) | Val::Zero(n) => n,
            Val::Fin(n) => n.neg,
        }
    }
}

fn decode(f: Fmt, b: u64) -> Val {
    let neg = b & f.sign_bit() != 0;
    let e = (b & f.exp_mask()) >> f.man;
    let frac = b & f.frac_mask();
    if e == (f.exp_mask() >> f.man) {
        if frac != 0 {
            Val::Nan
        } else {
            Val::Inf(neg)
        }
    } else if e == 0 {
        if frac == 0 {
            Val::Zero(neg)
        } else {
            Val::Fin(Num {
                neg,
                sig: frac as u128,
                exp: f.emin() - f.man as i32,
            })
        }
    } else {
        Val::Fin(Num {
            neg,
            sig: (frac | (1 << f.man)) as u128,
            exp: e as i32 - f.bias() - f.man as i32,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The rounding core
// ---------------------------------------------------------------------------------------------

/// Where the discarded part of a value lies relative to half a unit in the last place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rest {
    Exact,
    Below,
    Half,
    Above,
}

/// Splits `sig` (with a sticky bit meaning "plus something in (0, 1)") into `sig >> shift` and
/// the classification of the discarded part.  `shift` may be any non-negative amount.
fn split(sig: u128, shift: u32, sticky: bool) -> (u128, Rest) {
    if shift == 0 {
        return (sig, if sticky { Rest::Below } else { Rest::Exact });
    }
    let (kept, rem, half) = if shift < 128 {
        (
            sig >> shift,
            sig & ((1u128 << shift) - 1),
            1u128 << (shift - 1),
        )
    } else if shift == 128 {
        (0, sig, 1u128 << 127)
    } else {
        // Everything (< 2^128 <= 2^(shift-1)) lies below half.
        return (
            0,
            if sig != 0 || sticky {
                Rest::Below
            } else {
                Rest::Exact
            },
        );
    };
    let rest = match rem.cmp(&half) {
        Ordering::Less if rem == 0 && !sticky => Rest::Exact,
        Ordering::Less => Rest::Below,
        Ordering::Equal if sticky => Rest::Above,
        Ordering::Equal => Rest::Half,
        Ordering::Greater => Rest::Above,
    };
    (kept, rest)
}

/// Whether the kept magnitude must be incremented (IEEE 754 rounding-direction attributes).
fn round_up(rest: Rest, odd: bool, neg: bool, r: Rounding) -> bool {
    match r {
        // roundTiesToEven: PTX ".rn mantissa LSB rounds to nearest even".
        Rounding::Nearest => rest == Rest::Above || (rest == Rest::Half && odd),
        Rounding::Zero => false,
        Rounding::Up => rest != Rest::Exact && !neg,
        Rounding::Down => rest != Rest::Exact && neg,
    }
}

/// Result of an overflow in each rounding direction (IEEE 754 §7.4): `.rn` gives infinity,
/// `.rz` the largest finite value, `.rm`/`.rp` infinity in their own direction and the largest
/// finite value in the other.
fn overflow(f: Fmt, neg: bool, r: Rounding) -> u64 {
    let to_inf = match r {
        Rounding::Nearest => true,
        Rounding::Zero => false,
        Rounding::Up => !neg,
        Rounding::Down => neg,
    };
    f.sign_of(neg) | if to_inf { f.inf() } else { f.max_finite() }
}

/// Rounds the exact value `n` (plus, if `sticky`, an amount strictly between 0 and `2^n.exp`
/// in magnitude) to format `f` with rounding `r`, returning the encoding.
fn round_pack(f: Fmt, n: Num, sticky: bool, r: Rounding) -> u64 {
    let sign = f.sign_of(n.neg);
    if n.sig == 0 {
        debug_assert!(!sticky);
        return sign;
    }
    let man = f.man as i32;
    let nbits = 128 - n.sig.leading_zeros() as i32;
    let e_msb = n.exp + nbits - 1;
    // Exponent of the unit in the last place: normal results keep man+1 significant bits,
    // subnormal results are quantised to 2^(emin - man).
    let mut q = (e_msb - man).max(f.emin() - man);
    let (mut m, rest) = if q >= n.exp {
        split(n.sig, (q - n.exp) as u32, sticky)
    } else {
        // The value is representable at a finer quantum; since q >= e_msb - man this shift
        // keeps m below 2^(man+1).  Any sticky part is below half an ulp.
        (
            n.sig << (n.exp - q) as u32,
            if sticky { Rest::Below } else { Rest::Exact },
        )
    };
    if round_up(rest, m & 1 == 1, n.neg, r) {
        m += 1;
        if m == 1u128 << (man + 1) {
            m >>= 1;
            q += 1;
        }
    }
    if m == 0 {
        return sign;
    }
    if m < 1u128 << man {
        // Subnormal (q == emin - man here).
        return sign | m as u64;
    }
    let biased = q + man + f.bias();
    if biased >= (1 << f.exp) - 1 {
        return overflow(f, n.neg, r);
    }
    sign | ((biased as u64) << f.man) | (m as u64 & f.frac_mask())
}

/// Encodes a decoded value exactly (or rounds a finite one) into `f`.
fn encode(f: Fmt, v: Val, r: Rounding) -> u64 {
    match v {
        Val::Nan => f.nan(),
        Val::Inf(neg) => f.sign_of(neg) | f.inf(),
        Val::Zero(neg) => f.sign_of(neg),
        Val::Fin(n) => round_pack(f, n, false, r),
    }
}

// ---------------------------------------------------------------------------------------------
// Exact operations on decoded values
// ---------------------------------------------------------------------------------------------

/// Sign of an exact zero sum `x + y` (IEEE 754 §6.3): the common sign if both operands have it,
/// otherwise `+0` except in round-toward-negative.
fn zero_sum_sign(neg_a: bool, neg_b: bool, r: Rounding) -> bool {
    if neg_a == neg_b {
        neg_a
    } else {
        r == Rounding::Down
    }
}

/// Moves the most significant bit of a non-zero significand to bit 125.
fn norm125(n: Num) -> Num {
    let nbits = 128 - n.sig.leading_zeros() as i32;
    let sh = 126 - nbits;
    debug_assert!(sh >= 0);
    Num {
        neg: n.neg,
        sig: n.sig << sh,
        exp: n.exp - sh,
    }
}

/// Correctly rounded `a + b` of two finite non-zero values whose significands have at most 106
/// bits (so that, once normalised to bit 125, their lowest set bit is at position >= 20).
fn add_num(f: Fmt, a: Num, b: Num, r: Rounding) -> u64 {
    let (a, b) = (norm125(a), norm125(b));
    let (big, small) = if a.exp >= b.exp { (a, b) } else { (b, a) };
    let d = (big.exp - small.exp) as u32;
    // Alignment with a "jam" (sticky) bit.  Bits are lost only when d > 20; then the result is
    // >= 2^124 and the rounding point is far above bit 0, so the jam bit acts only as sticky.
    let s = if d == 0 {
        small.sig
    } else if d >= 126 {
        1
    } else {
        (small.sig >> d) | u128::from(small.sig & ((1u128 << d) - 1) != 0)
    };
    let (neg, sig) = if big.neg == small.neg {
        (big.neg, big.sig + s)
    } else {
        match big.sig.cmp(&s) {
            Ordering::Greater => (big.neg, big.sig - s),
            Ordering::Less => (small.neg, s - big.sig),
            Ordering::Equal => return f.sign_of(r == Rounding::Down),
        }
    };
    round_pack(
        f,
        Num {
            neg,
            sig,
            exp: big.exp,
        },
        false,
        r,
    )
}

fn add_vals(f: Fmt, a: Val, b: Val, r: Rounding) -> u64 {
    match (a, b) {
        (Val::Nan, _) | (_, Val::Nan) => f.nan(),
        (Val::Inf(x), Val::Inf(y)) if x != y => f.nan(),
        (Val::Inf(x), _) | (_, Val::Inf(x)) => f.sign_of(x) | f.inf(),
        (Val::Zero(x), Val::Zero(y)) => f.sign_of(zero_sum_sign(x, y, r)),
        (Val::Zero(_), Val::Fin(n)) | (Val::Fin(n), Val::Zero(_)) => round_pack(f, n, false, r),
        (Val::Fin(x), Val::Fin(y)) => add_num(f, x, y, r),
    }
}

fn mul_vals(f: Fmt, a: Val, b: Val, r: Rounding) -> u64 {
    let neg = a.neg() ^ b.neg();
    match (a, b) {
        (Val::Nan, _) | (_, Val::Nan) => f.nan(),
        (Val::Inf(_), Val::Zero(_)) | (Val::Zero(_), Val::Inf(_)) => f.nan(),
        (Val::Inf(_), _) | (_, Val::Inf(_)) => f.sign_of(neg) | f.inf(),
        (Val::Zero(_), _) | (_, Val::Zero(_)) => f.sign_of(neg),
        (Val::Fin(x), Val::Fin(y)) => round_pack(
            f,
            Num {
                neg,
                sig: x.sig * y.sig,
                exp: x.exp + y.exp,
            },
            false,
            r,
        ),
    }
}

/// `a * b + c` with a single rounding (IEEE 754 fusedMultiplyAdd).
fn fma_vals(f: Fmt, a: Val, b: Val, c: Val, r: Rounding) -> u64 {
    let pneg = a.neg() ^ b.neg();
    match (a, b, c) {
        (Val::Nan, _, _) | (_, Val::Nan, _) | (_, _, Val::Nan) => f.nan(),
        (Val::Inf(_), Val::Zero(_), _) | (Val::Zero(_), Val::Inf(_), _) => f.nan(),
        (Val::Inf(_), _, _) | (_, Val::Inf(_), _) => match c {
            Val::Inf(cn) if cn != pneg => f.nan(),
            _ => f.sign_of(pneg) | f.inf(),
        },
        (_, _, Val::Inf(cn)) => f.sign_of(cn) | f.inf(),
        (Val::Zero(_), _, _) | (_, Val::Zero(_), _) => match c {
            Val::Zero(cn) => f.sign_of(zero_sum_sign(pneg, cn, r)),
            _ => encode(f, c, r),
        },
        (Val::Fin(x), Val::Fin(y), _) => {
            let p = Num {
                neg: pneg,
                sig: x.sig * y.sig,
                exp: x.exp + y.exp,
            };
            match c {
                Val::Fin(z) => add_num(f, p, z, r),
                _ => round_pack(f, p, false, r),
            }
        }
    }
}

/// Correctly rounded `a / b` into format `out`.
fn div_vals(out: Fmt, a: Val, b: Val, r: Rounding) -> u64 {
    let neg = a.neg() ^ b.neg();
    match (a, b) {
        (Val::Nan, _) | (_, Val::Nan) => out.nan(),
        (Val::Inf(_), Val::Inf(_)) | (Val::Zero(_), Val::Zero(_)) => out.nan(),
        (Val::Inf(_), _) | (_, Val::Zero(_)) => out.sign_of(neg) | out.inf(),
        (_, Val::Inf(_)) | (Val::Zero(_), _) => out.sign_of(neg),
        (Val::Fin(x), Val::Fin(y)) => {
            // Numerator MSB at bit 126; divisor < 2^54, so the quotient has >= 73 bits.
            let sh = x.sig.leading_zeros() as i32 - 1;
            let num = x.sig << sh;
            let (q, rem) = (num / y.sig, num % y.sig);
            round_pack(
                out,
                Num {
                    neg,
                    sig: q,
                    exp: x.exp - sh - y.exp,
                },
                rem != 0,
                r,
            )
        }
    }
}

/// Correctly rounded square root.
fn sqrt_val(f: Fmt, a: Val, r: Rounding) -> u64 {
    match a {
        Val::Nan | Val::Inf(true) => f.nan(),
        Val::Fin(n) if n.neg => f.nan(),
        // IEEE 754 §5.4.1: sqrt(-0) = -0.
        Val::Zero(neg) => f.sign_of(neg),
        Val::Inf(false) => f.inf(),
        Val::Fin(n) => {
            let (mut sig, mut exp) = (n.sig, n.exp);
            if exp & 1 != 0 {
                sig <<= 1;
                exp -= 1;
            }
            let nbits = 128 - sig.leading_zeros() as i32;
            let sh = (126 - nbits) & !1;
            sig <<= sh;
            exp -= sh;
            let root = sig.isqrt();
            let rem = sig - root * root;
            round_pack(
                f,
                Num {
                    neg: false,
                    sig: root,
                    exp: exp / 2,
                },
                rem != 0,
                r,
            )
        }
    }
}

/// Rounds to an integral value in the same format (IEEE 754 roundToIntegral; sign preserved).
fn round_integral(f: Fmt, b: u64, r: Rounding) -> u64 {
    match decode(f, b) {
        Val::Nan => f.nan(),
        Val::Inf(_) | Val::Zero(_) => b,
        Val::Fin(n) if n.exp >= 0 => b,
        Val::Fin(n) => {
            let (mut m, rest) = split(n.sig, (-n.exp) as u32, false);
            if round_up(rest, m & 1 == 1, n.neg, r) {
                m += 1;
            }
            round_pack(
                f,
                Num {
                    neg: n.neg,
                    sig: m,
                    exp: 0,
                },
                false,
                Rounding::Nearest,
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bit-level helpers for the public API
// ---------------------------------------------------------------------------------------------

fn bin_bits(
    f: Fmt,
    a: u64,
    b: u64,
    ftz: bool,
    op: fn(Fmt, Val, Val, Rounding) -> u64,
    r: Rounding,
) -> u64 {
    let a = decode(f, f.flush_if(a, ftz));
    let b = decode(f, f.flush_if(b, ftz));
    f.flush_if(op(f, a, b, r), ftz)
}

fn fma_bits(f: Fmt, a: u64, b: u64, c: u64, r: Rounding, ftz: bool) -> u64 {
    let a = decode(f, f.flush_if(a, ftz));
    let b = decode(f, f.flush_if(b, ftz));
    let c = decode(f, f.flush_if(c, ftz));
    f.flush_if(fma_vals(f, a, b, c, r), ftz)
}

/// Format conversion of an encoding (NaN -> canonical NaN of `dst`).
fn convert(src: Fmt, dst: Fmt, b: u64, r: Rounding) -> u64 {
    encode(dst, decode(src, b), r)
}

/// Canonicalises NaN and applies the output flush of an `f32` result.
// The NaN tests below look at the bits: a float-level `if x.is_nan() { NaN } else { x }` may be
// folded to `x` by the optimiser (NaN payloads are not preserved by float operations), which would
// leak the host's NaN instead of the canonical one.
fn fin32(x: f32, ftz: bool) -> f32 {
    if x.to_bits() & 0x7fff_ffff > 0x7f80_0000 {
        f32::from_bits(CANONICAL_NAN_F32)
    } else if ftz {
        ftz_f32(x)
    } else {
        x
    }
}

fn fin64(x: f64) -> f64 {
    if x.to_bits() & 0x7fff_ffff_ffff_ffff > 0x7ff0_0000_0000_0000 {
        f64::from_bits(CANONICAL_NAN_F64)
    } else {
        x
    }
}

fn b32(x: f32) -> u64 {
    u64::from(x.to_bits())
}

fn f32b(b: u64) -> f32 {
    f32::from_bits(b as u32)
}

fn neg_bits(f: Fmt, b: u64) -> u64 {
    b ^ f.sign_bit()
}

// ---------------------------------------------------------------------------------------------
// f32 arithmetic
// ---------------------------------------------------------------------------------------------

/// `.ftz` flush: a subnormal `f32` becomes a zero of the same sign; anything else is unchanged.
///
/// PTX ISA §9.7.3: "`.ftz` ... flushing subnormal inputs and results to sign-preserving zero".
pub fn ftz_f32(x: f32) -> f32 {
    if x.is_subnormal() {
        f32::from_bits(x.to_bits() & 0x8000_0000)
    } else {
        x
    }
}

fn op2_f32(
    a: f32,
    b: f32,
    r: Rounding,
    ftz: bool,
    native: fn(f32, f32) -> f32,
    soft: fn(Fmt, Val, Val, Rounding) -> u64,
) -> f32 {
    if r == Rounding::Nearest {
        // The host's IEEE binary32 operations round to nearest even: same result, faster.
        let (a, b) = if ftz {
            (ftz_f32(a), ftz_f32(b))
        } else {
            (a, b)
        };
        fin32(native(a, b), ftz)
    } else {
        f32b(bin_bits(F32, b32(a), b32(b), ftz, soft, r))
    }
}

/// `add{.rnd}{.ftz}.f32`: correctly rounded `a + b` (PTX ISA §9.7.3.3; `.rn/.rz/.rm/.rp` are
/// IEEE 754 rounding directions, `.ftz` flushes subnormal inputs and results).
///
/// `.sat` is not applied here; compose with [`sat_f32`].
pub fn add_f32(a: f32, b: f32, r: Rounding, ftz: bool) -> f32 {
    op2_f32(a, b, r, ftz, |x, y| x + y, add_vals)
}

/// `sub{.rnd}{.ftz}.f32`: correctly rounded `a - b` (PTX ISA §9.7.3.4).
pub fn sub_f32(a: f32, b: f32, r: Rounding, ftz: bool) -> f32 {
    if a.is_nan() || b.is_nan() {
        return f32::from_bits(CANONICAL_NAN_F32);
    }
    add_f32(a, -b, r, ftz)
}

/// `mul{.rnd}{.ftz}.f32`: correctly rounded `a * b` (PTX ISA §9.7.3.5).
pub fn mul_f32(a: f32, b: f32, r: Rounding, ftz: bool) -> f32 {
    op2_f32(a, b, r, ftz, |x, y| x * y, mul_vals)
}

/// `fma.rnd{.ftz}.f32` (= `mad.rnd.f32` on sm_20+): `a * b + c` computed "to infinite precision"
/// and rounded once (PTX ISA §9.7.3.6).
pub fn fma_f32(a: f32, b: f32, c: f32, r: Rounding, ftz: bool) -> f32 {
    if r == Rounding::Nearest {
        let (a, b, c) = if ftz {
            (ftz_f32(a), ftz_f32(b), ftz_f32(c))
        } else {
            (a, b, c)
        };
        fin32(a.mul_add(b, c), ftz)
    } else {
        f32b(fma_bits(F32, b32(a), b32(b), b32(c), r, ftz))
    }
}

/// `div.rnd{.ftz}.f32`: IEEE 754 compliant, correctly rounded `a / b` (PTX ISA §9.7.3.8,
/// "Divide with IEEE 754 compliant rounding").
pub fn div_f32(a: f32, b: f32, r: Rounding, ftz: bool) -> f32 {
    op2_f32(a, b, r, ftz, |x, y| x / y, div_vals)
}

/// `sqrt.rnd{.ftz}.f32`: correctly rounded square root (PTX ISA §9.7.3.15; `sqrt(-0) = -0`,
/// negative non-zero inputs and `-Inf` give NaN).
pub fn sqrt_f32(a: f32, r: Rounding, ftz: bool) -> f32 {
    if r == Rounding::Nearest {
        let a = if ftz { ftz_f32(a) } else { a };
        fin32(a.sqrt(), ftz)
    } else {
        let a = decode(F32, F32.flush_if(b32(a), ftz));
        f32b(F32.flush_if(sqrt_val(F32, a, r), ftz))
    }
}

/// `rcp.rnd{.ftz}.f32`: correctly rounded `1 / a` (PTX ISA §9.7.3.13, "Reciprocal with IEEE 754
/// compliant rounding").
pub fn rcp_f32(a: f32, r: Rounding, ftz: bool) -> f32 {
    div_f32(1.0, a, r, ftz)
}

// ---------------------------------------------------------------------------------------------
// f64 arithmetic
// ---------------------------------------------------------------------------------------------

fn op2_f64(
    a: f64,
    b: f64,
    r: Rounding,
    native: fn(f64, f64) -> f64,
    soft: fn(Fmt, Val, Val, Rounding) -> u64,
) -> f64 {
    if r == Rounding::Nearest {
        fin64(native(a, b))
    } else {
        f64::from_bits(bin_bits(F64, a.to_bits(), b.to_bits(), false, soft, r))
    }
}

/// `add.rnd.f64`: correctly rounded `a + b` (PTX ISA §9.7.3.3; subnormals always supported).
pub fn add_f64(a: f64, b: f64, r: Rounding) -> f64 {
    op2_f64(a, b, r, |x, y| x + y, add_vals)
}

/// `sub.rnd.f64`: correctly rounded `a - b` (PTX ISA §9.7.3.4).
pub fn sub_f64(a: f64, b: f64, r: Rounding) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::from_bits(CANONICAL_NAN_F64);
    }
    add_f64(a, -b, r)
}

/// `mul.rnd.f64`: correctly rounded `a * b` (PTX ISA §9.7.3.5).
pub fn mul_f64(a: f64, b: f64, r: Rounding) -> f64 {
    op2_f64(a, b, r, |x, y| x * y, mul_vals)
}

/// `fma.rnd.f64` (= `mad.rnd.f64`): `a * b + c` rounded once (PTX ISA §9.7.3.6).
pub fn fma_f64(a: f64, b: f64, c: f64, r: Rounding) -> f64 {
    if r == Rounding::Nearest {
        fin64(a.mul_add(b, c))
    } else {
        f64::from_bits(fma_bits(
            F64,
            a.to_bits(),
            b.to_bits(),
            c.to_bits(),
            r,
            false,
        ))
    }
}

/// `div.rnd.f64`: correctly rounded `a / b` (PTX ISA §9.7.3.8).
pub fn div_f64(a: f64, b: f64, r: Rounding) -> f64 {
    op2_f64(a, b, r, |x, y| x / y, div_vals)
}

/// `sqrt.rnd.f64`: correctly rounded square root (PTX ISA §9.7.3.15).
pub fn sqrt_f64(a: f64, r: Rounding) -> f64 {
    if r == Rounding::Nearest {
        fin64(a.sqrt())
    } else {
        f64::from_bits(sqrt_val(F64, decode(F64, a.to_bits()), r))
    }
}

/// `rcp.rnd.f64`: correctly rounded `1 / a` (PTX ISA §9.7.3.13).
pub fn rcp_f64(a: f64, r: Rounding) -> f64 {
    div_f64(1.0, a, r)
}

// ---------------------------------------------------------------------------------------------
// 16-bit arithmetic
// ---------------------------------------------------------------------------------------------
//
// PTX ISA §9.7.4.1-9.7.4.4: `add/sub/mul/fma{.rnd}{.ftz}{.sat}.f16` and `{.rnd}.bf16`, with
// `.rnd = { .rn }` only (default `.rn`).  The functions below accept every direction so that
// they can also serve as the reference "compute exactly, round once" primitive; a PTX front end
// should only pass `Rounding::Nearest`.  `.ftz` exists for `.f16` only.  `.sat`/`.relu` are
// separate helpers ([`sat_f16`], [`relu_f16`], [`relu_bf16`]).

fn h(b: u64) -> u16 {
    b as u16
}

/// `add{.rn}{.ftz}.f16`: `a + b` rounded once to binary16 (PTX ISA §9.7.4.1).
pub fn add_f16(a: u16, b: u16, r: Rounding, ftz: bool) -> u16 {
    h(bin_bits(F16, a.into(), b.into(), ftz, add_vals, r))
}

/// `sub{.rn}{.ftz}.f16`: `a - b` rounded once to binary16 (PTX ISA §9.7.4.2).
pub fn sub_f16(a: u16, b: u16, r: Rounding, ftz: bool) -> u16 {
    if F16.is_nan(b.into()) {
        return CANONICAL_NAN_F16;
    }
    h(bin_bits(
        F16,
        a.into(),
        neg_bits(F16, b.into()),
        ftz,
        add_vals,
        r,
    ))
}

/// `mul{.rn}{.ftz}.f16`: `a * b` rounded once to binary16 (PTX ISA §9.7.4.3).
pub fn mul_f16(a: u16, b: u16, r: Rounding, ftz: bool) -> u16 {
    h(bin_bits(F16, a.into(), b.into(), ftz, mul_vals, r))
}

/// `fma.rn{.ftz}.f16`: `a * b + c` with "no loss of precision in the intermediate product and
/// addition", rounded once to binary16 (PTX ISA §9.7.4.4).
pub fn fma_f16(a: u16, b: u16, c: u16, r: Rounding, ftz: bool) -> u16 {
    h(fma_bits(F16, a.into(), b.into(), c.into(), r, ftz))
}

/// `add{.rn}.bf16`: `a + b` rounded once to bfloat16 (PTX ISA §9.7.4.1; no `.ftz`, subnormals
/// supported).
pub fn add_bf16(a: u16, b: u16, r: Rounding) -> u16 {
    h(bin_bits(BF16, a.into(), b.into(), false, add_vals, r))
}

/// `sub{.rn}.bf16`: `a - b` rounded once to bfloat16 (PTX ISA §9.7.4.2).
pub fn sub_bf16(a: u16, b: u16, r: Rounding) -> u16 {
    if BF16.is_nan(b.into()) {
        return CANONICAL_NAN_BF16;
    }
    h(bin_bits(
        BF16,
        a.into(),
        neg_bits(BF16, b.into()),
        false,
        add_vals,
        r,
    ))
}

/// `mul{.rn}.bf16`: `a * b` rounded once to bfloat16 (PTX ISA §9.7.4.3).
pub fn mul_bf16(a: u16, b: u16, r: Rounding) -> u16 {
    h(bin_bits(BF16, a.into(), b.into(), false, mul_vals, r))
}

/// `fma.rn.bf16`: `a * b + c` rounded once to bfloat16 (PTX ISA §9.7.4.4).
pub fn fma_bf16(a: u16, b: u16, c: u16, r: Rounding) -> u16 {
    h(fma_bits(BF16, a.into(), b.into(), c.into(), r, false))
}

/// `.sat` on an `f16` result: clamp to `[+0.0, 1.0]`, NaN -> `+0.0` (PTX ISA §9.7.4: "saturation
/// of results to the range [0.0, 1.0], with NaNs being flushed to positive zero").  `-0.0`
/// becomes `+0.0` (see [`sat_f32`]).
pub fn sat_f16(x: u16) -> u16 {
    h(sat_bits(F16, x.into()))
}

/// `.relu` on an `f16` result (`fma.relu`, `cvt.relu`): negative values (including `-0.0`)
/// become `+0.0`, NaN becomes the canonical NaN (PTX ISA §9.7.4.4: "clamps the result to 0 if
/// negative. NaN result is converted to canonical NaN").
pub fn relu_f16(x: u16) -> u16 {
    h(relu_bits(F16, x.into()))
}

/// `.relu` on a `bf16` result; see [`relu_f16`].
pub fn relu_bf16(x: u16) -> u16 {
    h(relu_bits(BF16, x.into()))
}

fn sat_bits(f: Fmt, b: u64) -> u64 {
    if f.is_nan(b) || b & f.sign_bit() != 0 {
        0
    } else if b > f.one() {
        f.one()
    } else {
        b
    }
}

fn relu_bits(f: Fmt, b: u64) -> u64 {
    if f.is_nan(b) {
        f.nan()
    } else if b & f.sign_bit() != 0 {
        0
    } else {
        b
    }
}

// ---------------------------------------------------------------------------------------------
// min / max
// ---------------------------------------------------------------------------------------------

/// PTX `min_num`/`min_nan`/`max_num`/`max_nan` (§9.7.3.11/12, §9.7.4.7/8) on encodings of `f`.
/// `want_max` selects max.  "-0.0 < +0.0 here".
fn minmax_bits(f: Fmt, a: u64, b: u64, nan_propagate: bool, ftz: bool, want_max: bool) -> u64 {
    let (a, b) = (f.flush_if(a, ftz), f.flush_if(b, ftz));
    match (f.is_nan(a), f.is_nan(b)) {
        (true, true) => return f.nan(),
        (true, false) | (false, true) if nan_propagate => return f.nan(),
        (true, false) => return b,
        (false, true) => return a,
        (false, false) => {}
    }
    // Total order on non-NaN encodings with -0 < +0: map sign-magnitude to a signed key.
    let key = |x: u64| -> i128 {
        let mag = i128::from(x & !f.sign_bit());
        if x & f.sign_bit() != 0 {
            -mag - 1
        } else {
            mag
        }
    };
    let a_less = key(a) < key(b);
    if a_less != want_max {
        a
    } else {
        b
    }
}

/// `min{.ftz}{.NaN}.f32` (PTX ISA §9.7.3.11).
///
/// Without `.NaN` (`min_num`): if exactly one input is NaN the other is returned; if both are,
/// NaN.  With `.NaN` (`min_nan`): "the result is canonical NaN if any of the inputs is NaN".
/// "If values of both inputs are 0.0, then +0.0 > -0.0", so `min(-0.0, +0.0) = -0.0`.  `.ftz`
/// flushes subnormal inputs (and hence results) to sign-preserving zero.
pub fn min_f32(a: f32, b: f32, nan_propagate: bool, ftz: bool) -> f32 {
    f32b(minmax_bits(F32, b32(a), b32(b), nan_propagate, ftz, false))
}

/// `max{.ftz}{.NaN}.f32` (PTX ISA §9.7.3.12); `max(-0.0, +0.0) = +0.0`.  See [`min_f32`].
pub fn max_f32(a: f32, b: f32, nan_propagate: bool, ftz: bool) -> f32 {
    f32b(minmax_bits(F32, b32(a), b32(b), nan_propagate, ftz, true))
}

/// `min.f64` (PTX ISA §9.7.3.11): `min_num` semantics, `-0.0 < +0.0`, NaN only if both inputs
/// are NaN.
pub fn min_f64(a: f64, b: f64) -> f64 {
    f64::from_bits(minmax_bits(
        F64,
        a.to_bits(),
        b.to_bits(),
        false,
        false,
        false,
    ))
}

/// `max.f64` (PTX ISA §9.7.3.12): `max_num` semantics, `+0.0 > -0.0`.
pub fn max_f64(a: f64, b: f64) -> f64 {
    f64::from_bits(minmax_bits(
        F64,
        a.to_bits(),
        b.to_bits(),
        false,
        false,
        true,
    ))
}

/// `min{.ftz}{.NaN}.f16` (PTX ISA §9.7.4.7); same rules as [`min_f32`].
pub fn min_f16(a: u16, b: u16, nan_propagate: bool, ftz: bool) -> u16 {
    h(minmax_bits(
        F16,
        a.into(),
        b.into(),
        nan_propagate,
        ftz,
        false,
    ))
}

/// `max{.ftz}{.NaN}.f16` (PTX ISA §9.7.4.8); same rules as [`max_f32`].
pub fn max_f16(a: u16, b: u16, nan_propagate: bool, ftz: bool) -> u16 {
    h(minmax_bits(
        F16,
        a.into(),
        b.into(),
        nan_propagate,
        ftz,
        true,
    ))
}

/// `min{.NaN}.bf16` (PTX ISA §9.7.4.7; no `.ftz`).
pub fn min_bf16(a: u16, b: u16, nan_propagate: bool) -> u16 {
    h(minmax_bits(
        BF16,
        a.into(),
        b.into(),
        nan_propagate,
        false,
        false,
    ))
}

/// `max{.NaN}.bf16` (PTX ISA §9.7.4.8; no `.ftz`).
pub fn max_bf16(a: u16, b: u16, nan_propagate: bool) -> u16 {
    h(minmax_bits(
        BF16,
        a.into(),
        b.into(),
        nan_propagate,
        false,
        true,
    ))
}

// ---------------------------------------------------------------------------------------------
// Conversions (cvt), PTX ISA §9.7.9.21
// ---------------------------------------------------------------------------------------------

/// `cvt.sat.f32.f32`: clamp to `[+0.0, 1.0]`, NaN -> `+0.0`.
///
/// PTX ISA §9.7.9.21: "For floating-point destination types, `.sat` limits the result to the
/// range [0.0, 1.0]. NaN results are flushed to positive zero."  The ISA does not spell out
/// `-0.0`; following libdevice's `__nv_saturatef` ("Clamp the input argument x to be within the
/// interval [+0.0, 1.0]") this returns `+0.0` for `-0.0` (and for every negative input).
pub fn sat_f32(x: f32) -> f32 {
    f32b(sat_bits(F32, b32(x)))
}

/// `.sat` for an `f64` destination (`cvt.sat.f64.*`): clamp to `[+0.0, 1.0]`, NaN -> `+0.0`.
pub fn sat_f64(x: f64) -> f64 {
    f64::from_bits(sat_bits(F64, x.to_bits()))
}

fn narrow_post(f: Fmt, b: u64, sat: bool, relu: bool) -> u64 {
    if sat {
        sat_bits(f, b)
    } else if relu {
        relu_bits(f, b)
    } else {
        b
    }
}

/// `cvt.frnd{.sat}.f16.f32` / `cvt.frnd2{.relu}.f16.f32`: one rounding of `x` to binary16.
///
/// NaN -> [`CANONICAL_NAN_F16`]; overflow per rounding mode (`.rn` -> Inf, `.rz` -> 65504,
/// `.rm`/`.rp` -> Inf toward their own direction, 65504 the other way); subnormal results are
/// rounded exactly.  `sat`: clamp to `[+0.0, 1.0]`, NaN -> `+0.0`.  `relu`: "clamps the result
/// to 0 if negative. NaN results are converted to canonical NaN" (`-0.0` -> `+0.0` here).  If
/// both are set, `sat` wins (the ISA syntax never combines them).  `cvt.ftz.f16.f32`: apply
/// [`ftz_f32`] to the input first.
pub fn f32_to_f16(x: f32, r: Rounding, sat: bool, relu: bool) -> u16 {
    h(narrow_post(F16, convert(F32, F16, b32(x), r), sat, relu))
}

/// `cvt.frnd{.relu}.bf16.f32`: one rounding of `x` to bfloat16; same rules as [`f32_to_f16`].
pub fn f32_to_bf16(x: f32, r: Rounding, sat: bool, relu: bool) -> u16 {
    if r == Rounding::Nearest && !sat && !relu {
        // Fast path (bf16 has f32's exponent range, so subnormals and overflow need no special
        // case): add half an ulp minus one, plus the kept lsb for ties to even, then truncate.
        let b = x.to_bits();
        if b & 0x7fff_ffff > 0x7f80_0000 {
            return CANONICAL_NAN_BF16;
        }
        return ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    }
    h(narrow_post(BF16, convert(F32, BF16, b32(x), r), sat, relu))
}

fn satfinite(f: Fmt, b: u64) -> u64 {
    if (b & !f.sign_bit()) == f.inf() {
        (b & f.sign_bit()) | f.max_finite()
    } else {
        b
    }
}

/// `cvt.frnd2{.relu}.satfinite.f16.f32`: like [`f32_to_f16`] but "if the absolute value of input
/// (ignoring sign) is greater than MAX_NORM of the specified destination format, then the result
/// is sign-preserved MAX_NORM" (PTX ISA §9.7.9.21, `.satfinite`); NaN stays (canonical) NaN.
pub fn f32_to_f16_satfinite(x: f32, r: Rounding, relu: bool) -> u16 {
    h(narrow_post(
        F16,
        satfinite(F16, convert(F32, F16, b32(x), r)),
        false,
        relu,
    ))
}

/// `cvt.frnd2{.relu}.satfinite.bf16.f32`; see [`f32_to_f16_satfinite`].
pub fn f32_to_bf16_satfinite(x: f32, r: Rounding, relu: bool) -> u16 {
    h(narrow_post(
        BF16,
        satfinite(BF16, convert(F32, BF16, b32(x), r)),
        false,
        relu,
    ))
}

/// Largest finite FP8 e4m3 value (`0x7e`, 1.75 * 2^8); e4m3 (the `fn` variant) has no infinity.
const E4M3_MAX: f64 = 448.0;

/// `cvt.rn.satfinite{.relu}.e4m3x2.f32`, one half: `x` rounded to FP8 e4m3 (sign, 4 exponent bits of
/// bias 7, 3 fraction bits, subnormals below 2^-6 in steps of 2^-9), to nearest with ties to even,
/// magnitudes past the largest finite value saturating to +-448 (`.satfinite`), NaN to the NaN code
/// `0x7f`; `.relu` clamps negative results to +0 (PTX ISA, `cvt`).
pub fn f32_to_e4m3_satfinite(x: f32, relu: bool) -> u8 {
    if x.is_nan() {
        return 0x7f;
    }
    let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
    let a = (x as f64).abs();
    // The quantum at a's binade: 2^(e - 3) for a normal a of exponent e >= -6, else 2^-9.
    let e = if a == 0.0 {
        -6
    } else {
        ((a.to_bits() >> 52) as i32 - 1023).max(-6)
    };
    let quantum = 2f64.powi(e - 3);
    let q = a / quantum; // exact: a power-of-two scaling
    let mut n = q.floor();
    let rest = q - n;
    if rest > 0.5 || (rest == 0.5 && n % 2.0 == 1.0) {
        n += 1.0;
    }
    let r = (n * quantum).min(E4M3_MAX);
    let magnitude = if r < 2f64.powi(-6) {
        // Subnormal (or zero): r / 2^-9 is the 3 fraction bits; 8 would be 2^-6, the first normal.
        (r / 2f64.powi(-9)) as u8
    } else {
        let re = (r.to_bits() >> 52) as i32 - 1023;
        let frac = (r / 2f64.powi(re) * 8.0) as u8 - 8;
        (((re + 7) as u8) << 3) | frac
    };
    if relu && sign != 0 {
        return 0;
    }
    sign | magnitude
}

/// The value of an FP8 e4m3 code (exact): `0x7f`/`0xff` are NaN, there is no infinity.
pub fn e4m3_to_f32(code: u8) -> f32 {
    let magnitude = code & 0x7f;
    let value = if magnitude == 0x7f {
        f32::NAN
    } else if magnitude < 8 {
        magnitude as f32 * 2f32.powi(-9)
    } else {
        let e = (magnitude >> 3) as i32 - 7;
        (1.0 + (magnitude & 7) as f32 / 8.0) * 2f32.powi(e)
    };
    if code & 0x80 != 0 {
        -value
    } else {
        value
    }
}

/// `cvt.frnd{.sat}.f16.f64`: one rounding of `x` directly to binary16 (no intermediate `f32`
/// rounding).  Same rules as [`f32_to_f16`].
pub fn f64_to_f16(x: f64, r: Rounding, sat: bool) -> u16 {
    h(narrow_post(
        F16,
        convert(F64, F16, x.to_bits(), r),
        sat,
        false,
    ))
}

/// `cvt.frnd.bf16.f64`: one rounding of `x` directly to bfloat16.  Same rules as
/// [`f32_to_f16`]; `sat` clamps to `[+0.0, 1.0]`.
pub fn f64_to_bf16(x: f64, r: Rounding, sat: bool) -> u16 {
    h(narrow_post(
        BF16,
        convert(F64, BF16, x.to_bits(), r),
        sat,
        false,
    ))
}

/// `cvt.f32.f16`: exact widening (NaN -> [`CANONICAL_NAN_F32`]).  `.ftz` has no effect because
/// every binary16 value is a normal `f32` or zero.
pub fn f16_to_f32(h: u16) -> f32 {
    // Exact widening by fields: normal numbers rebias the exponent, subnormals are an integer
    // times 2^-24 (exact in f32), Inf keeps its sign, NaN becomes the canonical NaN.
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = (h >> 10) & 0x1f;
    let man = (h & 0x3ff) as u32;
    match exp {
        0 => sign * (man as f32) * f32::from_bits(0x3380_0000), // 2^-24
        31 if man == 0 => sign * f32::INFINITY,
        31 => f32b(u64::from(CANONICAL_NAN_F32)),
        _ => f32::from_bits(((h as u32 & 0x8000) << 16) | ((exp as u32 + 112) << 23) | (man << 13)),
    }
}

/// `cvt.f32.bf16`: exact widening (NaN -> [`CANONICAL_NAN_F32`]; the ISA says "NaN input yields
/// unspecified NaN").  bfloat16 subnormals stay `f32` subnormals; for `cvt.ftz.f32.bf16` apply
/// [`ftz_f32`] to the result.
pub fn bf16_to_f32(h: u16) -> f32 {
    // bf16 is the top half of an f32.
    if h & 0x7fff > 0x7f80 {
        return f32b(u64::from(CANONICAL_NAN_F32));
    }
    f32::from_bits((h as u32) << 16)
}

/// `cvt.f64.f16`: exact widening (NaN -> [`CANONICAL_NAN_F64`]).
pub fn f16_to_f64(h: u16) -> f64 {
    f64::from_bits(convert(F16, F64, h.into(), Rounding::Nearest))
}

/// `cvt.f64.bf16`: exact widening (NaN -> [`CANONICAL_NAN_F64`]).
pub fn bf16_to_f64(h: u16) -> f64 {
    f64::from_bits(convert(BF16, F64, h.into(), Rounding::Nearest))
}

/// `cvt.frnd{.ftz}{.sat}.f32.f64`: one rounding of `x` to binary32.
///
/// Overflow per mode as in [`f32_to_f16`]; `ftz` flushes a subnormal `f32` result to
/// sign-preserving zero (§9.7.9.21: ".ftz ... applies only to single precision (.f32) inputs and
/// results"); `sat` clamps to `[+0.0, 1.0]` with NaN -> `+0.0`.
pub fn f64_to_f32(x: f64, r: Rounding, ftz: bool, sat: bool) -> f32 {
    let b = if r == Rounding::Nearest {
        // Rust's `as` rounds to nearest even, including subnormals and overflow to Inf.
        b32(x as f32)
    } else {
        convert(F64, F32, x.to_bits(), r)
    };
    let b = F32.canon(F32.flush_if(b, ftz));
    f32b(if sat { sat_bits(F32, b) } else { b })
}

/// `cvt{.sat}.f64.f32`: exact widening; `sat` clamps to `[+0.0, 1.0]` (NaN -> `+0.0`), otherwise
/// NaN -> [`CANONICAL_NAN_F64`].  For `cvt.ftz.f64.f32` apply [`ftz_f32`] to the input first.
pub fn f32_to_f64(x: f32, sat: bool) -> f64 {
    let y = fin64(f64::from(x));
    if sat {
        sat_f64(y)
    } else {
        y
    }
}

/// `cvt.{rni,rzi,rmi,rpi}{.ftz}{.sat}.f32.f32`: round to an integral value in `f32`.
///
/// PTX ISA §9.7.9.21 ("Integer rounding modifiers": `.rni` nearest, ties to even; `.rzi` toward
/// zero; `.rmi` toward -Inf; `.rpi` toward +Inf); the sign of a zero result is the sign of the
/// input (IEEE 754 roundToIntegral).  `ftz` flushes a subnormal input; `sat` clamps to
/// `[+0.0, 1.0]` with NaN -> `+0.0`.
pub fn round_to_integral_f32(x: f32, r: Rounding, ftz: bool, sat: bool) -> f32 {
    let b = F32.flush_if(b32(x), ftz);
    let b = round_integral(F32, b, r);
    f32b(if sat { sat_bits(F32, b) } else { b })
}

/// `cvt.{rni,rzi,rmi,rpi}.f64.f64`: round to an integral value in `f64` (see
/// [`round_to_integral_f32`]).
pub fn round_to_integral_f64(x: f64, r: Rounding) -> f64 {
    f64::from_bits(round_integral(F64, x.to_bits(), r))
}

/// `cvt.{rni,rzi,rmi,rpi}.f16.f16`: round to an integral value in binary16.
pub fn round_to_integral_f16(x: u16, r: Rounding) -> u16 {
    h(round_integral(F16, x.into(), r))
}

/// `cvt.{rni,rzi,rmi,rpi}.bf16.bf16`: round to an integral value in bfloat16.
pub fn round_to_integral_bf16(x: u16, r: Rounding) -> u16 {
    h(round_integral(BF16, x.into(), r))
}

fn to_int(x: f64, r: Rounding, bits: u32, signed: bool, source_f64: bool) -> u64 {
    assert!(
        matches!(bits, 8 | 16 | 32 | 64),
        "integer width must be 8, 16, 32 or 64"
    );
    let (min, max): (i128, i128) = if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    let out = |v: i128| -> u64 {
        if signed {
            v as i64 as u64
        } else {
            v as u64
        }
    };
    let v: i128 = match decode(F64, x.to_bits()) {
        Val::Nan => {
            // §9.7.9.21: NaN gives "Zero if source is not .f64 and destination is not .s64,
            // .u64. Otherwise 1 << (BitWidth(dst) - 1)", i.e. MININT for signed types.
            return if source_f64 || bits == 64 {
                if signed {
                    out(min)
                } else {
                    1u64 << (bits - 1)
                }
            } else {
                0
            };
        }
        Val::Inf(neg) => {
            if neg {
                min
            } else {
                max
            }
        }
        Val::Zero(_) => 0,
        Val::Fin(n) => {
            let mag: i128 = if n.exp >= 0 {
                if n.exp > 70 {
                    // |x| >= 2^70 exceeds every destination range.
                    return out(if n.neg { min } else { max });
                }
                (n.sig << n.exp) as i128
            } else {
                let (mut m, rest) = split(n.sig, (-n.exp) as u32, false);
                if round_up(rest, m & 1 == 1, n.neg, r) {
                    m += 1;
                }
                m as i128
            };
            if n.neg {
                -mag
            } else {
                mag
            }
        }
    };
    // "For float-to-integer conversions, the result is clamped to the destination range by
    // default" (§9.7.9.21, saturation modifier).
    out(v.clamp(min, max))
}

/// `cvt.{rni,rzi,rmi,rpi}.{s,u}{8,16,32,64}.{f16,bf16,f32}`: round `x` to an integer in the mode,
/// then saturate to the destination range (§9.7.9.21: "the result is clamped to the destination
/// range by default").
///
/// `x` is the exact source value (an `f16`, `bf16` or `f32` widens exactly to `f64`); for
/// `cvt.ftz.*.f32` apply [`ftz_f32`] before widening.  Returns the integer's bits zero-extended
/// to 64 bits for unsigned destinations and sign-extended for signed ones.
///
/// NaN (source not `.f64`): 0 for 8/16/32-bit destinations, `1 << 63` for `.s64`/`.u64`
/// (§9.7.9.21: "Zero if source is not .f64 and destination is not .s64, .u64. Otherwise
/// 1 << (BitWidth(dst) - 1)").  Use [`f64_to_int`] for `.f64` sources.
///
/// # Panics
/// If `bits` is not 8, 16, 32 or 64.
pub fn float_to_int(x: f64, r: Rounding, bits: u32, signed: bool) -> u64 {
    to_int(x, r, bits, signed, false)
}

/// `cvt.{rni,rzi,rmi,rpi}.{s,u}{8,16,32,64}.f64`: as [`float_to_int`], except that NaN gives
/// `1 << (bits - 1)` for every destination (MININT for signed types, sign-extended), as the ISA
/// specifies for `.f64` sources.
///
/// # Panics
/// If `bits` is not 8, 16, 32 or 64.
pub fn f64_to_int(x: f64, r: Rounding, bits: u32, signed: bool) -> u64 {
    to_int(x, r, bits, signed, true)
}

fn from_int(f: Fmt, v: i128, r: Rounding) -> u64 {
    round_pack(
        f,
        Num {
            neg: v < 0,
            sig: v.unsigned_abs(),
            exp: 0,
        },
        false,
        r,
    )
}

/// `cvt.frnd.f32.{s,u}{8,16,32,64}`: the integer's exact value rounded once (§9.7.9.21:
/// "Floating-point rounding is required ... for integer-to-float conversions").  Zero gives
/// `+0.0`.
pub fn int_to_f32(v: i128, r: Rounding) -> f32 {
    f32b(from_int(F32, v, r))
}

/// `cvt.frnd.f64.{s,u}{8,16,32,64}`: the integer rounded once to binary64.
pub fn int_to_f64(v: i128, r: Rounding) -> f64 {
    f64::from_bits(from_int(F64, v, r))
}

/// `cvt.frnd.f16.{s,u}{8,16,32,64}`: the integer rounded once to binary16 (overflow per mode as
/// in [`f32_to_f16`]).
pub fn int_to_f16(v: i128, r: Rounding) -> u16 {
    h(from_int(F16, v, r))
}

/// `cvt.frnd.bf16.{s,u}{8,16,32,64}`: the integer rounded once to bfloat16.
pub fn int_to_bf16(v: i128, r: Rounding) -> u16 {
    h(from_int(BF16, v, r))
}

// ---------------------------------------------------------------------------------------------
// Approximate functions
// ---------------------------------------------------------------------------------------------
//
// Each `.approx` function is evaluated in binary64 (error far below 2^-40 relative) and rounded
// to nearest once, so the result is within about half an ulp of the exact value, inside every
// bound the ISA documents.  Hardware results differ in the last bits; these are not bit-exact
// reproductions of NVIDIA's units.

fn nan32() -> f32 {
    f32::from_bits(CANONICAL_NAN_F32)
}

/// `ex2.approx{.ftz}.f32`: `2^x` (PTX ISA §9.7.3.21).
///
/// ISA bound: "The maximum ulp error is 2 ulp from correctly rounded result across the full range
/// of inputs."  Special values: `-Inf -> +0.0`, `±0.0 -> +1.0`, `+Inf -> +Inf`, NaN -> NaN.
/// `ftz` flushes subnormal inputs (giving 1.0) and subnormal results.
pub fn ex2_approx_f32(x: f32, ftz: bool) -> f32 {
    let x = if ftz { ftz_f32(x) } else { x };
    if x.is_nan() {
        return nan32();
    }
    fin32(f64::from(x).exp2() as f32, ftz)
}

/// `lg2.approx{.ftz}.f32`: `log2(x)` (PTX ISA §9.7.3.20).
///
/// ISA bound: "The maximum absolute error is 2^-22 when the input operand is in the range
/// (0.5, 2). For positive finite inputs outside of this interval, maximum relative error is
/// 2^-22."  Special values: `-Inf`/negative -> NaN, `±0.0 -> -Inf`, `+Inf -> +Inf`, NaN -> NaN.
/// With `ftz` a subnormal input is a signed zero, so it gives `-Inf`.
pub fn lg2_approx_f32(x: f32, ftz: bool) -> f32 {
    let x = if ftz { ftz_f32(x) } else { x };
    if x.is_nan() || (x < 0.0) {
        return nan32();
    }
    if x == 0.0 {
        return f32::NEG_INFINITY;
    }
    fin32(f64::from(x).log2() as f32, ftz)
}

/// `rcp.approx{.ftz}.f32`: `1/x` (PTX ISA §9.7.3.13).
///
/// ISA bound: "The maximum ulp error is 1 across the full range of inputs" (this returns the
/// correctly rounded value).  Special values: `-Inf -> -0.0`, `-0.0 -> -Inf`, `+0.0 -> +Inf`,
/// `+Inf -> +0.0`, NaN -> NaN.
pub fn rcp_approx_f32(x: f32, ftz: bool) -> f32 {
    rcp_f32(x, Rounding::Nearest, ftz)
}

/// `rsqrt.approx{.ftz}.f32`: `1/sqrt(x)` (PTX ISA §9.7.3.16).
///
/// ISA bound: "The maximum relative error for rsqrt.f32 over the entire positive finite
/// floating-point range is 2^-22.9."  Special values: `-Inf`/negative -> NaN, `-0.0 -> -Inf`,
/// `+0.0 -> +Inf`, `+Inf -> +0.0`, NaN -> NaN.
pub fn rsqrt_approx_f32(x: f32, ftz: bool) -> f32 {
    let x = if ftz { ftz_f32(x) } else { x };
    if x.is_nan() || x < 0.0 {
        return nan32();
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        };
    }
    fin32((1.0 / f64::from(x).sqrt()) as f32, ftz)
}

/// `sqrt.approx{.ftz}.f32`: `sqrt(x)` (PTX ISA §9.7.3.15).
///
/// ISA bound: "The maximum relative error over the entire positive finite floating-point range
/// is 2^-23" (this returns the correctly rounded value).  Special values: `-Inf`/negative ->
/// NaN, `-0.0 -> -0.0`, `+0.0 -> +0.0`, `+Inf -> +Inf`, NaN -> NaN.
pub fn sqrt_approx_f32(x: f32, ftz: bool) -> f32 {
    sqrt_f32(x, Rounding::Nearest, ftz)
}

/// `sin.approx{.ftz}.f32`: `sin(x)`, `x` in radians (PTX ISA §9.7.3.18).
///
/// ISA bound: maximum absolute error 2^-20.5 in `[-2π, 2π]`, 2^-14.7 in `[-100π, 100π]`, "only
/// best effort" outside.  Special values: `±Inf -> NaN`, `-0.0 -> -0.0`, `+0.0 -> +0.0`,
/// NaN -> NaN.
pub fn sin_approx_f32(x: f32, ftz: bool) -> f32 {
    let x = if ftz { ftz_f32(x) } else { x };
    if !x.is_finite() {
        return nan32();
    }
    fin32(f64::from(x).sin() as f32, ftz)
}

/// `cos.approx{.ftz}.f32`: `cos(x)`, `x` in radians (PTX ISA §9.7.3.19).
///
/// ISA bound: maximum absolute error 2^-20.5 in `[-2π, 2π]`, 2^-14.7 in `[-100π, 100π]`.
/// Special values: `±Inf -> NaN`, `±0.0 -> +1.0`, NaN -> NaN.
pub fn cos_approx_f32(x: f32, ftz: bool) -> f32 {
    let x = if ftz { ftz_f32(x) } else { x };
    if !x.is_finite() {
        return nan32();
    }
    fin32(f64::from(x).cos() as f32, ftz)
}

/// `tanh.approx.f32` (PTX ISA §9.7.3.22).
///
/// ISA bound: "The maximum relative error over the entire floating point range is 2^-11."
/// Special values: `-Inf -> -1.0`, `-0.0 -> -0.0`, `+0.0 -> +0.0`, `+Inf -> 1.0`, NaN -> NaN.
/// "The subnormal inputs gets passed through to the output."
pub fn tanh_approx_f32(x: f32) -> f32 {
    if x.is_nan() {
        return nan32();
    }
    if x.is_subnormal() || x == 0.0 {
        return x;
    }
    fin32(f64::from(x).tanh() as f32, false)
}

/// `div.approx{.ftz}.f32`: "computed as `d = a * (1/b)`" (PTX ISA §9.7.3.8).
///
/// ISA bound: "For |b| in [2^-126, 2^126], the maximum ulp error is 2" (this returns the
/// correctly rounded quotient there).  "For 2^126 < |b| < 2^128, if a is infinity,
/// div.approx.f32 returns NaN, otherwise it returns a sign-preserving zero."  For subnormal `b`
/// (without `ftz`) the ISA gives no bound; this computes the literal `a * (1/b)` with both steps
/// rounded to nearest.
pub fn div_approx_f32(a: f32, b: f32, ftz: bool) -> f32 {
    let (a, b) = if ftz {
        (ftz_f32(a), ftz_f32(b))
    } else {
        (a, b)
    };
    if a.is_nan() || b.is_nan() {
        return nan32();
    }
    let mag = b.abs();
    if mag > f32::from_bits(0x7E80_0000) && mag.is_finite() {
        // 2^126 < |b| < 2^128: the reciprocal is flushed, a * 0.
        return if a.is_infinite() {
            nan32()
        } else {
            f32::from_bits((a.to_bits() ^ b.to_bits()) & 0x8000_0000)
        };
    }
    if b.is_subnormal() {
        return fin32(a * (1.0 / b), ftz);
    }
    div_f32(a, b, Rounding::Nearest, ftz)
}

/// `div.full{.ftz}.f32` (PTX ISA §9.7.3.8): "full-range approximation ... The maximum ulp error
/// is 2 across the full range of inputs."  This returns the correctly rounded quotient (with the
/// `.ftz` flushes), which is within that bound.
pub fn div_full_f32(a: f32, b: f32, ftz: bool) -> f32 {
    div_f32(a, b, Rounding::Nearest, ftz)
}

/// The `f64` whose upper word is `x`'s upper word and whose lower word is zero, decoded in the
/// 1.11.20 format; subnormal upper words are flushed to zero.
fn upper_word(x: f64) -> Val {
    match decode(F64_HI, x.to_bits() >> 32) {
        Val::Fin(n) if (x.to_bits() >> 52) & 0x7FF == 0 => Val::Zero(n.neg),
        v => v,
    }
}

fn from_upper_word(b: u64) -> f64 {
    // "Subnormal inputs and results are flushed to sign-preserving zero."
    f64::from_bits(F64_HI.flush(b) << 32)
}

/// `rcp.approx.ftz.f64` (PTX ISA §9.7.3.14): "a fast, gross approximation to the reciprocal":
/// only the upper 32 bits of `x` (1.11.20 format) are used (`tmp = a[63:32]`), the result's
/// upper 32 bits hold `1.0 / tmp` and its lower 32 bits are zero.
///
/// This emulator returns `1/tmp` correctly rounded (to nearest) to the 1.11.20 format (relative
/// error < 2^-20); the ISA gives no error bound.  Special values (classified on `a[63:32]`, as the
/// ISA table does): `-Inf -> -0.0`, `±subnormal/±0.0 -> ±Inf`, `+Inf -> +0.0`, NaN ->
/// `0x7fffffff00000000`; subnormal results are flushed to sign-preserving zero.  Consequently an
/// `f64` NaN whose payload lies only in the low word is seen as an infinity.
pub fn rcp_approx_ftz_f64(x: f64) -> f64 {
    // The canonical NaN of the 1.11.20 format is 0x7fffffff, i.e. 0x7fffffff00000000 once
    // placed in the upper word, as the ISA specifies.
    let one = decode(F64_HI, F64_HI.one());
    from_upper_word(div_vals(F64_HI, one, upper_word(x), Rounding::Nearest))
}

/// `rsqrt.approx.ftz.f64` (PTX ISA §9.7.3.17): `1/sqrt(tmp)` where `tmp = a[63:32]` is the upper
/// word of `x` (1.11.20 format); the result's lower 32 bits are zero.  Inputs are classified on
/// the upper word, as for [`rcp_approx_ftz_f64`].
///
/// This emulator evaluates `1/sqrt(tmp)` in binary64 and rounds it to nearest in the 1.11.20
/// format (relative error < 2^-20); the ISA gives no error bound.  Special values:
/// `-Inf`/negative -> NaN, `±subnormal/±0.0 -> ±Inf`, `+Inf -> +0.0`, NaN ->
/// `0x7fffffff00000000`.
pub fn rsqrt_approx_ftz_f64(x: f64) -> f64 {
    let nan = f64::from_bits(CANONICAL_NAN_F64_APPROX_FTZ);
    match upper_word(x) {
        Val::Nan => nan,
        Val::Zero(neg) => {
            if neg {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }
        }
        Val::Inf(false) => 0.0,
        Val::Inf(true) => nan,
        Val::Fin(n) if n.neg => nan,
        Val::Fin(_) => {
            let tmp = f64::from_bits(x.to_bits() & 0xFFFF_FFFF_0000_0000);
            let y = 1.0 / tmp.sqrt();
            from_upper_word(convert(F64, F64_HI, y.to_bits(), Rounding::Nearest))
        }
    }
}

/// `rsqrt.approx.f64` (PTX ISA §9.7.3.16): "emulated in software"; the ISA states no error bound
/// for `.f64`.  This returns `1/sqrt(x)` evaluated in binary64 (error about 1 ulp).  Special
/// values: `-Inf`/negative -> NaN, `-0.0 -> -Inf`, `+0.0 -> +Inf`, `+Inf -> +0.0`, NaN ->
/// [`CANONICAL_NAN_F64`]; subnormals are supported.
pub fn rsqrt_approx_f64(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::from_bits(CANONICAL_NAN_F64);
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    1.0 / x.sqrt()
}

fn approx16(f: Fmt, x: u16, ftz: bool, func: fn(f64) -> f64) -> u16 {
    let b = f.flush_if(x.into(), ftz);
    let v = match decode(f, b) {
        Val::Nan => return h(f.nan()),
        _ => f64::from_bits(convert(f, F64, b, Rounding::Nearest)),
    };
    h(f.flush_if(convert(F64, f, func(v).to_bits(), Rounding::Nearest), ftz))
}

/// `ex2.approx.f16` (PTX ISA §9.7.4.10, sm_75+): `2^x` rounded to binary16.
///
/// ISA bound: "The maximum relative error for .f16 type is 2^-9.9."  Subnormal inputs are
/// supported.  Special values: `-Inf -> +0.0`, `±0.0 -> +1.0`, `+Inf -> +Inf`, NaN -> NaN.
pub fn ex2_approx_f16(x: u16) -> u16 {
    approx16(F16, x, false, f64::exp2)
}

/// `ex2.approx.ftz.bf16` (PTX ISA §9.7.4.10, sm_90+): `2^x` rounded to bfloat16; subnormal
/// inputs and results are flushed to sign-preserving zero.
///
/// ISA bound: "The maximum relative error for .bf16 type is 2^-7."  Special values: `-Inf ->
/// +0.0`, `±subnormal`/`±0.0 -> +1.0`, `+Inf -> +Inf`, NaN -> NaN.
pub fn ex2_approx_ftz_bf16(x: u16) -> u16 {
    approx16(BF16, x, true, f64::exp2)
}

/// `tanh.approx.f16` (PTX ISA §9.7.4.9, sm_75+): `tanh(x)` rounded to binary16.
///
/// ISA bound: "The maximum absolute error for .f16 type is 2^-10.987."  Special values:
/// `-Inf -> -1.0`, `-0.0 -> -0.0`, `+0.0 -> +0.0`, `+Inf -> 1.0`, NaN -> NaN; subnormals
/// supported.
pub fn tanh_approx_f16(x: u16) -> u16 {
    approx16(F16, x, false, f64::tanh)
}

/// `tanh.approx.bf16` (PTX ISA §9.7.4.9, sm_90+): `tanh(x)` rounded to bfloat16.
///
/// ISA bound: "The maximum absolute error for .bf16 type is 2^-8."  Special values as for
/// [`tanh_approx_f16`].
pub fn tanh_approx_bf16(x: u16) -> u16 {
    approx16(BF16, x, false, f64::tanh)
}
