// Host entry points for the permutation's index math and per-chunk algorithm (kernels/permute.cuh),
// instantiated with one serial lane, for tests/host_math_permute.rs and src/gpu/permute.rs.
#include "permute.cuh"

extern "C" {

// The launch plan for `num_slots` positions over `num_experts` experts.
void moe_host_permute_plan(int64_t num_slots, int64_t num_experts, int64_t* num_chunks,
                           int64_t* chunk_size, int32_t* single_block) {
    const MoePermutePlan plan = moe_permute_plan(num_slots, num_experts);
    *num_chunks = plan.num_chunks;
    *chunk_size = plan.chunk_size;
    *single_block = plan.single_block;
}

// The most chunks any plan for at most `max_slots` positions uses.
int64_t moe_host_permute_max_chunks(int64_t max_slots, int64_t num_experts) {
    return moe_permute_max_chunks(max_slots, num_experts);
}

// The bound on the padded row total that row buffers are sized for.
int64_t moe_host_permute_row_bound(int64_t num_slots, int64_t num_experts, int64_t block_size) {
    return moe_permute_row_bound(num_slots, num_experts, block_size);
}

// The whole permutation of `p` (host pointers) on one serial lane: count every chunk, scan every
// expert, the offsets (the host twin of the kernels' block scan), the padding, then scatter every
// chunk, in the order the kernels' blocks and warps run them.
void moe_host_permute(const MoePermuteParams* p) {
    const MoeSerialLanes lanes;
    for (int64_t c = 0; c < p->num_chunks; ++c) {
        moe_permute_count_chunk(lanes, *p, c);
    }
    p->expert_offsets[0] = 0;
    for (int64_t e = 0; e < p->num_experts; ++e) {
        p->expert_counts[e] = moe_permute_scan_expert(lanes, *p, e);
        p->expert_offsets[e + 1] =
            p->expert_offsets[e] + moe_padded_rows(p->expert_counts[e], p->block_size);
    }
    moe_permute_mark_padding(*p, 0, 1);
    for (int64_t c = 0; c < p->num_chunks; ++c) {
        moe_permute_scatter_chunk(lanes, *p, c);
    }
}

// The gather's source token of a row with flat source `source`.
int64_t moe_host_gather_token(int64_t source, int64_t top_k) {
    return moe_gather_token(source, top_k);
}

}  // extern "C"
