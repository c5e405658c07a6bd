//! Stage 2, permutation: the `T * k` (token, slot) pairs sorted by expert.
//!
//! Row `r` of the permuted layout belongs to one expert; expert `e` owns rows
//! `expert_offsets[e]..expert_offsets[e + 1]`. The sort is stable: within an expert, rows keep token order
//! (and slot order, which only matters for ids given by the caller). With a block size `b > 1`, each
//! expert's segment is padded with empty rows up to a multiple of `b` (an expert with no rows stays
//! empty), so a GEMM tile of `b` rows never straddles two experts; padding rows have no source.
//!
//! With an [`ExpertMap`] (expert parallelism, [`permute_mapped`]) the segments are the rank's local
//! experts, and the (token, slot) pairs routed to another rank's experts get no row.

use crate::dtype::Element;
use crate::error::{MoeError, Result};
use crate::expert_map::ExpertMap;
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
    slot_row: Vec<Option<usize>>,
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

    /// Number of experts `E` (segments: the local experts of a [`permute_mapped`] permutation).
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

    /// `[E]` real (unpadded) rows per expert; they sum to `T * k` (less the pairs of other ranks'
    /// experts, with a map).
    pub fn expert_counts(&self) -> &[usize] {
        &self.expert_counts
    }

    /// `[rows]` row -> flat (token, slot) index `token * k + slot`, `None` for a padding row.
    pub fn row_source(&self) -> &[Option<usize>] {
        &self.row_source
    }

    /// `[T * k]` flat (token, slot) index -> row: the inverse of [`Permutation::row_source`];
    /// `None` for a pair routed to another rank's expert ([`permute_mapped`]).
    pub fn slot_row(&self) -> &[Option<usize>] {
        &self.slot_row
    }

    /// The (token, slot) a row came from, `None` for padding.
    pub fn source(&self, row: usize) -> Option<(usize, usize)> {
        self.row_source[row].map(|f| (f / self.top_k, f % self.top_k))
    }

    /// The row holding token `token`'s `slot`-th choice, `None` when it went to another rank.
    pub fn row_of(&self, token: usize, slot: usize) -> Option<usize> {
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
    validate_ids(topk_ids, num_experts)?;
    sort_by_segment(topk_ids, num_experts, block_size, |id| Some(id as usize))
}

/// [`permute`] on one rank of an expert-parallel layer: `topk_ids` holds global expert ids (in
/// `0..map.num_global()`), the segments are the rank's `map.num_local()` experts, and the pairs
/// routed to another rank's expert get no row (`slot_row` `None`).
///
/// Errors: an id outside `0..map.num_global()`, `block_size == 0`, or a row count that overflows.
pub fn permute_mapped(
    topk_ids: MatRef<'_, i32>,
    map: &ExpertMap,
    block_size: usize,
) -> Result<Permutation> {
    validate_ids(topk_ids, map.num_global())?;
    sort_by_segment(topk_ids, map.num_local(), block_size, |id| {
        map.local(id as usize)
    })
}

/// The counting sort of validated ids into `segments` segments; `segment` gives an id's segment,
/// `None` for no row.
fn sort_by_segment(
    topk_ids: MatRef<'_, i32>,
    segments: usize,
    block_size: usize,
    segment: impl Fn(i32) -> Option<usize>,
) -> Result<Permutation> {
    if block_size == 0 {
        return Err(MoeError::InvalidConfig(
            "block_size must be at least 1".into(),
        ));
    }
    let (t, k) = (topk_ids.rows(), topk_ids.cols());
    let ids = topk_ids.data();

    // Histogram, then exclusive scan of the padded counts.
    let mut counts = vec![0usize; segments];
    for &id in ids {
        if let Some(s) = segment(id) {
            counts[s] += 1;
        }
    }
    let mut offsets = Vec::with_capacity(segments + 1);
    offsets.push(0usize);
    for &c in &counts {
        let padded = c
            .div_ceil(block_size)
            .checked_mul(block_size)
            .and_then(|p| p.checked_add(*offsets.last().expect("offsets starts non-empty")))
            .ok_or_else(|| MoeError::SizeOverflow("padded permutation rows".into()))?;
        offsets.push(padded);
    }
    let rows = offsets[segments];

    // Stable scatter: visiting (token, slot) in flat order keeps token order within each expert.
    let mut next = offsets[..segments].to_vec();
    let mut row_source = vec![None; rows];
    let mut slot_row = vec![None; checked_mul(t, k, "permutation slots")?];
    for (flat, &id) in ids.iter().enumerate() {
        if let Some(s) = segment(id) {
            let row = next[s];
            next[s] += 1;
            row_source[row] = Some(flat);
            slot_row[flat] = Some(row);
        }
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
    let h = x.cols();
    super::par_rows(
        out.data_mut(),
        h,
        h,
        || (),
        |_, r, dst| match perm.source(r) {
            Some((token, _)) => dst.copy_from_slice(x.row(token)),
            None => dst.fill(X::default()),
        },
    );
    Ok(())
}
