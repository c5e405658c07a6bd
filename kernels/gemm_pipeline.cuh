// gemm_pipeline.cuh: the multi-stage cp.async main loop of one output tile, shared by the GEMM
// families (grouped_gemm.cu, w8a8_gemm.cu), and the warps' fragment loads and mma loop over one
// stage. Device code only. What differs between the families is passed in: the loader (which global
// bytes go where in a stage), the per-stage compute, and the tensor-core instruction; the stage
// ring, the commit groups and the barriers are here.
//
// Parallel decomposition. The block's shared memory holds Cfg::STAGES stages of Cfg::STAGE_BYTES;
// stage s holds K tile kt with s = kt mod STAGES. Every thread fills its own part of each stage
// (loader.load: its cp.async chunks, plus any synchronous shared stores the loader makes: dequantised
// weights, scales, the unaligned path's chunks) and reads, through its warp's compute, parts that
// other threads filled; each warp owns its accumulator fragments, which stay in registers for the
// whole K loop.
//
// Protocol. The prologue issues tiles 0 .. STAGES-2, one commit group each (empty groups past the
// last tile keep the count uniform, so the wait below needs no tail case). Iteration kt:
// - cp.async.wait_group STAGES-2: this thread's copies of tile kt have landed (the groups of tiles
//   kt+1 .. kt+STAGES-2 may still be in flight);
// - barrier: every thread's copies and stores of tile kt are visible to every warp, and every warp
//   has finished computing tile kt-1, whose stage is the one refilled next;
// - refill that stage with tile kt + STAGES-1 (an empty group past the last tile), then compute
//   tile kt. The refill's synchronous stores go to a stage no warp reads until a later barrier.
// Before the prologue a barrier keeps it from overwriting stages the previous tile's warps may still
// be reading; after the loop only empty groups can be pending, drained so that no copy is in flight
// past the tile.
#ifndef MOE_GEMM_PIPELINE_CUH
#define MOE_GEMM_PIPELINE_CUH

#include <stdint.h>

#include "gemm_layout.cuh"
#include "gemm_mma.cuh"

namespace moe_gemm {

// The warp's A and B fragments of K step kk (32 bytes of each tile row: 16 values of 16 bits, or 32
// e4m3 codes) from pipeline stage `stage` (shared address; the A tile, then the B tile at
// Cfg::A_BYTES): one ldmatrix.x4 per m16 fragment of A and per pair of n8 fragments of B, each lane
// addressing the row and K chunk gemm_layout.cuh assigns it. a_row and b_row are this lane's rows of
// the warp's first fragments (moe_gemm_a_frag_row, moe_gemm_b_frag_row, plus the warp tile's
// origin). Fragments 16 rows apart share the swizzle key (it repeats every 8 rows), so each lane
// computes one swizzled address per operand and reaches the other fragments by constant offsets.
template <typename Cfg>
__device__ __forceinline__ void load_warp_fragments(uint32_t (&a)[Cfg::MT][4],
                                                    uint32_t (&b)[Cfg::NT][2], uint32_t stage,
                                                    int a_row, int b_row, int lane, int kk) {
    constexpr int CPR = Cfg::CHUNKS_PER_ROW;
    constexpr int FRAGMENT_BYTES = 16 * Cfg::ROW_BYTES;  // 16 tile rows
    const uint32_t a_address =
        stage + moe_gemm_smem_offset(a_row, moe_gemm_a_frag_chunk(lane, kk), CPR);
    const uint32_t b_address = stage + Cfg::A_BYTES +
                               moe_gemm_smem_offset(b_row, moe_gemm_b_frag_chunk(lane, kk), CPR);
#pragma unroll
    for (int mt = 0; mt < Cfg::MT; ++mt) {
        ldmatrix_x4(a[mt], a_address + mt * FRAGMENT_BYTES);
    }
#pragma unroll
    for (int np = 0; np < Cfg::NT / 2; ++np) {
        uint32_t r[4];
        ldmatrix_x4(r, b_address + np * FRAGMENT_BYTES);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            int pair = 0;
            int reg = 0;
            moe_gemm_b_frag_of(j, &pair, &reg);
            b[2 * np + pair][reg] = r[j];
        }
    }
}

// The warp's MT x NT mma tiles over one pipeline stage: per 32-byte K step of the tile rows, the
// warp's A and B fragments (load_warp_fragments), then mma(acc[mt][nt], a[mt], b[nt]) for each of
// its tiles, the family's tensor-core instruction on those fragments. The warp reads its WM rows of
// the A tile and WN rows of the B tile across the stage's whole K extent and writes no shared memory.
template <typename Cfg, typename Mma>
__device__ __forceinline__ void warp_stage_mma(float (&acc)[Cfg::MT][Cfg::NT][4], uint32_t stage,
                                               int warp_m, int warp_n, int lane, Mma mma) {
    const int a_row = warp_m * Cfg::WM + moe_gemm_a_frag_row(lane);
    const int b_row = warp_n * Cfg::WN + moe_gemm_b_frag_row(lane);
#pragma unroll
    for (int kk = 0; kk < Cfg::ROW_BYTES / 32; ++kk) {
        uint32_t a[Cfg::MT][4];
        uint32_t b[Cfg::NT][2];
        load_warp_fragments<Cfg>(a, b, stage, a_row, b_row, lane, kk);
#pragma unroll
        for (int mt = 0; mt < Cfg::MT; ++mt) {
#pragma unroll
            for (int nt = 0; nt < Cfg::NT; ++nt) {
                mma(acc[mt][nt], a[mt], b[nt]);
            }
        }
    }
}

// acc = 0: MT x NT m16n8 f32 accumulator fragments.
template <int MT, int NT>
__device__ __forceinline__ void zero_accumulators(float (&acc)[MT][NT][4]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                acc[mt][nt][i] = 0.0f;
            }
        }
    }
}

// One output tile's K loop: acc is zeroed, then compute(acc, stage) runs for K tiles 0 .. k_tiles-1
// in order, each from the shared address of the stage that loader.load(kt, stage) filled with it.
// `pipeline` is the shared address of stage 0. Every thread of the block must call it (it
// synchronises the block), with the same k_tiles.
template <typename Cfg, typename Loader, typename Compute>
__device__ __forceinline__ void run_pipeline(const Loader& loader, int k_tiles, uint32_t pipeline,
                                             float (&acc)[Cfg::MT][Cfg::NT][4], Compute compute) {
    zero_accumulators(acc);

    // The previous tile's warps may still be reading the stages this prologue overwrites.
    __syncthreads();
#pragma unroll
    for (int s = 0; s < Cfg::STAGES - 1; ++s) {
        if (s < k_tiles) {
            loader.load(s, pipeline + s * Cfg::STAGE_BYTES);
        }
        cp_async_commit();
    }
    int read_stage = 0;
    int write_stage = Cfg::STAGES - 1;
#pragma unroll 1
    for (int kt = 0; kt < k_tiles; ++kt) {
        cp_async_wait<Cfg::STAGES - 2>();  // this thread's part of tile kt has landed
        __syncthreads();  // everyone's part of tile kt is visible; tile kt-1's stage is free
        if (kt + Cfg::STAGES - 1 < k_tiles) {
            loader.load(kt + Cfg::STAGES - 1, pipeline + write_stage * Cfg::STAGE_BYTES);
        }
        cp_async_commit();
        compute(acc, pipeline + read_stage * Cfg::STAGE_BYTES);
        read_stage = read_stage + 1 == Cfg::STAGES ? 0 : read_stage + 1;
        write_stage = write_stage + 1 == Cfg::STAGES ? 0 : write_stage + 1;
    }
    // Only empty groups can remain; drain them so no copy is in flight past this tile.
    cp_async_wait<0>();
}

}  // namespace moe_gemm

#endif  // MOE_GEMM_PIPELINE_CUH
