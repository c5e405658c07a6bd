//! Warp-wide execution of the arithmetic and logic instructions: operands are fetched for all 32
//! lanes at once (registers are stored lane-contiguous), the operation is chosen once per
//! instruction, and its loop runs over the active lanes. The most frequent (operation, type)
//! pairs have loops of their own; everything else goes through the per-lane semantics of
//! [`crate::exec::alu`], which remain the definition.

use super::{lanes, Exec, Warp, FULL};
use crate::exec::alu;
use crate::exec::float::{self as fl, Rounding};
use crate::ptx::ir::*;

/// One value per lane.
pub(super) type Lanes = [u64; 32];

/// Run `f` for each active lane.
#[inline(always)]
fn each(active: u32, mut f: impl FnMut(usize)) {
    if active == FULL {
        for l in 0..32 {
            f(l);
        }
    } else {
        for l in lanes(active) {
            f(l);
        }
    }
}

/// Sign-extend 32 bits.
#[inline(always)]
fn s32(v: u64) -> u64 {
    v as u32 as i32 as i64 as u64
}

#[inline(always)]
fn u32v(v: u64) -> u64 {
    v & 0xffff_ffff
}

impl<'a> Exec<'a> {
    /// The operand's values: the register's own lanes, or `tmp` filled with them.
    #[inline(always)]
    pub(super) fn src<'x>(
        &self,
        op: &Operand,
        w: &'x Warp,
        active: u32,
        tmp: &'x mut Lanes,
    ) -> &'x Lanes {
        match op {
            Operand::Reg(r) => {
                let base = *r as usize * 32;
                (&w.regs[base..base + 32]).try_into().unwrap_or(tmp)
            }
            Operand::Imm(v) => {
                *tmp = [*v; 32];
                tmp
            }
            _ => {
                for l in lanes(active) {
                    tmp[l] = self.get(op, w, l);
                }
                tmp
            }
        }
    }

    /// The operand's value in every active lane.
    #[inline]
    pub(super) fn fetch(&self, op: &Operand, w: &Warp, active: u32) -> Lanes {
        match op {
            Operand::Reg(r) => {
                let base = *r as usize * 32;
                let mut out = [0u64; 32];
                out.copy_from_slice(&w.regs[base..base + 32]);
                out
            }
            Operand::Imm(v) => [*v; 32],
            _ => {
                let mut out = [0u64; 32];
                for l in lanes(active) {
                    out[l] = self.get(op, w, l);
                }
                out
            }
        }
    }

    /// Write the active lanes of `vals` to the destination.
    #[inline]
    pub(super) fn put_lanes(w: &mut Warp, d: &Operand, active: u32, vals: &Lanes) {
        if let Operand::Reg(r) = d {
            let base = *r as usize * 32;
            let dst = &mut w.regs[base..base + 32];
            if active == FULL {
                dst.copy_from_slice(vals);
            } else {
                for l in lanes(active) {
                    dst[l] = vals[l];
                }
            }
        }
    }

    /// `op` of type `ty` on two operands; true when a specialised loop handled it.
    pub(super) fn binary_fast(
        op: BinOp,
        ty: Ty,
        m: &Mods,
        active: u32,
        a: &Lanes,
        b: &Lanes,
        out: &mut Lanes,
    ) -> bool {
        if m.cc || m.sat || m.relu || m.mul == Some(MulMode::Hi) {
            return false;
        }
        let wide = m.mul == Some(MulMode::Wide);
        macro_rules! go {
            ($f:expr) => {{
                let f = $f;
                each(active, |l| out[l] = f(a[l], b[l]));
                true
            }};
        }
        match (op, ty) {
            (BinOp::Add, Ty::U32 | Ty::B32) => go!(|x: u64, y: u64| u32v(x.wrapping_add(y))),
            (BinOp::Add, Ty::S32) => go!(|x: u64, y: u64| s32(x.wrapping_add(y))),
            (BinOp::Add, Ty::U64 | Ty::S64 | Ty::B64) => go!(|x: u64, y: u64| x.wrapping_add(y)),
            (BinOp::Sub, Ty::U32 | Ty::B32) => go!(|x: u64, y: u64| u32v(x.wrapping_sub(y))),
            (BinOp::Sub, Ty::S32) => go!(|x: u64, y: u64| s32(x.wrapping_sub(y))),
            (BinOp::Sub, Ty::U64 | Ty::S64 | Ty::B64) => go!(|x: u64, y: u64| x.wrapping_sub(y)),
            (BinOp::Mul, Ty::U32) if wide => go!(|x: u64, y: u64| u32v(x) * u32v(y)),
            (BinOp::Mul, Ty::S32) if wide => {
                go!(|x: u64, y: u64| (s32(x) as i64).wrapping_mul(s32(y) as i64) as u64)
            }
            (BinOp::Mul, Ty::U32 | Ty::B32) if !wide => {
                go!(|x: u64, y: u64| u32v(x.wrapping_mul(y)))
            }
            (BinOp::Mul, Ty::S32) if !wide => go!(|x: u64, y: u64| s32(x.wrapping_mul(y))),
            (BinOp::Mul, Ty::U64 | Ty::S64) if !wide => go!(|x: u64, y: u64| x.wrapping_mul(y)),
            (BinOp::And, _) if ty.bits() >= 32 => go!(|x: u64, y: u64| x & y),
            (BinOp::Or, _) if ty.bits() >= 32 => go!(|x: u64, y: u64| x | y),
            (BinOp::Xor, _) if ty.bits() >= 32 => go!(|x: u64, y: u64| x ^ y),
            (BinOp::And, Ty::Pred) => go!(|x: u64, y: u64| x & y & 1),
            (BinOp::Or, Ty::Pred) => go!(|x: u64, y: u64| (x | y) & 1),
            (BinOp::Xor, Ty::Pred) => go!(|x: u64, y: u64| (x ^ y) & 1),
            (BinOp::Shl, Ty::B32 | Ty::U32 | Ty::S32) => go!(|x: u64, y: u64| {
                let n = u32v(y);
                let r = if n >= 32 { 0 } else { u32v(x << n) };
                if ty == Ty::S32 {
                    s32(r)
                } else {
                    r
                }
            }),
            (BinOp::Shl, Ty::B64 | Ty::U64 | Ty::S64) => {
                go!(|x: u64, y: u64| if u32v(y) >= 64 { 0 } else { x << u32v(y) })
            }
            (BinOp::Shr, Ty::B32 | Ty::U32) => {
                go!(|x: u64, y: u64| if u32v(y) >= 32 { 0 } else { u32v(x) >> u32v(y) })
            }
            (BinOp::Shr, Ty::S32) => {
                go!(|x: u64, y: u64| ((s32(x) as i64) >> u32v(y).min(31)) as u64)
            }
            (BinOp::Shr, Ty::B64 | Ty::U64) => {
                go!(|x: u64, y: u64| if u32v(y) >= 64 { 0 } else { x >> u32v(y) })
            }
            (BinOp::Shr, Ty::S64) => go!(|x: u64, y: u64| ((x as i64) >> u32v(y).min(63)) as u64),
            (BinOp::Min, Ty::U32) => go!(|x: u64, y: u64| u32v(x).min(u32v(y))),
            (BinOp::Max, Ty::U32) => go!(|x: u64, y: u64| u32v(x).max(u32v(y))),
            (BinOp::Min, Ty::S32) => {
                go!(|x: u64, y: u64| (s32(x) as i64).min(s32(y) as i64) as u64)
            }
            (BinOp::Max, Ty::S32) => {
                go!(|x: u64, y: u64| (s32(x) as i64).max(s32(y) as i64) as u64)
            }
            (BinOp::Min, Ty::S64) => go!(|x: u64, y: u64| (x as i64).min(y as i64) as u64),
            (BinOp::Max, Ty::S64) => go!(|x: u64, y: u64| (x as i64).max(y as i64) as u64),
            (BinOp::Min, Ty::U64) => go!(|x: u64, y: u64| x.min(y)),
            (BinOp::Max, Ty::U64) => go!(|x: u64, y: u64| x.max(y)),
            (BinOp::Add | BinOp::Sub | BinOp::Mul, Ty::F32) if !m.ftz => {
                let r = m.rnd.unwrap_or(Rounding::Nearest);
                if r != Rounding::Nearest {
                    return false;
                }
                go!(|x: u64, y: u64| {
                    let (p, q) = (f32::from_bits(x as u32), f32::from_bits(y as u32));
                    let v = match op {
                        BinOp::Add => fl::add_f32(p, q, Rounding::Nearest, false),
                        BinOp::Sub => fl::sub_f32(p, q, Rounding::Nearest, false),
                        _ => fl::mul_f32(p, q, Rounding::Nearest, false),
                    };
                    v.to_bits() as u64
                })
            }
            _ => false,
        }
    }

    /// Three-source operations with specialised loops; true when handled.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ternary_fast(
        op: TernOp,
        ty: Ty,
        m: &Mods,
        active: u32,
        a: &Lanes,
        b: &Lanes,
        c: &Lanes,
        out: &mut Lanes,
    ) -> bool {
        if m.cc || m.sat || m.relu {
            return false;
        }
        macro_rules! go {
            ($f:expr) => {{
                let f = $f;
                each(active, |l| out[l] = f(a[l], b[l], c[l]));
                true
            }};
        }
        match (op, ty, m.mul) {
            (TernOp::Fma, Ty::F32, _) if !m.ftz => {
                let r = m.rnd.unwrap_or(Rounding::Nearest);
                go!(|x: u64, y: u64, z: u64| fl::fma_f32(
                    f32::from_bits(x as u32),
                    f32::from_bits(y as u32),
                    f32::from_bits(z as u32),
                    r,
                    false
                )
                .to_bits() as u64)
            }
            (TernOp::Mad, Ty::U32 | Ty::B32, None | Some(MulMode::Lo)) => {
                go!(|x: u64, y: u64, z: u64| u32v(x.wrapping_mul(y).wrapping_add(z)))
            }
            (TernOp::Mad, Ty::S32, None | Some(MulMode::Lo)) => {
                go!(|x: u64, y: u64, z: u64| s32(x.wrapping_mul(y).wrapping_add(z)))
            }
            (TernOp::Mad, Ty::U64 | Ty::S64, None | Some(MulMode::Lo)) => {
                go!(|x: u64, y: u64, z: u64| x.wrapping_mul(y).wrapping_add(z))
            }
            (TernOp::Mad, Ty::U32, Some(MulMode::Wide)) => {
                go!(|x: u64, y: u64, z: u64| (u32v(x) * u32v(y)).wrapping_add(z))
            }
            (TernOp::Mad, Ty::S32, Some(MulMode::Wide)) => go!(|x: u64, y: u64, z: u64| {
                ((s32(x) as i64).wrapping_mul(s32(y) as i64) as u64).wrapping_add(z)
            }),
            _ => false,
        }
    }

    /// `setp` without a combining predicate, for integer types and plain f32.
    pub(super) fn compare_fast(
        cmp: Cmp,
        ty: Ty,
        ftz: bool,
        active: u32,
        a: &Lanes,
        b: &Lanes,
        out: &mut Lanes,
    ) -> bool {
        macro_rules! go {
            ($key:expr, $op:tt) => {{
                let key = $key;
                each(active, |l| out[l] = (key(a[l]) $op key(b[l])) as u64);
                true
            }};
        }
        let signed = ty.is_signed();
        let bits = ty.bits();
        if !ty.is_float() && (bits == 32 || bits == 64) {
            let ukey = |v: u64| if bits == 32 { u32v(v) } else { v };
            let skey = |v: u64| if bits == 32 { s32(v) as i64 } else { v as i64 };
            return match cmp {
                Cmp::Eq => go!(ukey, ==),
                Cmp::Ne => go!(ukey, !=),
                Cmp::Lt if signed => go!(skey, <),
                Cmp::Le if signed => go!(skey, <=),
                Cmp::Gt if signed => go!(skey, >),
                Cmp::Ge if signed => go!(skey, >=),
                Cmp::Lt | Cmp::Lo => go!(ukey, <),
                Cmp::Le | Cmp::Ls => go!(ukey, <=),
                Cmp::Gt | Cmp::Hi => go!(ukey, >),
                Cmp::Ge | Cmp::Hs => go!(ukey, >=),
                _ => false,
            };
        }
        if ty == Ty::F32 && !ftz {
            // Rust's float comparisons are IEEE ordered: false when either side is NaN.
            let f = |v: u64| f32::from_bits(v as u32);
            return match cmp {
                Cmp::Eq => go!(f, ==),
                Cmp::Lt => go!(f, <),
                Cmp::Le => go!(f, <=),
                Cmp::Gt => go!(f, >),
                Cmp::Ge => go!(f, >=),
                _ => false,
            };
        }
        false
    }

    /// The generic per-lane path of a binary operation (any type, carries, saturation).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn binary_lanes(
        w: &mut Warp,
        op: BinOp,
        ty: Ty,
        m: &Mods,
        active: u32,
        a: &Lanes,
        b: &Lanes,
        out: &mut Lanes,
    ) {
        let wide = m.mul == Some(MulMode::Wide) && op == BinOp::Mul;
        for l in lanes(active) {
            let mut carry = w.carry & (1 << l) != 0;
            out[l] = if wide {
                let p = alu::mul_int(MulMode::Wide, ty.bits(), ty.is_signed(), a[l], b[l]);
                let wty = match ty {
                    Ty::U16 => Ty::U32,
                    Ty::S16 => Ty::S32,
                    Ty::U32 => Ty::U64,
                    Ty::S32 => Ty::S64,
                    t => t,
                };
                alu::norm(p, wty)
            } else {
                alu::binary(op, ty, m, a[l], b[l], &mut carry)
            };
            if m.cc {
                w.carry = (w.carry & !(1 << l)) | (u32::from(carry) << l);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fast loop agrees with the per-lane definition in alu, on edge and pseudo-random values.
    #[test]
    fn fast_paths_match_the_per_lane_semantics() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let edges = [
            0u64,
            1,
            2,
            31,
            32,
            33,
            63,
            64,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            u64::MAX,
            0xffff_ffff_8000_0000,
            1.0f32.to_bits() as u64,
            (-2.5f32).to_bits() as u64,
            f32::NAN.to_bits() as u64,
        ];
        let mut a = [0u64; 32];
        let mut b = [0u64; 32];
        let mut c = [0u64; 32];
        let tys = [
            Ty::U32,
            Ty::S32,
            Ty::B32,
            Ty::U64,
            Ty::S64,
            Ty::B64,
            Ty::F32,
            Ty::Pred,
        ];
        let bins = [
            BinOp::Add,
            BinOp::Sub,
            BinOp::Mul,
            BinOp::And,
            BinOp::Or,
            BinOp::Xor,
            BinOp::Shl,
            BinOp::Shr,
            BinOp::Min,
            BinOp::Max,
        ];
        for round in 0..64 {
            for l in 0..32 {
                a[l] = if round % 2 == 0 {
                    edges[(l + round) % edges.len()]
                } else {
                    next()
                };
                b[l] = if round % 3 == 0 {
                    edges[(l * 7 + round) % edges.len()]
                } else {
                    next() % 80
                };
                c[l] = next();
            }
            for &ty in &tys {
                let norm = |v: &[u64; 32]| v.map(|x| alu::norm(x, ty));
                let (na, nb, nc) = (norm(&a), norm(&b), norm(&c));
                for &op in &bins {
                    for mul in [None, Some(MulMode::Wide)] {
                        if mul.is_some() && (op != BinOp::Mul || !matches!(ty, Ty::U32 | Ty::S32)) {
                            continue;
                        }
                        let m = Mods {
                            mul,
                            ..Mods::default()
                        };
                        let mut fast = [0u64; 32];
                        if !Exec::binary_fast(op, ty, &m, FULL, &na, &nb, &mut fast) {
                            continue;
                        }
                        for l in 0..32 {
                            let want = if mul.is_some() {
                                let wty = if ty == Ty::U32 { Ty::U64 } else { Ty::S64 };
                                alu::norm(
                                    alu::mul_int(MulMode::Wide, 32, ty.is_signed(), na[l], nb[l]),
                                    wty,
                                )
                            } else {
                                alu::binary(op, ty, &m, na[l], nb[l], &mut false)
                            };
                            assert_eq!(
                                fast[l], want,
                                "{op:?} {ty:?} {mul:?} {:#x} {:#x}",
                                na[l], nb[l]
                            );
                        }
                    }
                }
                for cmp in [
                    Cmp::Eq,
                    Cmp::Ne,
                    Cmp::Lt,
                    Cmp::Le,
                    Cmp::Gt,
                    Cmp::Ge,
                    Cmp::Lo,
                    Cmp::Hs,
                ] {
                    let mut fast = [0u64; 32];
                    if Exec::compare_fast(cmp, ty, false, FULL, &na, &nb, &mut fast) {
                        for l in 0..32 {
                            assert_eq!(
                                fast[l],
                                alu::compare(cmp, ty, false, na[l], nb[l]) as u64,
                                "{cmp:?} {ty:?}"
                            );
                        }
                    }
                }
                for (op, mul) in [
                    (TernOp::Fma, None),
                    (TernOp::Mad, None),
                    (TernOp::Mad, Some(MulMode::Wide)),
                ] {
                    let m = Mods {
                        mul,
                        rnd: Some(Rounding::Nearest),
                        ..Mods::default()
                    };
                    let mut fast = [0u64; 32];
                    if Exec::ternary_fast(op, ty, &m, FULL, &na, &nb, &nc, &mut fast) {
                        for l in 0..32 {
                            let want = alu::ternary(op, ty, &m, na[l], nb[l], nc[l], &mut false);
                            assert_eq!(fast[l], want, "{op:?} {ty:?} {mul:?}");
                        }
                    }
                }
            }
        }
    }
}
