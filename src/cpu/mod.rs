//! The CPU reference path: every stage of the MoE forward in plain, obviously-correct Rust.
//!
//! All arithmetic is `f32`; inputs and outputs may be `f32`, `bf16` or `f16` ([`Element`]). Where a stage
//! writes a lower-precision output it rounds once, at the same point the GPU kernels do, so GPU results
//! can be compared against this path stage by stage. Inputs are never modified.
//!
//! [`Element`]: crate::Element

pub mod activation;
pub mod combine;
pub mod fast;
pub mod fp8_act;
pub mod gemm;
mod huge_pages;
pub mod layer;
mod line_aligned;
pub mod permute;
pub mod routing;

pub use line_aligned::LineAligned;

/// Bytes of a cache line on the CPUs the fast backend targets (x86-64): the alignment its scratch
/// buffers and [`LineAligned`]'s large blocks start on.
pub(crate) const CACHE_LINE: usize = 64;

/// Operations of work (multiply-adds, values moved) below which a parallel row loop keeps its rows
/// on one thread.
const ROW_GRAIN: usize = 1 << 16;

/// `f(scratch, r, row)` for every row `r` of `out` (rows of `cols` values), in parallel over rows
/// with a `scratch` from `init` per task: each row is computed on its own, so the result does not
/// depend on the split. `work_per_row` (operations a row costs) sizes the tasks; small loops stay
/// on the calling thread.
pub(crate) fn par_rows<T: Send, S>(
    out: &mut [T],
    cols: usize,
    work_per_row: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) {
    use rayon::prelude::*;
    if cols == 0 {
        return;
    }
    out.par_chunks_mut(cols)
        .enumerate()
        .with_min_len(ROW_GRAIN.div_ceil(work_per_row.max(1)))
        .for_each_init(init, |s, (r, row)| f(s, r, row));
}

/// `n` zeros (`X::default()`), written in parallel: a large buffer's pages are first touched by every
/// thread rather than by the caller alone (`vec![X::default(); n]` fills element by element on
/// one thread where `X` is not a primitive).
pub(crate) fn zeroed<X: crate::Element>(n: usize) -> Vec<X> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(X::default(), n).with_min_len(ROW_GRAIN));
    v
}

/// The logistic function `1 / (1 + exp(-x))`.
#[inline]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `sum(a[i] * b[i])` in `f32`, with eight independent partial sums (added pairwise at the end) so the
/// compiler can vectorise it. The one summation order of the CPU path: [`dot_f32_many`] computes the
/// same sums.
#[inline(always)]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_many(a, [b])[0]
}

/// `R` dot products of `a` with each of `bs`, each one bit-for-bit what [`dot_f32`] would return: lane
/// `l` of dot `r` accumulates `a[i] * bs[r][i]` for `i = l, l + 8, l + 16, ...`, the `len % 8` trailing
/// products go to a separate tail sum, and the lanes are folded as in [`reduce_lanes`]. Each chunk of
/// `a` is loaded once for the `R` dots, and their `R` independent chains of additions keep the adders
/// busy where a single dot waits on its own latency; the order within each dot is unchanged.
#[inline(always)]
pub(crate) fn dot_f32_many<const R: usize>(a: &[f32], bs: [&[f32]; R]) -> [f32; R] {
    debug_assert!(bs.iter().all(|b| b.len() == a.len()));
    let len = a.len();
    let full = len - len % 8;
    let bs = bs.map(|b| &b[..len]);
    let mut acc = [[0f32; 8]; R];
    for c in (0..full).step_by(8) {
        let x: &[f32; 8] = a[c..c + 8].try_into().expect("8 lanes");
        for r in 0..R {
            let y: &[f32; 8] = bs[r][c..c + 8].try_into().expect("8 lanes");
            acc[r] = std::array::from_fn(|l| acc[r][l] + x[l] * y[l]);
        }
    }
    std::array::from_fn(|r| {
        let mut tail = 0f32;
        for (x, y) in a[full..].iter().zip(&bs[r][full..]) {
            tail += x * y;
        }
        reduce_lanes(acc[r], tail)
    })
}

/// The end of a dot product: `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) + tail`.
///
/// Kept out of line on purpose: when this horizontal sum is inlined, LLVM's SLP vectoriser builds the
/// accumulator loop around it (pairs of lanes, shuffles across dots) and the loop runs at half width or
/// worse. Called once per dot product, so the call costs nothing measurable.
#[inline(never)]
fn reduce_lanes(acc: [f32; 8], tail: f32) -> f32 {
    let s4 = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (s4[0] + s4[2]) + (s4[1] + s4[3]) + tail
}
