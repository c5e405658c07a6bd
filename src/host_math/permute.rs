//! The permutation's index math and per-chunk algorithm from `kernels/permute.cuh`: the launch plan
//! and row bound that [`crate::gpu::permute`] sizes its buffers and launches with, and the whole
//! algorithm run on one serial lane, chunk by chunk, as the kernels' warps run it.

use crate::error::Result;
use crate::gpu::abi::{MoePermuteParams, MoeStatus};
use crate::gpu::permute::PermuteLayout;
use crate::{ExpertMap, MoeError};

extern "C" {
    fn moe_host_permute_plan(
        num_slots: i64,
        num_experts: i64,
        num_chunks: *mut i64,
        chunk_size: *mut i64,
        single_block: *mut i32,
    );
    fn moe_host_permute_max_chunks(num_slots: i64, num_experts: i64) -> i64;
    fn moe_host_permute_row_bound(num_slots: i64, num_experts: i64, block_size: i64) -> i64;
    fn moe_host_permute(p: *const MoePermuteParams);
    fn moe_host_gather_token(source: i64, top_k: i64) -> i64;
}

/// How the permutation kernels cut `T * k` positions into chunks (one warp each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PermutePlan {
    /// Number of chunks.
    pub num_chunks: usize,
    /// Positions per chunk (a multiple of 32).
    pub chunk_size: usize,
    /// Whether one single-block launch does everything (otherwise three launches).
    pub single_block: bool,
}

/// `v` as the kernels' `int64_t`; the callers pass sizes validated by [`PermuteLayout::new`], far
/// below `i64::MAX`.
fn i64_of(v: usize) -> i64 {
    i64::try_from(v).expect("permutation sizes are validated to fit i64")
}

fn usize_of(v: i64) -> usize {
    usize::try_from(v).expect("the permutation's index math returns non-negative sizes")
}

/// The launch plan for `num_slots` positions over `num_experts` experts (sizes as validated by
/// [`PermuteLayout::new`]).
pub fn permute_plan(num_slots: usize, num_experts: usize) -> PermutePlan {
    let (mut chunks, mut size, mut single) = (0i64, 0i64, 0i32);
    // SAFETY: a pure function of its two integers writing its three results through the pointers,
    // which point to live locals of the right types.
    unsafe {
        moe_host_permute_plan(
            i64_of(num_slots),
            i64_of(num_experts),
            &mut chunks,
            &mut size,
            &mut single,
        )
    };
    PermutePlan {
        num_chunks: usize_of(chunks),
        chunk_size: usize_of(size),
        single_block: single != 0,
    }
}

/// The most chunks any plan for at most `max_slots` positions over `num_experts` experts uses: the
/// scratch counters are sized for it.
pub fn permute_max_chunks(max_slots: usize, num_experts: usize) -> usize {
    // SAFETY: a pure function of its two integers.
    usize_of(unsafe { moe_host_permute_max_chunks(i64_of(max_slots), i64_of(num_experts)) })
}

/// The bound on the padded row total: `num_slots + min(num_experts, num_slots) * (block_size - 1)`.
pub fn permute_row_bound(num_slots: usize, num_experts: usize, block_size: usize) -> usize {
    // SAFETY: a pure function of its three integers; validated sizes keep it far from overflow.
    usize_of(unsafe {
        moe_host_permute_row_bound(i64_of(num_slots), i64_of(num_experts), i64_of(block_size))
    })
}

/// The gather's source token for a row whose flat source is `source` (-1 for padding, no token).
pub fn gather_token(source: i64, top_k: usize) -> i64 {
    // SAFETY: a pure function of two integers (top_k >= 1 is the caller's to ensure).
    unsafe { moe_host_gather_token(source, i64_of(top_k.max(1))) }
}

/// The output of the host twin of the permutation kernels.
#[derive(Debug)]
pub struct HostPermutation {
    /// `[E + 1]` segment starts.
    pub expert_offsets: Vec<i64>,
    /// `[E]` real rows per expert.
    pub expert_counts: Vec<i64>,
    /// `[row bound]` flat source per row, -1 for padding and rows past the total.
    pub row_source: Vec<i64>,
    /// `[T * k]` row per flat position, -1 for a skipped (out-of-range) id.
    pub slot_row: Vec<i64>,
    /// The first out-of-range id, as the device status reports it.
    pub status: Option<MoeError>,
}

/// Run the permutation kernels' algorithm on the host, one serial lane, over `topk_ids` `[T, k]`
/// (`T = topk_ids.len() / top_k`) of `num_experts` experts, or of one rank's local experts with
/// `expert_map` (whose global count must be `num_experts`). `chunk_size` overrides the plan's chunk
/// size (any size >= 1 works for one lane), to exercise many chunks on small inputs. Every output
/// entry is first poisoned with `i64::MIN`, so an entry the algorithm fails to write shows.
pub fn permute(
    topk_ids: &[i32],
    top_k: usize,
    num_experts: usize,
    expert_map: Option<&ExpertMap>,
    block_size: usize,
    chunk_size: Option<usize>,
) -> Result<HostPermutation> {
    let num_tokens = topk_ids.len() / top_k.max(1);
    PermuteLayout::new(num_tokens, top_k, num_experts, block_size)?;
    let segments = match expert_map {
        Some(m) if m.num_global() != num_experts => {
            return Err(MoeError::InvalidConfig(format!(
                "an expert map of {} experts for {num_experts}",
                m.num_global()
            )))
        }
        Some(m) => m.num_local(),
        None => num_experts,
    };
    let layout = PermuteLayout::for_segments(num_tokens, top_k, segments, block_size)?;
    let num_experts = segments;
    if layout.num_slots != topk_ids.len() {
        return Err(MoeError::shape(
            "topk_ids",
            format!("[T, {top_k}]"),
            format!("{} elements", topk_ids.len()),
        ));
    }
    let chunk_size = chunk_size.unwrap_or(layout.plan.chunk_size).max(1);
    let num_chunks = layout.num_slots.div_ceil(chunk_size);
    const POISON: i64 = i64::MIN;
    let mut out = HostPermutation {
        expert_offsets: vec![POISON; num_experts + 1],
        expert_counts: vec![POISON; num_experts],
        row_source: vec![POISON; layout.row_bound],
        slot_row: vec![POISON; layout.num_slots],
        status: None,
    };
    let mut scratch = vec![u32::MAX; num_experts * num_chunks];
    let mut status = MoeStatus::default();
    if layout.num_slots > 0 {
        let params = MoePermuteParams {
            topk_ids: topk_ids.as_ptr(),
            expert_map: expert_map.map_or(std::ptr::null(), |m| m.global_to_local().as_ptr()),
            expert_offsets: out.expert_offsets.as_mut_ptr(),
            expert_counts: out.expert_counts.as_mut_ptr(),
            row_source: out.row_source.as_mut_ptr(),
            slot_row: out.slot_row.as_mut_ptr(),
            chunk_counts: scratch.as_mut_ptr(),
            status: &mut status,
            num_slots: i64_of(layout.num_slots),
            row_capacity: i64_of(layout.row_bound),
            chunk_size: i64_of(chunk_size),
            num_chunks: i64_of(num_chunks),
            block_size: i64_of(block_size),
            num_global_experts: expert_map.map_or(num_experts, ExpertMap::num_global) as i32,
            num_experts: layout.num_experts_i32(),
            top_k: layout.top_k_i32(),
            reserved: 0,
        };
        // SAFETY: every pointer is a live, exclusively borrowed host buffer of the length the
        // params promise (ids: num_slots, map: the global expert count (below 2^31, validated
        // with the map) or null, offsets: E + 1, counts: E, row_source: the row bound,
        // which the padded total cannot pass, slot_row: num_slots, scratch: E * num_chunks, status:
        // one record), and the sizes were validated by PermuteLayout::new.
        unsafe { moe_host_permute(&params) };
    } else {
        out.expert_offsets.fill(0);
        out.expert_counts.fill(0);
    }
    out.status = crate::gpu::status::decode(&status).err();
    Ok(out)
}
