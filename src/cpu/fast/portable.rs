//! The portable build of the fast kernels: 16-lane `f32` arrays that the compiler vectorises, for any
//! CPU, and the same code compiled with AVX2 and FMA enabled ([`Isa::Avx2`](super::Isa::Avx2)).
//!
//! Each output is one dot product: lane `l` accumulates `x[c + l] * w[c + l]` over the chunks
//! `c = 0, 16, 32, ...` (a short last chunk is padded with zeros), and the 16 lanes are then added
//! in a fixed tree ([`reduce16`]). A tile of `MR x NR` outputs only shares the loads of its rows and
//! weight rows; every output's order is that one, whichever tile or thread computes it.

use half::{bf16, f16};

use super::{tile_dispatch, Task, WeightSource, LANES};
use crate::quant::{fp4_e2m1_to_f32, fp8_e4m3_to_f32, CodeFormat};

/// Weight rows widened to `f32` a chunk of [`LANES`] at a time (also the AVX-512 build's decoding
/// of the quantized spans its vector loop does not take).
pub(super) trait Widen: Copy {
    /// Columns `c .. c + len` (`len <= LANES`) of global weight row `row` into `dst[..len]`.
    fn widen(self, row: usize, c: usize, len: usize, dst: &mut [f32; LANES]);
}

/// Plain element rows.
#[derive(Clone, Copy)]
struct Plain<'a, T> {
    data: &'a [T],
    k: usize,
}

macro_rules! plain_widen {
    ($t:ty, $conv:expr) => {
        impl Widen for Plain<'_, $t> {
            #[inline(always)]
            fn widen(self, row: usize, c: usize, len: usize, dst: &mut [f32; LANES]) {
                let src = &self.data[row * self.k + c..row * self.k + c + len];
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = $conv(v);
                }
            }
        }
    };
}

plain_widen!(f32, |v: f32| v);
plain_widen!(bf16, |v: bf16| f32::from_bits((v.to_bits() as u32) << 16));
plain_widen!(f16, f16::to_f32);

/// FP8 e4m3 rows with a scale per row and group of `group` columns.
#[derive(Clone, Copy)]
pub(super) struct Fp8<'a> {
    pub(super) codes: &'a [u8],
    pub(super) scales: &'a [f32],
    pub(super) k: usize,
    pub(super) group: usize,
}

impl Widen for Fp8<'_> {
    #[inline(always)]
    fn widen(self, row: usize, c: usize, len: usize, dst: &mut [f32; LANES]) {
        let groups = self.k.div_ceil(self.group);
        let codes = &self.codes[row * self.k + c..row * self.k + c + len];
        let scales = &self.scales[row * groups..(row + 1) * groups];
        for (l, (d, &code)) in dst.iter_mut().zip(codes).enumerate() {
            *d = fp8_e4m3_to_f32(code) * scales[(c + l) / self.group];
        }
    }
}

/// MXFP4 e2m1 rows (two codes a byte, low nibble first, `bytes` a row) with a scale per row and
/// group of `group` columns.
#[derive(Clone, Copy)]
pub(super) struct Mxfp4<'a> {
    pub(super) codes: &'a [u8],
    pub(super) scales: &'a [f32],
    pub(super) k: usize,
    pub(super) bytes: usize,
    pub(super) group: usize,
}

impl Widen for Mxfp4<'_> {
    #[inline(always)]
    fn widen(self, row: usize, c: usize, len: usize, dst: &mut [f32; LANES]) {
        let groups = self.k.div_ceil(self.group);
        let codes = &self.codes[row * self.bytes..(row + 1) * self.bytes];
        let scales = &self.scales[row * groups..(row + 1) * groups];
        for (l, d) in dst[..len].iter_mut().enumerate() {
            let col = c + l;
            let nibble = codes[col / 2] >> (4 * (col % 2));
            *d = fp4_e2m1_to_f32(nibble) * scales[col / self.group];
        }
    }
}

/// `(((l0 + l8) + (l4 + l12)) + ((l2 + l10) + (l6 + l14))) + (...odd lanes...)`: halves added
/// lane-wise until one is left.
#[inline(always)]
fn reduce16(a: [f32; LANES]) -> f32 {
    let s8: [f32; 8] = std::array::from_fn(|l| a[l] + a[l + 8]);
    let s4: [f32; 4] = std::array::from_fn(|l| s8[l] + s8[l + 4]);
    (s4[0] + s4[2]) + (s4[1] + s4[3])
}

/// `out[i][j] = dot(x row i, weight row row0 + j)` for an `MR x NR` tile.
#[inline(always)]
fn tile<W: Widen, const MR: usize, const NR: usize>(
    xs: &[f32],
    k: usize,
    w: W,
    row0: usize,
    _ahead: bool,
    out: &mut impl FnMut(usize, usize, f32),
) {
    let mut acc = [[[0f32; LANES]; NR]; MR];
    let mut c = 0;
    while c < k {
        let len = LANES.min(k - c);
        let mut wv = [[0f32; LANES]; NR];
        let mut xv = [[0f32; LANES]; MR];
        for (j, wj) in wv.iter_mut().enumerate() {
            w.widen(row0 + j, c, len, wj);
        }
        for (i, xi) in xv.iter_mut().enumerate() {
            xi[..len].copy_from_slice(&xs[i * k + c..i * k + c + len]);
        }
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] = std::array::from_fn(|l| acc[i][j][l] + xv[i][l] * wv[j][l]);
            }
        }
        c += LANES;
    }
    for (i, ai) in acc.iter().enumerate() {
        for (j, &aij) in ai.iter().enumerate() {
            out(i, j, reduce16(aij));
        }
    }
}

/// One task on `src`, in this build.
#[inline(always)]
fn task_body(task: &Task<'_, f32>, src: &WeightSource<'_>) {
    let k = task.k;
    match *src {
        WeightSource::F32(data) => run(task, Plain { data, k }),
        WeightSource::Bf16(data) => run(task, Plain { data, k }),
        WeightSource::F16(data) => run(task, Plain { data, k }),
        WeightSource::Fp8E4M3 {
            codes,
            scales,
            group,
        } => run(
            task,
            Fp8 {
                codes: codes.codes(),
                scales,
                k,
                group,
            },
        ),
        WeightSource::Mxfp4E2M1 {
            codes,
            scales,
            group,
        } => run(
            task,
            Mxfp4 {
                codes,
                scales,
                k,
                bytes: CodeFormat::Mxfp4E2M1.row_bytes(k),
                group,
            },
        ),
    }
}

/// The task's tiles over weights `w`.
#[inline(always)]
fn run<W: Widen>(task: &Task<'_, f32>, w: W) {
    tile_dispatch!(task, w, tile);
}

/// One task in the portable build.
pub(super) fn task(task: &Task<'_, f32>, src: &WeightSource<'_>) {
    task_body(task, src)
}

/// One task in the AVX2 + FMA build.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn task_avx2(task: &Task<'_, f32>, src: &WeightSource<'_>) {
    task_body(task, src)
}
