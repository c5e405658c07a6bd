// gemm_epilogue.cuh: what the grouped GEMM does with a finished tile of f32 accumulators: the
// element-wise operation (store, activation, or the gated activation pairing gate and up columns),
// rounding once to the output type, and masked stores of the tile's valid rows and columns.
//
// Kept apart from the main loop: the main loop only produces `acc`, laid out as the mma.sync m16n8
// accumulator fragments of one warp (see store_accumulators), and calls store_accumulators once.
#ifndef MOE_GEMM_EPILOGUE_CUH
#define MOE_GEMM_EPILOGUE_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "activation.cuh"
#include "gemm_layout.cuh"
#include "gemm_schedule.cuh"
#include "moe_abi.h"

namespace moe_gemm {

// The element-wise part: MOE_GEMM_EPILOGUE_STORE or _ACTIVATION on single accumulators, _GATED on
// (gate, up) pairs. Same formulas and rounding point as the CPU reference: the activation (and the
// gate * up product) is computed in f32 and rounded once, by the store. The clamped SwiGLU's alpha and
// limit are read from the kernel parameters only when it is the activation.
struct EpilogueOp {
    int32_t mode;
    int32_t activation;
    const MoeGemmParams& p;

    __device__ __forceinline__ float single(float acc) const {
        if (mode != MOE_GEMM_EPILOGUE_ACTIVATION) {
            return acc;
        }
        return activation == MOE_ACTIVATION_CLAMPED_SILU
                   ? moe_clamped_silu(acc, p.clamp_alpha, p.clamp_limit)
                   : moe_activation(activation, acc);
    }

    __device__ __forceinline__ float gated(float gate, float up) const {
        return activation == MOE_ACTIVATION_CLAMPED_SILU
                   ? moe_clamped_swiglu(gate, up, p.clamp_alpha, p.clamp_limit)
                   : moe_activation(activation, gate) * up;
    }
};

// Add the bias entries of columns col and col + 1 (those before `cols`) to v0 and v1; `bias` is the
// tile's expert's bias row, offset to the half the columns index, or null for no bias. Read here, in
// the store loop, so that no bias value is live across the main loop.
__device__ __forceinline__ void add_bias_pair(const float* bias, int64_t col, int64_t cols, float& v0,
                                              float& v1) {
    if (bias == nullptr) {
        return;
    }
    if (col < cols) {
        v0 += bias[col];
    }
    if (col + 1 < cols) {
        v1 += bias[col + 1];
    }
}

// Rounding to the output type (round to nearest even, like the CPU reference's `from_f32`), one value
// or a pair of adjacent values as one 2-element vector.
template <typename Out>
struct OutputCast;

template <>
struct OutputCast<float> {
    using Pair = float2;
    __device__ __forceinline__ static float one(float v) { return v; }
    __device__ __forceinline__ static Pair two(float a, float b) { return make_float2(a, b); }
};

template <>
struct OutputCast<__nv_bfloat16> {
    using Pair = __nv_bfloat162;
    __device__ __forceinline__ static __nv_bfloat16 one(float v) { return __float2bfloat16_rn(v); }
    __device__ __forceinline__ static Pair two(float a, float b) {
        return __floats2bfloat162_rn(a, b);
    }
};

template <>
struct OutputCast<__half> {
    using Pair = __half2;
    __device__ __forceinline__ static __half one(float v) { return __float2half_rn(v); }
    __device__ __forceinline__ static Pair two(float a, float b) { return __floats2half2_rn(a, b); }
};

// Store columns col and col + 1 of one output row holding `cols` columns; either may be past the last
// column and is then skipped. `vector_ok` (the row base and `col` are 2-element aligned: even `cols`,
// aligned output pointer, even `col`) allows one 2-element store.
template <typename Out>
__device__ __forceinline__ void store_pair(Out* row, int64_t col, int64_t cols, float v0, float v1,
                                           bool vector_ok) {
    using Cast = OutputCast<Out>;
    if (vector_ok && col + 1 < cols) {
        *reinterpret_cast<typename Cast::Pair*>(row + col) = Cast::two(v0, v1);
        return;
    }
    if (col < cols) {
        row[col] = Cast::one(v0);
    }
    if (col + 1 < cols) {
        row[col + 1] = Cast::one(v1);
    }
}

// Write one warp's accumulators of `tile`. The warp owns tile rows [warp_m * WM, +WM) and tile columns
// [warp_n * WN, +WN); acc[mt][nt] is the m16n8 fragment at tile row warp_m * WM + 16 mt and tile column
// warp_n * WN + 8 nt, whose register r this lane holds at (moe_gemm_acc_row, moe_gemm_acc_col):
// registers 2h and 2h + 1 are adjacent columns of one row, stored together. Rows at or past
// tile.row_end belong to the next expert (or to no one) and are not written; neither are columns past
// the output's last.
//
// Gated, the B tile was loaded by moe_gemm_b_row so that fragment nt < NT/2 holds gate columns and
// fragment nt + NT/2 the up columns of the same outputs, in the same lanes and registers: each lane
// combines its own pairs, no data moves between threads.
//
// With a bias (p.bias non-null), the expert's bias row is added to the accumulators first: gated, the
// gate bias of output column c is bias[c] and its up bias bias[n/2 + c].
template <typename Out, int WM, int WN, int BN, int MT, int NT>
__device__ __forceinline__ void store_accumulators(const MoeGemmParams& p, const MoeGemmTile& tile,
                                                   const float (&acc)[MT][NT][4], int warp_m,
                                                   int warp_n, int lane) {
    const EpilogueOp op{p.epilogue, p.activation, p};
    const bool gated = moe_gemm_is_gated(p.epilogue);
    const int64_t cols = moe_gemm_out_cols(p.n, p.epilogue);
    const float* const bias = p.bias == nullptr ? nullptr : p.bias + tile.expert * p.n;
    const float* const up_bias = bias == nullptr ? nullptr : bias + cols;
    Out* const out = static_cast<Out*>(p.out);
    const bool vector_ok =
        cols % 2 == 0 && reinterpret_cast<uintptr_t>(out) % (2 * sizeof(Out)) == 0;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r0 = 2 * h;  // registers r0, r0 + 1: columns v, v + 1 of one row
            const int64_t row = tile.row_begin + warp_m * WM + mt * 16 + moe_gemm_acc_row(lane, r0);
            if (row >= tile.row_end) {
                continue;
            }
            Out* const out_row = out + row * cols;
            if (gated) {
#pragma unroll
                for (int nt = 0; nt < NT / 2; ++nt) {
                    const int v = warp_n * WN + nt * 8 + moe_gemm_acc_col(lane, r0);
                    const int64_t col =
                        moe_gemm_out_col(v, tile.n_tile, BN, WN, MOE_GEMM_EPILOGUE_GATED);
                    float g0 = acc[mt][nt][r0];
                    float g1 = acc[mt][nt][r0 + 1];
                    float u0 = acc[mt][nt + NT / 2][r0];
                    float u1 = acc[mt][nt + NT / 2][r0 + 1];
                    add_bias_pair(bias, col, cols, g0, g1);
                    add_bias_pair(up_bias, col, cols, u0, u1);
                    store_pair(out_row, col, cols, op.gated(g0, u0), op.gated(g1, u1), vector_ok);
                }
            } else {
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
                    const int v = warp_n * WN + nt * 8 + moe_gemm_acc_col(lane, r0);
                    const int64_t col =
                        moe_gemm_out_col(v, tile.n_tile, BN, WN, MOE_GEMM_EPILOGUE_STORE);
                    float v0 = acc[mt][nt][r0];
                    float v1 = acc[mt][nt][r0 + 1];
                    add_bias_pair(bias, col, cols, v0, v1);
                    store_pair(out_row, col, cols, op.single(v0), op.single(v1), vector_ok);
                }
            }
        }
    }
}

}  // namespace moe_gemm

#endif  // MOE_GEMM_EPILOGUE_CUH
