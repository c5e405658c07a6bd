//! Per-thread semantics of the arithmetic, logic, comparison and conversion instructions, on raw
//! register bits. Integer results are returned sign- or zero-extended to 64 bits according to the
//! instruction type; floating-point work is delegated to [`super::float`].

use super::float::{self as fl, Rounding};
use crate::ptx::ir::*;

/// Sign-extend the low `bits` of `v`.
#[inline(always)]
pub(crate) fn sext(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        let shift = 64 - bits;
        ((v << shift) as i64) >> shift
    }
}

/// The bits of `ty` taken from `v`: masked, then sign-extended for signed types.
#[inline(always)]
pub(crate) fn norm(v: u64, ty: Ty) -> u64 {
    if ty.is_signed() {
        sext(v, ty.bits()) as u64
    } else {
        v & ty.mask()
    }
}

/// Whether f32 bits are a NaN (tested on the bits: see `float::fin32`).
fn nan32(b: u32) -> bool {
    b & 0x7fff_ffff > 0x7f80_0000
}

fn nan64(b: u64) -> bool {
    b & 0x7fff_ffff_ffff_ffff > 0x7ff0_0000_0000_0000
}

fn f32_of(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

fn f64_of(v: u64) -> f64 {
    f64::from_bits(v)
}

fn bits32(x: f32) -> u64 {
    x.to_bits() as u64
}

/// Apply a 16-bit float operation to one or both halves of a value of type `ty` (f16, bf16 or the
/// packed x2 types).
fn halves(ty: Ty, a: u64, b: u64, c: u64, f: impl Fn(u16, u16, u16) -> u16) -> u64 {
    match ty {
        Ty::F16x2 | Ty::Bf16x2 => {
            let lo = f(a as u16, b as u16, c as u16) as u64;
            let hi = f((a >> 16) as u16, (b >> 16) as u16, (c >> 16) as u16) as u64;
            lo | (hi << 16)
        }
        _ => f(a as u16, b as u16, c as u16) as u64,
    }
}

fn is_bf(ty: Ty) -> bool {
    matches!(ty, Ty::Bf16 | Ty::Bf16x2)
}

/// Decode a 16-bit float of the family of `ty` to f32 (exact).
fn h2f(ty: Ty, h: u16) -> f32 {
    if is_bf(ty) {
        fl::bf16_to_f32(h)
    } else {
        fl::f16_to_f32(h)
    }
}

fn f2h(ty: Ty, x: f32) -> u16 {
    if is_bf(ty) {
        fl::f32_to_bf16(x, Rounding::Nearest, false, false)
    } else {
        fl::f32_to_f16(x, Rounding::Nearest, false, false)
    }
}

/// One-source operations.
pub(crate) fn unary(op: UnOp, ty: Ty, m: &Mods, a: u64) -> u64 {
    let bits = ty.bits();
    let rnd = m.rnd.unwrap_or(Rounding::Nearest);
    match ty {
        Ty::F32 => {
            let x = f32_of(a);
            let r = match op {
                UnOp::Abs | UnOp::Neg => {
                    // Sign-bit operations on the bits; NaN gives the canonical NaN.
                    let b = a as u32;
                    if nan32(b) {
                        return fl::CANONICAL_NAN_F32 as u64;
                    }
                    let y = f32::from_bits(if op == UnOp::Abs {
                        b & 0x7fff_ffff
                    } else {
                        b ^ 0x8000_0000
                    });
                    if m.ftz {
                        fl::ftz_f32(y)
                    } else {
                        y
                    }
                }
                UnOp::Sqrt if m.approx => fl::sqrt_approx_f32(x, m.ftz),
                UnOp::Sqrt => fl::sqrt_f32(x, rnd, m.ftz),
                UnOp::Rsqrt => fl::rsqrt_approx_f32(x, m.ftz),
                UnOp::Rcp if m.approx => fl::rcp_approx_f32(x, m.ftz),
                UnOp::Rcp => fl::rcp_f32(x, rnd, m.ftz),
                UnOp::Ex2 => fl::ex2_approx_f32(x, m.ftz),
                UnOp::Lg2 => fl::lg2_approx_f32(x, m.ftz),
                UnOp::Sin => fl::sin_approx_f32(x, m.ftz),
                UnOp::Cos => fl::cos_approx_f32(x, m.ftz),
                UnOp::Tanh => fl::tanh_approx_f32(x),
                _ => return int_unary(op, ty, a),
            };
            bits32(r)
        }
        Ty::F64 => {
            let x = f64_of(a);
            let r = match op {
                UnOp::Abs | UnOp::Neg => {
                    if nan64(a) {
                        return fl::CANONICAL_NAN_F64;
                    }
                    return if op == UnOp::Abs {
                        a & !(1 << 63)
                    } else {
                        a ^ (1 << 63)
                    };
                }
                UnOp::Sqrt => fl::sqrt_f64(x, rnd),
                UnOp::Rcp if m.approx => fl::rcp_approx_ftz_f64(x),
                UnOp::Rcp => fl::rcp_f64(x, rnd),
                UnOp::Rsqrt => fl::rsqrt_approx_f64(x),
                _ => return int_unary(op, ty, a),
            };
            r.to_bits()
        }
        Ty::F16 | Ty::Bf16 | Ty::F16x2 | Ty::Bf16x2 => halves(ty, a, 0, 0, |x, _, _| {
            let nan = if is_bf(ty) {
                fl::CANONICAL_NAN_BF16
            } else {
                fl::CANONICAL_NAN_F16
            };
            let is_nan = (x & 0x7fff) > if is_bf(ty) { 0x7f80 } else { 0x7c00 };
            match op {
                UnOp::Abs if is_nan => nan,
                UnOp::Abs => x & 0x7fff,
                UnOp::Neg if is_nan => nan,
                UnOp::Neg => x ^ 0x8000,
                UnOp::Ex2 => {
                    let y = fl::ex2_approx_f32(h2f(ty, x), false);
                    f2h(ty, y)
                }
                UnOp::Tanh => f2h(ty, fl::tanh_approx_f32(h2f(ty, x))),
                _ => x,
            }
        }),
        _ => {
            let _ = bits;
            int_unary(op, ty, a)
        }
    }
}

fn int_unary(op: UnOp, ty: Ty, a: u64) -> u64 {
    let bits = ty.bits();
    let mask = ty.mask();
    let r = match op {
        UnOp::Abs => (sext(a, bits).wrapping_abs()) as u64,
        UnOp::Neg => (sext(a, bits).wrapping_neg()) as u64,
        UnOp::Not => {
            if ty == Ty::Pred {
                (a & 1) ^ 1
            } else {
                !a
            }
        }
        UnOp::Cnot => u64::from(a & mask == 0),
        UnOp::Popc => (a & mask).count_ones() as u64,
        UnOp::Clz => ((a & mask).leading_zeros() - (64 - bits)) as u64,
        UnOp::Brev => (a & mask).reverse_bits() >> (64 - bits),
        UnOp::Bfind => {
            // Position of the most significant non-sign bit (PTX bfind); none: 0xffffffff.
            let v = if ty.is_signed() && sext(a, bits) < 0 {
                !a & mask
            } else {
                a & mask
            };
            if v == 0 {
                0xffff_ffff
            } else {
                (63 - v.leading_zeros()) as u64
            }
        }
        _ => a,
    };
    if op == UnOp::Bfind || op == UnOp::Popc || op == UnOp::Clz {
        r & 0xffff_ffff
    } else {
        norm(r, ty)
    }
}

/// `bfind.shiftamt`: the left shift that moves the found bit to the top.
pub(crate) fn bfind_shiftamt(ty: Ty, pos: u64) -> u64 {
    if pos == 0xffff_ffff {
        pos
    } else {
        (ty.bits() as u64 - 1) - pos
    }
}

/// Two-source operations. `carry` is the carry flag (read by addc/subc, written with .cc).
pub(crate) fn binary(op: BinOp, ty: Ty, m: &Mods, a: u64, b: u64, carry: &mut bool) -> u64 {
    let rnd = m.rnd.unwrap_or(Rounding::Nearest);
    match ty {
        Ty::F32 => {
            let (x, y) = (f32_of(a), f32_of(b));
            let r = match op {
                BinOp::Add => fl::add_f32(x, y, rnd, m.ftz),
                BinOp::Sub => fl::sub_f32(x, y, rnd, m.ftz),
                BinOp::Mul => fl::mul_f32(x, y, rnd, m.ftz),
                BinOp::Div if m.approx => fl::div_approx_f32(x, y, m.ftz),
                BinOp::Div if m.full => fl::div_full_f32(x, y, m.ftz),
                BinOp::Div => fl::div_f32(x, y, rnd, m.ftz),
                BinOp::Min => fl::min_f32(x, y, m.nan, m.ftz),
                BinOp::Max => fl::max_f32(x, y, m.nan, m.ftz),
                BinOp::Copysign => {
                    // copysign.f32 d, a, b: the sign of a, the magnitude of b.
                    if nan32(b as u32) {
                        return fl::CANONICAL_NAN_F32 as u64;
                    }
                    return ((b as u32 & 0x7fff_ffff) | (a as u32 & 0x8000_0000)) as u64;
                }
                _ => return int_binary(op, ty, m, a, b, carry),
            };
            let r = if m.sat { fl::sat_f32(r) } else { r };
            bits32(r)
        }
        Ty::F64 => {
            let (x, y) = (f64_of(a), f64_of(b));
            let r = match op {
                BinOp::Add => fl::add_f64(x, y, rnd),
                BinOp::Sub => fl::sub_f64(x, y, rnd),
                BinOp::Mul => fl::mul_f64(x, y, rnd),
                BinOp::Div => fl::div_f64(x, y, rnd),
                BinOp::Min => fl::min_f64(x, y),
                BinOp::Max => fl::max_f64(x, y),
                BinOp::Copysign => {
                    if nan64(b) {
                        return fl::CANONICAL_NAN_F64;
                    }
                    return (b & !(1 << 63)) | (a & (1 << 63));
                }
                _ => return int_binary(op, ty, m, a, b, carry),
            };
            r.to_bits()
        }
        Ty::F16 | Ty::F16x2 | Ty::Bf16 | Ty::Bf16x2 => halves(ty, a, b, 0, |x, y, _| {
            let bf = is_bf(ty);
            let r = match op {
                BinOp::Add if bf => fl::add_bf16(x, y, rnd),
                BinOp::Sub if bf => fl::sub_bf16(x, y, rnd),
                BinOp::Mul if bf => fl::mul_bf16(x, y, rnd),
                BinOp::Add => fl::add_f16(x, y, rnd, m.ftz),
                BinOp::Sub => fl::sub_f16(x, y, rnd, m.ftz),
                BinOp::Mul => fl::mul_f16(x, y, rnd, m.ftz),
                BinOp::Min if bf => fl::min_bf16(x, y, m.nan),
                BinOp::Max if bf => fl::max_bf16(x, y, m.nan),
                BinOp::Min => fl::min_f16(x, y, m.nan, m.ftz),
                BinOp::Max => fl::max_f16(x, y, m.nan, m.ftz),
                _ => x,
            };
            if m.sat && !bf {
                fl::sat_f16(r)
            } else {
                r
            }
        }),
        _ => int_binary(op, ty, m, a, b, carry),
    }
}

fn int_binary(op: BinOp, ty: Ty, m: &Mods, a: u64, b: u64, carry: &mut bool) -> u64 {
    let bits = ty.bits();
    let mask = ty.mask();
    let signed = ty.is_signed();
    let (ua, ub) = (a & mask, b & mask);
    let (sa, sb) = (sext(a, bits), sext(b, bits));
    let r: u64 = match op {
        BinOp::Add | BinOp::Addc => {
            let cin = u64::from(op == BinOp::Addc && *carry);
            if m.sat && signed {
                let s = sa as i128 + sb as i128 + cin as i128;
                clamp_signed(s, bits) as u64
            } else {
                let s = ua as u128 + ub as u128 + cin as u128;
                if m.cc {
                    *carry = (s >> bits) & 1 == 1;
                }
                s as u64
            }
        }
        BinOp::Sub | BinOp::Subc => {
            let bin = u64::from(op == BinOp::Subc && *carry);
            if m.sat && signed {
                let s = sa as i128 - sb as i128 - bin as i128;
                clamp_signed(s, bits) as u64
            } else {
                let s = (ua as u128)
                    .wrapping_sub(ub as u128)
                    .wrapping_sub(bin as u128);
                if m.cc {
                    // The borrow.
                    *carry = (s >> bits) & 1 == 1;
                }
                s as u64
            }
        }
        BinOp::Mul => mul_int(m.mul.unwrap_or(MulMode::Lo), bits, signed, a, b),
        BinOp::Mul24 => {
            let (x, y) = if signed {
                (sext(a, 24) as i128, sext(b, 24) as i128)
            } else {
                ((a & 0xff_ffff) as i128, (b & 0xff_ffff) as i128)
            };
            let p = (x * y) as u64;
            match m.mul {
                Some(MulMode::Hi) => p >> 16,
                _ => p,
            }
        }
        BinOp::Div => {
            if signed {
                if sb == 0 {
                    u64::MAX
                } else {
                    sa.wrapping_div(sb) as u64
                }
            } else {
                ua.checked_div(ub).unwrap_or(u64::MAX)
            }
        }
        BinOp::Rem => {
            if signed {
                if sb == 0 {
                    sa as u64
                } else {
                    sa.wrapping_rem(sb) as u64
                }
            } else if ub == 0 {
                ua
            } else {
                ua % ub
            }
        }
        BinOp::Min => {
            if signed {
                let r = sa.min(sb);
                if m.relu {
                    r.max(0) as u64
                } else {
                    r as u64
                }
            } else {
                ua.min(ub)
            }
        }
        BinOp::Max => {
            if signed {
                let r = sa.max(sb);
                if m.relu {
                    r.max(0) as u64
                } else {
                    r as u64
                }
            } else {
                ua.max(ub)
            }
        }
        BinOp::And => a & b,
        BinOp::Or => a | b,
        BinOp::Xor => a ^ b,
        BinOp::Shl => {
            let n = b & 0xffff_ffff;
            if n >= bits as u64 {
                0
            } else {
                ua << n
            }
        }
        BinOp::Shr => {
            let n = b & 0xffff_ffff;
            if signed {
                let n = n.min(bits as u64 - 1);
                (sa >> n) as u64
            } else if n >= bits as u64 {
                0
            } else {
                ua >> n
            }
        }
        BinOp::Copysign => a,
    };
    if ty == Ty::Pred {
        r & 1
    } else {
        norm(r, ty)
    }
}

fn clamp_signed(v: i128, bits: u32) -> i64 {
    let hi = (1i128 << (bits - 1)) - 1;
    let lo = -(1i128 << (bits - 1));
    v.clamp(lo, hi) as i64
}

/// Integer multiply with `.lo`, `.hi` or `.wide` result selection.
pub(crate) fn mul_int(mode: MulMode, bits: u32, signed: bool, a: u64, b: u64) -> u64 {
    let p: i128 = if signed {
        sext(a, bits) as i128 * sext(b, bits) as i128
    } else {
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        ((a & mask) as u128 * (b & mask) as u128) as i128
    };
    match mode {
        MulMode::Lo => p as u64,
        MulMode::Hi => (p >> bits) as u64,
        MulMode::Wide => p as u64,
    }
}

/// Three-source operations.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ternary(
    op: TernOp,
    ty: Ty,
    m: &Mods,
    a: u64,
    b: u64,
    c: u64,
    carry: &mut bool,
) -> u64 {
    let rnd = m.rnd.unwrap_or(Rounding::Nearest);
    let bits = ty.bits();
    let signed = ty.is_signed();
    match op {
        TernOp::Fma | TernOp::Mad if ty == Ty::F32 => {
            let r = fl::fma_f32(f32_of(a), f32_of(b), f32_of(c), rnd, m.ftz);
            bits32(if m.sat { fl::sat_f32(r) } else { r })
        }
        TernOp::Fma | TernOp::Mad if ty == Ty::F64 => {
            fl::fma_f64(f64_of(a), f64_of(b), f64_of(c), rnd).to_bits()
        }
        TernOp::Fma if matches!(ty, Ty::F16 | Ty::F16x2 | Ty::Bf16 | Ty::Bf16x2) => {
            halves(ty, a, b, c, |x, y, z| {
                let r = if is_bf(ty) {
                    fl::fma_bf16(x, y, z, rnd)
                } else {
                    fl::fma_f16(x, y, z, rnd, m.ftz)
                };
                let r = if m.relu && (r & 0x8000) != 0 {
                    let nan = (r & 0x7fff) > if is_bf(ty) { 0x7f80 } else { 0x7c00 };
                    if nan {
                        r
                    } else {
                        0
                    }
                } else {
                    r
                };
                if m.sat {
                    f2h(ty, fl::sat_f32(h2f(ty, r)))
                } else {
                    r
                }
            })
        }
        TernOp::Mad | TernOp::Madc => {
            let mode = m.mul.unwrap_or(MulMode::Lo);
            let p = mul_int(mode, bits, signed, a, b);
            let (rbits, rty) = match mode {
                MulMode::Wide => (2 * bits, widen(ty)),
                _ => (bits, ty),
            };
            let cin = u128::from(op == TernOp::Madc && *carry);
            if m.sat && signed && mode == MulMode::Hi {
                let s = sext(p, bits) as i128 + sext(c, bits) as i128;
                return clamp_signed(s, bits) as u64;
            }
            let rmask = if rbits >= 64 {
                u64::MAX
            } else {
                (1u64 << rbits) - 1
            };
            let s = (p & rmask) as u128 + (c & rmask) as u128 + cin;
            if m.cc {
                *carry = (s >> rbits) & 1 == 1;
            }
            norm(s as u64, rty)
        }
        TernOp::Mad24 => {
            let (x, y) = if signed {
                (sext(a, 24) as i128, sext(b, 24) as i128)
            } else {
                ((a & 0xff_ffff) as i128, (b & 0xff_ffff) as i128)
            };
            let p = (x * y) as u64;
            let p = match m.mul {
                Some(MulMode::Hi) => p >> 16,
                _ => p,
            };
            norm(p.wrapping_add(c), ty)
        }
        TernOp::Sad => {
            let d = if signed {
                (sext(a, bits) as i128 - sext(b, bits) as i128).unsigned_abs() as u64
            } else {
                let (x, y) = (a & ty.mask(), b & ty.mask());
                x.abs_diff(y)
            };
            norm(d.wrapping_add(c), ty)
        }
        TernOp::Bfe => {
            let msb = bits - 1;
            let pos = (b & 0xff) as u32;
            let len = (c & 0xff) as u32;
            let sbit = if !signed || len == 0 {
                0
            } else {
                let i = (pos + len - 1).min(msb);
                (a >> i) & 1
            };
            let mut d = 0u64;
            for i in 0..=msb {
                let bit = if i < len && pos + i <= msb {
                    (a >> (pos + i)) & 1
                } else {
                    sbit
                };
                d |= bit << i;
            }
            norm(d, ty)
        }
        TernOp::Prmt(mode) => prmt(mode, a as u32, b as u32, c as u32) as u64,
        TernOp::ShfL(clamp) | TernOp::ShfR(clamp) => {
            let n = if clamp {
                (c as u32).min(32)
            } else {
                c as u32 & 31
            };
            let v = ((b as u32 as u64) << 32) | a as u32 as u64;
            if matches!(op, TernOp::ShfL(_)) {
                ((v << n) >> 32) & 0xffff_ffff
            } else {
                (v >> n) & 0xffff_ffff
            }
        }
        TernOp::Dp4a(sa, sb) => {
            let mut acc = c as u32 as i64;
            if sa || sb {
                acc = c as u32 as i32 as i64;
            }
            for i in 0..4 {
                let x = byte_val(a, i, sa);
                let y = byte_val(b, i, sb);
                acc += x * y;
            }
            norm(acc as u64, ty)
        }
        TernOp::Dp2aLo(sa, sb) | TernOp::Dp2aHi(sa, sb) => {
            let base = if matches!(op, TernOp::Dp2aHi(..)) {
                2
            } else {
                0
            };
            let mut acc = if sa || sb {
                c as u32 as i32 as i64
            } else {
                c as u32 as i64
            };
            for i in 0..2 {
                let x = if sa {
                    (a >> (16 * i)) as u16 as i16 as i64
                } else {
                    (a >> (16 * i)) as u16 as i64
                };
                let y = byte_val(b, base + i, sb);
                acc += x * y;
            }
            norm(acc as u64, ty)
        }
        TernOp::Fma => unreachable!("the parser gives fma a float type"),
    }
}

fn byte_val(v: u64, i: u32, signed: bool) -> i64 {
    let byte = (v >> (8 * i)) as u8;
    if signed {
        byte as i8 as i64
    } else {
        byte as i64
    }
}

fn widen(ty: Ty) -> Ty {
    match ty {
        Ty::U16 => Ty::U32,
        Ty::S16 => Ty::S32,
        Ty::U32 => Ty::U64,
        Ty::S32 => Ty::S64,
        other => other,
    }
}

/// `prmt.b32`: select bytes of the 8-byte value {b, a} (bytes 0-3 are a, 4-7 are b). The generic
/// form takes four 4-bit selectors from c (bit 3: replicate the byte's sign); the special modes use
/// c[1:0] (PTX ISA, prmt table): f4e b_i = s+i, b4e b_i = s-i, rc8 b_i = s, ecl b_i = max(i, s),
/// ecr b_i = min(i, s), rc16 b_i = 2 (s & 1) + (i & 1), all modulo 8.
pub(crate) fn prmt(mode: PrmtMode, a: u32, b: u32, c: u32) -> u32 {
    let src = ((b as u64) << 32) | a as u64;
    let byte = |i: u32| ((src >> (8 * (i & 7))) & 0xff) as u32;
    let s = c & 3;
    let mut out = 0u32;
    for i in 0..4u32 {
        let v = match mode {
            PrmtMode::Default => {
                let ctl = (c >> (4 * i)) & 0xf;
                let v = byte(ctl & 7);
                if ctl & 8 != 0 {
                    if v & 0x80 != 0 {
                        0xff
                    } else {
                        0
                    }
                } else {
                    v
                }
            }
            PrmtMode::F4e => byte(s + i),
            PrmtMode::B4e => byte(8 + s - i),
            PrmtMode::Rc8 => byte(s),
            PrmtMode::Ecl => byte(i.max(s)),
            PrmtMode::Ecr => byte(i.min(s)),
            PrmtMode::Rc16 => byte(2 * (s & 1) + (i & 1)),
        };
        out |= v << (8 * i);
    }
    out
}

/// `lop3.b32`: bit i of the result is bit ((a_i << 2) | (b_i << 1) | c_i) of the LUT.
pub(crate) fn lop3(a: u32, b: u32, c: u32, lut: u8) -> u32 {
    let mut out = 0u32;
    for i in 0..32 {
        let idx = (((a >> i) & 1) << 2) | (((b >> i) & 1) << 1) | ((c >> i) & 1);
        out |= (((lut >> idx) & 1) as u32) << i;
    }
    out
}

/// `bfi`: insert the low `len` bits of `f` into `b` at `pos`.
pub(crate) fn bfi(ty: Ty, f: u64, b: u64, pos: u64, len: u64) -> u64 {
    let msb = ty.bits() as u64 - 1;
    let pos = pos & 0xff;
    let len = len & 0xff;
    let mut r = b;
    let mut i = 0;
    while i < len && pos + i <= msb {
        let bit = (f >> i) & 1;
        r = (r & !(1 << (pos + i))) | (bit << (pos + i));
        i += 1;
    }
    r & ty.mask()
}

/// Flush a subnormal f32 input for comparisons with `.ftz`.
fn cmp_f32(v: u64, ftz: bool) -> f64 {
    let x = f32_of(v);
    (if ftz { fl::ftz_f32(x) } else { x }) as f64
}

/// The comparison of `setp`/`set`.
pub(crate) fn compare(cmp: Cmp, ty: Ty, ftz: bool, a: u64, b: u64) -> bool {
    if ty.is_float() {
        let (x, y) = match ty {
            Ty::F32 => (cmp_f32(a, ftz), cmp_f32(b, ftz)),
            Ty::F64 => (f64_of(a), f64_of(b)),
            _ => (h2f(ty, a as u16) as f64, h2f(ty, b as u16) as f64),
        };
        let unordered = x.is_nan() || y.is_nan();
        return match cmp {
            Cmp::Eq => !unordered && x == y,
            Cmp::Ne => !unordered && x != y,
            Cmp::Lt => !unordered && x < y,
            Cmp::Le => !unordered && x <= y,
            Cmp::Gt => !unordered && x > y,
            Cmp::Ge => !unordered && x >= y,
            Cmp::Equ => unordered || x == y,
            Cmp::Neu => unordered || x != y,
            Cmp::Ltu => unordered || x < y,
            Cmp::Leu => unordered || x <= y,
            Cmp::Gtu => unordered || x > y,
            Cmp::Geu => unordered || x >= y,
            Cmp::Num => !unordered,
            Cmp::Nan => unordered,
            Cmp::Lo | Cmp::Ls | Cmp::Hi | Cmp::Hs => false,
        };
    }
    let bits = ty.bits();
    let (ua, ub) = (a & ty.mask(), b & ty.mask());
    let (sa, sb) = (sext(a, bits), sext(b, bits));
    let signed = ty.is_signed();
    match cmp {
        Cmp::Eq => ua == ub,
        Cmp::Ne => ua != ub,
        Cmp::Lt if signed => sa < sb,
        Cmp::Le if signed => sa <= sb,
        Cmp::Gt if signed => sa > sb,
        Cmp::Ge if signed => sa >= sb,
        Cmp::Lt | Cmp::Lo => ua < ub,
        Cmp::Le | Cmp::Ls => ua <= ub,
        Cmp::Gt | Cmp::Hi => ua > ub,
        Cmp::Ge | Cmp::Hs => ua >= ub,
        _ => false,
    }
}

/// Combine a comparison with the predicate `c` (`setp.cmp.and` etc.).
pub(crate) fn combine(op: Option<BoolOp>, v: bool, c: bool) -> bool {
    match op {
        None => v,
        Some(BoolOp::And) => v && c,
        Some(BoolOp::Or) => v || c,
        Some(BoolOp::Xor) => v ^ c,
    }
}

/// `testp`.
pub(crate) fn testp(class: TestClass, ty: Ty, a: u64) -> bool {
    let x = if ty == Ty::F64 {
        f64_of(a)
    } else {
        f32_of(a) as f64
    };
    let subnormal = if ty == Ty::F64 {
        x.is_subnormal()
    } else {
        f32_of(a).is_subnormal()
    };
    match class {
        TestClass::Finite => x.is_finite(),
        TestClass::Infinite => x.is_infinite(),
        TestClass::Number => !x.is_nan(),
        TestClass::NotANumber => x.is_nan(),
        TestClass::Normal => x.is_finite() && x != 0.0 && !subnormal,
        TestClass::Subnormal => subnormal,
    }
}

/// The exact value of a float of type `ty` as f64 (16-bit and 32-bit floats widen exactly).
fn float_value(ty: Ty, a: u64) -> f64 {
    match ty {
        Ty::F32 => f32_of(a) as f64,
        Ty::F64 => f64_of(a),
        Ty::F16 => fl::f16_to_f32(a as u16) as f64,
        Ty::Bf16 => fl::bf16_to_f32(a as u16) as f64,
        _ => 0.0,
    }
}

/// `cvt` of one value (the packing conversions call it per half).
pub(crate) fn cvt(dty: Ty, sty: Ty, m: &Mods, int_round: bool, a: u64) -> u64 {
    let rnd = m.rnd.unwrap_or(Rounding::Nearest);
    let dst_float = dty.is_float();
    let src_float = sty.is_float();
    match (dst_float, src_float) {
        (false, false) => {
            // Integer to integer: extend per the source type, then truncate or saturate.
            let v: i128 = if sty.is_signed() {
                sext(a, sty.bits()) as i128
            } else {
                (a & sty.mask()) as i128
            };
            let r = if m.sat {
                let (lo, hi) = int_range(dty);
                v.clamp(lo, hi)
            } else {
                v
            };
            norm(r as u64, dty)
        }
        (true, false) => {
            let v: i128 = if sty.is_signed() {
                sext(a, sty.bits()) as i128
            } else {
                (a & sty.mask()) as i128
            };
            match dty {
                Ty::F32 => {
                    let r = fl::int_to_f32(v, rnd);
                    let r = if m.sat { fl::sat_f32(r) } else { r };
                    bits32(r)
                }
                Ty::F64 => fl::int_to_f64(v, rnd).to_bits(),
                Ty::F16 => fl::int_to_f16(v, rnd) as u64,
                Ty::Bf16 => fl::int_to_bf16(v, rnd) as u64,
                _ => 0,
            }
        }
        (false, true) => {
            let a = if sty == Ty::F32 && m.ftz {
                bits32(fl::ftz_f32(f32_of(a)))
            } else {
                a
            };
            let x = float_value(sty, a);
            // PTX ISA cvt: NaN gives 0, except from .f64 to a 64-bit integer (1 << 63).
            let r = if sty == Ty::F64 {
                fl::f64_to_int(x, rnd, dty.bits(), dty.is_signed())
            } else {
                fl::float_to_int(x, rnd, dty.bits(), dty.is_signed())
            };
            norm(r, dty)
        }
        (true, true) => cvt_float(dty, sty, m, int_round, a, rnd),
    }
}

fn cvt_float(dty: Ty, sty: Ty, m: &Mods, int_round: bool, a: u64, rnd: Rounding) -> u64 {
    match (dty, sty) {
        (Ty::F32, Ty::F32) => {
            let x = f32_of(a);
            let r = if int_round {
                fl::round_to_integral_f32(x, rnd, m.ftz, m.sat)
            } else {
                if nan32(a as u32) {
                    return if m.sat {
                        0
                    } else {
                        fl::CANONICAL_NAN_F32 as u64
                    };
                }
                let x = if m.ftz { fl::ftz_f32(x) } else { x };
                if m.sat {
                    fl::sat_f32(x)
                } else {
                    x
                }
            };
            bits32(r)
        }
        (Ty::F64, Ty::F64) => {
            let x = f64_of(a);
            if nan64(a) {
                return if m.sat { 0 } else { fl::CANONICAL_NAN_F64 };
            }
            let r = if int_round {
                fl::round_to_integral_f64(x, rnd)
            } else {
                x
            };
            if m.sat {
                fl::sat_f64(r).to_bits()
            } else {
                r.to_bits()
            }
        }
        (Ty::F32, Ty::F64) => bits32(fl::f64_to_f32(f64_of(a), rnd, m.ftz, m.sat)),
        (Ty::F64, Ty::F32) => {
            let x = f32_of(a);
            fl::f32_to_f64(if m.ftz { fl::ftz_f32(x) } else { x }, m.sat).to_bits()
        }
        (Ty::E4m3x2, Ty::F32) => fl::f32_to_e4m3_satfinite(f32_of(a), m.relu) as u64,
        (Ty::F16 | Ty::F16x2, Ty::F32) => {
            let x = f32_of(a);
            let x = if m.ftz { fl::ftz_f32(x) } else { x };
            fl::f32_to_f16(x, rnd, m.sat, m.relu) as u64
        }
        (Ty::Bf16 | Ty::Bf16x2, Ty::F32) => {
            let x = f32_of(a);
            let x = if m.ftz { fl::ftz_f32(x) } else { x };
            fl::f32_to_bf16(x, rnd, m.sat, m.relu) as u64
        }
        (Ty::F16, Ty::F64) => fl::f64_to_f16(f64_of(a), rnd, m.sat) as u64,
        (Ty::Bf16, Ty::F64) => fl::f64_to_bf16(f64_of(a), rnd, m.sat) as u64,
        (Ty::F32, Ty::F16) | (Ty::F32, Ty::Bf16) => {
            let x = h2f(sty, a as u16);
            let x = if m.sat { fl::sat_f32(x) } else { x };
            let x = if int_round {
                fl::round_to_integral_f32(x, rnd, m.ftz, false)
            } else {
                x
            };
            bits32(x)
        }
        (Ty::F64, Ty::F16) | (Ty::F64, Ty::Bf16) => (h2f(sty, a as u16) as f64).to_bits(),
        (Ty::F16, Ty::F16) | (Ty::Bf16, Ty::Bf16) => {
            let x = h2f(sty, a as u16);
            let x = if int_round {
                fl::round_to_integral_f32(x, rnd, false, false)
            } else {
                x
            };
            let x = if m.sat { fl::sat_f32(x) } else { x };
            f2h(dty, x) as u64
        }
        (Ty::F16, Ty::Bf16) | (Ty::Bf16, Ty::F16) => {
            let x = h2f(sty, a as u16);
            if dty == Ty::F16 {
                fl::f32_to_f16(x, rnd, m.sat, m.relu) as u64
            } else {
                fl::f32_to_bf16(x, rnd, m.sat, m.relu) as u64
            }
        }
        _ => a,
    }
}

fn int_range(ty: Ty) -> (i128, i128) {
    let bits = ty.bits();
    if ty.is_signed() {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prmt_default_selects_and_replicates_signs() {
        // {b, a} = 0x88776655_44332211: selector 0x3210 is a; 0x7654 is b; bit 3 replicates sign.
        let (a, b) = (0x4433_2211, 0x8877_6655);
        assert_eq!(prmt(PrmtMode::Default, a, b, 0x3210), a);
        assert_eq!(prmt(PrmtMode::Default, a, b, 0x7654), b);
        assert_eq!(prmt(PrmtMode::Default, a, b, 0x0123), 0x1122_3344);
        assert_eq!(prmt(PrmtMode::Default, a, b, 0x000f), 0x1111_11ff);
    }

    #[test]
    fn lop3_matches_its_truth_table() {
        // 0x96 = a ^ b ^ c; 0xe8 = majority; 0xf0 = a.
        let (a, b, c) = (0xf0f0_1234u32, 0xcccc_5678, 0xaaaa_9abc);
        assert_eq!(lop3(a, b, c, 0x96), a ^ b ^ c);
        assert_eq!(lop3(a, b, c, 0xe8), (a & b) | (a & c) | (b & c));
        assert_eq!(lop3(a, b, c, 0xf0), a);
    }

    #[test]
    fn bfe_and_bfi_follow_the_isa_pseudocode() {
        assert_eq!(
            ternary(
                TernOp::Bfe,
                Ty::U32,
                &Mods::default(),
                0xabcd_1234,
                8,
                8,
                &mut false
            ),
            0x12
        );
        // Signed: the extracted field's top bit is replicated.
        assert_eq!(
            ternary(
                TernOp::Bfe,
                Ty::S32,
                &Mods::default(),
                0x0000_8000,
                12,
                4,
                &mut false
            ) as i64,
            -8
        );
        assert_eq!(bfi(Ty::B32, 0xf, 0x0000_0000, 4, 28), 0xf0);
        assert_eq!(bfi(Ty::B32, 0xffff_ffff, 0, 28, 8), 0xf000_0000);
    }

    #[test]
    fn bfind_and_shifts() {
        assert_eq!(unary(UnOp::Bfind, Ty::U32, &Mods::default(), 0x10), 4);
        assert_eq!(
            unary(UnOp::Bfind, Ty::U32, &Mods::default(), 0),
            0xffff_ffff
        );
        assert_eq!(
            unary(UnOp::Bfind, Ty::S32, &Mods::default(), 0xffff_fff0),
            3
        );
        assert_eq!(bfind_shiftamt(Ty::U32, 4), 27);
        let m = Mods::default();
        assert_eq!(binary(BinOp::Shl, Ty::B32, &m, 1, 40, &mut false), 0);
        assert_eq!(
            binary(BinOp::Shr, Ty::S32, &m, 0x8000_0000, 40, &mut false) as i64,
            -1
        );
    }

    #[test]
    fn float_compares_are_ordered_unless_u() {
        let nan = 0x7fc0_0000u64;
        let one = 1.0f32.to_bits() as u64;
        assert!(!compare(Cmp::Ne, Ty::F32, false, nan, one));
        assert!(compare(Cmp::Neu, Ty::F32, false, nan, one));
        assert!(compare(Cmp::Nan, Ty::F32, false, nan, one));
        assert!(compare(Cmp::Lt, Ty::S32, false, 0xffff_ffff, 0));
        assert!(!compare(Cmp::Lo, Ty::U32, false, 0xffff_ffff, 0));
    }
}
