//! The AVX-512 build of the fast kernels: weights loaded in their stored format and widened to `f32`
//! in registers (bf16 by a shift, f16 by `vcvtph2ps`, FP8 e4m3 through f16, see [`Fp8`]), dotted
//! with the activations by fused multiply-adds, 16 lanes a chunk.
//!
//! The lanes and chunks are those of the portable build (lane `l` takes columns `c + l`, a short last
//! chunk is masked to zeros); each lane's additions are fused with its products, and the 16 lanes are
//! added by `_mm512_reduce_add_ps`. Every output's order depends on neither the tile nor the thread.

use half::bf16;
use std::arch::x86_64::*;

use super::{tile_dispatch, Task, WeightSource, LANES};
use crate::quant::{fp4_e2m1_to_f32, CodeFormat};

/// Weight rows loaded [`LANES`] at a time and widened to `f32`.
trait Load: Copy {
    /// Columns `c .. c + 16` of global weight row `row`, lanes outside `mask` zero (and not read).
    /// Always inlined into the tiles, whose AVX-512 features its intrinsics then compile with (a
    /// `#[target_feature]` function of its size would not be inlined at every optimisation level).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512 F, BW and VL; the unmasked columns must lie in the row.
    unsafe fn load(self, row: usize, c: usize, mask: __mmask16) -> __m512;

    /// Ask for the cache line of column `c` of global weight row `row` (which may lie past the
    /// weights: a prefetch never faults).
    fn prefetch(self, row: usize, c: usize);
}

/// Prefetch the cache line at `p` into L1 (`p` may point anywhere).
#[inline]
#[target_feature(enable = "avx512f")]
fn prefetch<T>(p: *const T) {
    // A prefetch does not access memory architecturally: it never faults (safe to call).
    _mm_prefetch::<_MM_HINT_T0>(p.cast())
}

/// Plain rows of `k` elements of type `T` at `ptr`.
#[derive(Clone, Copy)]
struct Plain<T> {
    ptr: *const T,
    k: usize,
}

impl Load for Plain<f32> {
    #[inline(always)]
    unsafe fn load(self, row: usize, c: usize, mask: __mmask16) -> __m512 {
        // SAFETY: the caller keeps the unmasked lanes inside the row; masked lanes are not read.
        unsafe { _mm512_maskz_loadu_ps(mask, self.ptr.add(row * self.k + c)) }
    }

    #[inline]
    fn prefetch(self, row: usize, c: usize) {
        // SAFETY: `prefetch` needs AVX-512 F, which every caller has (they are `target_feature`
        // functions of this module).
        unsafe { prefetch(self.ptr.wrapping_add(row * self.k + c)) }
    }
}

/// bf16 rows, as their bit patterns.
#[derive(Clone, Copy)]
struct Bf16(Plain<u16>);

impl Load for Bf16 {
    #[inline(always)]
    unsafe fn load(self, row: usize, c: usize, mask: __mmask16) -> __m512 {
        let Plain { ptr, k } = self.0;
        // SAFETY: as for `Plain<f32>`; the caller has AVX-512 F.
        unsafe {
            let bits = _mm256_maskz_loadu_epi16(mask, ptr.add(row * k + c).cast());
            // A bf16 is the high half of the f32 with the same value.
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(bits)))
        }
    }

    #[inline]
    fn prefetch(self, row: usize, c: usize) {
        // SAFETY: as for `Plain<f32>`.
        unsafe { prefetch(self.0.ptr.wrapping_add(row * self.0.k + c)) }
    }
}

/// f16 rows, as their bit patterns.
#[derive(Clone, Copy)]
struct F16(Plain<u16>);

impl Load for F16 {
    #[inline(always)]
    unsafe fn load(self, row: usize, c: usize, mask: __mmask16) -> __m512 {
        let Plain { ptr, k } = self.0;
        // SAFETY: as for `Plain<f32>`; the caller has AVX-512 F.
        unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, ptr.add(row * k + c).cast())) }
    }

    #[inline]
    fn prefetch(self, row: usize, c: usize) {
        // SAFETY: as for `Plain<f32>`.
        unsafe { prefetch(self.0.ptr.wrapping_add(row * self.0.k + c)) }
    }
}

/// The scales of quantized rows: one per row and group of `group` columns, `groups` a row.
#[derive(Clone, Copy)]
struct GroupScales {
    ptr: *const f32,
    k: usize,
    groups: usize,
    group: usize,
    /// The group of column `c` is `c >> shift` (a power-of-two group, or one group per row).
    shift: Option<u32>,
    /// Every chunk of 16 columns lies in one scale group.
    uniform: bool,
}

impl GroupScales {
    fn new(scales: &[f32], k: usize, group: usize) -> GroupScales {
        GroupScales {
            ptr: scales.as_ptr(),
            k,
            groups: k.div_ceil(group),
            group,
            shift: if group >= k {
                Some(usize::BITS - 1)
            } else if group.is_power_of_two() {
                Some(group.trailing_zeros())
            } else {
                None
            },
            uniform: group.is_multiple_of(LANES) || group >= k,
        }
    }

    /// The one scale of columns `c .. c + 16` of global row `row` where they share one
    /// ([`GroupScales::uniform`]).
    ///
    /// # Safety
    ///
    /// The scales must hold the row's, and `c < k`.
    #[inline(always)]
    unsafe fn chunk_scale(self, row: usize, c: usize) -> f32 {
        // SAFETY: `group_of(c) < groups` for every column `c < k` (the caller's).
        unsafe { *self.ptr.add(row * self.groups + self.group_of(c)) }
    }

    /// The scales of columns `c .. c + 16` of global row `row` (the last column's past `k`), for
    /// groups that do not hold whole chunks: out of line, so that the common path is small enough
    /// to be inlined into the tiles.
    #[cold]
    #[inline(never)]
    fn lane_scales(self, row: usize, c: usize) -> [f32; LANES] {
        let groups = self.groups;
        std::array::from_fn(|l| {
            // SAFETY: `group_of(c') < groups` for every column `c' < k` of the row.
            unsafe {
                *self
                    .ptr
                    .add(row * groups + self.group_of((c + l).min(self.k - 1)))
            }
        })
    }

    /// The scale group of column `c < k`.
    #[inline(always)]
    fn group_of(self, c: usize) -> usize {
        match self.shift {
            Some(s) => c >> s,
            None => c / self.group,
        }
    }
}

/// FP8 e4m3 rows with a scale per row and group of columns.
///
/// An e4m3 code `s.eeee.mmm` placed in an f16 as `s.0eeee.mmm0000000` has 2^-8 of the code's value
/// (both formats' subnormals included: the exponent biases are 15 and 7), so `vcvtph2ps` widens it
/// exactly; the code sign-extended to 16 bits and shifted left by 7 has those bits under the mask
/// `0xbf80`. `s.1111.111` (NaN in e4m3, 1.875 this way) is replaced by NaN. The result is multiplied
/// by `256 * scale` (both factors exact powers-of-two scalings of the reference's, so the product is
/// the reference's table value times the scale, bit for bit), or by 256 and then the scale where
/// `256 * scale` would overflow.
#[derive(Clone, Copy)]
struct Fp8 {
    codes: *const u8,
    k: usize,
    scales: GroupScales,
}

impl Load for Fp8 {
    #[inline(always)]
    unsafe fn load(self, row: usize, c: usize, mask: __mmask16) -> __m512 {
        // SAFETY: as for `Plain<f32>`; the scales read are those of the row's groups (`c < k`).
        unsafe {
            let codes = _mm_maskz_loadu_epi8(mask, self.codes.add(row * self.k + c).cast());
            let half = _mm256_and_si256(
                _mm256_slli_epi16::<7>(_mm256_cvtepi8_epi16(codes)),
                _mm256_set1_epi16(0xbf80u16 as i16),
            );
            let exp_mant = _mm256_set1_epi16(0x3f80);
            let nan = _mm256_cmpeq_epi16_mask(_mm256_and_si256(half, exp_mant), exp_mant);
            let w = _mm512_mask_mov_ps(_mm512_cvtph_ps(half), nan, _mm512_set1_ps(f32::NAN));
            if self.scales.uniform {
                let s = self.scales.chunk_scale(row, c);
                let s256 = 256.0 * s;
                if s256.is_finite() {
                    return _mm512_mul_ps(w, _mm512_set1_ps(s256));
                }
                return _mm512_mul_ps(_mm512_mul_ps(w, _mm512_set1_ps(256.0)), _mm512_set1_ps(s));
            }
            let lanes = self.scales.lane_scales(row, c);
            _mm512_mul_ps(
                _mm512_mul_ps(w, _mm512_set1_ps(256.0)),
                _mm512_loadu_ps(lanes.as_ptr()),
            )
        }
    }

    #[inline]
    fn prefetch(self, row: usize, c: usize) {
        // SAFETY: as for `Plain<f32>`.
        unsafe { prefetch(self.codes.wrapping_add(row * self.k + c)) }
    }
}

/// MXFP4 e2m1 rows (two codes a byte, low nibble first, `bytes` a row) with a scale per row and
/// group of columns.
///
/// The 8 bytes of a chunk's 16 codes are each doubled (`vpunpcklbw` with itself) and widened to 32
/// bits, lane `l` holding byte `l / 2`; odd lanes are shifted right by 4, and the low 4 bits of each
/// lane index the 16 e2m1 values in a register (`vpermps`, which reads only those bits). The value
/// times the scale is the reference's product, bit for bit. Lanes past `K` are zeroed (the high
/// nibble of a row's half-used last byte is not a value).
#[derive(Clone, Copy)]
struct Mxfp4 {
    codes: *const u8,
    bytes: usize,
    scales: GroupScales,
}

impl Load for Mxfp4 {
    #[inline(always)]
    unsafe fn load(self, row: usize, c: usize, mask: __mmask16) -> __m512 {
        // The bytes of the unmasked lanes (the low `len` of the chunk): byte `b` holds lanes `2b`
        // and `2b + 1`.
        let byte_mask: __mmask16 = (1 << mask.count_ones().div_ceil(2)) - 1;
        // SAFETY: as for `Plain<f32>` (`c` is even: the chunk's bytes start at `c / 2`, and the
        // masked bytes are those of its columns); the scales as for `Fp8`.
        unsafe {
            let packed =
                _mm_maskz_loadu_epi8(byte_mask, self.codes.add(row * self.bytes + c / 2).cast());
            let lanes = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(packed, packed));
            let codes = _mm512_srlv_epi32(
                lanes,
                _mm512_set_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0),
            );
            let table = _mm512_loadu_ps(E2M1.as_ptr());
            let w = _mm512_maskz_permutexvar_ps(mask, codes, table);
            if self.scales.uniform {
                return _mm512_mul_ps(w, _mm512_set1_ps(self.scales.chunk_scale(row, c)));
            }
            let lanes = self.scales.lane_scales(row, c);
            _mm512_mul_ps(w, _mm512_loadu_ps(lanes.as_ptr()))
        }
    }

    #[inline]
    fn prefetch(self, row: usize, c: usize) {
        // SAFETY: as for `Plain<f32>`.
        unsafe { prefetch(self.codes.wrapping_add(row * self.bytes + c / 2)) }
    }
}

/// The 16 e2m1 values, by code.
static E2M1: [f32; 16] = {
    let mut t = [0f32; 16];
    let mut c = 0;
    while c < 16 {
        t[c] = fp4_e2m1_to_f32(c as u8);
        c += 1;
    }
    t
};

/// `out(i, j, dot(x row i, weight row row0 + j))` for an `MR x NR` tile.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
fn tile<W: Load, const MR: usize, const NR: usize>(
    xs: &[f32],
    k: usize,
    w: W,
    row0: usize,
    ahead: bool,
    out: &mut impl FnMut(usize, usize, f32),
) {
    assert!(xs.len() >= (MR - 1) * k + k, "activation rows of the tile");
    let mut acc = [[_mm512_setzero_ps(); NR]; MR];
    let mut c = 0;
    while c < k {
        let mask: __mmask16 = if k - c >= LANES {
            0xffff
        } else {
            (1u16 << (k - c)) - 1
        };
        // SAFETY: AVX-512 is enabled here; lanes `c .. min(c + 16, k)` lie in every row (the
        // weight rows `row0 .. row0 + NR` exist, checked by the caller; the activation rows by the
        // assert above).
        unsafe {
            // (A loop, not `array::from_fn`: a closure would not inherit this function's target
            // features, and its loads would not be inlined.)
            let mut wv = [_mm512_setzero_ps(); NR];
            for (j, wj) in wv.iter_mut().enumerate() {
                *wj = w.load(row0 + j, c, mask);
            }
            if ahead {
                for j in 0..NR {
                    w.prefetch(row0 + NR + j, c);
                }
            }
            for (i, ai) in acc.iter_mut().enumerate() {
                let xv = _mm512_maskz_loadu_ps(mask, xs.as_ptr().add(i * k + c));
                for (a, &wj) in ai.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xv, wj, *a);
                }
            }
        }
        c += LANES;
    }
    for (i, ai) in acc.iter().enumerate() {
        for (j, &aij) in ai.iter().enumerate() {
            out(i, j, _mm512_reduce_add_ps(aij));
        }
    }
}

/// The task's tiles over weights `w`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
fn run<W: Load>(task: &Task<'_, f32>, w: W) {
    tile_dispatch!(task, w, tile);
}

/// One task in the AVX-512 build.
///
/// # Safety
///
/// The CPU must support AVX-512 F, BW and VL and FMA.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
pub(super) unsafe fn task(task: &Task<'_, f32>, src: &WeightSource<'_>) {
    let k = task.k;
    match *src {
        WeightSource::F32(data) => run(
            task,
            Plain {
                ptr: data.as_ptr(),
                k,
            },
        ),
        WeightSource::Bf16(data) => run(
            task,
            Bf16(Plain {
                ptr: data.as_ptr().cast(),
                k,
            }),
        ),
        WeightSource::F16(data) => run(
            task,
            F16(Plain {
                ptr: data.as_ptr().cast(),
                k,
            }),
        ),
        WeightSource::Fp8E4M3 {
            codes,
            scales,
            group,
        } => run(
            task,
            Fp8 {
                codes: codes.as_ptr(),
                k,
                scales: GroupScales::new(scales, k, group),
            },
        ),
        WeightSource::Mxfp4E2M1 {
            codes,
            scales,
            group,
        } => run(
            task,
            Mxfp4 {
                codes: codes.as_ptr(),
                bytes: CodeFormat::Mxfp4E2M1.row_bytes(k),
                scales: GroupScales::new(scales, k, group),
            },
        ),
    }
}

/// `out(i, j, dot(x row i, weight row row0 + j))` for an `MR x NR` tile of bf16 activations and
/// weights (as bits), by `vdpbf16ps`: lane `l` adds the products of columns `c + 2l` and
/// `c + 2l + 1` for the chunks `c = 0, 32, 64, ...` (a short last chunk masked to zeros), then the
/// 16 lanes are added by `_mm512_reduce_add_ps`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
fn tile_bf16<W: Copy + Into<*const u16>, const MR: usize, const NR: usize>(
    xs: &[bf16],
    k: usize,
    w: W,
    row0: usize,
    ahead: bool,
    out: &mut impl FnMut(usize, usize, f32),
) {
    assert!(xs.len() >= MR * k, "activation rows of the tile");
    let w: *const u16 = w.into();
    let mut acc = [[_mm512_setzero_ps(); NR]; MR];
    let mut c = 0;
    while c < k {
        let mask: __mmask32 = if k - c >= 2 * LANES {
            !0
        } else {
            (1u32 << (k - c)) - 1
        };
        // SAFETY: AVX-512 F/BW/BF16 are enabled here; columns `c .. min(c + 32, k)` lie in every
        // row (the weight rows `row0 .. row0 + NR` exist, checked by the caller; the activation
        // rows by the assert above); `__m512i` and `__m512bh` are both 32 lanes of 16 bits.
        unsafe {
            let mut wv = [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); NR];
            for (j, wj) in wv.iter_mut().enumerate() {
                *wj = std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(
                    mask,
                    w.add((row0 + j) * k + c).cast(),
                ));
            }
            if ahead {
                for j in 0..NR {
                    prefetch(w.wrapping_add((row0 + NR + j) * k + c));
                }
            }
            for (i, ai) in acc.iter_mut().enumerate() {
                let xv = std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(
                    mask,
                    xs.as_ptr().add(i * k + c).cast(),
                ));
                for (a, &wj) in ai.iter_mut().zip(&wv) {
                    *a = _mm512_dpbf16_ps(*a, xv, wj);
                }
            }
        }
        c += 2 * LANES;
    }
    for (i, ai) in acc.iter().enumerate() {
        for (j, &aij) in ai.iter().enumerate() {
            out(i, j, _mm512_reduce_add_ps(aij));
        }
    }
}

/// bf16 weights as a base pointer for [`tile_bf16`].
#[derive(Clone, Copy)]
struct Bf16Ptr(*const u16);

impl From<Bf16Ptr> for *const u16 {
    fn from(p: Bf16Ptr) -> *const u16 {
        p.0
    }
}

/// One task of bf16 activations (as bits) on bf16 weights `w` `[E, N, K]` in the AVX512-BF16 build.
///
/// # Safety
///
/// The CPU must support AVX-512 F, BW, VL and BF16; `w` must hold the task's weight rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn task_bf16(task: &Task<'_, bf16>, w: &[bf16]) {
    debug_assert!((task.row0 + task.nb) * task.k <= w.len());
    let w = Bf16Ptr(w.as_ptr().cast());
    tile_dispatch!(task, w, tile_bf16);
}
