//! Quantized weights decoded once per task and strip of [`NR`] weight rows: the first tile of the
//! strip decodes them as usual and records every vector it loads ([`Recording`]); the strip's other
//! tiles read the vectors back ([`Recorded`]) instead of decoding the codes again. Both walk the
//! same spans and steps and deal the activations the same way, so each product and its place in
//! the sums are those of the tile that decodes: the bits do not change, only the work
//! (perf/NOTES.md, "Step 15").

use std::arch::x86_64::*;

use super::super::{tile_dispatch, OutPtr, Task, LANES, MR, NR};
use super::{tile, Load, SpanFactor};

/// Floats a strip keeps per weight row of `K` columns loaded `step` at a time: a slot of `step`
/// floats for each chunk of [`LANES`] columns, since a step starts at any chunk (a span may end
/// half a step on, and the next span's step start there).
fn stride(k: usize, step: usize) -> usize {
    k.div_ceil(LANES) * step
}

/// Where the vectors loaded at column `c` (a multiple of [`LANES`]) of a row lie in its part of
/// the strip: the slot of `c`'s chunk.
fn slot(c: usize, step: usize) -> usize {
    c / LANES * step
}

/// Weight rows `W` and the strip of the decoded vectors of rows `row0 ..`: `stride` floats a row,
/// a slot of `STEP` for each chunk of columns.
#[derive(Clone, Copy)]
struct Strip<W> {
    w: W,
    strip: *mut f32,
    row0: usize,
    stride: usize,
}

impl<W: Load> Strip<W> {
    /// Where the vectors loaded at column `c` of global row `row` lie in the strip.
    #[inline(always)]
    fn at(self, row: usize, c: usize) -> *mut f32 {
        self.strip
            .wrapping_add((row - self.row0) * self.stride + slot(c, W::STEP))
    }
}

/// The items of [`Load`] by which a [`Recording`] or [`Recorded`] of `W` walks `W`'s spans and
/// steps: `W`'s own, so that both walk them as `W` does.
macro_rules! walk_of_w {
    () => {
        const STEP: usize = W::STEP;
        const SUMS_SPANS: bool = W::SUMS_SPANS;

        fn span(self) -> usize {
            self.0.w.span()
        }

        fn vector(self) -> bool {
            self.0.w.vector()
        }

        #[inline(always)]
        unsafe fn span_factor(self, row: usize, c: usize) -> SpanFactor {
            // SAFETY: the caller's.
            unsafe { self.0.w.span_factor(row, c) }
        }
    };
}

/// `W`'s rows, each vector loaded also stored in the strip.
#[derive(Clone, Copy)]
struct Recording<W>(Strip<W>);

impl<W: Load> Load for Recording<W> {
    walk_of_w!();
    type Scale = W::Scale;

    #[inline(always)]
    unsafe fn scale(self, row: usize, c: usize) -> W::Scale {
        // SAFETY: the caller's.
        unsafe { self.0.w.scale(row, c) }
    }

    #[inline(always)]
    unsafe fn load(
        self,
        scale: W::Scale,
        row: usize,
        c: usize,
        masks: [__mmask16; 2],
    ) -> [__m512; 2] {
        // SAFETY: the caller's; the strip holds `stride` floats for each of the tile's rows, a
        // slot of `STEP` for each chunk (see `stride`).
        unsafe {
            let v = self.0.w.load(scale, row, c, masks);
            let p = self.0.at(row, c);
            _mm512_storeu_ps(p, v[0]);
            if W::STEP > LANES {
                _mm512_storeu_ps(p.add(LANES), v[1]);
            }
            v
        }
    }

    #[inline(always)]
    unsafe fn activations(x: *const f32, c: usize, masks: [__mmask16; 2]) -> [__m512; 2] {
        // SAFETY: the caller's.
        unsafe { W::activations(x, c, masks) }
    }

    #[inline(always)]
    unsafe fn load_lanes(self, row: usize, c: usize, mask: __mmask16) -> __m512 {
        // SAFETY: as for `load`.
        unsafe {
            let v = self.0.w.load_lanes(row, c, mask);
            _mm512_storeu_ps(self.0.at(row, c), v);
            v
        }
    }

    #[inline]
    fn prefetch(self, row: usize, c: usize) {
        self.0.w.prefetch(row, c)
    }

    #[inline]
    fn prefetch_scale(self, row: usize, c: usize) {
        self.0.w.prefetch_scale(row, c)
    }
}

/// The vectors a [`Recording`] of `W` stored, read back in the same walk.
#[derive(Clone, Copy)]
struct Recorded<W>(Strip<W>);

impl<W: Load> Load for Recorded<W> {
    walk_of_w!();
    type Scale = ();

    #[inline(always)]
    unsafe fn scale(self, _row: usize, _c: usize) {}

    #[inline(always)]
    unsafe fn load(self, _scale: (), row: usize, c: usize, _masks: [__mmask16; 2]) -> [__m512; 2] {
        // SAFETY: the `Recording` stored these vectors (their lanes outside the masks zero, in the
        // lanes `W::load` put them), in bounds as there.
        unsafe {
            let p = self.0.at(row, c);
            [
                _mm512_loadu_ps(p),
                if W::STEP > LANES {
                    _mm512_loadu_ps(p.add(LANES))
                } else {
                    _mm512_setzero_ps()
                },
            ]
        }
    }

    #[inline(always)]
    unsafe fn activations(x: *const f32, c: usize, masks: [__mmask16; 2]) -> [__m512; 2] {
        // SAFETY: the caller's.
        unsafe { W::activations(x, c, masks) }
    }

    #[inline(always)]
    unsafe fn load_lanes(self, row: usize, c: usize, mask: __mmask16) -> __m512 {
        // SAFETY: as for `load`.
        unsafe { _mm512_maskz_loadu_ps(mask, self.0.at(row, c)) }
    }

    /// The strip is in cache: nothing to ask for.
    #[inline]
    fn prefetch(self, _row: usize, _c: usize) {}
}

/// The task's tiles over quantized weights `w`, each strip of [`NR`] weight rows decoded once:
/// its first [`MR`] activation rows by a [`Recording`] of `w`, the others from the record.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
pub(super) fn run<W: Load>(task: &Task<'_, f32>, w: W) {
    let (k, stride) = (task.k, stride(task.k, W::STEP));
    let mut strip = vec![0f32; NR * stride];
    for j0 in (0..task.nb).step_by(NR) {
        let row0 = task.row0 + j0;
        let first = Task {
            xs: &task.xs[..MR * k],
            m: MR,
            k,
            row0,
            nb: NR.min(task.nb - j0),
            out: OutPtr(task.out.0.wrapping_add(j0)),
            ostride: task.ostride,
        };
        let rest = Task {
            xs: &task.xs[MR * k..],
            m: task.m - MR,
            out: OutPtr(first.out.0.wrapping_add(MR * task.ostride)),
            ..first
        };
        let decoded = Strip {
            w,
            strip: strip.as_mut_ptr(),
            row0,
            stride,
        };
        tile_dispatch!(&first, Recording(decoded), tile);
        tile_dispatch!(&rest, Recorded(decoded), tile);
    }
}
