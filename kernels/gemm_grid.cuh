// gemm_grid.cuh: the persistent walk of a block over its output tiles of a grouped GEMM, shared by
// the kernel families that use the tile space of gemm_schedule.cuh (grouped_gemm.cu, w8a8_gemm.cu).
// Device code only; what a tile computes is the caller's.
//
// Parallel decomposition. Block b computes output tiles b, b + gridDim.x, b + 2 gridDim.x, ... of the
// tile space, which the block derives itself from the device-side expert offsets: the host never
// learns how many rows an expert has. The experts are walked in chunks of THREADS; per chunk, thread
// j owns expert first + j, and two block-wide scans build the chunk's segment bounds (running max of
// the clamped offsets) and tile counts (inclusive prefix sum) in shared memory; each thread then maps
// its block's tile numbers to (expert, rows, column tile) with a binary search (moe_gemm_locate).
// Every thread computes the same mapping from the same tables, so no broadcast is needed.
#ifndef MOE_GEMM_GRID_CUH
#define MOE_GEMM_GRID_CUH

#include <stdint.h>

#include "gemm_schedule.cuh"
#include "moe_abi.h"

namespace moe_gemm {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
// Row tiles per raster group (moe_gemm_raster).
constexpr int kRasterGroup = 8;

// Shared-memory tables of one expert chunk (see the decomposition above).
template <int THREADS>
struct ScheduleTables {
    int64_t bounds[THREADS + 1];           // segment j of the chunk is [bounds[j], bounds[j + 1])
    int64_t tile_end[THREADS];             // inclusive prefix sum of the segments' tile counts
    int64_t warp_totals[THREADS / kWarpSize];  // scan scratch
};

struct MaxOp {
    __device__ __forceinline__ int64_t operator()(int64_t a, int64_t b) const {
        return moe_gemm_max(a, b);
    }
};

struct SumOp {
    __device__ __forceinline__ int64_t operator()(int64_t a, int64_t b) const { return a + b; }
};

// Inclusive scan of one value per thread in thread order, returned to each thread: a shuffle scan
// within each warp, then each thread folds in the totals of the warps before it. The first barrier
// publishes the warp totals; the second keeps a following scan from overwriting them while slower
// threads still read them. Every thread of the block must call it.
template <int WARPS, typename Op>
__device__ __forceinline__ int64_t block_inclusive_scan(int64_t v, Op op, int64_t* warp_totals) {
    const int lane = threadIdx.x % kWarpSize;
    const int warp = threadIdx.x / kWarpSize;
#pragma unroll
    for (int d = 1; d < kWarpSize; d *= 2) {
        const int64_t other = __shfl_up_sync(kFullMask, v, d);
        if (lane >= d) {
            v = op(other, v);
        }
    }
    if (lane == kWarpSize - 1) {
        warp_totals[warp] = v;
    }
    __syncthreads();
#pragma unroll
    for (int w = 0; w < WARPS - 1; ++w) {
        if (w < warp) {
            v = op(warp_totals[w], v);
        }
    }
    __syncthreads();
    return v;
}

// Call compute(tile) for every output tile of this block, in order, tiles of BM rows and BN weight
// rows. Every thread of the block must call it (it synchronises the block), with THREADS threads.
template <int THREADS, int BM, int BN, typename Compute>
__device__ __forceinline__ void for_each_block_tile(const MoeGemmParams& p, Compute compute) {
    constexpr int WARPS = THREADS / kWarpSize;
    __shared__ ScheduleTables<THREADS> tables;
    const int j = threadIdx.x;
    const int64_t n_tiles = moe_gemm_n_tiles(p.n, BN, p.epilogue);

    int64_t carry = moe_gemm_first_bound(p.expert_offsets, p.rows);  // m at the chunk's start
    int64_t chunk_base = 0;  // tiles of the chunks before this one
    int64_t next = blockIdx.x;  // this block's next tile number
#pragma unroll 1
    for (int64_t first = 0; first < p.num_experts; first += THREADS) {
        const int count = static_cast<int>(moe_gemm_min(THREADS, p.num_experts - first));
        // Running max of the clamped ends, carried in from the previous chunk. The scan's barriers
        // also wait for every thread to finish the previous chunk's tiles, which read the tables.
        int64_t end = carry;
        if (j < count) {
            end = moe_gemm_max(carry, moe_gemm_raw_end(p.expert_offsets, first + j, p.rows));
        }
        end = block_inclusive_scan<WARPS>(end, MaxOp(), tables.warp_totals);
        tables.bounds[j + 1] = end;
        if (j == 0) {
            tables.bounds[0] = carry;
        }
        __syncthreads();  // bounds complete
        int64_t tiles = 0;
        if (j < count) {
            tiles = moe_gemm_segment_tiles(tables.bounds[j], tables.bounds[j + 1], BM, n_tiles);
        }
        tiles = block_inclusive_scan<WARPS>(tiles, SumOp(), tables.warp_totals);
        tables.tile_end[j] = tiles;
        __syncthreads();  // tile_end complete
        const int64_t chunk_tiles = tables.tile_end[count - 1];
        carry = tables.bounds[count];
#pragma unroll 1
        for (; next < chunk_base + chunk_tiles; next += gridDim.x) {
            compute(moe_gemm_locate(tables.bounds, tables.tile_end, count, first,
                                    next - chunk_base, BM, n_tiles, kRasterGroup));
        }
        chunk_base += chunk_tiles;
    }
}

}  // namespace moe_gemm

#endif  // MOE_GEMM_GRID_CUH
