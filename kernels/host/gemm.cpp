// Host entry points for the grouped GEMM's tile schedule and operand mapping
// (kernels/gemm_schedule.cuh), its shared-memory and fragment layout (kernels/gemm_layout.cuh), the
// activation formulas (kernels/activation.cuh) and the FP8 weight decoding
// (kernels/gemm_weights.cuh), for src/host_math/gemm.rs: the launcher's grid bound and
// tests/host_math_gemm.rs.
#include <stdint.h>

#include <vector>

#include "activation.cuh"
#include "gemm_layout.cuh"
#include "gemm_schedule.cuh"
#include "gemm_weights.cuh"

namespace {

int32_t epilogue_of(int32_t gated) {
    return gated != 0 ? MOE_GEMM_EPILOGUE_GATED : MOE_GEMM_EPILOGUE_STORE;
}

}  // namespace

extern "C" {

// Column tiles per expert for `n` weight rows and tiles of `bn` weight rows.
int64_t moe_host_gemm_n_tiles(int64_t n, int32_t bn, int32_t gated) {
    return moe_gemm_n_tiles(n, bn, epilogue_of(gated));
}

// The bound of the row tiles over all segments, whatever the offsets.
int64_t moe_host_gemm_max_row_tiles(int64_t rows, int64_t num_experts, int32_t bm) {
    return moe_gemm_max_row_tiles(rows, num_experts, bm);
}

// The whole tile space the kernel walks, computed sequentially with the kernel's own functions: the
// same chunked walk over experts (chunks of `chunk` experts, the block size), the same tables (the
// kernel builds them with parallel scans of the same per-expert values), the same moe_gemm_locate.
// Writes tile i as (expert, row_begin, row_end, n_tile) to tiles[4 i .. 4 i + 4) for the first
// `capacity` tiles and returns the total number of tiles. `offsets` is NULL or [num_experts + 1].
int64_t moe_host_gemm_schedule(const int64_t* offsets, int64_t num_experts, int64_t rows,
                               int32_t bm, int64_t n_tiles, int32_t chunk, int32_t group,
                               int64_t* tiles, int64_t capacity) {
    std::vector<int64_t> bounds(static_cast<size_t>(chunk) + 1);
    std::vector<int64_t> tile_end(static_cast<size_t>(chunk));
    int64_t carry = moe_gemm_first_bound(offsets, rows);
    int64_t total = 0;
    for (int64_t first = 0; first < num_experts; first += chunk) {
        const int32_t count = static_cast<int32_t>(moe_gemm_min(chunk, num_experts - first));
        bounds[0] = carry;
        int64_t sum = 0;
        for (int32_t j = 0; j < count; ++j) {
            bounds[j + 1] = moe_gemm_max(bounds[j], moe_gemm_raw_end(offsets, first + j, rows));
            sum += moe_gemm_segment_tiles(bounds[j], bounds[j + 1], bm, n_tiles);
            tile_end[j] = sum;
        }
        for (int64_t local = 0; local < sum; ++local, ++total) {
            if (total < capacity) {
                const MoeGemmTile t = moe_gemm_locate(bounds.data(), tile_end.data(), count, first,
                                                      local, bm, n_tiles, group);
                tiles[4 * total] = t.expert;
                tiles[4 * total + 1] = t.row_begin;
                tiles[4 * total + 2] = t.row_end;
                tiles[4 * total + 3] = t.n_tile;
            }
        }
        carry = bounds[count];
    }
    return total;
}

// The weight row of B-tile row `s` (see moe_gemm_b_row): 1 and *w_row when it exists, else 0.
int32_t moe_host_gemm_b_row(int32_t s, int64_t n_tile, int64_t n, int32_t bn, int32_t wn,
                            int32_t gated, int64_t* w_row) {
    return moe_gemm_b_row(s, n_tile, n, bn, wn, epilogue_of(gated), w_row) ? 1 : 0;
}

// The output column of tile column `v` (see moe_gemm_out_col).
int64_t moe_host_gemm_out_col(int32_t v, int64_t n_tile, int32_t bn, int32_t wn, int32_t gated) {
    return moe_gemm_out_col(v, n_tile, bn, wn, epilogue_of(gated));
}

// Byte offset of logical chunk `chunk` of row `row` in a shared tile (see moe_gemm_smem_offset).
int32_t moe_host_gemm_smem_offset(int32_t row, int32_t chunk, int32_t chunks_per_row) {
    return moe_gemm_smem_offset(row, chunk, chunks_per_row);
}

// The lanes' ldmatrix addresses and the fragment registers' coordinates (gemm_layout.cuh).
int32_t moe_host_gemm_a_frag_row(int32_t lane) {
    return moe_gemm_a_frag_row(lane);
}

int32_t moe_host_gemm_a_frag_chunk(int32_t lane, int32_t kk) {
    return moe_gemm_a_frag_chunk(lane, kk);
}

int32_t moe_host_gemm_b_frag_row(int32_t lane) {
    return moe_gemm_b_frag_row(lane);
}

int32_t moe_host_gemm_b_frag_chunk(int32_t lane, int32_t kk) {
    return moe_gemm_b_frag_chunk(lane, kk);
}

void moe_host_gemm_b_frag_of(int32_t j, int32_t* pair, int32_t* reg) {
    moe_gemm_b_frag_of(j, pair, reg);
}

int32_t moe_host_gemm_acc_row(int32_t lane, int32_t reg) {
    return moe_gemm_acc_row(lane, reg);
}

int32_t moe_host_gemm_acc_col(int32_t lane, int32_t reg) {
    return moe_gemm_acc_col(lane, reg);
}

// The nonlinearity `kind` (a MOE_ACTIVATION_* value) at x, as the kernels compute it.
float moe_host_activation(int32_t kind, float x) {
    return moe_activation(kind, x);
}

// gpt-oss's clamped SwiGLU on one (gate, up) pair, as the kernels compute it.
float moe_host_clamped_swiglu(float gate, float up, float alpha, float limit) {
    return moe_clamped_swiglu(gate, up, alpha, limit);
}

// The value of an FP8 e4m3 code, as the FP8 GEMM kernels decode it.
float moe_host_e4m3_to_float(uint32_t code) {
    return moe_e4m3_to_float(code);
}

// The value of an FP4 e2m1 code, as the MXFP4 GEMM kernels decode it.
float moe_host_e2m1_to_float(uint32_t code) {
    return moe_e2m1_to_float(code);
}

// The value of an e8m0 scale byte, as the MXFP4 GEMM kernels decode it.
float moe_host_e8m0_to_float(uint32_t code) {
    return moe_e8m0_to_float(code);
}

}  // extern "C"
