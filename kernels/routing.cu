// routing.cu: the MoE router, one launch from router logits [T, E] to top-k expert ids and weights.
//
// Semantics (identical to the CPU reference, see RoutingConfig in src/config.rs): scores are the
// softmax over E (max-subtracted) or the sigmoid of the logits; choice scores add the optional
// correction bias; with grouped selection only the experts of the `topk_group` best groups are
// eligible; the k eligible experts with the largest choice scores are picked in descending order,
// equal scores going to the lower expert index; weights are the picked experts' unbiased scores,
// optionally divided by their sum, times the routed scaling factor.
//
// Parallel decomposition: one warp owns one token row at a time and walks the rows grid-stride
// (rows are independent; the block size only groups warps). Within a row, lane `l` owns the experts
// `e = l, l + 32, l + 64, ...`: every per-expert quantity (logit, score, choice score) is recomputed
// by its owning lane from the logit when needed instead of being stored, so E is unbounded and the
// row's logits stay in L1 across passes. Reductions over the row (max, sum, best candidate) are
// xor-butterfly shuffles, after which every lane holds the same result; all lanes therefore run the
// same control flow on warp-uniform values and full-warp shuffles are always legal.
//
// Top-k without a mask: pass j looks for the best eligible expert ranked strictly after pick j - 1 in
// the total order (choice score descending, index ascending). Because that order is strict and total,
// the k passes yield exactly the k best experts, best first, with no per-expert "taken" state.
//
// Grouped selection keeps one float per group in dynamic shared memory, a slice of n_group floats
// per warp; lane l computes the scores of groups l, l + 32, ... Then topk_group passes over those
// scores find the last kept group (the threshold); an expert is eligible when its group ranks at or
// before the threshold.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "moe_abi.h"
#include "routing.cuh"

namespace {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
        v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
    }
    return v;
}

// Addition is commutative, so at every butterfly step both partners compute the same sum and all
// lanes end with bit-identical totals; the scores derived from it therefore agree across lanes.
__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
        v += __shfl_xor_sync(kFullMask, v, offset);
    }
    return v;
}

// The best of the lanes' candidates in the selection order, returned to every lane. The order is
// strict on distinct indices, so all lanes agree on the winner.
__device__ __forceinline__ MoeRanked warp_best(MoeRanked r) {
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
        MoeRanked other;
        other.score = __shfl_xor_sync(kFullMask, r.score, offset);
        other.index = __shfl_xor_sync(kFullMask, r.index, offset);
        if (moe_ranked_before(other, r)) {
            r = other;
        }
    }
    return r;
}

// Record a non-finite value in a status slot; the complemented key makes atomicMax keep the lowest
// (token, expert) no matter which thread gets there first.
__device__ void report_nonfinite(uint64_t* slot, int64_t token, int32_t expert, float value) {
    const uint64_t key = moe_status_key(static_cast<uint32_t>(token), static_cast<uint32_t>(expert),
                                        moe_nonfinite_kind(value));
    atomicMax(reinterpret_cast<unsigned long long*>(slot), static_cast<unsigned long long>(key));
}

// Scores of one token row. Every lane holds the same copy (the reductions are warp-uniform), so any
// lane computes the same score for a given expert.
template <typename T>
struct RowScores {
    const T* __restrict__ logits;      // this row's E logits
    const float* __restrict__ bias;    // E entries or nullptr
    bool softmax;
    float max_logit;                   // softmax only
    float denominator;                 // softmax only: sum of exp(logit - max_logit)

    // The unbiased score s(e): the routing weight before renormalisation and scaling. expf (not
    // __expf) and IEEE division keep it within an ulp or two of the CPU reference.
    __device__ __forceinline__ float score(int32_t e) const {
        const float x = to_float(logits[e]);
        if (softmax) {
            return expf(x - max_logit) / denominator;
        }
        return 1.0f / (1.0f + expf(-x));
    }

    // The choice score c(e) = s(e) + bias(e) that selection ranks by.
    __device__ __forceinline__ float choice(int32_t e) const {
        const float s = score(e);
        return bias != nullptr ? s + bias[e] : s;
    }
};

// Grouped-selection state of one row: the warp's slice of group scores and the last kept group.
struct GroupFilter {
    const float* scores;  // n_group entries in shared memory, or nullptr when not grouped
    int32_t group_size;
    MoeRanked threshold;

    __device__ __forceinline__ bool eligible(int32_t e) const {
        if (scores == nullptr) {
            return true;
        }
        const int32_t g = moe_group_of_expert(e, group_size);
        return moe_group_kept(scores[g], g, threshold);
    }
};

// Compute the row's group scores into `group_scores` (this warp's shared-memory slice) and find the
// last kept group. Lane l owns groups l, l + 32, ...
template <typename T>
__device__ GroupFilter select_groups(const MoeRoutingParams& p, const RowScores<T>& row,
                                     float* group_scores, int lane) {
    const int32_t group_size = p.num_experts / p.n_group;
    #pragma unroll 1
    for (int32_t g = lane; g < p.n_group; g += kWarpSize) {
        MoeTop2 top = moe_top2_empty();
        const int32_t first = g * group_size;
        #pragma unroll 1
        for (int32_t i = 0; i < group_size; ++i) {
            top = moe_top2_push(top, row.choice(first + i));
        }
        group_scores[g] = moe_group_score(top, group_size, p.group_score);
    }
    // Each lane reads every group's score below, including those written by other lanes.
    __syncwarp();

    // Pass q finds the (q+1)-th best group: the best one ranked strictly after the previous pass's.
    MoeRanked threshold = moe_rank_top();
    #pragma unroll 1
    for (int32_t q = 0; q < p.topk_group; ++q) {
        MoeRanked best = moe_rank_none();
        for (int32_t g = lane; g < p.n_group; g += kWarpSize) {
            MoeRanked candidate;
            candidate.score = group_scores[g];
            candidate.index = g;
            if (moe_ranked_before(threshold, candidate) && moe_ranked_before(candidate, best)) {
                best = candidate;
            }
        }
        threshold = warp_best(best);
    }
    GroupFilter filter;
    filter.scores = group_scores;
    filter.group_size = group_size;
    filter.threshold = threshold;
    return filter;
}

// A row that cannot be routed (non-finite input): the defined fallback is experts 0..k-1 with weight
// 0, which keeps every later stage in bounds and contributes nothing. Lane l writes slots l, l + 32...
__device__ void write_fallback_row(const MoeRoutingParams& p, int64_t row, int lane) {
    int32_t* ids = p.topk_ids + row * p.top_k;
    float* weights = p.topk_weights + row * p.top_k;
    #pragma unroll 1
    for (int32_t j = lane; j < p.top_k; j += kWarpSize) {
        ids[j] = j;
        weights[j] = 0.0f;
    }
}

template <typename T>
__device__ void route_row(const MoeRoutingParams& p, int64_t row, float* group_scores, int lane) {
    const int32_t num_experts = p.num_experts;
    const T* logits = static_cast<const T*>(p.logits) + row * num_experts;

    // Pass 1 (each lane over its experts): the row maximum, and a check of every logit and bias
    // entry for NaN/Inf.
    float local_max = -__builtin_huge_valf();
    bool bad = false;
    for (int32_t e = lane; e < num_experts; e += kWarpSize) {
        const float x = to_float(logits[e]);
        if (!isfinite(x)) {
            bad = true;
            report_nonfinite(&p.status->nonfinite_logit, row, e, x);
        }
        local_max = fmaxf(local_max, x);
        if (p.correction_bias != nullptr && !isfinite(p.correction_bias[e])) {
            bad = true;
            report_nonfinite(&p.status->nonfinite_bias, 0, e, p.correction_bias[e]);
        }
    }
    if (__any_sync(kFullMask, bad)) {
        write_fallback_row(p, row, lane);
        return;
    }

    RowScores<T> scores;
    scores.logits = logits;
    scores.bias = p.correction_bias;
    scores.softmax = p.scoring == MOE_SCORING_SOFTMAX;
    scores.max_logit = 0.0f;
    scores.denominator = 1.0f;
    if (scores.softmax) {
        // Pass 2: the softmax denominator.
        scores.max_logit = warp_max(local_max);
        float local_sum = 0.0f;
        for (int32_t e = lane; e < num_experts; e += kWarpSize) {
            local_sum += expf(to_float(logits[e]) - scores.max_logit);
        }
        scores.denominator = warp_sum(local_sum);
    }

    GroupFilter filter;
    filter.scores = nullptr;
    filter.group_size = num_experts;
    filter.threshold = moe_rank_none();
    if (p.n_group > 0) {
        filter = select_groups(p, scores, group_scores, lane);
    }

    // Passes 3..k+2: pick j is the best eligible expert ranked strictly after pick j - 1. Lane
    // (j mod 32) writes slot j, so the final rescaling below reads back only its own writes.
    int32_t* ids = p.topk_ids + row * p.top_k;
    float* weights = p.topk_weights + row * p.top_k;
    MoeRanked previous = moe_rank_top();
    float weight_sum = 0.0f;
    #pragma unroll 1
    for (int32_t j = 0; j < p.top_k; ++j) {
        MoeRanked best = moe_rank_none();
        for (int32_t e = lane; e < num_experts; e += kWarpSize) {
            if (!filter.eligible(e)) {
                continue;
            }
            MoeRanked candidate;
            candidate.score = scores.choice(e);
            candidate.index = e;
            if (moe_ranked_before(previous, candidate) && moe_ranked_before(candidate, best)) {
                best = candidate;
            }
        }
        previous = warp_best(best);
        // Every lane computes the weight (same address, one broadcast load) so that all lanes carry
        // the same running sum, accumulated in slot order like the reference.
        const float weight = scores.score(previous.index);
        weight_sum += weight;
        if (lane == j % kWarpSize) {
            ids[j] = previous.index;
            weights[j] = weight;
        }
    }

    const bool divide = p.renormalize != 0 && weight_sum > 0.0f;
    #pragma unroll 1
    for (int32_t j = lane; j < p.top_k; j += kWarpSize) {
        float w = weights[j];
        if (divide) {
            w = w / weight_sum;
        }
        weights[j] = w * p.routed_scaling_factor;
    }

    // The next row of this warp overwrites the group scores that lanes read above.
    __syncwarp();
}

// Launch shape: blockDim.x is a multiple of 32 (at most MOE_ROUTING_BLOCK_THREADS), each warp of the block handles rows
// blockIdx.x * warps_per_block + warp, then strides by the total warp count of the grid. Dynamic
// shared memory holds n_group floats per warp (none when n_group is 0).
template <typename T>
__device__ void route_kernel(const MoeRoutingParams& p) {
    extern __shared__ float shared_group_scores[];
    const int lane = threadIdx.x % kWarpSize;
    const int warp = threadIdx.x / kWarpSize;
    const int warps_per_block = blockDim.x / kWarpSize;
    float* group_scores = shared_group_scores + warp * p.n_group;
    const int64_t row_stride = static_cast<int64_t>(gridDim.x) * warps_per_block;
    for (int64_t row = static_cast<int64_t>(blockIdx.x) * warps_per_block + warp; row < p.num_tokens;
         row += row_stride) {
        route_row<T>(p, row, group_scores, lane);
    }
}

// At least four resident blocks (32 warps) per SM. Stating the occupancy target explicitly also
// keeps ptxas from the tighter register budget it picked for sm_80 from the thread bound alone,
// which spilled.
constexpr int kMinBlocksPerSm = 4;

}  // namespace

extern "C" __global__ void __launch_bounds__(MOE_ROUTING_BLOCK_THREADS, kMinBlocksPerSm)
    moe_route_f32(const MoeRoutingParams p) {
    route_kernel<float>(p);
}

extern "C" __global__ void __launch_bounds__(MOE_ROUTING_BLOCK_THREADS, kMinBlocksPerSm)
    moe_route_bf16(const MoeRoutingParams p) {
    route_kernel<__nv_bfloat16>(p);
}

extern "C" __global__ void __launch_bounds__(MOE_ROUTING_BLOCK_THREADS, kMinBlocksPerSm)
    moe_route_f16(const MoeRoutingParams p) {
    route_kernel<__half>(p);
}
