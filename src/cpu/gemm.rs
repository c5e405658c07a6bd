//! Stage 3, grouped expert GEMM: `Y[rows of e] = X[rows of e] @ W_e^T` for every expert `e`.
//!
//! Weights are `[E, N, K]` with `K` contiguous (a Hugging Face `Linear` weight per expert). Each expert's
//! rows are a contiguous segment of `X` given by `[E + 1]` offsets, as produced by
//! [`permute`](super::permute::permute); an expert with no rows costs nothing.

use super::activation::activate_row;
use crate::config::Activation;
use crate::dtype::Element;
use crate::error::{MoeError, Result};
use crate::view::{ExpertsRef, MatMut, MatRef};

/// Weight rows converted to `f32` at a time: bounds that scratch memory to `W_BLOCK * K` floats.
const W_BLOCK: usize = 64;
/// Activation rows computed at a time: bounds the accumulator scratch to `M_BLOCK * N` floats.
const M_BLOCK: usize = 32;

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
pub fn grouped_gemm<X: Element, W: Element, Y: Element>(
    x: MatRef<'_, X>,
    offsets: &[usize],
    w: ExpertsRef<'_, W>,
    out: &mut MatMut<'_, Y>,
) -> Result<()> {
    out.expect_shape("grouped GEMM output", x.rows(), w.n())?;
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
pub fn grouped_gemm_activation<X: Element, W: Element, Y: Element>(
    x: MatRef<'_, X>,
    offsets: &[usize],
    w: ExpertsRef<'_, W>,
    act: Activation,
    out: &mut MatMut<'_, Y>,
) -> Result<()> {
    let i = out.cols();
    if w.n() != act.up_rows(i) {
        return Err(MoeError::shape(
            "expert up-projection weights",
            format!("[E, {}, K] for an output of {i} columns", act.up_rows(i)),
            format!("[{}, {}, {}]", w.experts(), w.n(), w.k()),
        ));
    }
    out.expect_shape("activated output", x.rows(), i)?;
    grouped_gemm_rows(x, offsets, w, |r, acc| {
        activate_row(act, acc, out.row_mut(r))
    })
}

/// The grouped GEMM with the epilogue left to the caller: `sink(r, acc)` receives row `r`'s `f32`
/// accumulators (all `N` columns) once, for every row of every expert.
fn grouped_gemm_rows<X: Element, W: Element>(
    x: MatRef<'_, X>,
    offsets: &[usize],
    w: ExpertsRef<'_, W>,
    mut sink: impl FnMut(usize, &[f32]),
) -> Result<()> {
    if w.k() != x.cols() {
        return Err(MoeError::shape(
            "expert weights",
            format!("[E, N, {}] (K of the activations)", x.cols()),
            format!("[{}, {}, {}]", w.experts(), w.n(), w.k()),
        ));
    }
    validate_offsets(offsets, w.experts(), x.rows())?;
    let (n, k) = (w.n(), w.k());
    let mut wbuf = vec![0f32; W_BLOCK.min(n) * k];
    let mut xbuf = vec![0f32; M_BLOCK * k];
    let mut acc = vec![0f32; M_BLOCK * n];
    for e in 0..w.experts() {
        let we = w.expert(e);
        for m0 in (offsets[e]..offsets[e + 1]).step_by(M_BLOCK) {
            let mb = M_BLOCK.min(offsets[e + 1] - m0);
            for i in 0..mb {
                for (dst, v) in xbuf[i * k..(i + 1) * k].iter_mut().zip(x.row(m0 + i)) {
                    *dst = v.to_f32();
                }
            }
            for n0 in (0..n).step_by(W_BLOCK) {
                let nb = W_BLOCK.min(n - n0);
                for j in 0..nb {
                    for (dst, v) in wbuf[j * k..(j + 1) * k].iter_mut().zip(we.row(n0 + j)) {
                        *dst = v.to_f32();
                    }
                }
                for i in 0..mb {
                    let xr = &xbuf[i * k..(i + 1) * k];
                    for j in 0..nb {
                        acc[i * n + n0 + j] = super::dot_f32(xr, &wbuf[j * k..(j + 1) * k]);
                    }
                }
            }
            for i in 0..mb {
                sink(m0 + i, &acc[i * n..(i + 1) * n]);
            }
        }
    }
    Ok(())
}
