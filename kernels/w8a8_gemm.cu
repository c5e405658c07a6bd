// w8a8_gemm.cu: FP8 x FP8 ("W8A8") grouped expert GEMM with block-scaled accumulation, as DeepSeek-V3
// inference runs its FP8 linears, and the per-token, per-128-column activation quantisation that
// feeds it. Needs sm_89+ (the e4m3 mma.sync and cvt); build.rs compiles this family for sm_89 and
// sm_90a only. See MoeFp8QuantParams and MoeW8a8GemmParams (moe_abi.h).
//
// Quantisation, parallel decomposition: one warp per (row, group of MOE_FP8_BLOCK = 128 columns),
// grid-striding over all rows x groups; lane l owns columns 4l..4l+3 of the group. A shuffle
// reduction gives every lane the group's amax, lane 0 writes the scale, each lane converts and
// stores its 4 codes (columns past K are neither read nor written).
//
// GEMM, parallel decomposition. The grid, tile space and epilogue are the grouped GEMM's
// (gemm_grid.cuh, gemm_schedule.cuh, gemm_epilogue.cuh); what differs is the main loop:
// - Block tile: BM rows x BN weight rows; K walked in steps of BK = 128 codes, exactly one scale
//   block, through the grouped GEMM's STAGES-deep cp.async pipeline (gemm_pipeline.cuh). A stage
//   holds the A codes (BM x 128 bytes), the B codes (BN x 128 bytes), both in the grouped GEMM's
//   swizzled 16-byte-chunk layout (a chunk is 16 codes here), and the block's scales: the BM
//   activation scales of the tile's rows and the BN weight scales of its weight rows (0 for rows that
//   do not exist), loaded synchronously by threads 0..BM+BN-1 and ordered by the pipeline's barriers
//   like the copies.
// - Warps: WARPS_M x WARPS_N, warp (wm, wn) owning the WM x WN sub-tile, as MT x NT mma.sync
//   m16n8k32 e4m3 tiles. The k32 fragments of 8-bit codes are, byte for byte, the k16 fragments of
//   16-bit values (PTX ISA: register r of A holds row g + 8 (r % 2), bytes 4t + 16 (r / 2) + 0..3;
//   of B, bytes 4t + 16 r + 0..3 of column g), so ldmatrix.b16 and the grouped GEMM's fragment
//   helpers (gemm_layout.cuh) load them unchanged, one 32-code K step per 16-element step there.
// - Block-scaled accumulation (DeepGEMM's promotion): each 128-deep K block is summed by the tensor
//   cores into zeroed f32 block accumulators, which are then added to the main f32 accumulators
//   times a_scale[row, kb] * w_scale[col, kb], both read from the stage. Deterministic: one thread's
//   fixed-order sum per output element.
//
// Unaligned operands (K not a multiple of 16, or code pointers not 16-byte aligned) use the same tiles
// with a synchronous byte loader (`kAligned = false`).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "gemm_epilogue.cuh"
#include "gemm_grid.cuh"
#include "gemm_layout.cuh"
#include "gemm_mma.cuh"
#include "gemm_pipeline.cuh"
#include "gemm_schedule.cuh"
#include "moe_abi.h"

namespace {

using namespace moe_gemm;

// The largest finite FP8 e4m3 value.
constexpr float kE4m3Max = 448.0f;

// (e4m3(hi) << 8) | e4m3(lo): round to nearest even, saturate to +-448, NaN to NaN.
__device__ __forceinline__ uint32_t e4m3x2(float hi, float lo) {
    uint16_t pair;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(pair) : "f"(hi), "f"(lo));
    return pair;
}

// d += a * b for one m16n8k32 tile of e4m3 codes (fragments as described above), f32 accumulators in
// the m16n8 layout of gemm_layout.cuh.
__device__ __forceinline__ void mma_16832_e4m3(float (&d)[4], const uint32_t (&a)[4],
                                               const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void st_shared_f32(uint32_t dst, float v) {
    asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(dst), "f"(v) : "memory");
}

__device__ __forceinline__ float ld_shared_f32(uint32_t src) {
    float v;
    asm volatile("ld.shared.f32 %0, [%1];\n" : "=f"(v) : "r"(src) : "memory");
    return v;
}

template <typename T>
__device__ __forceinline__ float to_float(T v);

template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
    return __bfloat162float(v);
}

template <>
__device__ __forceinline__ float to_float<__half>(__half v) {
    return __half2float(v);
}

template <typename T>
__device__ __forceinline__ void fp8_quant(const MoeFp8QuantParams& p) {
    constexpr int kWarps = MOE_FP8_QUANT_THREADS / kWarpSize;
    const int lane = threadIdx.x % kWarpSize;
    const T* const x = static_cast<const T*>(p.x);
    uint8_t* const codes = static_cast<uint8_t*>(p.codes);
    const int64_t items = p.rows * p.groups;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * kWarps;
#pragma unroll 1
    for (int64_t item = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / kWarpSize;
         item < items; item += stride) {
        const int64_t row = item / p.groups;
        const int64_t group = item - row * p.groups;
        const int64_t c0 = group * MOE_FP8_BLOCK + 4 * lane;
        const T* const src = x + row * p.k + c0;
        float v[4];
        float amax = 0.0f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            v[i] = c0 + i < p.k ? to_float(src[i]) : 0.0f;
            amax = fmaxf(amax, fabsf(v[i]));  // fmaxf skips NaN, as the CPU mirror's f32::max
        }
#pragma unroll
        for (int d = kWarpSize / 2; d >= 1; d /= 2) {
            amax = fmaxf(amax, __shfl_xor_sync(kFullMask, amax, d));
        }
        const float scale = amax > 0.0f ? amax / kE4m3Max : 1.0f;
        if (lane == 0) {
            p.scales[item] = scale;
        }
        const uint32_t packed =
            e4m3x2(v[1] / scale, v[0] / scale) | (e4m3x2(v[3] / scale, v[2] / scale) << 16);
        uint8_t* const dst = codes + row * p.k + c0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            if (c0 + i < p.k) {
                dst[i] = static_cast<uint8_t>(packed >> (8 * i));
            }
        }
    }
}

// A W8A8 tile shape. BK is one scale block of codes (bytes).
template <int BM_, int BN_, int WARPS_M_, int WARPS_N_, int STAGES_>
struct Fp8TileConfig {
    static constexpr int BM = BM_;
    static constexpr int BN = BN_;
    static constexpr int BK = MOE_FP8_BLOCK;
    static constexpr int WARPS_M = WARPS_M_;
    static constexpr int WARPS_N = WARPS_N_;
    static constexpr int STAGES = STAGES_;
    static constexpr int THREADS = WARPS_M * WARPS_N * kWarpSize;
    static constexpr int WM = BM / WARPS_M;
    static constexpr int WN = BN / WARPS_N;
    static constexpr int MT = WM / 16;
    static constexpr int NT = WN / 8;
    static constexpr int CHUNKS_PER_ROW = BK / 16;  // 16-byte chunks (16 codes) per tile row
    static constexpr int ROW_BYTES = BK;
    static constexpr int A_BYTES = BM * ROW_BYTES;
    static constexpr int B_BYTES = BN * ROW_BYTES;
    static constexpr int SCALE_OFFSET = A_BYTES + B_BYTES;  // BM activation, then BN weight scales
    static constexpr int STAGE_BYTES = SCALE_OFFSET + (BM + BN) * 4;
    static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES;
    static constexpr int A_CHUNKS = BM * CHUNKS_PER_ROW;
    static constexpr int B_CHUNKS = BN * CHUNKS_PER_ROW;
    static constexpr int A_ITERS = A_CHUNKS / THREADS;
    static constexpr int B_ITERS = B_CHUNKS / THREADS;

    static_assert(WM % 16 == 0 && WM * WARPS_M == BM, "warp rows must be whole m16 fragments");
    static_assert(WN % 16 == 0 && WN * WARPS_N == BN, "warp columns must be whole n16 pairs");
    static_assert(A_CHUNKS % THREADS == 0 && B_CHUNKS % THREADS == 0, "chunks spread evenly");
    static_assert(THREADS >= BM + BN, "one thread per scale of a stage");
    static_assert(STAGE_BYTES % 128 == 0, "stages keep the tiles' 128-byte alignment");
    static_assert(STAGES >= 3, "at least three pipeline stages");
};

using W8a8Tile = Fp8TileConfig<64, 64, 2, 4, 4>;
static_assert(W8a8Tile::BM == MOE_W8A8_BM, "W8A8 BM");
static_assert(W8a8Tile::BN == MOE_W8A8_BN, "W8A8 BN");
static_assert(W8a8Tile::THREADS == MOE_W8A8_THREADS, "W8A8 THREADS");
static_assert(W8a8Tile::SMEM_BYTES == MOE_W8A8_SMEM_BYTES, "W8A8 SMEM_BYTES");

// Moves one tile's codes and scales into the pipeline stages. Chunks as in the grouped GEMM's
// TileLoader: thread i owns chunks c = i + j * THREADS of each tile, all at K offset
// 16 (i % CHUNKS_PER_ROW), tile rows i / CHUNKS_PER_ROW + j * ROW_STEP. Thread i < BM + BN also
// loads scale slot i of each stage: activation row i (i < BM) or weight tile row i - BM.
template <typename Cfg, bool kAligned>
struct Fp8TileLoader {
    static constexpr int CPR = Cfg::CHUNKS_PER_ROW;
    static constexpr int ROW_STEP = Cfg::THREADS / CPR;
    static_assert(Cfg::THREADS % CPR == 0 && ROW_STEP % 8 == 0, "fixed K offset and swizzle key");

    const uint8_t* x;       // activation codes (also the always-valid zero-fill source)
    const uint8_t* a_src;   // A chunk 0's row, K offset included
    const uint8_t* w_expert;  // this expert's weight codes
    const float* scale_src;  // this thread's scale row (groups f32), or null: scale 0
    int32_t b_rows[Cfg::B_ITERS];
    uint32_t a_valid;
    uint32_t b_valid;
    int64_t k;
    int32_t col;

    __device__ __forceinline__ Fp8TileLoader(const MoeW8a8GemmParams& q, const MoeGemmTile& tile) {
        const MoeGemmParams& p = q.gemm;
        const int first_row = threadIdx.x / CPR;
        col = (threadIdx.x % CPR) * 16;
        k = p.k;
        x = static_cast<const uint8_t*>(p.x);
        w_expert = static_cast<const uint8_t*>(p.w) + tile.expert * p.n * p.k;
        a_src = x + (tile.row_begin + first_row) * k + col;
        a_valid = 0;
        b_valid = 0;
#pragma unroll
        for (int j = 0; j < Cfg::A_ITERS; ++j) {
            const bool valid = tile.row_begin + first_row + j * ROW_STEP < tile.row_end;
            a_valid |= static_cast<uint32_t>(valid) << j;
        }
#pragma unroll
        for (int j = 0; j < Cfg::B_ITERS; ++j) {
            int64_t w_row = 0;
            const bool valid = moe_gemm_b_row(first_row + j * ROW_STEP, tile.n_tile, p.n, Cfg::BN,
                                              Cfg::WN, p.epilogue, &w_row);
            b_valid |= static_cast<uint32_t>(valid) << j;
            b_rows[j] = static_cast<int32_t>(w_row);
        }
        scale_src = nullptr;
        const int s = threadIdx.x;
        if (s < Cfg::BM) {
            const int64_t row = tile.row_begin + s;
            if (row < tile.row_end) {
                scale_src = q.x_scales + row * p.scale_groups;
            }
        } else if (s < Cfg::BM + Cfg::BN) {
            int64_t w_row = 0;
            if (moe_gemm_b_row(s - Cfg::BM, tile.n_tile, p.n, Cfg::BN, Cfg::WN, p.epilogue,
                               &w_row)) {
                scale_src = p.w_scales + (tile.expert * p.n + w_row) * p.scale_groups;
            }
        }
    }

    // Fill pipeline stage `stage` (shared address) with K block `kt`.
    __device__ __forceinline__ void load(int kt, uint32_t stage) const {
        const int64_t k0 = static_cast<int64_t>(kt) * Cfg::BK;
        const uint32_t dst = stage + moe_gemm_smem_offset(threadIdx.x / CPR, threadIdx.x % CPR, CPR);
#pragma unroll
        for (int j = 0; j < Cfg::A_ITERS; ++j) {
            copy_chunk(dst + j * ROW_STEP * Cfg::ROW_BYTES,
                       a_src + static_cast<int64_t>(j * ROW_STEP) * k, (a_valid >> j) & 1u, k0);
        }
#pragma unroll
        for (int j = 0; j < Cfg::B_ITERS; ++j) {
            copy_chunk(dst + Cfg::A_BYTES + j * ROW_STEP * Cfg::ROW_BYTES,
                       w_expert + static_cast<int64_t>(b_rows[j]) * k + col, (b_valid >> j) & 1u,
                       k0);
        }
        if (threadIdx.x < Cfg::BM + Cfg::BN) {
            st_shared_f32(stage + Cfg::SCALE_OFFSET + 4 * threadIdx.x,
                          scale_src != nullptr ? scale_src[kt] : 0.0f);
        }
    }

    // One 16-byte chunk: 16 codes of row `src` (K offset `col` included) from K offset k0, zero where
    // the row does not exist or the column is at or past K.
    __device__ __forceinline__ void copy_chunk(uint32_t dst, const uint8_t* src, bool row_valid,
                                               int64_t k0) const {
        const int64_t first = k0 + col;
        if (kAligned) {
            // K % 16 == 0 here, so a chunk is entirely inside or entirely past K.
            const bool copy = row_valid && first < k;
            cp_async_16(dst, copy ? src + k0 : x, copy);
        } else {
            uint32_t packed[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                packed[e] = 0u;
#pragma unroll
                for (int b = 0; b < 4; ++b) {
                    const int i = 4 * e + b;
                    if (row_valid && first + i < k) {
                        packed[e] |= static_cast<uint32_t>(src[k0 + i]) << (8 * b);
                    }
                }
            }
            st_shared_16(dst, make_uint4(packed[0], packed[1], packed[2], packed[3]));
        }
    }
};

// One 128-deep K block of the warp's MT x NT tiles from stage `stage`: the tensor-core sums into
// zeroed block accumulators (warp_stage_mma: 4 k32 steps of m16n8k32 e4m3 mma.sync), then the
// promotion acc += blk * (a_scale[row] * w_scale[col]).
template <typename Cfg>
__device__ __forceinline__ void warp_block(float (&acc)[Cfg::MT][Cfg::NT][4], uint32_t stage,
                                           int warp_m, int warp_n, int lane) {
    float blk[Cfg::MT][Cfg::NT][4];
    zero_accumulators(blk);
    warp_stage_mma<Cfg>(blk, stage, warp_m, warp_n, lane,
                        [](auto& d, const auto& x, const auto& w) { mma_16832_e4m3(d, x, w); });
    const uint32_t a_scales = stage + Cfg::SCALE_OFFSET;
    const uint32_t w_scales = a_scales + 4 * Cfg::BM;
#pragma unroll
    for (int mt = 0; mt < Cfg::MT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = warp_m * Cfg::WM + mt * 16 + moe_gemm_acc_row(lane, 2 * h);
            const float a_scale = ld_shared_f32(a_scales + 4 * row);
#pragma unroll
            for (int nt = 0; nt < Cfg::NT; ++nt) {
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    const int r = 2 * h + c;
                    const int col = warp_n * Cfg::WN + nt * 8 + moe_gemm_acc_col(lane, r);
                    const float scale = a_scale * ld_shared_f32(w_scales + 4 * col);
                    acc[mt][nt][r] = __fmaf_rn(blk[mt][nt][r], scale, acc[mt][nt][r]);
                }
            }
        }
    }
}

// One output tile: the pipelined K loop (gemm_pipeline.cuh) over this tile's loader, one scale
// block per K tile, then the grouped GEMM's epilogue.
template <typename Out, typename Cfg, bool kAligned>
__device__ __forceinline__ void compute_tile(const MoeW8a8GemmParams& q, const MoeGemmTile& tile,
                                             uint32_t pipeline) {
    const int lane = threadIdx.x % kWarpSize;
    const int warp = threadIdx.x / kWarpSize;
    const int warp_m = warp / Cfg::WARPS_N;
    const int warp_n = warp % Cfg::WARPS_N;
    const int k_tiles = static_cast<int>(moe_gemm_ceil_div(q.gemm.k, Cfg::BK));
    const Fp8TileLoader<Cfg, kAligned> loader(q, tile);

    float acc[Cfg::MT][Cfg::NT][4];
    run_pipeline<Cfg>(loader, k_tiles, pipeline, acc, [&](auto& a, uint32_t stage) {
        warp_block<Cfg>(a, stage, warp_m, warp_n, lane);
    });

    store_accumulators<Out, Cfg::WM, Cfg::WN, Cfg::BN>(q.gemm, tile, acc, warp_m, warp_n, lane);
}

template <typename Out, bool kAligned>
__device__ __forceinline__ void w8a8_gemm(const MoeW8a8GemmParams& q) {
    using Cfg = W8a8Tile;
    extern __shared__ __align__(128) unsigned char pipeline_smem[];
    const uint32_t pipeline = smem_address(pipeline_smem);
    for_each_block_tile<Cfg::THREADS, Cfg::BM, Cfg::BN>(q.gemm, [&](const MoeGemmTile& tile) {
        compute_tile<Out, Cfg, kAligned>(q, tile, pipeline);
    });
}

// Blocks per SM the register budget is sized for (__launch_bounds__). On sm_90a, which has no e4m3
// mma.sync (ptxas unpacks each k32 step's codes to f16 for two HMMA.16816), the unpacked fragments
// spill at two blocks' budget (128 registers a thread); sm_89 (native QMMA) fits it.
constexpr int kW8a8MinBlocks = 1;

}  // namespace

// The kernels: moe_fp8_quant_<input>; moe_w8a8_gemm_<output> (cp.async loader) and
// moe_w8a8_gemm_generic_<output> (byte loader).
extern "C" __global__ void __launch_bounds__(MOE_FP8_QUANT_THREADS)
    moe_fp8_quant_bf16(const MoeFp8QuantParams p) {
    fp8_quant<__nv_bfloat16>(p);
}

extern "C" __global__ void __launch_bounds__(MOE_FP8_QUANT_THREADS)
    moe_fp8_quant_f16(const MoeFp8QuantParams p) {
    fp8_quant<__half>(p);
}

#define MOE_W8A8_KERNEL(NAME, ALIGNED, OUT)                                                   \
    extern "C" __global__ void __launch_bounds__(W8a8Tile::THREADS, kW8a8MinBlocks)           \
        NAME(const MoeW8a8GemmParams q) {                                                     \
        w8a8_gemm<OUT, ALIGNED>(q);                                                           \
    }

MOE_W8A8_KERNEL(moe_w8a8_gemm_bf16, true, __nv_bfloat16)
MOE_W8A8_KERNEL(moe_w8a8_gemm_f16, true, __half)
MOE_W8A8_KERNEL(moe_w8a8_gemm_f32, true, float)
MOE_W8A8_KERNEL(moe_w8a8_gemm_generic_bf16, false, __nv_bfloat16)
MOE_W8A8_KERNEL(moe_w8a8_gemm_generic_f16, false, __half)
MOE_W8A8_KERNEL(moe_w8a8_gemm_generic_f32, false, float)
