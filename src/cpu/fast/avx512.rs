//! The AVX-512 build of the fast kernels: weights loaded in their stored format and widened to `f32`
//! in registers (bf16 by a shift, f16 by `vcvtph2ps`, FP8 e4m3 through f16, see [`Fp8`]), dotted
//! with the activations by fused multiply-adds, 16 lanes a chunk.
//!
//! The lanes and chunks are those of the portable build (lane `l` takes columns `c + l`, a short
//! last chunk is masked to zeros), but for MXFP4 rows read by vectors, whose lane `l` takes the
//! columns `c + 2l` and `c + 2l + 1` of each 32 (see [`Mxfp4`]); each lane's additions are fused
//! with its products (FP8's summed apart per span, then scaled: see [`Fp8`]), and the 16 lanes are
//! added by `_mm512_reduce_add_ps`. Every output's order
//! depends on neither the tile nor the thread, nor on how many activation rows share the weights
//! (see [`strip`]). Quantized rows are read in spans of one scale per row, set up once per span
//! (see [`Load`]).

mod strip;

use half::bf16;
use std::arch::x86_64::*;

use super::{portable, tile_dispatch, Task, WeightSource, LANES, MR};
use crate::quant::{fp4_e2m1_to_f32, CodeFormat};

/// Weight rows loaded a step of one or two chunks of [`LANES`] columns at a time and widened to
/// `f32`, in spans of columns that share one scale per row.
trait Load: Copy {
    /// Columns one [`Load::load`] reads: [`LANES`] or `2 * LANES`.
    const STEP: usize;

    /// Whether decoding costs enough that a task with more than [`MR`] activation rows decodes
    /// each strip of weight rows once ([`strip`]).
    const DECODE_ONCE: bool = false;

    /// A row's scale over one span, ready for [`Load::load`] (`()` for unscaled rows).
    type Scale: Copy;

    /// Columns per span: a multiple of [`LANES`] (a span ending in a part of a step, such as
    /// MXFP4's groups of 16, loads it masked), or at least `K` (one span a row).
    fn span(self) -> usize;

    /// Whether the rows are read by [`Load::load`], else by [`Load::load_lanes`] (scale groups
    /// that split chunks: each row is one span).
    fn vector(self) -> bool;

    /// Whether [`Load::load`] leaves the scale out: a span's products are then summed apart and
    /// added to the dot products by [`Load::span_factor`].
    const SUMS_SPANS: bool = false;

    /// How the sums of the span of columns from `c` of global weight row `row` join the dot
    /// products, for [`Load::SUMS_SPANS`].
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512 F; `c < K`, a multiple of the span, and the row must exist.
    #[inline(always)]
    unsafe fn span_factor(self, _row: usize, _c: usize) -> SpanFactor {
        SpanFactor::Unit
    }

    /// The scale of global weight row `row` over the span of columns from `c`, for
    /// [`Load::load`].
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512 F, BW and VL; the rows must be read by vectors
    /// ([`Load::vector`]); `c < K`, a multiple of the span, and the row must exist.
    unsafe fn scale(self, row: usize, c: usize) -> Self::Scale;

    /// Columns `c .. c + STEP` of global weight row `row` in a span of scale `scale`, 16 a vector
    /// (the second unused for a step of 16) in the lanes of [`Load::activations`], the lanes of
    /// the columns outside `masks` zero (and not read). Always inlined into the tiles, whose
    /// AVX-512 features its intrinsics then compile with (a `#[target_feature]` function of its
    /// size would not be inlined at every optimisation level).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512 F, BW and VL; the unmasked columns must lie in the row.
    unsafe fn load(
        self,
        scale: Self::Scale,
        row: usize,
        c: usize,
        masks: [__mmask16; 2],
    ) -> [__m512; 2];

    /// Columns `c .. c + STEP` of the activation row at `x` in the lanes of [`Load::load`]'s
    /// vectors, the lanes of the columns outside `masks` zero: the chunks of 16 columns as they
    /// are, vector `h` masked by `masks[h]` (the second zero for a step of 16).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512 F; the unmasked columns must lie in the row.
    #[inline(always)]
    unsafe fn activations(x: *const f32, c: usize, masks: [__mmask16; 2]) -> [__m512; 2] {
        // SAFETY: the caller's (a lane outside its mask is not read; the second chunk is read
        // only for a step of 32).
        unsafe {
            [
                _mm512_maskz_loadu_ps(masks[0], x.add(c)),
                if Self::STEP > LANES {
                    _mm512_maskz_loadu_ps(masks[1], x.wrapping_add(c + LANES))
                } else {
                    _mm512_setzero_ps()
                },
            ]
        }
    }

    /// Columns `c .. c + 16` of global weight row `row` in a span without a scale, lanes outside
    /// `mask` zero: the reference's decoding, lane by lane.
    ///
    /// # Safety
    ///
    /// As for [`Load::load`].
    unsafe fn load_lanes(self, row: usize, c: usize, mask: __mmask16) -> __m512;

    /// Ask for the cache line of column `c` of global weight row `row` (which may lie past the
    /// weights: a prefetch never faults).
    fn prefetch(self, row: usize, c: usize);

    /// Ask for the cache line of the scale of column `c` of global weight row `row` (which may lie
    /// past the weights), for rows with scales.
    fn prefetch_scale(self, _row: usize, _c: usize) {}
}

/// Weight rows without scales: one span a row.
trait Unscaled: Copy {
    /// [`Load::load`] of one chunk.
    ///
    /// # Safety
    ///
    /// As for [`Load::load`].
    unsafe fn load(self, row: usize, c: usize, mask: __mmask16) -> __m512;

    /// [`Load::prefetch`].
    fn prefetch(self, row: usize, c: usize);
}

impl<T: Unscaled> Load for T {
    const STEP: usize = LANES;
    type Scale = ();

    fn span(self) -> usize {
        usize::MAX
    }

    fn vector(self) -> bool {
        true
    }

    #[inline(always)]
    unsafe fn scale(self, _row: usize, _c: usize) {}

    #[inline(always)]
    unsafe fn load(self, _scale: (), row: usize, c: usize, masks: [__mmask16; 2]) -> [__m512; 2] {
        // SAFETY: the caller's.
        unsafe { [Unscaled::load(self, row, c, masks[0]), _mm512_setzero_ps()] }
    }

    #[inline(always)]
    unsafe fn load_lanes(self, row: usize, c: usize, mask: __mmask16) -> __m512 {
        // SAFETY: the caller's.
        unsafe { Unscaled::load(self, row, c, mask) }
    }

    #[inline]
    fn prefetch(self, row: usize, c: usize) {
        Unscaled::prefetch(self, row, c)
    }
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

impl Unscaled for Plain<f32> {
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

impl Unscaled for Bf16 {
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

impl Unscaled for F16 {
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

/// Columns of a span of a row-wide scale (any multiple of [`LANES`] would do).
const ROW_SPAN: usize = 256;

/// The scales of quantized rows: one per row and group of `group` columns, `groups` a row.
#[derive(Clone, Copy)]
struct GroupScales {
    ptr: *const f32,
    groups: usize,
    group: usize,
    /// The group of column `c` is `c >> shift` (a power-of-two group, or one group per row).
    shift: Option<u32>,
    /// Columns per span: the group where it holds whole chunks, [`ROW_SPAN`] for a row-wide scale,
    /// `None` for groups that split chunks (their rows are one span, read lane by lane).
    span: Option<usize>,
}

impl GroupScales {
    fn new(scales: &[f32], k: usize, group: usize) -> GroupScales {
        GroupScales {
            ptr: scales.as_ptr(),
            groups: k.div_ceil(group),
            group,
            shift: if group >= k {
                Some(usize::BITS - 1)
            } else if group.is_power_of_two() {
                Some(group.trailing_zeros())
            } else {
                None
            },
            span: if group >= k {
                Some(ROW_SPAN)
            } else if group.is_multiple_of(LANES) {
                Some(group)
            } else {
                None
            },
        }
    }

    /// Columns per span ([`Load::span`]).
    fn span(self) -> usize {
        self.span.unwrap_or(usize::MAX)
    }

    /// Whether the spans have one scale each (not for groups that split chunks).
    fn vector(self) -> bool {
        self.span.is_some()
    }

    /// The scale of column `c` of global row `row`.
    ///
    /// # Safety
    ///
    /// The scales must hold the row's, and `c < k`.
    #[inline(always)]
    unsafe fn at(self, row: usize, c: usize) -> f32 {
        // SAFETY: `group < groups` for every column `c < k` (the caller's).
        unsafe { *self.ptr.add(self.index(row, c)) }
    }

    /// The index in the scales of the scale of column `c` of global row `row` (its group by a
    /// shift where the group is a power of two).
    #[inline(always)]
    fn index(self, row: usize, c: usize) -> usize {
        let group = match self.shift {
            Some(s) => c >> s,
            None => c / self.group,
        };
        row * self.groups + group
    }

    /// [`Load::prefetch_scale`].
    #[inline]
    fn prefetch(self, row: usize, c: usize) {
        // SAFETY: `prefetch` needs AVX-512 F, which every caller has (they are `target_feature`
        // functions of this module).
        unsafe { prefetch(self.ptr.wrapping_add(self.index(row, c))) }
    }
}

/// Columns `c .. c + 16` of global row `row` decoded by the portable build's `widen` (the
/// reference's values), lanes outside `mask` (the low lanes) zero: [`Load::load_lanes`] of the
/// quantized rows.
///
/// # Safety
///
/// The CPU must support AVX-512 F.
#[inline(always)]
unsafe fn load_lanes<W: portable::Widen>(
    widen: W,
    row: usize,
    c: usize,
    mask: __mmask16,
) -> __m512 {
    /// Out of line, so that the vector path stays small enough to be inlined into the tiles.
    #[cold]
    #[inline(never)]
    fn lanes<W: portable::Widen>(widen: W, row: usize, c: usize, len: usize) -> [f32; LANES] {
        let mut lanes = [0f32; LANES];
        widen.widen(row, c, len, &mut lanes);
        lanes
    }
    let lanes = lanes(widen, row, c, mask.count_ones() as usize);
    // SAFETY: the caller has AVX-512 F.
    unsafe { _mm512_loadu_ps(lanes.as_ptr()) }
}

/// FP8 e4m3 rows with a scale per row and group of columns, 32 columns a step.
///
/// An e4m3 code `s.eeee.mmm` placed in an f16 as `s.0eeee.mmm0000000` has 2^-8 of the code's value
/// (both formats' subnormals included: the exponent biases are 15 and 7), so `vcvtph2ps` widens it
/// exactly; the code sign-extended to 16 bits and shifted left by 7 (`x`) has those bits where the
/// mask `0xbf80` is set. Codes known to hold no NaN (`NAN` false, [`Fp8Codes`](super::Fp8Codes))
/// are decoded by that mask alone. Otherwise bit 14 is set for the NaN codes `s.1111.111` (1.875
/// without it, an f16 NaN with it): `x + 0x80` carries into bit 14 exactly when the 7 bits above
/// the shift are all set, so bit 14 of `x ^ (x + 0x80)` is the NaN flag (one `vpternlogd` with
/// the mask, no test of the codes).
///
/// The loads leave the scale out ([`Load::SUMS_SPANS`]): a span's products are summed apart, then
/// added times `256 * scale` by one fused multiply-add, which saves a multiplication per weight. Where
/// `256 * scale` is not finite, the sums are multiplied by 256 first (exact) and then by the scale:
/// the same rounded product. A weight times a one-hot activation is thus the reference's table value
/// times the scale, bit for bit. Groups that split chunks are read lane by lane, scaled as the
/// reference does, each row one span.
#[derive(Clone, Copy)]
struct Fp8<'a, const NAN: bool> {
    src: portable::Fp8<'a>,
    scales: GroupScales,
}

impl<'a, const NAN: bool> Fp8<'a, NAN> {
    fn new(src: portable::Fp8<'a>) -> Self {
        Fp8 {
            src,
            scales: GroupScales::new(src.scales, src.k, src.group),
        }
    }
}

impl<const NAN: bool> Load for Fp8<'_, NAN> {
    const STEP: usize = 2 * LANES;
    const DECODE_ONCE: bool = true;
    const SUMS_SPANS: bool = true;
    type Scale = ();

    fn span(self) -> usize {
        self.scales.span()
    }

    fn vector(self) -> bool {
        self.scales.vector()
    }

    #[inline(always)]
    unsafe fn span_factor(self, row: usize, c: usize) -> SpanFactor {
        if !self.scales.vector() {
            // Each row is one span, read lane by lane: its products are scaled already.
            return SpanFactor::Unit;
        }
        // SAFETY: the caller's (`c < k`, the row exists); the caller has AVX-512 F.
        unsafe {
            let s = self.scales.at(row, c);
            if (256.0 * s).is_finite() {
                SpanFactor::One(_mm512_set1_ps(256.0 * s))
            } else {
                SpanFactor::Two(_mm512_set1_ps(256.0), _mm512_set1_ps(s))
            }
        }
    }

    #[inline(always)]
    unsafe fn scale(self, _row: usize, _c: usize) {}

    #[inline(always)]
    unsafe fn load(self, _scale: (), row: usize, c: usize, masks: [__mmask16; 2]) -> [__m512; 2] {
        let codes = self.src.codes.as_ptr();
        // SAFETY: as for `Plain<f32>`; the caller has AVX-512 F, BW and VL.
        unsafe {
            let lanes = masks[0] as u32 | (masks[1] as u32) << 16;
            let codes = _mm256_maskz_loadu_epi8(lanes, codes.add(row * self.src.k + c).cast());
            let x = _mm512_slli_epi16::<7>(_mm512_cvtepi8_epi16(codes));
            let mask = _mm512_set1_epi16(0xbf80u16 as i16);
            let half = if NAN {
                let y = _mm512_add_epi16(x, _mm512_set1_epi16(0x80));
                // Bitwise `mask ? x : x ^ y` (truth table 0xb4 of `x, y, mask`): `x` under
                // `0xbf80`, the NaN flag in bit 14 (bits 0-6 are zero in both).
                _mm512_ternarylogic_epi32::<0xb4>(x, y, mask)
            } else {
                _mm512_and_si512(x, mask)
            };
            [
                _mm512_cvtph_ps(_mm512_castsi512_si256(half)),
                _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(half)),
            ]
        }
    }

    #[inline(always)]
    unsafe fn load_lanes(self, row: usize, c: usize, mask: __mmask16) -> __m512 {
        // SAFETY: the caller's.
        unsafe { load_lanes(self.src, row, c, mask) }
    }

    #[inline]
    fn prefetch(self, row: usize, c: usize) {
        // SAFETY: as for `Plain<f32>`.
        unsafe { prefetch(self.src.codes.as_ptr().wrapping_add(row * self.src.k + c)) }
    }

    #[inline]
    fn prefetch_scale(self, row: usize, c: usize) {
        self.scales.prefetch(row, c)
    }
}

/// MXFP4 e2m1 rows (two codes a byte, low nibble first, `bytes` a row) with a scale per row and
/// group of columns.
///
/// A step of 32 columns is one 16-byte load widened to 32 bits (`vpmovzxbd`): lane `l` holds byte
/// `l`, whose low nibble is the code of column `c + 2l` and high nibble that of `c + 2l + 1`. The
/// low 4 bits of a lane index the 16 e2m1 values times the span's scale in a register (`vpermps`,
/// which reads only those bits): once as they are for the even columns, once shifted right by 4 for
/// the odd ones. So a step's two vectors are its even and its odd columns, and
/// [`Load::activations`] deals the activations the same way (two `vpermt2ps`, shared by the tile's
/// weight rows). Each value is the reference's product of the code's value and the scale, bit for
/// bit. Lanes past `K` are zeroed (the high nibble of a row's half-used last byte is not a value).
/// A group of an odd number of 16-column chunks ends in half a step (masked); groups that split
/// chunks are decoded lane by lane (the whole row: the spans of a row are all one or the other).
#[derive(Clone, Copy)]
struct Mxfp4<'a> {
    src: portable::Mxfp4<'a>,
    scales: GroupScales,
}

impl Load for Mxfp4<'_> {
    const STEP: usize = 2 * LANES;
    const DECODE_ONCE: bool = true;
    /// The 16 e2m1 values times the span's scale.
    type Scale = __m512;

    fn span(self) -> usize {
        self.scales.span()
    }

    fn vector(self) -> bool {
        self.scales.vector()
    }

    #[inline(always)]
    unsafe fn scale(self, row: usize, c: usize) -> __m512 {
        // SAFETY: the caller's (`c < k`, the row exists); the caller has AVX-512 F.
        unsafe {
            let s = _mm512_set1_ps(self.scales.at(row, c));
            _mm512_mul_ps(_mm512_loadu_ps(E2M1.as_ptr()), s)
        }
    }

    #[inline(always)]
    unsafe fn load(
        self,
        table: __m512,
        row: usize,
        c: usize,
        masks: [__mmask16; 2],
    ) -> [__m512; 2] {
        // The bytes of the unmasked columns (the low `len` of the step): byte `b` holds columns
        // `c + 2b` and `c + 2b + 1`; the odd column of the last byte is past `K` for odd `len`.
        let len = masks[0].count_ones() + masks[1].count_ones();
        let byte_mask = ((1u32 << len.div_ceil(2)) - 1) as __mmask16;
        let odd_mask = ((1u32 << (len / 2)) - 1) as __mmask16;
        // (The activations past `K` are zero too: the masks matter only for a scale that is not
        // finite, whose products with zero would be NaN.)
        let codes = self.src.codes.as_ptr();
        // SAFETY: as for `Plain<f32>` (`c` is even: the step's bytes start at `c / 2`, and the
        // masked bytes are those of its columns).
        unsafe {
            let packed =
                _mm_maskz_loadu_epi8(byte_mask, codes.add(row * self.src.bytes + c / 2).cast());
            let bytes = _mm512_cvtepu8_epi32(packed);
            [
                _mm512_maskz_permutexvar_ps(byte_mask, bytes, table),
                _mm512_maskz_permutexvar_ps(odd_mask, _mm512_srli_epi32::<4>(bytes), table),
            ]
        }
    }

    #[inline(always)]
    unsafe fn activations(x: *const f32, c: usize, masks: [__mmask16; 2]) -> [__m512; 2] {
        // SAFETY: the caller's (a lane outside its mask is not read); the caller has AVX-512 F.
        unsafe {
            let first = _mm512_maskz_loadu_ps(masks[0], x.add(c));
            let second = _mm512_maskz_loadu_ps(masks[1], x.wrapping_add(c + LANES));
            let even = _mm512_loadu_si512(EVEN_ODD[0].as_ptr().cast());
            let odd = _mm512_loadu_si512(EVEN_ODD[1].as_ptr().cast());
            [
                _mm512_permutex2var_ps(first, even, second),
                _mm512_permutex2var_ps(first, odd, second),
            ]
        }
    }

    #[inline(always)]
    unsafe fn load_lanes(self, row: usize, c: usize, mask: __mmask16) -> __m512 {
        // SAFETY: the caller's.
        unsafe { load_lanes(self.src, row, c, mask) }
    }

    #[inline]
    fn prefetch(self, row: usize, c: usize) {
        // SAFETY: as for `Plain<f32>`.
        unsafe {
            prefetch(
                self.src
                    .codes
                    .as_ptr()
                    .wrapping_add(row * self.src.bytes + c / 2),
            )
        }
    }

    #[inline]
    fn prefetch_scale(self, row: usize, c: usize) {
        self.scales.prefetch(row, c)
    }
}

/// The lanes of `vpermt2ps` that deal 32 columns (two vectors) into the even ones, then the odd.
static EVEN_ODD: [[u32; LANES]; 2] = {
    let mut t = [[0u32; LANES]; 2];
    let mut l = 0;
    while l < LANES {
        t[0][l] = 2 * l as u32;
        t[1][l] = 2 * l as u32 + 1;
        l += 1;
    }
    t
};

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

/// The lanes of the first `len` columns of a chunk (all for `len >= 16`).
#[inline(always)]
fn lane_mask(len: usize) -> __mmask16 {
    if len >= LANES {
        0xffff
    } else {
        (1u16 << len) - 1
    }
}

/// How a span's sums of products join a tile's dot products ([`Load::span_factor`]).
#[derive(Clone, Copy)]
enum SpanFactor {
    /// Added as they are.
    Unit,
    /// Times one factor (a fused multiply-add: one rounding).
    One(__m512),
    /// Times the first factor, exactly (a power of two), then times the second: one rounding too,
    /// of the same product as `One` of the two factors' product, which is not finite.
    Two(__m512, __m512),
}

impl SpanFactor {
    /// `acc + sums * factor`.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512 F.
    #[inline(always)]
    unsafe fn add(self, sums: __m512, acc: __m512) -> __m512 {
        // SAFETY: the caller's.
        unsafe {
            match self {
                SpanFactor::Unit => _mm512_add_ps(acc, sums),
                SpanFactor::One(f) => _mm512_fmadd_ps(sums, f, acc),
                SpanFactor::Two(exact, f) => _mm512_fmadd_ps(_mm512_mul_ps(sums, exact), f, acc),
            }
        }
    }
}

/// The tile's products over one load step at column `c` (chunk `h` of its `STEP / 16` masked by
/// `masks[h]`), the weights loaded with the rows' `scales` and the activations in their lanes
/// (or both chunk by chunk, one a step, without); then, for `ahead`, a prefetch of the next `NR`
/// weight rows' line.
///
/// # Safety
///
/// The CPU must support AVX-512 F, BW and VL; the unmasked columns must lie in the `MR` activation
/// rows of `xs` and in the weight rows, in a span of `scales`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn step<W: Load, const MR: usize, const NR: usize>(
    xs: &[f32],
    k: usize,
    w: W,
    scales: Option<&[W::Scale; NR]>,
    row0: usize,
    c: usize,
    masks: [__mmask16; 2],
    ahead: bool,
    acc: &mut [[__m512; NR]; MR],
) {
    // SAFETY: the caller's.
    unsafe {
        // (Loops, not `array::from_fn`: a closure would not inherit the caller's target features,
        // and its loads would not be inlined.)
        let mut wv = [[_mm512_setzero_ps(); NR]; 2];
        for j in 0..NR {
            match scales {
                Some(s) => [wv[0][j], wv[1][j]] = w.load(s[j], row0 + j, c, masks),
                None => wv[0][j] = w.load_lanes(row0 + j, c, masks[0]),
            }
        }
        if ahead {
            for j in 0..NR {
                w.prefetch(row0 + NR + j, c);
            }
        }
        let chunks = if scales.is_some() { W::STEP / LANES } else { 1 };
        for (i, ai) in acc.iter_mut().enumerate() {
            let x = xs.as_ptr().add(i * k);
            let xv = match scales {
                Some(_) => W::activations(x, c, masks),
                None => [
                    _mm512_maskz_loadu_ps(masks[0], x.add(c)),
                    _mm512_setzero_ps(),
                ],
            };
            for (&xh, wh) in xv.iter().zip(&wv).take(chunks) {
                for (a, &wj) in ai.iter_mut().zip(wh) {
                    *a = _mm512_fmadd_ps(xh, wj, *a);
                }
            }
        }
    }
}

/// `out(i, j, dot(x row i, weight row row0 + j))` for an `MR x NR` tile.
///
/// Span by span, the rows' scales are set up once; then each step of the span is loaded (masked
/// only at `K`) and its chunks of 16 columns added into the lanes: of the dot products, or of the
/// span's sums, which then join them by [`Load::span_factor`] ([`Load::SUMS_SPANS`]).
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
    let mut sums = [[_mm512_setzero_ps(); NR]; MR];
    let span = w.span();
    let vector = w.vector();
    let mut c = 0;
    while c < k {
        let (c0, end) = (c, if k - c > span { c + span } else { k });
        let dst = if W::SUMS_SPANS { &mut sums } else { &mut acc };
        if vector {
            // SAFETY (both): AVX-512 is enabled here; the span is read by vectors; `c < end <= k`,
            // `c` a multiple of the span; the rows exist.
            let mut scales = [unsafe { w.scale(row0, c) }; NR];
            for (j, s) in scales.iter_mut().enumerate().skip(1) {
                *s = unsafe { w.scale(row0 + j, c) };
            }
            if ahead {
                for j in 0..NR {
                    w.prefetch_scale(row0 + NR + j, c);
                }
            }
            let scales = Some(&scales);
            while end - c >= W::STEP {
                // SAFETY: AVX-512 is enabled here; the step's columns lie in the span and in every
                // row (the weight rows `row0 .. row0 + NR` exist, checked by the caller; the
                // activation rows by the assert above).
                unsafe { step(xs, k, w, scales, row0, c, [0xffff; 2], ahead, dst) };
                c += W::STEP;
            }
            if c < end {
                let len = end - c;
                let masks = [lane_mask(len), lane_mask(len.saturating_sub(LANES))];
                // SAFETY: as above, for the unmasked columns `c .. end`.
                unsafe { step(xs, k, w, scales, row0, c, masks, ahead, dst) };
                c = end;
            }
        } else {
            while c < end {
                let masks = [lane_mask(end - c), 0];
                // SAFETY: as above, for the unmasked columns `c .. min(c + 16, end)`.
                unsafe { step(xs, k, w, None, row0, c, masks, ahead, dst) };
                c += LANES;
            }
        }
        if W::SUMS_SPANS {
            for j in 0..NR {
                // SAFETY: AVX-512 is enabled here; `c0 < k`, a multiple of the span; the rows
                // exist.
                let factor = unsafe { w.span_factor(row0 + j, c0) };
                for (ai, si) in acc.iter_mut().zip(&mut sums) {
                    // SAFETY: AVX-512 is enabled here.
                    ai[j] = unsafe { factor.add(si[j], ai[j]) };
                    si[j] = _mm512_setzero_ps();
                }
            }
        }
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
    if W::DECODE_ONCE && task.m > MR {
        strip::run(task, w)
    } else {
        tile_dispatch!(task, w, tile);
    }
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
        } => {
            let src = portable::Fp8 {
                codes: codes.codes(),
                scales,
                k,
                group,
            };
            if codes.has_nan() {
                run(task, Fp8::<true>::new(src))
            } else {
                run(task, Fp8::<false>::new(src))
            }
        }
        WeightSource::Mxfp4E2M1 {
            codes,
            scales,
            group,
        } => run(
            task,
            Mxfp4 {
                src: portable::Mxfp4 {
                    codes,
                    scales,
                    k,
                    bytes: CodeFormat::Mxfp4E2M1.row_bytes(k),
                    group,
                },
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
