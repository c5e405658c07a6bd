//! Stage 4, combine: each token's `k` expert outputs, weighted and summed in slot order, plus the shared
//! experts' output.
//!
//! Deterministic by construction: token `t`'s sum is always taken over slots `0..k` in order, in `f32`.

use crate::dtype::Element;
use crate::error::{MoeError, Result};
use crate::view::{MatMut, MatRef};

use super::permute::Permutation;

/// `out[t] = sum over s of weights[t, s] * expert_out[row(t, s)]  (+ shared[t])`, accumulated in `f32`
/// in slot order and rounded once.
///
/// `expert_out` is `[rows, H]` in permuted order, `weights` is `[T, k]`, `shared` (the summed, already
/// gated output of the shared experts) is `[T, H]`, `out` is `[T, H]`.
pub fn combine<Y: Element, S: Element, O: Element>(
    expert_out: MatRef<'_, Y>,
    perm: &Permutation,
    weights: MatRef<'_, f32>,
    shared: Option<MatRef<'_, S>>,
    out: &mut MatMut<'_, O>,
) -> Result<()> {
    let (t, k, h) = (perm.num_tokens(), perm.top_k(), expert_out.cols());
    expert_out.expect_shape("expert outputs", perm.num_rows(), h)?;
    weights.expect_shape("topk_weights", t, k)?;
    if let Some(s) = &shared {
        s.expect_shape("shared expert output", t, h)?;
    }
    out.expect_shape("combined output", t, h)?;
    if let Some((i, &value)) = weights
        .data()
        .iter()
        .enumerate()
        .find(|(_, w)| !w.is_finite())
    {
        return Err(MoeError::NonFinite {
            what: "routing weight",
            token: i / k,
            expert: i % k,
            value,
        });
    }
    // One token per row of `out`, the tokens in parallel.
    super::par_rows(
        out.data_mut(),
        h,
        (k + 1) * h,
        || vec![0f32; h],
        |acc, tok, orow| {
            acc.fill(0.0);
            for (slot, &w) in weights.row(tok).iter().enumerate() {
                // A pair routed to another rank's expert adds nothing here (expert parallelism).
                let Some(row) = perm.row_of(tok, slot) else {
                    continue;
                };
                let y = expert_out.row(row);
                for (a, v) in acc.iter_mut().zip(y) {
                    *a += w * v.to_f32();
                }
            }
            if let Some(s) = &shared {
                for (a, v) in acc.iter_mut().zip(s.row(tok)) {
                    *a += v.to_f32();
                }
            }
            for (o, &a) in orow.iter_mut().zip(acc.iter()) {
                *o = O::from_f32(a);
            }
        },
    );
    Ok(())
}
