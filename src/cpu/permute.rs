//! Stage 2, permutation: the `T * k` (token, slot) pairs sorted by expert.
//!
//! Row `r` of the permuted layout belongs to one expert; expert `e` owns rows
//! `expert_offsets[e]..expert_offsets[e + 1]`. The sort is stable: within an expert, rows keep token order
//! (and slot order, which only matters for ids given by the caller). With a block size `b > 1`, each
//! expert's segment is padded with empty rows up to a multiple of `b` (an expert with no rows stays
//! empty), so a GEMM tile of `b` rows never straddles two experts; padding rows have no source.

use crate::dtype::Element;
use crate::error::{MoeError, Result};
use crate::view::{checked_mul, MatMut, MatRef};

use super::routing::validate_ids;

/// The expert-sorted row layout and both index maps. Built by [`permute`], which guarantees its invariants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permutation {
    num_tokens: usize,
    top_k: usize,
    block_size: usize,
    expert_offsets: Vec<usize>,
    expert_counts: Vec<usize>,
    row_source: Vec<Option<usize>>,
    slot_row: Vec<usize>,
}

impl Permutation {
    /// Number of tokens `T`.
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }

    /// Experts per token `k`.
    pub fn top_k(&self) -> usize {
        self.top_k
    }

    /// Number of experts `E`.
    pub fn num_experts(&self) -> usize {
        self.expert_counts.len()
    }

    /// The block size segments are padded to (1 means no padding).
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Rows of the permuted layout, padding included (`T * k` without padding).
    pub fn num_rows(&self) -> usize {
        self.row_source.len()
    }

    /// `[E + 1]` segment starts: expert `e` owns rows `offsets[e]..offsets[e + 1]` (padding included).
    pub fn expert_offsets(&self) -> &[usize] {
        &self.expert_offsets
    }

    /// `[E]` real (unpadded) rows per expert; they sum to `T * k`.
    pub fn expert_counts(&self) -> &[usize] {
        &self.expert_counts
    }

    /// `[rows]` row -> flat (token, slot) index `token * k + slot`, `None` for a padding row.
    pub fn row_source(&self) -> &[Option<usize>] {
        &self.row_source
    }

    /// `[T * k]` flat (token, slot) index -> row: the inverse of [`Permutation::row_source`].
    pub fn slot_row(&self) -> &[usize] {
        &self.slot_row
    }

    /// The (token, slot) a row came from, `None` for padding.
    pub fn source(&self, row: usize) -> Option<(usize, usize)> {
        self.row_source[row].map(|f| (f / self.top_k, f % self.top_k))
    }

    /// The row holding token `token`'s `slot`-th choice.
    pub fn row_of(&self, token: usize, slot: usize) -> usize {
        self.slot_row[token * self.top_k + slot]
    }
}

/// Sort the `[T, k]` routing decisions `topk_ids` by expert.
///
/// `block_size` >= 1 pads each expert's segment to a multiple of it (1: no padding). Errors: an id
/// outside `0..num_experts`, `num_experts == 0`, `block_size == 0`, or a row count that overflows.
pub fn permute(
    topk_ids: MatRef<'_, i32>,
    num_experts: usize,
    block_size: usize,
) -> Result<Permutation> {
    if num_experts == 0 {
        return Err(MoeError::InvalidConfig(
            "num_experts must be at least 1".into(),
        ));
    }
    if block_size == 0 {
        return Err(MoeError::InvalidConfig(
            "block_size must be at least 1".into(),
        ));
    }
    validate_ids(topk_ids, num_experts)?;
    let (t, k) = (topk_ids.rows(), topk_ids.cols());
    let ids = topk_ids.data();

    // Histogram, then exclusive scan of the padded counts.
    let mut counts = vec![0usize; num_experts];
    for &id in ids {
        counts[id as usize] += 1;
    }
    let mut offsets = Vec::with_capacity(num_experts + 1);
    offsets.push(0usize);
    for &c in &counts {
        let padded = c
            .div_ceil(block_size)
            .checked_mul(block_size)
            .and_then(|p| p.checked_add(*offsets.last().expect("offsets starts non-empty")))
            .ok_or_else(|| MoeError::SizeOverflow("padded permutation rows".into()))?;
        offsets.push(padded);
    }
    let rows = offsets[num_experts];

    // Stable scatter: visiting (token, slot) in flat order keeps token order within each expert.
    let mut next = offsets[..num_experts].to_vec();
    let mut row_source = vec![None; rows];
    let mut slot_row = vec![0usize; checked_mul(t, k, "permutation slots")?];
    for (flat, &id) in ids.iter().enumerate() {
        let row = next[id as usize];
        next[id as usize] += 1;
        row_source[row] = Some(flat);
        slot_row[flat] = row;
    }
    Ok(Permutation {
        num_tokens: t,
        top_k: k,
        block_size,
        expert_offsets: offsets,
        expert_counts: counts,
        row_source,
        slot_row,
    })
}

/// Gather the activations into permuted order: `out[r] = x[token of r]`, zeros for padding rows.
///
/// `x` is `[T, H]`, `out` is `[rows, H]`.
pub fn gather<X: Element>(
    x: MatRef<'_, X>,
    perm: &Permutation,
    out: &mut MatMut<'_, X>,
) -> Result<()> {
    x.expect_shape("hidden states", perm.num_tokens(), x.cols())?;
    out.expect_shape("gathered activations", perm.num_rows(), x.cols())?;
    for r in 0..perm.num_rows() {
        let dst = out.row_mut(r);
        match perm.source(r) {
            Some((token, _)) => dst.copy_from_slice(x.row(token)),
            None => dst.fill(X::default()),
        }
    }
    Ok(())
}
