// Host entry points for the router's per-row math (kernels/routing.cuh), for tests/host_math.rs.
#include "routing.cuh"

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

}  // extern "C"
