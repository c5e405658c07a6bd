// permute.cuh: the permutation's index math and per-chunk algorithm, shared by the kernels
// (kernels/permute.cu, with MoeWarpLanes) and their host twin (kernels/host/permute.cpp, with
// MoeSerialLanes), which tests/host_math_permute.rs checks against cpu::permute::permute exactly.
//
// The algorithm is a stable counting sort of the `n = T * k` flat positions by expert id:
//
//   1. count:   the positions are cut into chunks of `chunk_size` consecutive entries (a multiple of
//               32); one warp owns one chunk and counts its ids per expert into its own column of the
//               expert-major scratch `counts[e * num_chunks + c]` (no atomics: the column is the
//               warp's alone).
//   2. scan:    for each expert, an exclusive scan over the chunks turns the counts into each chunk's
//               first rank within the expert (in place), and gives the expert's total; an exclusive
//               scan of the padded totals over the experts gives the segment offsets.
//   3. scatter: each warp walks its chunk again, 32 entries at a time in flat order. Lanes holding
//               the same expert find each other with match_any; a lane's row is
//               offsets[e] + cursor[e][chunk] + (number of lower lanes with the same expert), and the
//               group's lowest lane then advances the cursor by the group size. Chunks are in flat
//               order and each chunk is walked in flat order, so rows within an expert follow flat
//               order: token order, then slot order, the CPU reference's order exactly.
#ifndef MOE_PERMUTE_CUH
#define MOE_PERMUTE_CUH

#include <stdint.h>

#include "moe_abi.h"
#include "moe_lanes.cuh"
#include "moe_status.cuh"

// Chunks are whole multiples of a warp's 32 lanes, so a warp's groups never straddle two chunks.
#define MOE_PERMUTE_CHUNK_ALIGN 32
// Largest `num_tokens * top_k` the single-block kernel takes; larger inputs use three launches.
#define MOE_PERMUTE_SINGLE_BLOCK_MAX_SLOTS 16384
// Target (token, slot) entries per chunk (one warp's share) on the multi-block path.
#define MOE_PERMUTE_CHUNK_SLOTS 512
// Bound on `num_chunks * num_experts`, the scratch counters of the multi-block path.
#define MOE_PERMUTE_COUNTS_BUDGET 4194304

MOE_HD int64_t moe_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

MOE_HD int64_t moe_min64(int64_t a, int64_t b) { return a < b ? a : b; }

MOE_HD int64_t moe_max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Index of the lowest set bit of a non-zero lane mask.
MOE_HD int moe_lowest_lane(uint32_t mask) {
#ifdef __CUDA_ARCH__
    return __ffs(mask) - 1;
#else
    return __builtin_ffs(static_cast<int>(mask)) - 1;
#endif
}

// How the `num_slots` positions are cut into chunks, and whether one block does everything.
struct MoePermutePlan {
    int64_t num_chunks;
    int64_t chunk_size;
    // Nonzero: one launch of the single-block kernel (at most one chunk per warp of the block).
    int32_t single_block;
};

// The plan for `num_slots` (>= 0) positions over `num_experts` (>= 0) segments. Small inputs (decode)
// use one block whose warps each own a chunk; larger ones use chunks of about
// MOE_PERMUTE_CHUNK_SLOTS entries, fewer when `num_chunks * num_experts` would pass
// MOE_PERMUTE_COUNTS_BUDGET. The chunk count never decreases as `num_slots` grows, so scratch sized
// for the largest input serves every smaller one.
MOE_HD MoePermutePlan moe_permute_plan(int64_t num_slots, int64_t num_experts) {
    const int64_t n = moe_max64(num_slots, 1);
    const int64_t warps = moe_ceil_div(n, MOE_PERMUTE_CHUNK_ALIGN);
    MoePermutePlan plan;
    int64_t chunks;
    if (n <= MOE_PERMUTE_SINGLE_BLOCK_MAX_SLOTS) {
        chunks = moe_min64(warps, MOE_PERMUTE_SINGLE_BLOCK_THREADS / MOE_PERMUTE_CHUNK_ALIGN);
        plan.single_block = 1;
    } else {
        const int64_t cap = moe_max64(1, MOE_PERMUTE_COUNTS_BUDGET / moe_max64(num_experts, 1));
        chunks = moe_min64(moe_ceil_div(n, MOE_PERMUTE_CHUNK_SLOTS), cap);
        plan.single_block = 0;
    }
    plan.chunk_size =
        moe_ceil_div(moe_ceil_div(n, chunks), MOE_PERMUTE_CHUNK_ALIGN) * MOE_PERMUTE_CHUNK_ALIGN;
    plan.num_chunks = moe_ceil_div(n, plan.chunk_size);
    return plan;
}

// The most chunks any plan for at most `max_slots` positions uses (the scratch counters are sized
// for it): within each regime the chunk count before rounding, min(ceil(n / 32), 32) or
// min(ceil(n / MOE_PERMUTE_CHUNK_SLOTS), cap), never decreases with n, and rounding the chunk size
// up can only lower the count.
MOE_HD int64_t moe_permute_max_chunks(int64_t max_slots, int64_t num_experts) {
    const int64_t single = moe_min64(moe_max64(max_slots, 1), MOE_PERMUTE_SINGLE_BLOCK_MAX_SLOTS);
    int64_t most = moe_min64(moe_ceil_div(single, MOE_PERMUTE_CHUNK_ALIGN),
                             MOE_PERMUTE_SINGLE_BLOCK_THREADS / MOE_PERMUTE_CHUNK_ALIGN);
    if (max_slots > MOE_PERMUTE_SINGLE_BLOCK_MAX_SLOTS) {
        const int64_t cap = moe_max64(1, MOE_PERMUTE_COUNTS_BUDGET / moe_max64(num_experts, 1));
        most = moe_max64(most, moe_min64(moe_ceil_div(max_slots, MOE_PERMUTE_CHUNK_SLOTS), cap));
    }
    return most;
}

// Rows of an expert segment holding `count` real rows, padded to a multiple of `block_size`.
MOE_HD int64_t moe_padded_rows(int64_t count, int64_t block_size) {
    return moe_ceil_div(count, block_size) * block_size;
}

// Upper bound of the padded row total, which the row buffers are sized for: every expert with at
// least one row adds fewer than `block_size` padding rows, and at most min(E, n) experts have rows.
MOE_HD int64_t moe_permute_row_bound(int64_t num_slots, int64_t num_experts, int64_t block_size) {
    return num_slots + moe_min64(num_experts, num_slots) * (block_size - 1);
}

// First flat position of chunk `c`, and one past its last.
MOE_HD int64_t moe_chunk_begin(int64_t c, int64_t chunk_size) { return c * chunk_size; }

MOE_HD int64_t moe_chunk_end(int64_t c, int64_t chunk_size, int64_t num_slots) {
    return moe_min64((c + 1) * chunk_size, num_slots);
}

// No row: an expert of another rank (not an error).
#define MOE_SEGMENT_REMOTE (-1)
// No row: an id outside 0..num_global_experts (recorded in the status).
#define MOE_SEGMENT_INVALID (-2)

// The segment of expert id `id`: its local expert through the expert map (the id itself without
// one), or MOE_SEGMENT_REMOTE / MOE_SEGMENT_INVALID. A map entry outside 0..num_experts counts as
// remote, so no map content can send a row outside the segments.
MOE_HD int32_t moe_permute_segment(const MoePermuteParams& p, int32_t id) {
    // One unsigned compare covers id < 0 (num_global_experts < 2^31, host-validated).
    const bool in_range = static_cast<uint32_t>(id) < static_cast<uint32_t>(p.num_global_experts);
    const int32_t local = in_range && p.expert_map != nullptr ? p.expert_map[id] : id;
    const bool local_ok = static_cast<uint32_t>(local) < static_cast<uint32_t>(p.num_experts);
    return !in_range ? MOE_SEGMENT_INVALID
           : local_ok ? local
           : p.expert_map != nullptr ? MOE_SEGMENT_REMOTE
                                     : MOE_SEGMENT_INVALID;
}

// Step 1 for chunk `c`: count its ids per expert into counts[e * num_chunks + c]. Lane l handles
// positions base + l of each group of kWidth; the lowest lane of each same-expert group adds the
// group's size, so no two lanes write one counter in the same step, and the column is the caller's
// alone.
template <class Lanes>
MOE_HD void moe_permute_count_chunk(const Lanes& lanes, const MoePermuteParams& p, int64_t c) {
    const int64_t begin = moe_chunk_begin(c, p.chunk_size);
    const int64_t end = moe_chunk_end(c, p.chunk_size, p.num_slots);
    uint32_t* column = p.chunk_counts + c;
    for (int64_t e = lanes.lane(); e < p.num_experts; e += Lanes::kWidth) {
        column[e * p.num_chunks] = 0;
    }
    // The zeroing above (any lane) happens before the increments below (the group's leader).
    lanes.sync();
    MOE_NO_UNROLL
    for (int64_t base = begin; base < end; base += Lanes::kWidth) {
        const int64_t flat = base + lanes.lane();
        const int32_t seg = flat < end ? moe_permute_segment(p, p.topk_ids[flat]) : MOE_SEGMENT_REMOTE;
        const bool valid = seg >= 0;
        // Lanes without a row share the key -1, which no valid lane has; their mask is never used.
        const uint32_t peers = lanes.match_any(valid ? seg : -1);
        if (valid && (peers & lanes.lanemask_lt()) == 0) {
            column[static_cast<int64_t>(seg) * p.num_chunks] += static_cast<uint32_t>(moe_popc(peers));
        }
        // This step's increments happen before the next step reads or adds to the same counters.
        lanes.sync();
    }
}

// Step 2 for expert `e`: the exclusive scan of its per-chunk counts, in place (chunk c's first rank
// within the expert); returns the expert's total, to every lane. Lane l handles chunks c0 + l.
template <class Lanes>
MOE_HD int64_t moe_permute_scan_expert(const Lanes& lanes, const MoePermuteParams& p, int64_t e) {
    uint32_t* row = p.chunk_counts + e * p.num_chunks;
    int64_t carry = 0;
    for (int64_t c0 = 0; c0 < p.num_chunks; c0 += Lanes::kWidth) {
        const int64_t c = c0 + lanes.lane();
        const int64_t count = c < p.num_chunks ? static_cast<int64_t>(row[c]) : 0;
        const int64_t inclusive = lanes.inclusive_scan(count);
        if (c < p.num_chunks) {
            // Ranks are below num_slots < 2^32.
            row[c] = static_cast<uint32_t>(carry + inclusive - count);
        }
        carry += lanes.shfl(inclusive, Lanes::kWidth - 1);
    }
    return carry;
}

// Step 2, padding: rows past expert e's real rows in its segment, and rows past the total, have no
// source. `first`/`stride` split the rows among the caller's threads.
MOE_HD void moe_permute_mark_padding(const MoePermuteParams& p, int64_t first, int64_t stride) {
    if (p.block_size > 1) {
        for (int64_t e = first; e < p.num_experts; e += stride) {
            for (int64_t r = p.expert_offsets[e] + p.expert_counts[e]; r < p.expert_offsets[e + 1];
                 ++r) {
                p.row_source[r] = -1;
            }
        }
    }
    for (int64_t r = p.expert_offsets[p.num_experts] + first; r < p.row_capacity; r += stride) {
        p.row_source[r] = -1;
    }
}

// Step 3 for chunk `c`, after step 2: each position's row, written to both maps. The chunk's scanned
// counts serve as its per-expert cursors. Out-of-range ids get no row (`slot_row = -1`) and are
// recorded in the status; another rank's experts get no row either.
template <class Lanes>
MOE_HD void moe_permute_scatter_chunk(const Lanes& lanes, const MoePermuteParams& p, int64_t c) {
    const int64_t begin = moe_chunk_begin(c, p.chunk_size);
    const int64_t end = moe_chunk_end(c, p.chunk_size, p.num_slots);
    uint32_t* column = p.chunk_counts + c;
    MOE_NO_UNROLL
    for (int64_t base = begin; base < end; base += Lanes::kWidth) {
        const int64_t flat = base + lanes.lane();
        const int32_t id = flat < end ? p.topk_ids[flat] : -1;
        const int32_t seg = flat < end ? moe_permute_segment(p, id) : MOE_SEGMENT_REMOTE;
        const bool valid = seg >= 0;
        const uint32_t peers = lanes.match_any(valid ? seg : -1);
        const uint32_t lower = peers & lanes.lanemask_lt();
        const bool leader = valid && lower == 0;
        uint32_t* cursor = column + static_cast<int64_t>(valid ? seg : 0) * p.num_chunks;
        // The leader reads the group's cursor; every lane takes it from its own group's leader
        // (invalid lanes from themselves).
        const uint32_t start = lanes.shfl(leader ? *cursor : 0u,
                                          valid ? moe_lowest_lane(peers) : lanes.lane());
        if (valid) {
            const int64_t row = p.expert_offsets[seg] + static_cast<int64_t>(start) + moe_popc(lower);
            p.row_source[row] = flat;
            p.slot_row[flat] = row;
            if (leader) {
                *cursor = start + static_cast<uint32_t>(moe_popc(peers));
            }
        } else if (flat < end) {
            p.slot_row[flat] = -1;
            if (seg == MOE_SEGMENT_INVALID) {
                // num_global_experts < 2^31 (host-validated).
                moe_report_expert_id(p.status, flat, id, p.top_k,
                                     static_cast<int32_t>(p.num_global_experts));
            }
        }
        // The leaders' cursor updates happen before the next step reads them.
        lanes.sync();
    }
}

// The gather's source token of row `r` given its flat source (-1: a padding row, no token).
MOE_HD int64_t moe_gather_token(int64_t source, int64_t top_k) {
    return source < 0 ? -1 : source / top_k;
}

#endif  // MOE_PERMUTE_CUH
