// grouped_gemm.cu: the grouped expert GEMM on tensor cores, one launch for all experts:
// out[rows of e] = epilogue(x[rows of e] @ w[e]^T), x [rows, K], w [E, N, K] (K contiguous), f32
// accumulation, bf16 or f16 inputs, output of the input type or f32. The weights are of the input
// type, or FP8 e4m3 or MXFP4 e2m1 codes with per-row group scales, dequantised into the same shared
// tiles (gemm_weights.cuh). See MoeGemmParams (moe_abi.h).
//
// Parallel decomposition.
// - Grid: persistent, each block walking its output tiles of the tile space of gemm_schedule.cuh
//   (gemm_grid.cuh).
// - Block tile: BM rows x BN weight rows, K walked in steps of BK through a STAGES-deep cp.async
//   pipeline (gemm_pipeline.cuh) into shared memory (A tile BM x BK and B tile BN x BK per stage, K
//   contiguous, rows XOR-swizzled by 16-byte chunk so ldmatrix and cp.async are bank-conflict free).
//   Thread i copies the 16-byte chunks i, i + THREADS, ... of each tile; rows past the segment end or
//   past N, and chunks past K, are zero-filled (cp.async source size 0) so they add nothing.
// - Warps: WARPS_M x WARPS_N; warp (wm, wn) owns the WM x WN sub-tile at (wm WM, wn WN) and computes it
//   as MT x NT mma.sync m16n8k16 tiles, loading its A and B fragments with ldmatrix.x4 per 16-deep K
//   step. Accumulators stay in registers for the whole K loop (no split-K: results are deterministic,
//   each output element is one thread's fixed-order sum).
// - Epilogue (gemm_epilogue.cuh): each thread writes its own accumulator fragments; the gated
//   activation pairs gate and up columns that the B-tile layout put in the same thread.
//
// Unaligned operands (K not a multiple of 8, or base pointers not 16-byte aligned) use the same tiles
// with a synchronous element-wise loader (`kAligned = false`): slower, never an error.
//
// Quantized weights (W = uint8_t for FP8, MoeMxfp4E2M1 for MXFP4): the B chunks are loaded
// synchronously (8 codes: one 8-byte FP8 or 4-byte MXFP4 load on the aligned path), dequantised with
// their scales and stored to the stage with one 16-byte shared store; the A tile keeps its cp.async
// copies. The pipeline's barriers order these stores exactly as they order the copies: the stage
// refilled at iteration kt was last read at iteration kt-1, which every warp has finished by the
// barrier that precedes the refill.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

#include "gemm_epilogue.cuh"
#include "gemm_grid.cuh"
#include "gemm_layout.cuh"
#include "gemm_mma.cuh"
#include "gemm_pipeline.cuh"
#include "gemm_schedule.cuh"
#include "gemm_weights.cuh"
#include "moe_abi.h"

namespace {

using namespace moe_gemm;

// A tile shape. Sizes in elements of the 16-bit input type.
template <int BM_, int BN_, int BK_, int WARPS_M_, int WARPS_N_, int STAGES_>
struct TileConfig {
    static constexpr int BM = BM_;
    static constexpr int BN = BN_;
    static constexpr int BK = BK_;
    static constexpr int WARPS_M = WARPS_M_;
    static constexpr int WARPS_N = WARPS_N_;
    static constexpr int STAGES = STAGES_;
    static constexpr int WARPS = WARPS_M * WARPS_N;
    static constexpr int THREADS = WARPS * kWarpSize;
    static constexpr int WM = BM / WARPS_M;  // warp tile rows
    static constexpr int WN = BN / WARPS_N;  // warp tile columns
    static constexpr int MT = WM / 16;       // m16 fragments per warp
    static constexpr int NT = WN / 8;        // n8 fragments per warp
    static constexpr int CHUNKS_PER_ROW = BK / 8;  // 16-byte chunks per shared tile row
    static constexpr int ROW_BYTES = BK * 2;
    static constexpr int A_BYTES = BM * ROW_BYTES;
    static constexpr int STAGE_BYTES = (BM + BN) * ROW_BYTES;
    static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES;
    static constexpr int A_CHUNKS = BM * CHUNKS_PER_ROW;
    static constexpr int B_CHUNKS = BN * CHUNKS_PER_ROW;
    static constexpr int A_ITERS = (A_CHUNKS + THREADS - 1) / THREADS;
    static constexpr int B_ITERS = (B_CHUNKS + THREADS - 1) / THREADS;

    static_assert(WM % 16 == 0 && WM * WARPS_M == BM, "warp rows must be whole m16 fragments");
    // Whole 16-column pairs: B fragments are loaded two n8 tiles per ldmatrix.x4, and the gated
    // epilogue pairs the first and second halves of a warp's columns, each whole n8 tiles.
    static_assert(WN % 16 == 0 && WN * WARPS_N == BN, "warp columns must be whole n16 pairs");
    static_assert(BK == 16 || BK == 32 || BK == 64, "shared rows of 32, 64 or 128 bytes");
    static_assert(STAGES >= 3, "at least three pipeline stages");
    static_assert(A_CHUNKS % THREADS == 0 || A_ITERS == 1, "A chunks spread evenly or in one pass");
    static_assert(B_CHUNKS % THREADS == 0 || B_ITERS == 1, "B chunks spread evenly or in one pass");
};

// The tile shapes, with the numbers the host reads from moe_abi.h checked against them.
using SmallTile = TileConfig<16, 64, 64, 1, 4, 6>;
using MediumTile = TileConfig<64, 128, 32, 2, 2, 4>;
using LargeTile = TileConfig<128, 128, 32, 2, 4, 4>;

#define MOE_CHECK_TILE(CFG, NAME)                                                  \
    static_assert(CFG::BM == MOE_GEMM_##NAME##_BM, #NAME " BM");                   \
    static_assert(CFG::BN == MOE_GEMM_##NAME##_BN, #NAME " BN");                   \
    static_assert(CFG::THREADS == MOE_GEMM_##NAME##_THREADS, #NAME " THREADS");    \
    static_assert(CFG::SMEM_BYTES == MOE_GEMM_##NAME##_SMEM_BYTES, #NAME " SMEM_BYTES")
MOE_CHECK_TILE(SmallTile, SMALL);
MOE_CHECK_TILE(MediumTile, MEDIUM);
MOE_CHECK_TILE(LargeTile, LARGE);
#undef MOE_CHECK_TILE

// Moves one tile's operands into the pipeline stages. Thread i owns the 16-byte chunks
// c = i + j * THREADS (j < A_ITERS) of the A tile and likewise of the B tile; chunk c is tile row
// c / CHUNKS_PER_ROW at K offset 8 (c % CHUNKS_PER_ROW). THREADS is a multiple of CHUNKS_PER_ROW, so a
// thread's chunks share one K offset and their tile rows are i / CHUNKS_PER_ROW + j * ROW_STEP. The
// global rows are fixed for the tile: A rows are consecutive activation rows (one base pointer
// serves all chunks), B rows follow moe_gemm_b_row (one 32-bit weight row index per chunk, N < 2^31);
// only the K offset moves from stage to stage.
//
// W is the stored weight type: T, uint8_t for FP8 e4m3 codes or MoeMxfp4E2M1 for MXFP4 code pairs
// (see dequant_chunk).
template <typename T, typename W, typename Cfg, bool kAligned>
struct TileLoader {
    static constexpr bool kMxfp4 = std::is_same_v<W, MoeMxfp4E2M1>;
    static constexpr bool kQuant = kMxfp4 || std::is_same_v<W, uint8_t>;
    // What the weight and scale pointers address: elements of T, or code bytes; f32 or e8m0 scales.
    using Stored = std::conditional_t<kQuant, uint8_t, T>;
    using Scale = std::conditional_t<kMxfp4, uint8_t, float>;
    static constexpr int CPR = Cfg::CHUNKS_PER_ROW;
    static constexpr int ROW_STEP = Cfg::THREADS / CPR;  // tile rows between a thread's chunks
    static_assert(Cfg::THREADS % CPR == 0, "a thread's chunks share one K offset");

    const T* x;         // activations (also the always-valid source of zero-fill copies)
    const T* a_src;     // A chunk 0: row tile.row_begin + i / CPR (when it exists), K offset included
    const Stored* w_expert;  // this expert's weights (also the zero-fill source for B)
    const Scale* s_expert;   // quantized: this expert's scales [n, scale_groups]
    int64_t scale_group;     // quantized: columns per scale
    int64_t scale_groups;    // quantized: scales per weight row
    int32_t b_rows[Cfg::B_ITERS];  // weight row of each B chunk
    uint32_t a_valid;   // bit j: A chunk j's row is inside the tile
    uint32_t b_valid;   // bit j: B chunk j's weight row exists
    int64_t k;
    int32_t col;        // the chunks' K offset within a K tile

    __device__ __forceinline__ TileLoader(const MoeGemmParams& p, const MoeGemmTile& tile) {
        const int first_row = threadIdx.x / CPR;
        col = (threadIdx.x % CPR) * 8;
        k = p.k;
        x = static_cast<const T*>(p.x);
        w_expert = static_cast<const Stored*>(p.w) + tile.expert * p.n * row_elements(p.k);
        if constexpr (kMxfp4) {
            s_expert = p.w_scale_bytes + tile.expert * p.n * p.scale_groups;
        } else {
            s_expert = p.w_scales + (kQuant ? tile.expert * p.n * p.scale_groups : 0);
        }
        scale_group = p.scale_group;
        scale_groups = p.scale_groups;
        a_src = x + (tile.row_begin + first_row) * k + col;
        a_valid = 0;
        b_valid = 0;
#pragma unroll
        for (int j = 0; j < Cfg::A_ITERS; ++j) {
            const bool valid = threadIdx.x + j * Cfg::THREADS < Cfg::A_CHUNKS &&
                               tile.row_begin + first_row + j * ROW_STEP < tile.row_end;
            a_valid |= static_cast<uint32_t>(valid) << j;
        }
#pragma unroll
        for (int j = 0; j < Cfg::B_ITERS; ++j) {
            int64_t w_row = 0;
            const bool valid = threadIdx.x + j * Cfg::THREADS < Cfg::B_CHUNKS &&
                               moe_gemm_b_row(first_row + j * ROW_STEP, tile.n_tile, p.n, Cfg::BN,
                                              Cfg::WN, p.epilogue, &w_row);
            b_valid |= static_cast<uint32_t>(valid) << j;
            b_rows[j] = static_cast<int32_t>(w_row);
        }
    }

    // Fill pipeline stage `stage` (shared address) with K tile `kt`.
    __device__ __forceinline__ void load(int kt, uint32_t stage) const {
        const int64_t k0 = static_cast<int64_t>(kt) * Cfg::BK;
        const uint32_t dst = stage + chunk_offset(threadIdx.x);
#pragma unroll
        for (int j = 0; j < Cfg::A_ITERS; ++j) {
            if (Cfg::A_CHUNKS % Cfg::THREADS == 0 || threadIdx.x + j * Cfg::THREADS < Cfg::A_CHUNKS) {
                copy_chunk(dst + j * ROW_STEP * Cfg::ROW_BYTES,
                           a_src + static_cast<int64_t>(j * ROW_STEP) * k, x,
                           (a_valid >> j) & 1u, k0);
            }
        }
#pragma unroll
        for (int j = 0; j < Cfg::B_ITERS; ++j) {
            if (Cfg::B_CHUNKS % Cfg::THREADS == 0 || threadIdx.x + j * Cfg::THREADS < Cfg::B_CHUNKS) {
                const uint32_t b_dst = dst + Cfg::A_BYTES + j * ROW_STEP * Cfg::ROW_BYTES;
                const bool row_valid = (b_valid >> j) & 1u;
                if constexpr (kQuant) {
                    dequant_chunk(b_dst, b_rows[j], row_valid, k0);
                } else {
                    copy_chunk(b_dst, w_expert + static_cast<int64_t>(b_rows[j]) * k + col,
                               w_expert, row_valid, k0);
                }
            }
        }
    }

    // Stored elements (bytes for codes) of one weight row of k >= 0 weights: MXFP4 packs two per
    // byte (k is even on the aligned path).
    __device__ __forceinline__ static int64_t row_elements(int64_t k) {
        return kMxfp4 ? (kAligned ? k : k + 1) >> 1 : k;
    }

    // Scale `group` of a row's scales, as f32.
    __device__ __forceinline__ static float scale_at(const float* scales, int64_t group) {
        return scales[group];
    }
    __device__ __forceinline__ static float scale_at(const uint8_t* scales, int64_t group) {
        return moe_e8m0_to_float(scales[group]);
    }

    // Byte offset of chunk c inside its (A or B) tile. The swizzle key repeats every 8 rows and
    // ROW_STEP is a multiple of 8, so chunk c + j * THREADS sits exactly j * ROW_STEP rows below.
    __device__ __forceinline__ static uint32_t chunk_offset(int c) {
        static_assert(ROW_STEP % 8 == 0, "the swizzle key repeats every 8 rows");
        return moe_gemm_smem_offset(c / CPR, c % CPR, CPR);
    }

    // One 16-byte chunk of quantized weights: the 8 codes of weight row `row` from column k0 + col,
    // w = decode(code) * scale(row, column / scale_group), rounded to T; zero where the row does not
    // exist or the column is at or past K, where no code or scale is read. On the aligned path K is
    // a multiple of 8 and the codes' base 16-byte aligned, so the 8 codes are one aligned load: 8
    // bytes of FP8, 4 bytes of MXFP4 (the row's byte first / 2, low nibble first).
    __device__ __forceinline__ void dequant_chunk(uint32_t dst, int32_t row, bool row_valid,
                                                  int64_t k0) const {
        const int64_t first = k0 + col;
        const uint8_t* const row_codes = w_expert + static_cast<int64_t>(row) * row_elements(k);
        const uint8_t* const codes = row_codes + (kMxfp4 ? first >> 1 : first);
        const Scale* const scales = s_expert + static_cast<int64_t>(row) * scale_groups;
        float v[8];
        if constexpr (kMxfp4) {
            if (kAligned) {
                uint32_t packed = 0u;
                if (row_valid && first < k) {
                    packed = *reinterpret_cast<const uint32_t*>(codes);
                }
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    v[i] = moe_e2m1_to_float(packed >> (4 * i));
                }
            } else {
                // first is a multiple of 8: value i is nibble i % 2 of the chunk's byte i / 2.
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    v[i] = row_valid && first + i < k
                               ? moe_e2m1_to_float(codes[i / 2] >> (4 * (i % 2)))
                               : 0.0f;
                }
            }
        } else if (kAligned) {
            uint2 packed = make_uint2(0u, 0u);
            if (row_valid && first < k) {
                packed = *reinterpret_cast<const uint2*>(codes);
            }
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                v[i] = moe_e4m3_to_float(((i < 4 ? packed.x : packed.y) >> (8 * (i % 4))) & 0xffu);
            }
        } else {
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                v[i] = row_valid && first + i < k ? moe_e4m3_to_float(codes[i]) : 0.0f;
            }
        }
        // The scales. A chunk starts at a multiple of 8 columns, so with groups of a multiple of 8
        // columns (every shipped layout; the branch is uniform across the block) its 8 columns share
        // one scale. Otherwise each column's group is walked forward from the chunk's first.
        if (row_valid && first < k) {
            int64_t group = first / scale_group;
            float scale = scale_at(scales, group);
            if (scale_group % 8 == 0) {
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    v[i] *= scale;
                }
            } else {
                int64_t group_end = (group + 1) * scale_group;
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    if (first + i < k) {
                        while (first + i >= group_end) {
                            ++group;
                            group_end += scale_group;
                            scale = scale_at(scales, group);
                        }
                        v[i] *= scale;
                    }
                }
            }
        }
        uint32_t packed[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const auto pair = OutputCast<T>::two(v[2 * e], v[2 * e + 1]);
            memcpy(&packed[e], &pair, sizeof(uint32_t));
        }
        st_shared_16(dst, make_uint4(packed[0], packed[1], packed[2], packed[3]));
    }

    // One 16-byte chunk: 8 elements of row `src` (K offset `col` included) from K offset k0, zero
    // where the row does not exist or the column is at or past K. `base` is a valid address, the
    // source of zero-fill copies (which read nothing).
    __device__ __forceinline__ void copy_chunk(uint32_t dst, const T* src, const T* base,
                                               bool row_valid, int64_t k0) const {
        const int64_t first = k0 + col;
        if (kAligned) {
            // K % 8 == 0 here, so a chunk is entirely inside or entirely past K.
            const bool copy = row_valid && first < k;
            cp_async_16(dst, copy ? src + k0 : base, copy);
        } else {
            const uint16_t* const bits = reinterpret_cast<const uint16_t*>(src);
            uint32_t packed[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int64_t i = 2 * e;
                const uint32_t lo = row_valid && first + i < k ? bits[k0 + i] : 0u;
                const uint32_t hi = row_valid && first + i + 1 < k ? bits[k0 + i + 1] : 0u;
                packed[e] = lo | (hi << 16);
            }
            st_shared_16(dst, make_uint4(packed[0], packed[1], packed[2], packed[3]));
        }
    }
};

// One output tile: the pipelined K loop (gemm_pipeline.cuh) over this tile's loader, each stage
// multiplied by the warps' m16n8k16 mma.sync tiles, then the epilogue.
template <typename T, typename W, typename Out, typename Cfg, bool kAligned>
__device__ __forceinline__ void compute_tile(const MoeGemmParams& p, const MoeGemmTile& tile,
                                             uint32_t pipeline) {
    const int lane = threadIdx.x % kWarpSize;
    const int warp = threadIdx.x / kWarpSize;
    const int warp_m = warp / Cfg::WARPS_N;
    const int warp_n = warp % Cfg::WARPS_N;
    const int k_tiles = static_cast<int>(moe_gemm_ceil_div(p.k, Cfg::BK));
    const TileLoader<T, W, Cfg, kAligned> loader(p, tile);

    float acc[Cfg::MT][Cfg::NT][4];
    run_pipeline<Cfg>(loader, k_tiles, pipeline, acc, [&](auto& a, uint32_t stage) {
        warp_stage_mma<Cfg>(a, stage, warp_m, warp_n, lane,
                            [](auto& d, const auto& x, const auto& w) { mma_16816<T>(d, x, w); });
    });

    store_accumulators<Out, Cfg::WM, Cfg::WN, Cfg::BN>(p, tile, acc, warp_m, warp_n, lane);
}

template <typename T, typename W, typename Out, typename Cfg, bool kAligned>
__device__ __forceinline__ void grouped_gemm(const MoeGemmParams& p) {
    extern __shared__ __align__(128) unsigned char pipeline_smem[];
    const uint32_t pipeline = smem_address(pipeline_smem);
    for_each_block_tile<Cfg::THREADS, Cfg::BM, Cfg::BN>(p, [&](const MoeGemmTile& tile) {
        compute_tile<T, W, Out, Cfg, kAligned>(p, tile, pipeline);
    });
}

// Blocks per SM the register budget is sized for (__launch_bounds__); shared memory allows at least
// this many on sm_80 and sm_90.
constexpr int kSmallMinBlocks = 3;
constexpr int kMediumMinBlocks = 4;
constexpr int kLargeMinBlocks = 2;
// The element-wise loader keeps more loads in flight per thread; it is the slow path, so it trades
// occupancy for registers rather than spill.
constexpr int kGenericMinBlocks = 2;
// The quantized loaders hold a chunk's eight dequantised values; the medium tile's budget at four
// blocks (128 registers) spills them, three blocks do not.
constexpr int kMediumQuantMinBlocks = 3;

}  // namespace

// The kernels: moe_gemm_<tile>_<input>_<output> (weights of the input type),
// moe_gemm_<tile>_e4m3_<input>_<output> (FP8 e4m3 weights) and moe_gemm_<tile>_mxfp4_<input>_<output>
// (MXFP4 weights); `generic` is the medium tile with the unaligned loader.
#define MOE_GEMM_KERNEL(NAME, CFG, ALIGNED, MIN_BLOCKS, T, W, OUT)                  \
    extern "C" __global__ void __launch_bounds__(CFG::THREADS, MIN_BLOCKS)          \
        NAME(const MoeGemmParams p) {                                               \
        grouped_gemm<T, W, OUT, CFG, ALIGNED>(p);                                   \
    }

#define MOE_GEMM_KERNELS(TILE, CFG, ALIGNED, MIN_BLOCKS, QUANT_MIN_BLOCKS)                            \
    MOE_GEMM_KERNEL(moe_gemm_##TILE##_bf16_bf16, CFG, ALIGNED, MIN_BLOCKS, __nv_bfloat16,             \
                    __nv_bfloat16, __nv_bfloat16)                                                     \
    MOE_GEMM_KERNEL(moe_gemm_##TILE##_bf16_f32, CFG, ALIGNED, MIN_BLOCKS, __nv_bfloat16,              \
                    __nv_bfloat16, float)                                                             \
    MOE_GEMM_KERNEL(moe_gemm_##TILE##_f16_f16, CFG, ALIGNED, MIN_BLOCKS, __half, __half, __half)      \
    MOE_GEMM_KERNEL(moe_gemm_##TILE##_f16_f32, CFG, ALIGNED, MIN_BLOCKS, __half, __half, float)       \
    MOE_GEMM_KERNEL(moe_gemm_##TILE##_e4m3_bf16_bf16, CFG, ALIGNED, QUANT_MIN_BLOCKS, __nv_bfloat16,  \
                    uint8_t, __nv_bfloat16)                                                           \
    MOE_GEMM_KERNEL(moe_gemm_##TILE##_e4m3_bf16_f32, CFG, ALIGNED, QUANT_MIN_BLOCKS, __nv_bfloat16,   \
                    uint8_t, float)                                                                   \
    MOE_GEMM_KERNEL(moe_gemm_##TILE##_e4m3_f16_f16, CFG, ALIGNED, QUANT_MIN_BLOCKS, __half, uint8_t,  \
                    __half)                                                                           \
    MOE_GEMM_KERNEL(moe_gemm_##TILE##_e4m3_f16_f32, CFG, ALIGNED, QUANT_MIN_BLOCKS, __half, uint8_t,  \
                    float)                                                                            \
    MOE_GEMM_KERNEL(moe_gemm_##TILE##_mxfp4_bf16_bf16, CFG, ALIGNED, QUANT_MIN_BLOCKS, __nv_bfloat16, \
                    MoeMxfp4E2M1, __nv_bfloat16)                                                      \
    MOE_GEMM_KERNEL(moe_gemm_##TILE##_mxfp4_bf16_f32, CFG, ALIGNED, QUANT_MIN_BLOCKS, __nv_bfloat16,  \
                    MoeMxfp4E2M1, float)                                                              \
    MOE_GEMM_KERNEL(moe_gemm_##TILE##_mxfp4_f16_f16, CFG, ALIGNED, QUANT_MIN_BLOCKS, __half,          \
                    MoeMxfp4E2M1, __half)                                                             \
    MOE_GEMM_KERNEL(moe_gemm_##TILE##_mxfp4_f16_f32, CFG, ALIGNED, QUANT_MIN_BLOCKS, __half,          \
                    MoeMxfp4E2M1, float)

MOE_GEMM_KERNELS(small, SmallTile, true, kSmallMinBlocks, kSmallMinBlocks)
MOE_GEMM_KERNELS(medium, MediumTile, true, kMediumMinBlocks, kMediumQuantMinBlocks)
MOE_GEMM_KERNELS(large, LargeTile, true, kLargeMinBlocks, kLargeMinBlocks)
MOE_GEMM_KERNELS(generic, MediumTile, false, kGenericMinBlocks, kGenericMinBlocks)
