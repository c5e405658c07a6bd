// permute.cu: routing decisions [T, k] sorted by expert (both index maps and the segment offsets),
// and the gather of the hidden states into that order.
//
// The sort is the stable counting sort of permute.cuh (count per chunk, scan, scatter), run as:
//   - moe_permute_single: one block of MOE_PERMUTE_SINGLE_BLOCK_THREADS threads does all three steps,
//     separated by __syncthreads (decode and small prefill: one launch);
//   - moe_permute_count, moe_permute_scan, moe_permute_scatter: three launches for larger inputs;
//     count and scatter give one warp to each chunk, scan is one block.
// The scratch counters live in global memory (expert-major, L2-resident), so the expert count is
// not limited by shared memory.
//
// Gather: one warp per row of the permuted layout, grid-stride over rows; lanes move the row in
// units of 16 bytes (uint4) when rows and pointers are 16-byte aligned, else in 2- or 4-byte
// elements. Rows past expert_offsets[E] (the padded total, known only on the device) are not touched.
// The scaled gather (Llama 4's input scaling) has the same decomposition in single elements, each
// lane scaling its elements by the row's routing weight in f32 and rounding once.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "moe_abi.h"
#include "moe_lanes.cuh"
#include "permute.cuh"

namespace {

constexpr int kWarpSize = 32;

// Step 2 for the whole expert range, by one block: warp w scans experts w, w + warps, ... over their
// chunks and records the totals; then the block scans the padded totals into the offsets, a tile of
// blockDim experts at a time (warp scans, then a scan of the warp totals in shared memory); then
// marks the padding rows.
__device__ void scan_all(const MoePermuteParams& p) {
    __shared__ int64_t warp_totals[MOE_PERMUTE_SINGLE_BLOCK_THREADS / kWarpSize];
    __shared__ int64_t tile_carry;
    const MoeWarpLanes lanes;
    const int warp = threadIdx.x / kWarpSize;
    const int warps = blockDim.x / kWarpSize;
    for (int64_t e = warp; e < p.num_experts; e += warps) {
        const int64_t total = moe_permute_scan_expert(lanes, p, e);
        if (lanes.lane() == 0) {
            p.expert_counts[e] = total;
        }
    }
    if (threadIdx.x == 0) {
        tile_carry = 0;
        p.expert_offsets[0] = 0;
    }
    // Every expert's total (global memory) and the carry are written before the offsets scan.
    __syncthreads();
    for (int64_t tile = 0; tile < p.num_experts; tile += blockDim.x) {
        const int64_t e = tile + threadIdx.x;
        const int64_t padded = e < p.num_experts ? moe_padded_rows(p.expert_counts[e], p.block_size) : 0;
        const int64_t inclusive = lanes.inclusive_scan(padded);
        if (lanes.lane() == kWarpSize - 1) {
            warp_totals[warp] = inclusive;
        }
        // The warp totals are complete before warp 0 scans them.
        __syncthreads();
        if (warp == 0) {
            const int64_t v = lanes.lane() < warps ? warp_totals[lanes.lane()] : 0;
            const int64_t scanned = lanes.inclusive_scan(v);
            if (lanes.lane() < warps) {
                warp_totals[lanes.lane()] = scanned - v;  // exclusive prefix of the warp totals
            }
        }
        // The prefixes of the warp totals are complete before every thread reads its own.
        __syncthreads();
        const int64_t end = tile_carry + warp_totals[warp] + inclusive;
        if (e < p.num_experts) {
            p.expert_offsets[e + 1] = end;
        }
        // Everyone has read tile_carry and warp_totals before the last thread advances the carry
        // and the next tile overwrites the totals.
        __syncthreads();
        if (threadIdx.x == blockDim.x - 1) {
            tile_carry = end;
        }
        // The new carry is visible before the next tile uses it.
        __syncthreads();
    }
    moe_permute_mark_padding(p, threadIdx.x, blockDim.x);
}

}  // namespace

// All three steps in one block of MOE_PERMUTE_SINGLE_BLOCK_THREADS threads; the plan gives at most
// one chunk per warp. The barriers order the global-memory scratch and map writes between steps.
extern "C" __global__ void __launch_bounds__(MOE_PERMUTE_SINGLE_BLOCK_THREADS)
    moe_permute_single(const MoePermuteParams p) {
    const MoeWarpLanes lanes;
    const int64_t warp = threadIdx.x / kWarpSize;
    const int64_t warps = blockDim.x / kWarpSize;
    for (int64_t c = warp; c < p.num_chunks; c += warps) {
        moe_permute_count_chunk(lanes, p, c);
    }
    // Counts complete before the scan.
    __syncthreads();
    scan_all(p);
    // Offsets and scanned cursors complete before the scatter.
    __syncthreads();
    for (int64_t c = warp; c < p.num_chunks; c += warps) {
        moe_permute_scatter_chunk(lanes, p, c);
    }
}

// Step 1 of the multi-block path: warp w of block b counts chunk b * warps_per_block + w, then
// strides by the grid's warp count.
extern "C" __global__ void __launch_bounds__(MOE_PERMUTE_BLOCK_THREADS)
    moe_permute_count(const MoePermuteParams p) {
    const MoeWarpLanes lanes;
    const int64_t warps = blockDim.x / kWarpSize;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * warps;
    for (int64_t c = blockIdx.x * warps + threadIdx.x / kWarpSize; c < p.num_chunks; c += stride) {
        moe_permute_count_chunk(lanes, p, c);
    }
}

// Step 2 of the multi-block path: one block of MOE_PERMUTE_SINGLE_BLOCK_THREADS threads.
extern "C" __global__ void __launch_bounds__(MOE_PERMUTE_SINGLE_BLOCK_THREADS)
    moe_permute_scan(const MoePermuteParams p) {
    scan_all(p);
}

// Step 3 of the multi-block path, with the chunk-to-warp assignment of moe_permute_count.
extern "C" __global__ void __launch_bounds__(MOE_PERMUTE_BLOCK_THREADS)
    moe_permute_scatter(const MoePermuteParams p) {
    const MoeWarpLanes lanes;
    const int64_t warps = blockDim.x / kWarpSize;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * warps;
    for (int64_t c = blockIdx.x * warps + threadIdx.x / kWarpSize; c < p.num_chunks; c += stride) {
        moe_permute_scatter_chunk(lanes, p, c);
    }
}

namespace {

// The gather for rows of `Unit`s: warp w of block b takes rows b * warps + w, b * warps + w + stride,
// ... below the padded total; lane l moves units l, l + 32, ... of the row, kUnroll loads in flight
// before their stores.
template <typename Unit>
__device__ void gather_rows(const MoeGatherParams& p) {
    constexpr int kUnroll = 4;
    const int lane = threadIdx.x % kWarpSize;
    const int64_t warps = blockDim.x / kWarpSize;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * warps;
    const int64_t total = moe_min64(p.expert_offsets[p.num_experts], p.row_capacity);
    const Unit* __restrict__ x = static_cast<const Unit*>(p.x);
    Unit* __restrict__ out = static_cast<Unit*>(p.out);
    const int64_t n = p.row_units;
    for (int64_t r = blockIdx.x * warps + threadIdx.x / kWarpSize; r < total; r += stride) {
        const int64_t token = moe_gather_token(p.row_source[r], p.top_k);
        Unit* dst = out + r * n;
        if (token < 0) {
            const Unit zero = Unit{};
            for (int64_t u = lane; u < n; u += kWarpSize) {
                dst[u] = zero;
            }
            continue;
        }
        const Unit* src = x + token * n;
        int64_t u = lane;
        for (; u + (kUnroll - 1) * kWarpSize < n; u += kUnroll * kWarpSize) {
            Unit v[kUnroll];
            #pragma unroll
            for (int i = 0; i < kUnroll; ++i) {
                v[i] = src[u + i * kWarpSize];
            }
            #pragma unroll
            for (int i = 0; i < kUnroll; ++i) {
                dst[u + i * kWarpSize] = v[i];
            }
        }
        for (; u < n; u += kWarpSize) {
            dst[u] = src[u];
        }
    }
}

// Narrowing from f32, round to nearest even (the CPU reference's `Element::from_f32`).
template <typename T>
__device__ __forceinline__ T narrow(float v);
template <>
__device__ __forceinline__ float narrow<float>(float v) {
    return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half narrow<__half>(float v) {
    return __float2half_rn(v);
}

// The scaled gather for rows of T: as gather_rows (row r by warp r mod the grid's warps, lanes
// striding its elements), out[r] = x[token] * row_scale[flat source of r], zeros for padding.
template <typename T>
__device__ void gather_scaled_rows(const MoeGatherParams& p) {
    const int lane = threadIdx.x % kWarpSize;
    const int64_t warps = blockDim.x / kWarpSize;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * warps;
    const int64_t total = moe_min64(p.expert_offsets[p.num_experts], p.row_capacity);
    const T* __restrict__ x = static_cast<const T*>(p.x);
    T* __restrict__ out = static_cast<T*>(p.out);
    const int64_t n = p.row_units;
    for (int64_t r = blockIdx.x * warps + threadIdx.x / kWarpSize; r < total; r += stride) {
        const int64_t source = p.row_source[r];
        const int64_t token = moe_gather_token(source, p.top_k);
        T* dst = out + r * n;
        if (token < 0) {
            for (int64_t u = lane; u < n; u += kWarpSize) {
                dst[u] = narrow<T>(0.0f);
            }
            continue;
        }
        const float scale = p.row_scale[source];
        const T* src = x + token * n;
        for (int64_t u = lane; u < n; u += kWarpSize) {
            dst[u] = narrow<T>(__fmul_rn(moe_to_float(src[u]), scale));
        }
    }
}

}  // namespace

// Rows of T, each scaled by its routing weight.
extern "C" __global__ void __launch_bounds__(MOE_GATHER_BLOCK_THREADS)
    moe_gather_scaled_f32(const MoeGatherParams p) {
    gather_scaled_rows<float>(p);
}

extern "C" __global__ void __launch_bounds__(MOE_GATHER_BLOCK_THREADS)
    moe_gather_scaled_bf16(const MoeGatherParams p) {
    gather_scaled_rows<__nv_bfloat16>(p);
}

extern "C" __global__ void __launch_bounds__(MOE_GATHER_BLOCK_THREADS)
    moe_gather_scaled_f16(const MoeGatherParams p) {
    gather_scaled_rows<__half>(p);
}

// Rows of 16-byte units (row bytes and both base pointers 16-byte aligned).
extern "C" __global__ void __launch_bounds__(MOE_GATHER_BLOCK_THREADS)
    moe_gather_u16b(const MoeGatherParams p) {
    gather_rows<uint4>(p);
}

// Rows of 4-byte elements.
extern "C" __global__ void __launch_bounds__(MOE_GATHER_BLOCK_THREADS)
    moe_gather_u4b(const MoeGatherParams p) {
    gather_rows<uint32_t>(p);
}

// Rows of 2-byte elements.
extern "C" __global__ void __launch_bounds__(MOE_GATHER_BLOCK_THREADS)
    moe_gather_u2b(const MoeGatherParams p) {
    gather_rows<uint16_t>(p);
}
