// routing.cu: the MoE router, one launch from router logits [T, E] to top-k expert ids and weights.
//
// The per-row algorithm and its semantics are in routing.cuh. Parallel decomposition: one warp owns
// one token row at a time and walks the rows grid-stride (rows are independent; the block size only
// groups warps). Within a row, lane l owns experts l, l + 32, ... (see routing.cuh).
//
// Two kinds of kernels per element type:
//   - moe_route_<dtype>_r<P> (P in 1, 2, 4, 8, 16): the fast path for E <= 32 * P, each lane holding
//     its P scores in registers, so the logits are read once and the k selection passes are register
//     compares and shuffles;
//   - moe_route_<dtype>: the general path for any E, which recomputes each score from its logit.
// The host picks the smallest P that covers E, and the general path beyond 512 experts.
//
// Grouped selection keeps one float per group in dynamic shared memory, a slice of n_group floats
// per warp.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "moe_abi.h"
#include "moe_lanes.cuh"
#include "routing.cuh"

namespace {

constexpr int kWarpSize = 32;

// Launch shape: blockDim.x is a multiple of 32 (at most MOE_ROUTING_BLOCK_THREADS); warp w of block b
// handles rows b * warps_per_block + w, then strides by the total warp count of the grid. Dynamic
// shared memory holds n_group floats per warp (none when n_group is 0). kPerLane 0 selects the
// general (recomputing) row source.
template <typename T, int kPerLane>
__device__ void route_kernel(const MoeRoutingParams& p) {
    extern __shared__ float shared_group_scores[];
    const MoeWarpLanes lanes;
    const int warp = threadIdx.x / kWarpSize;
    const int warps_per_block = blockDim.x / kWarpSize;
    float* group_scores = shared_group_scores + warp * p.n_group;
    const int64_t row_stride = static_cast<int64_t>(gridDim.x) * warps_per_block;
    for (int64_t row = static_cast<int64_t>(blockIdx.x) * warps_per_block + warp; row < p.num_tokens;
         row += row_stride) {
        if constexpr (kPerLane == 0) {
            MoeRecomputedRow<T> source;
            moe_route_row(lanes, p, source, row, group_scores);
        } else {
            MoeRegisterRow<T, kPerLane> source;
            moe_route_row(lanes, p, source, row, group_scores);
        }
    }
}

// Resident blocks per SM the kernels are compiled for: four (32 warps) leaves 64 registers per
// thread, enough for up to 8 register slots per lane (stating it also keeps ptxas from the tighter
// budget it picked for sm_80 from the thread bound alone, which spilled). The 16-slot kernels hold
// 32 floats of scores per lane and get two blocks (128 registers) instead, which ptxas needs to
// avoid spilling them.
constexpr int kMinBlocksPerSm = 4;
constexpr int kMinBlocksPerSmWide = 2;

}  // namespace

#define MOE_ROUTE_KERNEL(name, T, per_lane, min_blocks)                                      \
    extern "C" __global__ void __launch_bounds__(MOE_ROUTING_BLOCK_THREADS, min_blocks)    \
        name(const MoeRoutingParams p) {                                                   \
        route_kernel<T, per_lane>(p);                                                      \
    }

#define MOE_ROUTE_KERNELS(dtype, T)                                       \
    MOE_ROUTE_KERNEL(moe_route_##dtype, T, 0, kMinBlocksPerSm)            \
    MOE_ROUTE_KERNEL(moe_route_##dtype##_r1, T, 1, kMinBlocksPerSm)       \
    MOE_ROUTE_KERNEL(moe_route_##dtype##_r2, T, 2, kMinBlocksPerSm)       \
    MOE_ROUTE_KERNEL(moe_route_##dtype##_r4, T, 4, kMinBlocksPerSm)       \
    MOE_ROUTE_KERNEL(moe_route_##dtype##_r8, T, 8, kMinBlocksPerSm)       \
    MOE_ROUTE_KERNEL(moe_route_##dtype##_r16, T, 16, kMinBlocksPerSmWide)

MOE_ROUTE_KERNELS(f32, float)
MOE_ROUTE_KERNELS(bf16, __nv_bfloat16)
MOE_ROUTE_KERNELS(f16, __half)
