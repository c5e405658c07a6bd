//! Stage 3, grouped expert GEMM: `Y[rows of e] = X[rows of e] @ W_e^T` for every expert `e`.
//!
//! Weights are `[E, N, K]` with `K` contiguous (a Hugging Face `Linear` weight per expert). Each expert's
//! rows are a contiguous segment of `X` given by `[E + 1]` offsets, as produced by
//! [`permute`](super::permute::permute); an expert with no rows costs nothing.
//!
//! # Work decomposition
//!
//! The rows of each expert are taken `M_BLOCK` (32) at a time, one block after the other on the calling
//! thread: convert the block's activations to `f32`, compute its `[mb, N]` accumulators, hand each row to
//! the epilogue. The accumulators are split by columns into strips of `W_BLOCK` (64) weight rows, and the
//! strips are computed in parallel; each strip converts its weight rows `PANEL` (4) at a time into its own
//! scratch and dots them with every row of the block. Splitting over weight rows (rather than over
//! experts or row blocks) keeps every core busy in decode too, where a block is one token and the time
//! goes into streaming `N * K` weights, and it leaves the epilogue on the calling thread, writing rows as
//! before. Every accumulator is one `dot_f32` of the same `f32` inputs whichever thread computes it, so
//! the results do not depend on the thread count (or on the instruction set, see below).
//!
//! The strips run on rayon's pool rather than on `std::thread::scope` threads: a forward makes one
//! parallel region per row block (one per expert in decode), and rayon reuses its threads and balances
//! the strips by work stealing where scoped threads would be spawned for every region. A block with
//! little work (`PAR_GRAIN` multiply-adds) is not split at all and never leaves the calling thread.
//! The parallel work runs in the pool the caller is in (`ThreadPool::install`), else in rayon's global
//! pool.
//!
//! On x86-64 CPUs with AVX2 the strip loop is the same code compiled a second time with AVX2 enabled
//! (chosen at run time): the eight lanes of a dot product then fit one vector register. The operations
//! and their order are unchanged (Rust never fuses a multiply and an add), so the bits are the same.

use rayon::prelude::*;

use super::activation::activate_row;
use super::fast::{Fp8Codes, WeightSource};
use crate::config::Activation;
use crate::dtype::Element;
use crate::error::{MoeError, Result};
use crate::quant::{CodeFormat, QuantExperts};
use crate::view::{ExpertsRef, MatMut, MatRef};

/// Weight rows per parallel work item (a column strip of a row block's accumulators).
const W_BLOCK: usize = 64;
/// Weight rows converted to `f32` and dotted together ([`dot_f32_many`](super::dot_f32_many)): each
/// activation chunk loaded serves `PANEL` dot products, and the strip's scratch is `PANEL * K` floats,
/// small enough to stay in cache while every row of the block reuses it.
const PANEL: usize = 4;
/// Activation rows computed at a time: bounds the accumulator scratch to `M_BLOCK * N` floats.
const M_BLOCK: usize = 32;
/// Multiply-adds below which a piece of a row block is not split off to another thread: a row block
/// with less than twice this much work runs on the calling thread alone, never touching the pool.
const PAR_GRAIN: usize = 1 << 18;

/// Expert weights `[E, N, K]` as the GEMMs read them: a row at a time, widened to `f32`. Plain
/// element weights ([`ExpertsRef`]) convert each value; quantized ones ([`QuantExperts`]) dequantize
/// the row's codes with its scales, so a quantized layer is never held in full precision.
pub trait ExpertRows: Sync {
    /// `[E, N, K]`.
    fn shape(&self) -> [usize; 3];

    /// Row `j` of expert `e` as `f32` into `out` (`K` values).
    fn row_into(&self, e: usize, j: usize, out: &mut [f32]);

    /// The stored weights, for the fast backend's kernels ([`super::fast`]); `None` for a storage
    /// they do not read (none of this crate's), on which the fast backend runs the reference GEMM.
    fn source(&self) -> Option<WeightSource<'_>>;
}

impl<W: Element> ExpertRows for ExpertsRef<'_, W> {
    fn shape(&self) -> [usize; 3] {
        [self.experts(), self.n(), self.k()]
    }

    #[inline(always)]
    fn row_into(&self, e: usize, j: usize, out: &mut [f32]) {
        for (dst, v) in out.iter_mut().zip(self.expert(e).row(j)) {
            *dst = v.to_f32();
        }
    }

    fn source(&self) -> Option<WeightSource<'_>> {
        Some(WeightSource::plain(self.data()))
    }
}

impl ExpertRows for QuantExperts {
    fn shape(&self) -> [usize; 3] {
        QuantExperts::shape(self)
    }

    #[inline(always)]
    fn row_into(&self, e: usize, j: usize, out: &mut [f32]) {
        QuantExperts::row_into(self, e, j, out)
    }

    fn source(&self) -> Option<WeightSource<'_>> {
        match self.format() {
            CodeFormat::Fp8E4M3 => Some(WeightSource::Fp8E4M3 {
                codes: Fp8Codes::of(self),
                scales: self.scales(),
                group: self.group(),
            }),
            CodeFormat::Mxfp4E2M1 => Some(WeightSource::Mxfp4E2M1 {
                codes: self.codes(),
                scales: self.scales(),
                group: self.group(),
            }),
        }
    }
}

impl<R: ExpertRows + ?Sized> ExpertRows for &R {
    fn shape(&self) -> [usize; 3] {
        (**self).shape()
    }

    #[inline(always)]
    fn row_into(&self, e: usize, j: usize, out: &mut [f32]) {
        (**self).row_into(e, j, out)
    }

    fn source(&self) -> Option<WeightSource<'_>> {
        (**self).source()
    }
}

/// `[E, N, K]` as the `[E, N, K]` of an error message.
fn dims(w: &impl ExpertRows) -> String {
    format!("{:?}", w.shape())
}

/// Check that `offsets` is a valid `[E + 1]` segmentation of `rows` rows.
pub fn validate_offsets(offsets: &[usize], num_experts: usize, rows: usize) -> Result<()> {
    if offsets.len() != num_experts + 1 {
        return Err(MoeError::shape(
            "expert offsets",
            format!("[{}] (E + 1)", num_experts + 1),
            format!("[{}]", offsets.len()),
        ));
    }
    if offsets[0] != 0 || offsets[num_experts] != rows {
        return Err(MoeError::shape(
            "expert offsets",
            format!("0 ..= {rows} (the row count)"),
            format!("{} ..= {}", offsets[0], offsets[num_experts]),
        ));
    }
    if let Some(e) = offsets.windows(2).position(|w| w[0] > w[1]) {
        return Err(MoeError::InvalidConfig(format!(
            "expert offsets must be non-decreasing, but offsets[{e}] = {} > offsets[{}] = {}",
            offsets[e],
            e + 1,
            offsets[e + 1]
        )));
    }
    Ok(())
}

/// For each expert `e`, `out[rows of e] = x[rows of e] @ w[e]^T`, accumulated in `f32` and rounded once.
///
/// `x` is `[rows, K]`, `w` is `[E, N, K]`, `out` is `[rows, N]`, `offsets` is `[E + 1]`.
pub fn grouped_gemm<X: Element, Y: Element>(
    x: MatRef<'_, X>,
    offsets: &[usize],
    w: impl ExpertRows,
    out: &mut MatMut<'_, Y>,
) -> Result<()> {
    out.expect_shape("grouped GEMM output", x.rows(), w.shape()[1])?;
    grouped_gemm_rows(x, offsets, w, |r, acc| {
        for (o, &a) in out.row_mut(r).iter_mut().zip(acc) {
            *o = Y::from_f32(a);
        }
    })
}

/// The up projection with the expert activation fused: for each expert `e`,
/// `out[rows of e] = act(x[rows of e] @ w[e]^T)`, the activation applied to the `f32` accumulators and
/// the result rounded once (the CPU twin of the GPU GEMM's activation epilogue).
///
/// `x` is `[rows, K]`, `w` is `[E, up, K]` with `up = act.up_rows(I)` (gate rows first when gated),
/// `out` is `[rows, I]`.
pub fn grouped_gemm_activation<X: Element, Y: Element>(
    x: MatRef<'_, X>,
    offsets: &[usize],
    w: impl ExpertRows,
    act: Activation,
    out: &mut MatMut<'_, Y>,
) -> Result<()> {
    let i = out.cols();
    if w.shape()[1] != act.up_rows(i) {
        return Err(MoeError::shape(
            "expert up-projection weights",
            format!("[E, {}, K] for an output of {i} columns", act.up_rows(i)),
            dims(&w),
        ));
    }
    out.expect_shape("activated output", x.rows(), i)?;
    grouped_gemm_rows(x, offsets, w, |r, acc| {
        activate_row(act, acc, out.row_mut(r))
    })
}

/// The grouped GEMM with the epilogue left to the caller: `sink(r, acc)` receives row `r`'s `f32`
/// accumulators (all `N` columns) once, for every row of every expert, in row order on the calling
/// thread (see the module docs for how the work is split).
fn grouped_gemm_rows<X: Element>(
    x: MatRef<'_, X>,
    offsets: &[usize],
    w: impl ExpertRows,
    mut sink: impl FnMut(usize, &[f32]),
) -> Result<()> {
    let [experts, n, k] = w.shape();
    if k != x.cols() {
        return Err(MoeError::shape(
            "expert weights",
            format!("[E, N, {}] (K of the activations)", x.cols()),
            dims(&w),
        ));
    }
    validate_offsets(offsets, experts, x.rows())?;
    let mut xbuf = vec![0f32; M_BLOCK * k];
    let mut acc = vec![0f32; M_BLOCK * n];
    for e in 0..experts {
        let we = ExpertRow { w: &w, e, n, k };
        for m0 in (offsets[e]..offsets[e + 1]).step_by(M_BLOCK) {
            let mb = M_BLOCK.min(offsets[e + 1] - m0);
            for i in 0..mb {
                for (dst, v) in xbuf[i * k..(i + 1) * k].iter_mut().zip(x.row(m0 + i)) {
                    *dst = v.to_f32();
                }
            }
            block_product(&xbuf[..mb * k], we, &mut acc[..mb * n]);
            for i in 0..mb {
                sink(m0 + i, &acc[i * n..(i + 1) * n]);
            }
        }
    }
    Ok(())
}

/// One expert's weight matrix `[N, K]` of an [`ExpertRows`].
struct ExpertRow<'a, R> {
    w: &'a R,
    e: usize,
    n: usize,
    k: usize,
}

impl<R> Clone for ExpertRow<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for ExpertRow<'_, R> {}

/// `acc[i * N + j] = dot_f32(xs row i, we row j)` for the `mb = acc.len() / N` rows of one block, in
/// parallel over strips of [`W_BLOCK`] columns, each with its own `PANEL * K` scratch.
fn block_product<R: ExpertRows>(xs: &[f32], we: ExpertRow<'_, R>, acc: &mut [f32]) {
    let (n, k) = (we.n, we.k);
    if n == 0 {
        return;
    }
    let mb = acc.len() / n;
    // Strip `b` is columns `b * W_BLOCK ..` of every accumulator row: disjoint `&mut` slices, split up
    // front so that each work item owns its outputs.
    let mut strips: Vec<Vec<&mut [f32]>> = Vec::with_capacity(n.div_ceil(W_BLOCK));
    for row in acc.chunks_exact_mut(n) {
        for (b, part) in row.chunks_mut(W_BLOCK).enumerate() {
            match strips.get_mut(b) {
                Some(strip) => strip.push(part),
                None => strips.push(vec![part]),
            }
        }
    }
    // Strips per piece of work: at least `PAR_GRAIN` multiply-adds, so that a small block is never split.
    let min_strips = PAR_GRAIN.div_ceil((mb * W_BLOCK * k).max(1));
    strips
        .into_par_iter()
        .enumerate()
        .with_min_len(min_strips)
        .for_each_init(
            || vec![0f32; PANEL * k],
            |panel, (b, mut strip)| strip_product(xs, we, b * W_BLOCK, &mut strip, panel),
        );
}

/// One strip: `strip[i][j] = dot_f32(xs row i, we row n0 + j)`, in the AVX2 build of
/// [`strip_product_body`] when the CPU has it.
fn strip_product<R: ExpertRows>(
    xs: &[f32],
    we: ExpertRow<'_, R>,
    n0: usize,
    strip: &mut [&mut [f32]],
    panel: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { strip_product_avx2(xs, we, n0, strip, panel) };
    }
    strip_product_body(xs, we, n0, strip, panel)
}

/// [`strip_product_body`] compiled with AVX2 (its callees are `#[inline(always)]`, so they are too).
///
/// # Safety
///
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn strip_product_avx2<R: ExpertRows>(
    xs: &[f32],
    we: ExpertRow<'_, R>,
    n0: usize,
    strip: &mut [&mut [f32]],
    panel: &mut [f32],
) {
    strip_product_body(xs, we, n0, strip, panel)
}

/// The strip loop: convert [`PANEL`] weight rows into `panel` (`PANEL * K` floats), then dot them with
/// every activation row of the block, [`dot_f32_many`](super::dot_f32_many) for a full panel and
/// [`dot_f32`](super::dot_f32) for the strip's last rows.
#[inline(always)]
fn strip_product_body<R: ExpertRows>(
    xs: &[f32],
    we: ExpertRow<'_, R>,
    n0: usize,
    strip: &mut [&mut [f32]],
    panel: &mut [f32],
) {
    let k = we.k;
    let nb = strip[0].len();
    for j0 in (0..nb).step_by(PANEL) {
        let pb = PANEL.min(nb - j0);
        for j in 0..pb {
            we.w.row_into(we.e, n0 + j0 + j, &mut panel[j * k..(j + 1) * k]);
        }
        for (i, out) in strip.iter_mut().enumerate() {
            let xr = &xs[i * k..(i + 1) * k];
            if pb == PANEL {
                let ws: [&[f32]; PANEL] = std::array::from_fn(|j| &panel[j * k..(j + 1) * k]);
                out[j0..j0 + PANEL].copy_from_slice(&super::dot_f32_many(xr, ws));
            } else {
                for j in 0..pb {
                    out[j0 + j] = super::dot_f32(xr, &panel[j * k..(j + 1) * k]);
                }
            }
        }
    }
}
