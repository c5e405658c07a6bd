//! The bodies of the non-control instructions: each runs for the active lanes of one warp group.

use super::{elements, from_bytes, lanes, to_bytes, AsyncCopy, Exec, Target, Warp, Who};
use crate::exec::alu;
use crate::exec::finding::{codes, Check, Finding};
use crate::exec::float as fl;
use crate::exec::memory::{
    decode_generic, Window, CONST_WINDOW, LOCAL_WINDOW, PARAM_WINDOW, SHARED_WINDOW,
};
use crate::ptx::ir::*;

impl<'a> Exec<'a> {
    pub(super) fn who(w: &Warp, pc: u32, lane: usize) -> Who {
        Who {
            pc,
            warp: w.index,
            lane: lane as u32,
            wep: w.epoch,
        }
    }

    /// Run `op` for the `active` lanes. Returns false when the lanes now wait at a collective
    /// (they stay at this instruction).
    pub(super) fn execute(
        &mut self,
        w: &mut Warp,
        pc: u32,
        active: u32,
        op: &Op,
    ) -> Result<bool, Box<Finding>> {
        match op {
            Op::Mov { ty, d, a } => {
                if matches!(d, Operand::Reg(_)) && !matches!(a, Operand::Vector(_)) {
                    let mut v = self.fetch(a, w, active);
                    if ty.bits() < 64 {
                        for x in v.iter_mut() {
                            *x = alu::norm(*x, *ty);
                        }
                    }
                    Self::put_lanes(w, d, active, &v);
                } else {
                    for l in lanes(active) {
                        self.mov(w, *ty, d, a, l);
                    }
                }
            }
            Op::Un { op, ty, m, d, a } => {
                let av = self.fetch(a, w, active);
                let mut out = [0u64; 32];
                for l in lanes(active) {
                    let mut r = alu::unary(*op, *ty, m, av[l]);
                    if *op == UnOp::Bfind && m.shiftamt {
                        r = alu::bfind_shiftamt(*ty, r);
                    }
                    out[l] = r;
                }
                Self::put_lanes(w, d, active, &out);
            }
            Op::Bin { op, ty, m, d, a, b } => {
                let mut out = [0u64; 32];
                let (mut ta, mut tb) = ([0u64; 32], [0u64; 32]);
                let av = self.src(a, w, active, &mut ta);
                let bv = self.src(b, w, active, &mut tb);
                if !Self::binary_fast(*op, *ty, m, active, av, bv, &mut out) {
                    let (av, bv) = (*av, *bv);
                    Self::binary_lanes(w, *op, *ty, m, active, &av, &bv, &mut out);
                }
                Self::put_lanes(w, d, active, &out);
            }
            Op::Tern {
                op,
                ty,
                m,
                d,
                a,
                b,
                c,
            } => {
                let mut out = [0u64; 32];
                let (mut ta, mut tb, mut tc) = ([0u64; 32], [0u64; 32], [0u64; 32]);
                let av = self.src(a, w, active, &mut ta);
                let bv = self.src(b, w, active, &mut tb);
                let cv = self.src(c, w, active, &mut tc);
                let done = Self::ternary_fast(*op, *ty, m, active, av, bv, cv, &mut out);
                let (av, bv, cv) = (*av, *bv, *cv);
                if !done {
                    for l in lanes(active) {
                        let mut carry = w.carry & (1 << l) != 0;
                        out[l] = alu::ternary(*op, *ty, m, av[l], bv[l], cv[l], &mut carry);
                        if m.cc {
                            w.carry = (w.carry & !(1 << l)) | (u32::from(carry) << l);
                        }
                    }
                }
                Self::put_lanes(w, d, active, &out);
            }
            Op::Bfi {
                ty,
                d,
                f,
                b,
                pos,
                len,
            } => {
                for l in lanes(active) {
                    let r = alu::bfi(
                        *ty,
                        self.get(f, w, l),
                        self.get(b, w, l),
                        self.get(pos, w, l),
                        self.get(len, w, l),
                    );
                    Self::set(w, d, l, r);
                }
            }
            Op::Lop3 { d, a, b, c, lut } => {
                for l in lanes(active) {
                    let r = alu::lop3(
                        self.get(a, w, l) as u32,
                        self.get(b, w, l) as u32,
                        self.get(c, w, l) as u32,
                        *lut,
                    );
                    Self::set(w, d, l, r as u64);
                }
            }
            Op::Selp { ty, d, a, b, c } => {
                let mut out = [0u64; 32];
                let (mut ta, mut tb, mut tc) = ([0u64; 32], [0u64; 32], [0u64; 32]);
                let av = self.src(a, w, active, &mut ta);
                let bv = self.src(b, w, active, &mut tb);
                let cv = self.src(c, w, active, &mut tc);
                for l in lanes(active) {
                    out[l] = alu::norm(if cv[l] & 1 != 0 { av[l] } else { bv[l] }, *ty);
                }
                Self::put_lanes(w, d, active, &out);
            }
            Op::Slct {
                ty,
                cty,
                ftz,
                d,
                a,
                b,
                c,
            } => {
                for l in lanes(active) {
                    let cv = self.get(c, w, l);
                    let take_a = if *cty == Ty::F32 {
                        let f = f32::from_bits(cv as u32);
                        let f = if *ftz { fl::ftz_f32(f) } else { f };
                        f >= 0.0 || (f == 0.0)
                    } else {
                        alu::sext(cv, 32) >= 0
                    };
                    let r = if take_a {
                        self.get(a, w, l)
                    } else {
                        self.get(b, w, l)
                    };
                    Self::set(w, d, l, alu::norm(r, *ty));
                }
            }
            Op::Setp {
                cmp,
                ty,
                ftz,
                combine,
                p,
                q,
                a,
                b,
                c,
            } => {
                let mut out = [0u64; 32];
                let (mut ta, mut tb) = ([0u64; 32], [0u64; 32]);
                let av = self.src(a, w, active, &mut ta);
                let bv = self.src(b, w, active, &mut tb);
                let fast = combine.is_none()
                    && matches!(q, Operand::Sink)
                    && Self::compare_fast(*cmp, *ty, *ftz, active, av, bv, &mut out);
                if fast {
                    Self::put_lanes(w, p, active, &out);
                } else {
                    let (av, bv) = (*av, *bv);
                    let cv = self.fetch(c, w, active);
                    let mut out_q = [0u64; 32];
                    for l in lanes(active) {
                        let v = alu::compare(*cmp, *ty, *ftz, av[l], bv[l]);
                        let c = cv[l] & 1 != 0;
                        out[l] = alu::combine(*combine, v, c) as u64;
                        out_q[l] = alu::combine(*combine, !v, c) as u64;
                    }
                    Self::put_lanes(w, p, active, &out);
                    Self::put_lanes(w, q, active, &out_q);
                }
            }
            Op::Set {
                cmp,
                dty,
                ty,
                ftz,
                combine,
                d,
                a,
                b,
                c,
            } => {
                for l in lanes(active) {
                    let v = alu::compare(*cmp, *ty, *ftz, self.get(a, w, l), self.get(b, w, l));
                    let cv = self.get(c, w, l) & 1 != 0;
                    let t = alu::combine(*combine, v, cv);
                    let r = match dty {
                        Ty::F32 => {
                            if t {
                                1.0f32.to_bits() as u64
                            } else {
                                0
                            }
                        }
                        _ => {
                            if t {
                                dty.mask()
                            } else {
                                0
                            }
                        }
                    };
                    Self::set(w, d, l, alu::norm(r, *dty));
                }
            }
            Op::Testp { class, ty, d, a } => {
                for l in lanes(active) {
                    let r = alu::testp(*class, *ty, self.get(a, w, l));
                    Self::set(w, d, l, r as u64);
                }
            }
            Op::Cvt {
                dty,
                sty,
                m,
                int_round,
                d,
                a,
                b,
            } => {
                for l in lanes(active) {
                    let x = self.get(a, w, l);
                    let r = match b {
                        Some(b) => {
                            // Packed: a goes to the upper half, b to the lower.
                            let y = self.get(b, w, l);
                            let half = dty.bits() / 2;
                            let mask = (1u64 << half) - 1;
                            let hi = alu::cvt(*dty, *sty, m, *int_round, x) & mask;
                            let lo = alu::cvt(*dty, *sty, m, *int_round, y) & mask;
                            (hi << half) | lo
                        }
                        None => alu::cvt(*dty, *sty, m, *int_round, x),
                    };
                    Self::set(w, d, l, r);
                }
            }
            Op::Cvta { to, space, d, a } => {
                for l in lanes(active) {
                    let x = self.get(a, w, l);
                    let base = match space {
                        Space::Shared => SHARED_WINDOW,
                        Space::Local => LOCAL_WINDOW,
                        Space::Param => PARAM_WINDOW,
                        Space::Const => CONST_WINDOW,
                        _ => 0,
                    };
                    let r = if *to {
                        x.wrapping_sub(base)
                    } else {
                        x.wrapping_add(base)
                    };
                    Self::set(w, d, l, r);
                }
            }
            Op::Isspacep { space, d, a } => {
                for l in lanes(active) {
                    let win = decode_generic(self.get(a, w, l));
                    let r = matches!(
                        (space, win),
                        (Space::Global, Window::Global(_))
                            | (Space::Shared, Window::Shared(_))
                            | (Space::Local, Window::Local(_))
                            | (Space::Param, Window::Param(_))
                            | (Space::Const, Window::Const(_))
                    );
                    Self::set(w, d, l, r as u64);
                }
            }
            Op::Ld { space, ty, d, addr } => self.load(w, pc, active, *space, *ty, d, addr)?,
            Op::St { space, ty, addr, a } => self.store(w, pc, active, *space, *ty, addr, a)?,
            Op::Atom {
                space,
                op,
                ty,
                d,
                addr,
                b,
                c,
            } => self.atomic(
                w,
                pc,
                active,
                *space,
                *op,
                *ty,
                d.as_ref(),
                addr,
                b,
                c.as_ref(),
            )?,
            Op::CpAsync {
                size,
                dst,
                src,
                src_size,
                ignore_src,
            } => self.cp_async(
                w,
                pc,
                active,
                *size,
                dst,
                src,
                src_size.as_ref(),
                ignore_src.as_ref(),
            )?,
            Op::CpAsyncCommit => {
                for l in lanes(active) {
                    let open = std::mem::take(&mut w.asyncs[l].open);
                    w.asyncs[l].committed.push_back(open);
                }
            }
            Op::CpAsyncWait { n } => {
                for l in lanes(active) {
                    let who = Self::who(w, pc, l);
                    let mut a = std::mem::take(&mut w.asyncs[l]);
                    if *n == 0 {
                        // wait_all also waits for copies not yet committed.
                        let open = std::mem::take(&mut a.open);
                        if !open.is_empty() {
                            a.committed.push_back(open);
                        }
                    }
                    self.complete_async(&mut a, *n as usize, who);
                    w.asyncs[l] = a;
                }
            }
            Op::Ldmatrix {
                num,
                trans,
                d,
                addr,
            } => return self.ldmatrix(w, pc, active, *num, *trans, d, addr),
            Op::Mma {
                shape,
                aty,
                cty,
                dty,
                d,
                a,
                b,
                c,
            } => return self.mma(w, pc, active, *shape, *aty, *cty, *dty, d, a, b, c),
            Op::BarWarp { mask } => {
                let Some(members) = self.collective(w, pc, active, mask, "bar.warp.sync")? else {
                    return Ok(false);
                };
                w.epoch = w.epoch.wrapping_add(1);
                self.release(w, pc, members, active);
            }
            Op::Shfl {
                mode,
                d,
                p,
                a,
                b,
                c,
                mask,
            } => {
                let Some(members) = self.collective(w, pc, active, mask, "shfl.sync")? else {
                    return Ok(false);
                };
                let mut src = [0u64; 32];
                for l in lanes(members) {
                    src[l] = self.get(a, w, l);
                }
                let mut out = [(0u64, false); 32];
                for l in lanes(members) {
                    let bval = (self.get(b, w, l) & 31) as i32;
                    let cv = self.get(c, w, l) as u32;
                    let cval = (cv & 31) as i32;
                    let segmask = ((cv >> 8) & 31) as i32;
                    let lane = l as i32;
                    let max_lane = (lane & segmask) | (cval & !segmask);
                    let min_lane = lane & segmask;
                    let (j, pval) = match mode {
                        ShflMode::Up => {
                            let j = lane - bval;
                            (j, j >= max_lane)
                        }
                        ShflMode::Down => {
                            let j = lane + bval;
                            (j, j <= max_lane)
                        }
                        ShflMode::Bfly => {
                            let j = lane ^ bval;
                            (j, j <= max_lane)
                        }
                        ShflMode::Idx => {
                            let j = min_lane | (bval & !segmask);
                            (j, j <= max_lane)
                        }
                    };
                    let j = if pval { j } else { lane };
                    if self.opts.checks.synccheck && members & (1u32 << (j as u32 & 31)) == 0 {
                        return Err(self.finding(
                            Check::Synccheck,
                            "shfl.sync reads a lane outside its member mask",
                            pc,
                            w.index * 32 + l as u32,
                            None,
                            format!(
                                "lane {l} reads lane {j}, which is not in the mask {members:#010x}"
                            ),
                            codes::ILLEGAL_INSTRUCTION,
                        ));
                    }
                    out[l] = (src[j as usize & 31], pval);
                }
                for l in lanes(members) {
                    Self::set(w, d, l, out[l].0 & 0xffff_ffff);
                    Self::set(w, p, l, out[l].1 as u64);
                }
                self.release(w, pc, members, active);
            }
            Op::Vote { mode, d, a, mask } => {
                let Some(members) = self.collective(w, pc, active, mask, "vote.sync")? else {
                    return Ok(false);
                };
                let mut ballot = 0u32;
                for l in lanes(members) {
                    if self.get(a, w, l) & 1 != 0 {
                        ballot |= 1 << l;
                    }
                }
                let r = match mode {
                    VoteMode::All => (ballot == members) as u64,
                    VoteMode::Any => (ballot != 0) as u64,
                    VoteMode::Uni => (ballot == 0 || ballot == members) as u64,
                    VoteMode::Ballot => ballot as u64,
                };
                for l in lanes(members) {
                    Self::set(w, d, l, r);
                }
                self.release(w, pc, members, active);
            }
            Op::Match {
                all,
                ty,
                d,
                p,
                a,
                mask,
            } => {
                let Some(members) = self.collective(w, pc, active, mask, "match.sync")? else {
                    return Ok(false);
                };
                let mut vals = [0u64; 32];
                for l in lanes(members) {
                    vals[l] = self.get(a, w, l) & ty.mask();
                }
                let first = vals[members.trailing_zeros() as usize];
                let all_equal = lanes(members).all(|l| vals[l] == first);
                for l in lanes(members) {
                    let r = if *all {
                        if all_equal {
                            members
                        } else {
                            0
                        }
                    } else {
                        lanes(members)
                            .filter(|&o| vals[o] == vals[l])
                            .fold(0u32, |acc, o| acc | (1 << o))
                    };
                    Self::set(w, d, l, r as u64);
                    Self::set(w, p, l, all_equal as u64);
                }
                self.release(w, pc, members, active);
            }
            Op::Redux { op, ty, d, a, mask } => {
                let Some(members) = self.collective(w, pc, active, mask, "redux.sync")? else {
                    return Ok(false);
                };
                let signed = ty.is_signed();
                let mut acc: Option<u64> = None;
                for l in lanes(members) {
                    let v = self.get(a, w, l) & 0xffff_ffff;
                    acc = Some(match acc {
                        None => v,
                        Some(x) => match op {
                            ReduxOp::Add => x.wrapping_add(v) & 0xffff_ffff,
                            ReduxOp::And => x & v,
                            ReduxOp::Or => x | v,
                            ReduxOp::Xor => x ^ v,
                            ReduxOp::Min if signed => {
                                (x as u32 as i32).min(v as u32 as i32) as u32 as u64
                            }
                            ReduxOp::Max if signed => {
                                (x as u32 as i32).max(v as u32 as i32) as u32 as u64
                            }
                            ReduxOp::Min => x.min(v),
                            ReduxOp::Max => x.max(v),
                        },
                    });
                }
                let r = alu::norm(acc.unwrap_or(0), *ty);
                for l in lanes(members) {
                    Self::set(w, d, l, r);
                }
                self.release(w, pc, members, active);
            }
            Op::Activemask { d } => {
                for l in lanes(active) {
                    Self::set(w, d, l, active as u64);
                }
            }
            Op::Call { .. } => {
                return Err(self.finding(
                    Check::Execution,
                    "unsupported call",
                    pc,
                    w.index * 32 + active.trailing_zeros(),
                    None,
                    "device-function calls are not supported",
                    codes::NOT_SUPPORTED,
                ))
            }
            Op::Nop => {}
            Op::Bra { .. } | Op::Exit | Op::Ret | Op::Trap | Op::Bar { .. } => {
                unreachable!("control flow is handled by step")
            }
        }
        Ok(true)
    }

    /// After a completed collective: move the lanes that had waited for it (members outside the
    /// executing group, already released by `rendezvous`) past it.
    pub(super) fn release(&self, w: &mut Warp, pc: u32, members: u32, active: u32) {
        for l in lanes(members & !active) {
            w.pc[l] = pc + 1;
        }
    }

    /// A warp collective with member mask operand `mask`: every member, once all have arrived
    /// (None: the arriving lanes wait).
    fn collective(
        &self,
        w: &mut Warp,
        pc: u32,
        active: u32,
        mask: &Operand,
        what: &'static str,
    ) -> Result<Option<u32>, Box<Finding>> {
        let m = self.uniform_mask(w, pc, active, mask, what)?;
        self.rendezvous(w, pc, active, m, what)
    }

    /// The member mask of a collective, which every executing lane must give the same.
    fn uniform_mask(
        &self,
        w: &Warp,
        pc: u32,
        active: u32,
        mask: &Operand,
        what: &'static str,
    ) -> Result<u32, Box<Finding>> {
        let first = active.trailing_zeros() as usize;
        let m = self.get(mask, w, first) as u32;
        if self.opts.checks.synccheck {
            for l in lanes(active) {
                let ml = self.get(mask, w, l) as u32;
                if ml != m {
                    return Err(self.finding(
                        Check::Synccheck,
                        format!("{what} with different member masks"),
                        pc,
                        w.index * 32 + l as u32,
                        None,
                        format!("lane {first} gives {m:#010x}, lane {l} gives {ml:#010x}"),
                        codes::ILLEGAL_INSTRUCTION,
                    ));
                }
            }
        }
        Ok(m)
    }

    fn mov(&self, w: &mut Warp, ty: Ty, d: &Operand, a: &Operand, l: usize) {
        match (d, a) {
            (Operand::Vector(parts), src) => {
                // Unpack.
                let v = self.get(src, w, l);
                let n = parts.len() as u32;
                let bits = ty.bits() / n;
                let mask = if bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << bits) - 1
                };
                for (i, p) in parts.iter().enumerate() {
                    Self::set(w, p, l, (v >> (bits * i as u32)) & mask);
                }
            }
            (dst, Operand::Vector(parts)) => {
                let n = parts.len() as u32;
                let bits = ty.bits() / n;
                let mask = if bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << bits) - 1
                };
                let mut v = 0u64;
                for (i, p) in parts.iter().enumerate() {
                    v |= (self.get(p, w, l) & mask) << (bits * i as u32);
                }
                Self::set(w, dst, l, v);
            }
            (dst, src) => {
                let v = self.get(src, w, l);
                Self::set(w, dst, l, alu::norm(v, ty));
            }
        }
    }

    fn access_address(&self, space: Space, addr: &Address, w: &Warp, l: usize) -> u64 {
        if space == Space::Generic {
            self.generic_address(addr, w, l)
        } else {
            self.address(addr, w, l)
        }
    }

    /// Run `body` for each active lane's access of `total` bytes (aligned to its size) in `space`
    /// at `addr`, with the resolved target and the address; then count the warp's request.
    #[allow(clippy::too_many_arguments)]
    fn each_access(
        &mut self,
        w: &mut Warp,
        pc: u32,
        active: u32,
        space: Space,
        addr: &Address,
        total: usize,
        write: bool,
        mut body: impl FnMut(&mut Self, &mut Warp, Target, usize, u64, Who) -> Result<(), Box<Finding>>,
    ) -> Result<(), Box<Finding>> {
        let what = if write { "store" } else { "load" };
        for l in lanes(active) {
            let who = Self::who(w, pc, l);
            let a = self.access_address(space, addr, w, l);
            let t = self.resolve(space, a, total as u32, total as u32, write, who, what)?;
            self.note_access(&t, a, total as u32, l);
            body(self, w, t, l, a, who)?;
        }
        self.flush_access_stats(pc);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn load(
        &mut self,
        w: &mut Warp,
        pc: u32,
        active: u32,
        space: Space,
        ty: Ty,
        d: &Operand,
        addr: &Address,
    ) -> Result<(), Box<Finding>> {
        let parts = elements(d);
        let esize = ty.bytes() as usize;
        let total = esize * parts.len();
        self.each_access(
            w,
            pc,
            active,
            space,
            addr,
            total,
            false,
            |ex, w, t, l, a, who| {
                let mut buf = [0u8; 64];
                ex.read_bytes(&t, &mut buf[..total], who, a)?;
                for (i, p) in parts.iter().enumerate() {
                    let v = from_bytes(&buf[i * esize..(i + 1) * esize]);
                    Self::set(w, p, l, alu::norm(v, ty));
                }
                Ok(())
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        w: &mut Warp,
        pc: u32,
        active: u32,
        space: Space,
        ty: Ty,
        addr: &Address,
        a: &Operand,
    ) -> Result<(), Box<Finding>> {
        let parts = elements(a);
        let esize = ty.bytes() as usize;
        let total = esize * parts.len();
        self.each_access(
            w,
            pc,
            active,
            space,
            addr,
            total,
            true,
            |ex, w, t, l, at, who| {
                let mut buf = [0u8; 64];
                for (i, p) in parts.iter().enumerate() {
                    let v = ex.get(p, w, l);
                    buf[i * esize..(i + 1) * esize].copy_from_slice(&to_bytes(v, esize)[..esize]);
                }
                ex.write_bytes(&t, &buf[..total], who, at)
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn atomic(
        &mut self,
        w: &mut Warp,
        pc: u32,
        active: u32,
        space: Space,
        op: AtomOp,
        ty: Ty,
        d: Option<&Operand>,
        addr: &Address,
        b: &Operand,
        c: Option<&Operand>,
    ) -> Result<(), Box<Finding>> {
        let size = ty.bytes() as usize;
        for l in lanes(active) {
            let who = Self::who(w, pc, l);
            let at = self.access_address(space, addr, w, l);
            let t = self.resolve(space, at, size as u32, size as u32, true, who, "atomic")?;
            if matches!(t, Target::Local(_) | Target::Param(_) | Target::Const(_)) {
                return Err(self.finding(
                    Check::Memcheck,
                    "atomic on a non-global, non-shared address",
                    pc,
                    who.tid(),
                    Some(at),
                    "atomics need global or shared memory",
                    codes::ILLEGAL_ADDRESS,
                ));
            }
            let mut buf = [0u8; 8];
            // Atomics neither race with each other nor count as plain accesses for racecheck.
            let old = match t {
                Target::Shared(off) => {
                    if self.opts.checks.initcheck {
                        for i in off..off + size as u64 {
                            if self.shadow[i as usize].init != self.generation {
                                return Err(self.finding(
                                    Check::Initcheck,
                                    "uninitialized shared memory read",
                                    pc,
                                    who.tid(),
                                    Some(at),
                                    "an atomic read a shared byte never written in this block",
                                    codes::LAUNCH_FAILED,
                                ));
                            }
                        }
                    }
                    from_bytes(&self.shared[off as usize..off as usize + size])
                }
                _ => {
                    self.read_bytes(&t, &mut buf[..size], who, at)?;
                    from_bytes(&buf[..size])
                }
            };
            let bv = self.get(b, w, l);
            let new = atom_op(op, ty, old, bv, c.map(|c| self.get(c, w, l)).unwrap_or(0));
            let nb = to_bytes(new, size);
            match t {
                Target::Shared(off) => {
                    self.shared[off as usize..off as usize + size].copy_from_slice(&nb[..size]);
                    for i in off..off + size as u64 {
                        self.shadow[i as usize].init = self.generation;
                    }
                }
                _ => self.write_bytes(&t, &nb[..size], who, at)?,
            }
            self.note_access(&t, at, size as u32, l);
            if let Some(d) = d {
                Self::set(w, d, l, alu::norm(old, ty));
            }
        }
        self.flush_access_stats(pc);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn cp_async(
        &mut self,
        w: &mut Warp,
        pc: u32,
        active: u32,
        size: u32,
        dst: &Address,
        src: &Address,
        src_size: Option<&Operand>,
        ignore_src: Option<&Operand>,
    ) -> Result<(), Box<Finding>> {
        for l in lanes(active) {
            let who = Self::who(w, pc, l);
            let d = self.address(dst, w, l);
            let s = self.address(src, w, l);
            let read = match (src_size, ignore_src) {
                (Some(n), _) => (self.get(n, w, l) as u32).min(size),
                (None, Some(p)) if self.get(p, w, l) & 1 != 0 => 0,
                _ => size,
            };
            let dt = self.resolve(
                Space::Shared,
                d,
                size,
                size,
                true,
                who,
                "cp.async destination",
            )?;
            let Target::Shared(doff) = dt else {
                unreachable!()
            };
            let mut data = [0u8; 16];
            if read > 0 {
                let st = self.resolve(
                    Space::Global,
                    s,
                    read,
                    size.min(read.next_power_of_two()),
                    false,
                    who,
                    "cp.async source",
                )?;
                self.read_bytes(&st, &mut data[..read as usize], who, s)?;
                self.note_access(&st, s, read, l);
            }
            // The destination is written when the copy completes; any access before that is a
            // racecheck finding. Issuing it is a write for hazard purposes.
            if self.opts.checks.racecheck {
                self.shared_write_check(doff, size, who, d)?;
                for i in doff..doff + size as u64 {
                    let sh = &mut self.shadow[i as usize];
                    sh.pending = who.tid() + 1;
                    sh.pending_gen = self.generation;
                }
            }
            self.note_access(&dt, d, size, l);
            w.asyncs[l].open.push(AsyncCopy {
                dst: doff as u32,
                len: size as u8,
                data,
            });
        }
        self.flush_access_stats(pc);
        Ok(())
    }
}

/// The new value of an atomic read-modify-write.
fn atom_op(op: AtomOp, ty: Ty, old: u64, b: u64, c: u64) -> u64 {
    let signed = ty.is_signed();
    let bits = ty.bits();
    let mask = ty.mask();
    match (op, ty) {
        (AtomOp::Add, Ty::F32) => {
            // atom.add.f32 rounds to nearest even and flushes subnormals (PTX ISA, atom).
            fl::add_f32(
                f32::from_bits(old as u32),
                f32::from_bits(b as u32),
                fl::Rounding::Nearest,
                true,
            )
            .to_bits() as u64
        }
        (AtomOp::Add, Ty::F64) => fl::add_f64(
            f64::from_bits(old),
            f64::from_bits(b),
            fl::Rounding::Nearest,
        )
        .to_bits(),
        (AtomOp::Add, Ty::F16) => {
            fl::add_f16(old as u16, b as u16, fl::Rounding::Nearest, false) as u64
        }
        (AtomOp::Add, Ty::Bf16) => fl::add_bf16(old as u16, b as u16, fl::Rounding::Nearest) as u64,
        (AtomOp::Add, _) => old.wrapping_add(b) & mask,
        (AtomOp::Min | AtomOp::Max, Ty::F32) => {
            let (x, y) = (f32::from_bits(old as u32), f32::from_bits(b as u32));
            let r = if op == AtomOp::Min {
                fl::min_f32(x, y, false, false)
            } else {
                fl::max_f32(x, y, false, false)
            };
            r.to_bits() as u64
        }
        (AtomOp::Min, _) if signed => alu::sext(old, bits).min(alu::sext(b, bits)) as u64 & mask,
        (AtomOp::Max, _) if signed => alu::sext(old, bits).max(alu::sext(b, bits)) as u64 & mask,
        (AtomOp::Min, _) => (old & mask).min(b & mask),
        (AtomOp::Max, _) => (old & mask).max(b & mask),
        (AtomOp::Inc, _) => {
            if (old & mask) >= (b & mask) {
                0
            } else {
                (old + 1) & mask
            }
        }
        (AtomOp::Dec, _) => {
            if (old & mask) == 0 || (old & mask) > (b & mask) {
                b & mask
            } else {
                (old - 1) & mask
            }
        }
        (AtomOp::And, _) => old & b & mask,
        (AtomOp::Or, _) => (old | b) & mask,
        (AtomOp::Xor, _) => (old ^ b) & mask,
        (AtomOp::Exch, _) => b & mask,
        (AtomOp::Cas, _) => {
            if (old & mask) == (b & mask) {
                c & mask
            } else {
                old & mask
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atom_inc_dec_wrap_as_the_isa_says() {
        assert_eq!(atom_op(AtomOp::Inc, Ty::U32, 5, 5, 0), 0);
        assert_eq!(atom_op(AtomOp::Inc, Ty::U32, 4, 5, 0), 5);
        assert_eq!(atom_op(AtomOp::Dec, Ty::U32, 0, 5, 0), 5);
        assert_eq!(atom_op(AtomOp::Dec, Ty::U32, 9, 5, 0), 5);
        assert_eq!(atom_op(AtomOp::Dec, Ty::U32, 3, 5, 0), 2);
        assert_eq!(atom_op(AtomOp::Cas, Ty::B32, 7, 7, 9), 9);
        assert_eq!(atom_op(AtomOp::Cas, Ty::B32, 7, 8, 9), 7);
        assert_eq!(atom_op(AtomOp::Max, Ty::S32, 0xffff_ffff, 1, 0), 1);
        assert_eq!(
            atom_op(AtomOp::Max, Ty::U32, 0xffff_ffff, 1, 0),
            0xffff_ffff
        );
    }
}
