// combine.cu: the routed experts' outputs back in token order, weighted and summed, plus the shared
// experts; and the accumulation of the shared experts' outputs.
//
// moe_combine_<y>_s<s>_o<o>_v<vec>: out[t] = sum over slots s in order of w[t, s] * y[slot_row(t, s)]
// (+ shared[t]), f32 accumulation, one rounding. No atomics: every output element is owned by one
// thread, which reads the k expert rows it needs (gather form), so the result is deterministic and,
// because multiplies and adds are kept separate (__fmul_rn / __fadd_rn, never contracted into FMAs)
// and done in the reference's order, bit-identical to cpu::combine::combine.
//
// Decomposition (combine.cuh): a work item is one token and one tile of MOE_COMBINE_BLOCK_THREADS * vec
// columns; blocks take items grid-stride; thread i owns columns tile_start + i * vec ... + vec - 1.
// The vector path (vec = 8) moves each thread's columns with 16-byte loads and stores (one uint4 of
// 8 bf16/f16, two of 8 f32); it needs H % 8 == 0 and 16-byte aligned buffers, which the host checks.
// The scalar path (vec = 1) takes any H. The k slots are processed in batches of kBatch: the batch's
// rows and weights are read, then its expert rows loaded together (independent loads in flight),
// then accumulated in slot order.
//
// moe_shared_accumulate_<dtype>: one block per token (grid-stride): the block reduces the sigmoid
// gate's dot product x[t] . gate when there is a gate, then every thread updates its columns
// t*H + i, t*H + i + blockDim, ... of the running f32 sum.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

#include "combine.cuh"
#include "moe_abi.h"
#include "moe_lanes.cuh"

namespace {

constexpr int kWarpSize = 32;
constexpr int kBatch = 4;

// Marks a combine without shared experts.
struct NoShared {};

// N consecutive elements to f32, and back with one round-to-nearest-even each. N is 1 or 8; for 8 the
// pointer is 16-byte aligned and the loads and stores are 16 bytes wide.
template <int N>
__device__ __forceinline__ void load_n(const float* p, float (&v)[N]) {
    if constexpr (N == 8) {
        const float4 a = reinterpret_cast<const float4*>(p)[0];
        const float4 b = reinterpret_cast<const float4*>(p)[1];
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
        v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    } else {
        #pragma unroll
        for (int i = 0; i < N; ++i) {
            v[i] = p[i];
        }
    }
}

template <int N>
__device__ __forceinline__ void load_n(const __nv_bfloat16* p, float (&v)[N]) {
    if constexpr (N == 8) {
        const uint4 raw = *reinterpret_cast<const uint4*>(p);
        const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
        #pragma unroll
        for (int i = 0; i < 4; ++i) {
            __nv_bfloat162 pair;
            memcpy(&pair, &words[i], sizeof(pair));
            const float2 f = __bfloat1622float2(pair);
            v[2 * i] = f.x;
            v[2 * i + 1] = f.y;
        }
    } else {
        #pragma unroll
        for (int i = 0; i < N; ++i) {
            v[i] = __bfloat162float(p[i]);
        }
    }
}

template <int N>
__device__ __forceinline__ void load_n(const __half* p, float (&v)[N]) {
    if constexpr (N == 8) {
        const uint4 raw = *reinterpret_cast<const uint4*>(p);
        const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
        #pragma unroll
        for (int i = 0; i < 4; ++i) {
            __half2 pair;
            memcpy(&pair, &words[i], sizeof(pair));
            const float2 f = __half22float2(pair);
            v[2 * i] = f.x;
            v[2 * i + 1] = f.y;
        }
    } else {
        #pragma unroll
        for (int i = 0; i < N; ++i) {
            v[i] = __half2float(p[i]);
        }
    }
}

template <int N>
__device__ __forceinline__ void store_n(float* p, const float (&v)[N]) {
    if constexpr (N == 8) {
        reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
        reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
        #pragma unroll
        for (int i = 0; i < N; ++i) {
            p[i] = v[i];
        }
    }
}

template <int N>
__device__ __forceinline__ void store_n(__nv_bfloat16* p, const float (&v)[N]) {
    if constexpr (N == 8) {
        uint32_t words[4];
        #pragma unroll
        for (int i = 0; i < 4; ++i) {
            const __nv_bfloat162 pair = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
            memcpy(&words[i], &pair, sizeof(pair));
        }
        *reinterpret_cast<uint4*>(p) = make_uint4(words[0], words[1], words[2], words[3]);
    } else {
        #pragma unroll
        for (int i = 0; i < N; ++i) {
            p[i] = __float2bfloat16_rn(v[i]);
        }
    }
}

template <int N>
__device__ __forceinline__ void store_n(__half* p, const float (&v)[N]) {
    if constexpr (N == 8) {
        uint32_t words[4];
        #pragma unroll
        for (int i = 0; i < 4; ++i) {
            const __half2 pair = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
            memcpy(&words[i], &pair, sizeof(pair));
        }
        *reinterpret_cast<uint4*>(p) = make_uint4(words[0], words[1], words[2], words[3]);
    } else {
        #pragma unroll
        for (int i = 0; i < N; ++i) {
            p[i] = __float2half_rn(v[i]);
        }
    }
}

// The main loop: this thread's kVec columns of token `token`, summed over the k slots.
template <typename Y, int kVec>
__device__ __forceinline__ void accumulate_slots(const MoeCombineParams& p, int64_t token,
                                                 int64_t col, float (&acc)[kVec]) {
    const Y* __restrict__ expert_out = static_cast<const Y*>(p.expert_out);
    #pragma unroll
    for (int i = 0; i < kVec; ++i) {
        acc[i] = 0.0f;
    }
    for (int64_t s0 = 0; s0 < p.top_k; s0 += kBatch) {
        int64_t rows[kBatch];
        float weights[kBatch];
        #pragma unroll
        for (int b = 0; b < kBatch; ++b) {
            rows[b] = -1;
            weights[b] = 0.0f;
            if (s0 + b < p.top_k) {
                const int64_t flat = token * p.top_k + s0 + b;
                const int64_t row = p.slot_row[flat];
                // A slot the permutation skipped (out-of-range id) has no row; a row outside the
                // expert outputs cannot come from the permutation, and is never read.
                if (row >= 0 && row < p.num_rows) {
                    rows[b] = row;
                    weights[b] = p.weights != nullptr ? p.weights[flat] : 1.0f;
                }
            }
        }
        float y[kBatch][kVec];
        #pragma unroll
        for (int b = 0; b < kBatch; ++b) {
            if (rows[b] >= 0) {
                load_n<kVec>(expert_out + rows[b] * p.hidden + col, y[b]);
            }
        }
        #pragma unroll
        for (int b = 0; b < kBatch; ++b) {
            if (rows[b] >= 0) {
                #pragma unroll
                for (int i = 0; i < kVec; ++i) {
                    acc[i] = __fadd_rn(acc[i], __fmul_rn(weights[b], y[b][i]));
                }
            }
        }
    }
}

// The epilogue: add the shared experts' output, round once, store.
template <typename S, typename O, int kVec>
__device__ __forceinline__ void finish_columns(const MoeCombineParams& p, int64_t token, int64_t col,
                                               float (&acc)[kVec]) {
    const int64_t offset = token * p.hidden + col;
    if constexpr (!std::is_same_v<S, NoShared>) {
        float shared[kVec];
        load_n<kVec>(static_cast<const S*>(p.shared) + offset, shared);
        #pragma unroll
        for (int i = 0; i < kVec; ++i) {
            acc[i] = __fadd_rn(acc[i], shared[i]);
        }
    }
    store_n<kVec>(static_cast<O*>(p.out) + offset, acc);
}

template <typename Y, typename S, typename O, int kVec>
__device__ void combine_kernel(const MoeCombineParams& p) {
    const int64_t threads = blockDim.x;
    const int64_t tiles = moe_combine_tiles(p.hidden, threads, kVec);
    const int64_t items = moe_combine_items(p.num_tokens, p.hidden, threads, kVec);
    for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
        const int64_t token = moe_combine_token(item, tiles);
        const int64_t col = moe_combine_column(item, tiles, threadIdx.x, threads, kVec);
        if (col >= p.hidden) {
            continue;
        }
        float acc[kVec];
        accumulate_slots<Y, kVec>(p, token, col, acc);
        finish_columns<S, O, kVec>(p, token, col, acc);
    }
}

// One shared expert's output into the running sum (see the file comment).
template <typename T>
__device__ void shared_accumulate_kernel(const MoeSharedAccumulateParams& p) {
    __shared__ float warp_sums[MOE_SHARED_BLOCK_THREADS / kWarpSize];
    __shared__ float gate_value;
    const MoeWarpLanes lanes;
    const int warp = threadIdx.x / kWarpSize;
    const int warps = blockDim.x / kWarpSize;
    for (int64_t t = blockIdx.x; t < p.num_tokens; t += gridDim.x) {
        float g = 1.0f;
        if (p.gate != nullptr) {
            const T* x = static_cast<const T*>(p.x) + t * p.hidden;
            const T* w = static_cast<const T*>(p.gate);
            float partial = 0.0f;
            for (int64_t h = threadIdx.x; h < p.hidden; h += blockDim.x) {
                partial += moe_to_float(x[h]) * moe_to_float(w[h]);
            }
            partial = lanes.sum(partial);
            if (lanes.lane() == 0) {
                warp_sums[warp] = partial;
            }
            // The warp partials are complete before thread 0 adds them.
            __syncthreads();
            if (threadIdx.x == 0) {
                float logit = 0.0f;
                for (int i = 0; i < warps; ++i) {
                    logit += warp_sums[i];
                }
                gate_value = 1.0f / (1.0f + expf(-logit));
            }
            // The gate is published before every thread reads it.
            __syncthreads();
            g = gate_value;
        }
        const float* part = p.part + t * p.hidden;
        float* sum = p.sum + t * p.hidden;
        for (int64_t h = threadIdx.x; h < p.hidden; h += blockDim.x) {
            const float previous = p.accumulate != 0 ? sum[h] : 0.0f;
            sum[h] = __fadd_rn(previous, __fmul_rn(g, part[h]));
        }
        if (p.gate != nullptr) {
            // Every thread has read gate_value and warp_sums before the next token rewrites them.
            __syncthreads();
        }
    }
}

}  // namespace

#define MOE_COMBINE_KERNEL(name, Y, S, O, vec)                                                  \
    extern "C" __global__ void __launch_bounds__(MOE_COMBINE_BLOCK_THREADS)                   \
        name(const MoeCombineParams p) {                                                      \
        combine_kernel<Y, S, O, vec>(p);                                                      \
    }

// Both vector widths of one (expert output, shared, output) type combination.
#define MOE_COMBINE_KERNELS(prefix, Y, S, O)          \
    MOE_COMBINE_KERNEL(prefix##_v8, Y, S, O, MOE_COMBINE_VEC) \
    MOE_COMBINE_KERNEL(prefix##_v1, Y, S, O, 1)

MOE_COMBINE_KERNELS(moe_combine_f32_snone_of32, float, NoShared, float)
MOE_COMBINE_KERNELS(moe_combine_f32_sf32_of32, float, float, float)

MOE_COMBINE_KERNELS(moe_combine_bf16_snone_obf16, __nv_bfloat16, NoShared, __nv_bfloat16)
MOE_COMBINE_KERNELS(moe_combine_bf16_snone_of32, __nv_bfloat16, NoShared, float)
MOE_COMBINE_KERNELS(moe_combine_bf16_sf32_obf16, __nv_bfloat16, float, __nv_bfloat16)
MOE_COMBINE_KERNELS(moe_combine_bf16_sf32_of32, __nv_bfloat16, float, float)
MOE_COMBINE_KERNELS(moe_combine_bf16_sbf16_obf16, __nv_bfloat16, __nv_bfloat16, __nv_bfloat16)
MOE_COMBINE_KERNELS(moe_combine_bf16_sbf16_of32, __nv_bfloat16, __nv_bfloat16, float)

MOE_COMBINE_KERNELS(moe_combine_f16_snone_of16, __half, NoShared, __half)
MOE_COMBINE_KERNELS(moe_combine_f16_snone_of32, __half, NoShared, float)
MOE_COMBINE_KERNELS(moe_combine_f16_sf32_of16, __half, float, __half)
MOE_COMBINE_KERNELS(moe_combine_f16_sf32_of32, __half, float, float)
MOE_COMBINE_KERNELS(moe_combine_f16_sf16_of16, __half, __half, __half)
MOE_COMBINE_KERNELS(moe_combine_f16_sf16_of32, __half, __half, float)

#define MOE_SHARED_KERNEL(name, T)                                                         \
    extern "C" __global__ void __launch_bounds__(MOE_SHARED_BLOCK_THREADS)               \
        name(const MoeSharedAccumulateParams p) {                                        \
        shared_accumulate_kernel<T>(p);                                                  \
    }

MOE_SHARED_KERNEL(moe_shared_accumulate_f32, float)
MOE_SHARED_KERNEL(moe_shared_accumulate_bf16, __nv_bfloat16)
MOE_SHARED_KERNEL(moe_shared_accumulate_f16, __half)
