// Host entry points for the router's per-row algorithm (kernels/routing.cuh), instantiated with one
// serial lane, for tests/host_math.rs.
#include <vector>

#include "routing.cuh"

namespace {

// The host's fast row source holds every expert in one lane: E up to this many.
constexpr int kHostRegisterSlots = 1024;

}  // namespace

extern "C" {

// Whether (score_a, index_a) ranks strictly before (score_b, index_b) in the selection order.
int moe_host_ranks_before(float score_a, int32_t index_a, float score_b, int32_t index_b) {
    return moe_ranks_before(score_a, index_a, score_b, index_b) ? 1 : 0;
}

// The score of a group whose `n` members have choice scores `choice`.
float moe_host_group_score(const float* choice, int32_t n, int32_t kind) {
    MoeTop2 t = moe_top2_empty();
    for (int32_t i = 0; i < n; ++i) {
        t = moe_top2_push(t, choice[i]);
    }
    return moe_group_score(t, n, kind);
}

// The top two of `a` (n_a values) and `b` (n_b values) merged from their separate top-2 summaries,
// written to out[0] (best) and out[1] (second).
void moe_host_top2_merge(const float* a, int32_t n_a, const float* b, int32_t n_b, float* out) {
    MoeTop2 ta = moe_top2_empty();
    for (int32_t i = 0; i < n_a; ++i) {
        ta = moe_top2_push(ta, a[i]);
    }
    MoeTop2 tb = moe_top2_empty();
    for (int32_t i = 0; i < n_b; ++i) {
        tb = moe_top2_push(tb, b[i]);
    }
    const MoeTop2 t = moe_top2_merge(ta, tb);
    out[0] = t.first;
    out[1] = t.second;
}

// Route every row of `p` (f32 logits, host pointers) with the kernels' row algorithm on one serial
// lane: the register row source when `fast` is nonzero (then num_experts <= 1024), the recomputing
// one otherwise. Returns 0, or -1 when `fast` is asked for more experts than the host holds.
int moe_host_route(const MoeRoutingParams* p, int32_t fast) {
    const MoeSerialLanes lanes;
    std::vector<float> group_scores(p->n_group > 0 ? static_cast<size_t>(p->n_group) : 1);
    if (fast != 0) {
        if (p->num_experts > kHostRegisterSlots) {
            return -1;
        }
        // About 8 KiB of scores: on the heap rather than the stack.
        std::vector<MoeRegisterRow<float, kHostRegisterSlots>> row(1);
        for (int64_t t = 0; t < p->num_tokens; ++t) {
            moe_route_row(lanes, *p, row[0], t, group_scores.data());
        }
    } else {
        MoeRecomputedRow<float> row;
        for (int64_t t = 0; t < p->num_tokens; ++t) {
            moe_route_row(lanes, *p, row, t, group_scores.data());
        }
    }
    return 0;
}

}  // extern "C"
