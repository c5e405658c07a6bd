// routing.cuh: the per-row index and ordering math of the router, shared by host and device.
//
// Everything here is plain C++ on floats and ints, free of device intrinsics, so that a host compiler
// can build it too and test it against the Rust reference. The kernel in routing.cu is only the
// parallel decomposition around these functions.
#ifndef MOE_ROUTING_CUH
#define MOE_ROUTING_CUH

#include <stdint.h>

#include "moe_abi.h"

#ifdef __CUDACC__
#define MOE_HD __host__ __device__ __forceinline__
#else
#define MOE_HD inline
#endif

// The total order of (score, index) pairs used for every selection: higher score first, equal scores
// in favour of the lower index. Scores reaching this are never NaN (rows with a non-finite input are
// diverted before selection), so this is a strict total order over distinct indices.
MOE_HD bool moe_ranks_before(float score_a, int32_t index_a, float score_b, int32_t index_b) {
    return score_a > score_b || (score_a == score_b && index_a < index_b);
}

// A (score, index) pair in the selection order. `moe_rank_none()` ranks after every real candidate
// (lowest score, largest index) and `moe_rank_top()` before every one; they are the identities of the
// "best so far" search and the "previous pick" bound.
struct MoeRanked {
    float score;
    int32_t index;
};

MOE_HD MoeRanked moe_rank_none() {
    MoeRanked r;
    r.score = -__builtin_huge_valf();
    r.index = INT32_MAX;
    return r;
}

MOE_HD MoeRanked moe_rank_top() {
    MoeRanked r;
    r.score = __builtin_huge_valf();
    r.index = -1;
    return r;
}

// Whether `a` ranks strictly before `b`.
MOE_HD bool moe_ranked_before(MoeRanked a, MoeRanked b) {
    return moe_ranks_before(a.score, a.index, b.score, b.index);
}

// Group of an expert: experts are split into equal contiguous groups of `group_size`.
MOE_HD int32_t moe_group_of_expert(int32_t expert, int32_t group_size) {
    return expert / group_size;
}

// Running group score: the best and second-best choice score seen so far in one group.
struct MoeTop2 {
    float first;
    float second;
};

MOE_HD MoeTop2 moe_top2_empty() {
    MoeTop2 t;
    t.first = -__builtin_huge_valf();
    t.second = -__builtin_huge_valf();
    return t;
}

MOE_HD MoeTop2 moe_top2_push(MoeTop2 t, float value) {
    if (value > t.first) {
        t.second = t.first;
        t.first = value;
    } else if (value > t.second) {
        t.second = value;
    }
    return t;
}

// The score of a group of `group_size` experts whose choice scores were all pushed into `t`:
// MOE_GROUP_SCORE_MAX gives the best one, MOE_GROUP_SCORE_SUM_TOP2 the sum of the best two (a group of
// one expert scores that expert).
MOE_HD float moe_group_score(MoeTop2 t, int32_t group_size, int32_t kind) {
    if (kind == MOE_GROUP_SCORE_SUM_TOP2 && group_size >= 2) {
        return t.first + t.second;
    }
    return t.first;
}

// Whether group `g` with score `score` is one of the kept groups, given `threshold`, the last kept group
// in the selection order: kept groups are exactly those ranked at or before it.
MOE_HD bool moe_group_kept(float score, int32_t g, MoeRanked threshold) {
    return !moe_ranks_before(threshold.score, threshold.index, score, g);
}

// Classify a value that is known not to be finite as one of the MOE_NONFINITE_* kinds.
MOE_HD uint32_t moe_nonfinite_kind(float value) {
    if (value != value) {
        return MOE_NONFINITE_NAN;
    }
    return value > 0.0f ? MOE_NONFINITE_POS_INF : MOE_NONFINITE_NEG_INF;
}

// The value stored in a MoeStatus slot for a non-finite value of kind `kind` at (token, expert), see
// moe_abi.h: the complement of the key, so that atomicMax keeps the lowest (token, expert).
MOE_HD uint64_t moe_status_key(uint32_t token, uint32_t expert, uint32_t kind) {
    return ~(((uint64_t)token << 32) | ((uint64_t)expert << 2) | (uint64_t)kind);
}

#endif  // MOE_ROUTING_CUH
