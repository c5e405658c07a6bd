//! The tensor-core instructions: `ldmatrix` (shared memory to mma fragments) and `mma.sync`, with
//! the fragment layouts of the PTX ISA. Both are `.aligned` warp collectives: every lane of the
//! warp takes part.

use super::{elements, from_bytes, lanes, Exec, Warp};
use crate::exec::finding::Finding;
use crate::exec::float as fl;
use crate::ptx::ir::*;

impl<'a> Exec<'a> {
    /// `ldmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16`: lanes 8i..8i+7 give the row
    /// addresses (16 bytes each) of matrix i; lane l receives, in register i, the elements
    /// (row l/4, columns 2(l%4) and 2(l%4)+1) of matrix i, or with `.trans` the elements
    /// (rows 2(l%4) and 2(l%4)+1, column l/4).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ldmatrix(
        &mut self,
        w: &mut Warp,
        pc: u32,
        active: u32,
        num: u32,
        trans: bool,
        d: &Operand,
        addr: &Address,
    ) -> Result<bool, Box<Finding>> {
        let Some(members) = self.rendezvous(w, pc, active, w.exists, "ldmatrix")? else {
            return Ok(false);
        };
        // rows[i][r] = the 8 elements of row r of matrix i.
        let mut rows = [[[0u16; 8]; 8]; 4];
        for (i, matrix) in rows.iter_mut().enumerate().take(num as usize) {
            for (r, row) in matrix.iter_mut().enumerate() {
                let lane = i * 8 + r;
                let who = Self::who(w, pc, lane);
                let a = self.address(addr, w, lane);
                let t = self.resolve(Space::Shared, a, 16, 16, false, who, "ldmatrix row")?;
                let mut buf = [0u8; 16];
                self.read_bytes(&t, &mut buf, who, a)?;
                self.note_access(&t, a, 16, lane);
                for (e, v) in row.iter_mut().enumerate() {
                    *v = from_bytes(&buf[2 * e..2 * e + 2]) as u16;
                }
            }
        }
        self.flush_access_stats(pc);
        let Operand::Vector(regs) = d else {
            unreachable!("the parser gives ldmatrix a vector destination")
        };
        for l in lanes(members) {
            for (i, reg) in regs.iter().enumerate().take(num as usize) {
                let (lo, hi) = if trans {
                    let c = l / 4;
                    let r = 2 * (l % 4);
                    (rows[i][r][c], rows[i][r + 1][c])
                } else {
                    let r = l / 4;
                    let c = 2 * (l % 4);
                    (rows[i][r][c], rows[i][r][c + 1])
                };
                Self::set(w, reg, l, lo as u64 | ((hi as u64) << 16));
            }
        }
        self.release(w, pc, members, active);
        Ok(true)
    }

    /// `mma.sync.aligned.m16n8k{32,16,8}.row.col`: D = A B + C, with the ISA's fragment layouts
    /// (g = lane / 4, t = lane % 4). The products are exact and the sum of each output element is
    /// formed in f64 and rounded once (the hardware's internal accumulation order and precision
    /// are not specified; results agree with it within the mma tolerance, not bit for bit).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn mma(
        &mut self,
        w: &mut Warp,
        pc: u32,
        active: u32,
        shape: (u32, u32, u32),
        aty: MmaType,
        cty: MmaType,
        dty: MmaType,
        d: &Operand,
        a: &Operand,
        b: &Operand,
        c: &Operand,
    ) -> Result<bool, Box<Finding>> {
        let Some(members) = self.rendezvous(w, pc, active, w.exists, "mma.sync")? else {
            return Ok(false);
        };
        self.summary.mma += 1;
        let k = shape.2 as usize;
        let (ar, br, cr, dr) = (elements(a), elements(b), elements(c), elements(d));
        let all = w.exists;
        let fetch = |ops: &[Operand]| -> [[u64; 32]; 4] {
            let mut out = [[0u64; 32]; 4];
            for (i, o) in ops.iter().enumerate().take(4) {
                out[i] = self.fetch(o, w, all);
            }
            out
        };
        let (av, bv, cv) = (fetch(ar), fetch(br), fetch(cr));
        let mut am = [[0f64; 32]; 16];
        let mut bm = [[0f64; 8]; 32];
        let mut cm = [[0f64; 8]; 16];
        let elem = |bits: u16| -> f64 {
            match aty {
                MmaType::Bf16 => fl::bf16_to_f32(bits) as f64,
                _ => fl::f16_to_f32(bits) as f64,
            }
        };
        let tf32 = |bits: u64| -> f64 { f32::from_bits(bits as u32 & 0xffff_e000) as f64 };
        for l in 0..32usize {
            let g = l / 4;
            let t = l % 4;
            match aty {
                MmaType::Tf32 => {
                    // m16n8k8 tf32: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4);
                    // b0 (t, g), b1 (t+4, g).
                    am[g][t] = tf32(av[0][l]);
                    am[g + 8][t] = tf32(av[1][l]);
                    am[g][t + 4] = tf32(av[2][l]);
                    am[g + 8][t + 4] = tf32(av[3][l]);
                    bm[t][g] = tf32(bv[0][l]);
                    bm[t + 4][g] = tf32(bv[1][l]);
                }
                MmaType::E4m3 => {
                    // m16n8k32 e4m3, four codes per register, byte i the lowest first: A register
                    // r holds row g + 8 (r % 2), columns 4t + 16 (r / 2) + {0..3}; B register r
                    // holds rows 4t + 16 r + {0..3}, column g.
                    for (r, regv) in av.iter().enumerate().take(ar.len()) {
                        for i in 0..4 {
                            let code = (regv[l] >> (8 * i)) as u8;
                            am[g + 8 * (r % 2)][4 * t + 16 * (r / 2) + i] =
                                fl::e4m3_to_f32(code) as f64;
                        }
                    }
                    for (r, regv) in bv.iter().enumerate().take(br.len()) {
                        for i in 0..4 {
                            let code = (regv[l] >> (8 * i)) as u8;
                            bm[4 * t + 16 * r + i][g] = fl::e4m3_to_f32(code) as f64;
                        }
                    }
                }
                _ => {
                    // A row-major 16 x k: register r holds row g + 8 (r % 2), columns
                    // 2t + 8 (r / 2) + {0, 1}. B k x 8: register r holds rows 2t + 8 r + {0, 1},
                    // column g.
                    for (r, regv) in av.iter().enumerate().take(ar.len()) {
                        let v = regv[l];
                        let row = g + 8 * (r % 2);
                        let col = 2 * t + 8 * (r / 2);
                        am[row][col] = elem(v as u16);
                        am[row][col + 1] = elem((v >> 16) as u16);
                    }
                    for (r, regv) in bv.iter().enumerate().take(br.len()) {
                        let v = regv[l];
                        let row = 2 * t + 8 * r;
                        bm[row][g] = elem(v as u16);
                        bm[row + 1][g] = elem((v >> 16) as u16);
                    }
                }
            }
            // C: f32 registers c0..c3 at (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1); f16: two
            // packed registers (g, 2t..2t+1) and (g+8, 2t..2t+1).
            if cty == MmaType::F32 {
                for (r, regv) in cv.iter().enumerate().take(cr.len()) {
                    let v = f32::from_bits(regv[l] as u32) as f64;
                    cm[g + 8 * (r / 2)][2 * t + r % 2] = v;
                }
            } else {
                for (r, regv) in cv.iter().enumerate().take(cr.len()) {
                    let v = regv[l];
                    cm[g + 8 * r][2 * t] = fl::f16_to_f32(v as u16) as f64;
                    cm[g + 8 * r][2 * t + 1] = fl::f16_to_f32((v >> 16) as u16) as f64;
                }
            }
        }
        let mut dm = [[0f64; 8]; 16];
        for (i, row) in dm.iter_mut().enumerate() {
            for (j, out) in row.iter_mut().enumerate() {
                let mut s = cm[i][j];
                for (kk, brow) in bm.iter().enumerate().take(k) {
                    s += am[i][kk] * brow[j];
                }
                *out = s;
            }
        }
        for l in lanes(members) {
            let g = l / 4;
            let t = l % 4;
            if dty == MmaType::F32 {
                for (r, o) in dr.iter().enumerate() {
                    let v = dm[g + 8 * (r / 2)][2 * t + r % 2];
                    let f = fl::f64_to_f32(v, fl::Rounding::Nearest, false, false);
                    Self::set(w, o, l, f.to_bits() as u64);
                }
            } else {
                for (r, o) in dr.iter().enumerate() {
                    let lo = fl::f64_to_f16(dm[g + 8 * r][2 * t], fl::Rounding::Nearest, false);
                    let hi = fl::f64_to_f16(dm[g + 8 * r][2 * t + 1], fl::Rounding::Nearest, false);
                    Self::set(w, o, l, lo as u64 | ((hi as u64) << 16));
                }
            }
        }
        self.release(w, pc, members, active);
        Ok(true)
    }
}
