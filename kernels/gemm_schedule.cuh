// gemm_schedule.cuh: which output tile of the grouped GEMM a block computes, and where its operands
// come from. Plain C++ on integers, shared by the kernel (grouped_gemm.cu), the host build used by
// tests/host_math_gemm.rs (kernels/host/gemm.cpp), and the launcher (src/gpu/gemm.rs calls the host
// build for its grid bound, so host and device can never disagree on it).
//
// The tile space. Expert e owns rows [m_e, m_{e+1}) where m_0 = clamp(offsets[0]) and
// m_{j+1} = max(m_j, clamp(offsets[j + 1])), clamp() bringing a device-written offset into [0, rows].
// For valid offsets (non-decreasing, in range) this is exactly offsets[e]..offsets[e + 1]; for any other
// content the segments stay disjoint and inside [0, rows] (a decreasing segment is empty), so every
// access stays in bounds and no two blocks write the same output element. A segment of L rows has
// ceil(L / BM) row tiles times `n_tiles` column tiles; tiles are numbered expert by expert, and within
// an expert in the grouped raster order of moe_gemm_raster. The kernel walks the experts in chunks (it
// never needs per-expert storage beyond one chunk, so any expert count works): per chunk, a parallel
// scan builds the tables `bounds` (the chunk's m_j) and `tile_end` (inclusive prefix of tile counts),
// and moe_gemm_locate maps a tile number to (expert, rows, column tile).
#ifndef MOE_GEMM_SCHEDULE_CUH
#define MOE_GEMM_SCHEDULE_CUH

#include <stdint.h>

#include "moe_abi.h"

#include "moe_hd.cuh"

MOE_HD int64_t moe_gemm_min(int64_t a, int64_t b) {
    return a < b ? a : b;
}

MOE_HD int64_t moe_gemm_max(int64_t a, int64_t b) {
    return a > b ? a : b;
}

// ceil(a / b) for a >= 0, b > 0.
MOE_HD int64_t moe_gemm_ceil_div(int64_t a, int64_t b) {
    return (a + b - 1) / b;
}

// A device-written segment offset brought into [0, rows].
MOE_HD int64_t moe_gemm_clamp_row(int64_t offset, int64_t rows) {
    return offset < 0 ? 0 : (offset > rows ? rows : offset);
}

// m_0, the start of the first segment (0 without offsets: one segment of all rows).
MOE_HD int64_t moe_gemm_first_bound(const int64_t* offsets, int64_t rows) {
    return offsets != nullptr ? moe_gemm_clamp_row(offsets[0], rows) : 0;
}

// The clamped end offset of expert e, before the running maximum that makes segments disjoint.
MOE_HD int64_t moe_gemm_raw_end(const int64_t* offsets, int64_t expert, int64_t rows) {
    return offsets != nullptr ? moe_gemm_clamp_row(offsets[expert + 1], rows) : rows;
}

MOE_HD bool moe_gemm_is_gated(int32_t epilogue) {
    return epilogue == MOE_GEMM_EPILOGUE_GATED;
}

// Columns of the output: n/2 for the gated epilogue (gate and up rows pair up), n otherwise.
MOE_HD int64_t moe_gemm_out_cols(int64_t n, int32_t epilogue) {
    return moe_gemm_is_gated(epilogue) ? n / 2 : n;
}

// Column tiles per expert. A tile loads `bn` weight rows; gated, those are bn/2 gate rows and the bn/2
// matching up rows, producing bn/2 output columns.
MOE_HD int64_t moe_gemm_n_tiles(int64_t n, int32_t bn, int32_t epilogue) {
    const int64_t tile_cols = moe_gemm_is_gated(epilogue) ? bn / 2 : bn;
    return moe_gemm_ceil_div(moe_gemm_out_cols(n, epilogue), tile_cols);
}

// Tiles of the segment [begin, end): ceil((end - begin) / bm) row tiles times n_tiles, 0 when empty.
MOE_HD int64_t moe_gemm_segment_tiles(int64_t begin, int64_t end, int32_t bm, int64_t n_tiles) {
    return end > begin ? moe_gemm_ceil_div(end - begin, bm) * n_tiles : 0;
}

// An upper bound of the row tiles over all segments, whatever the offsets: the segments are disjoint
// inside [0, rows], and each non-empty one (at most min(E, rows) of them) rounds up by less than one
// tile, so sum ceil(L_e / bm) <= floor(rows / bm) + min(E, rows).
MOE_HD int64_t moe_gemm_max_row_tiles(int64_t rows, int64_t num_experts, int32_t bm) {
    return moe_gemm_ceil_div(rows, bm) + moe_gemm_min(num_experts, rows);
}

// The first j in [0, count) with tile_end[j] > tile, for a non-decreasing tile_end (count - 1 when
// there is none, so the result is always a valid index).
MOE_HD int32_t moe_gemm_find_segment(const int64_t* tile_end, int32_t count, int64_t tile) {
    int32_t lo = 0;
    int32_t hi = count - 1;
    while (lo < hi) {
        const int32_t mid = lo + (hi - lo) / 2;
        if (tile_end[mid] > tile) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

// Tile `local` (< m_tiles * n_tiles) of one expert in grouped raster order: row tiles are taken in
// groups of `group`, and within a group the row tile varies fastest. Blocks running at the same time
// then share a few weight column tiles and a few activation row tiles, which stay in L2.
MOE_HD void moe_gemm_raster(int64_t local, int64_t m_tiles, int64_t n_tiles, int32_t group,
                            int64_t* m_tile, int64_t* n_tile) {
    const int64_t per_group = static_cast<int64_t>(group) * n_tiles;
    const int64_t g = local / per_group;
    const int64_t first = g * group;
    const int64_t height = moe_gemm_min(group, m_tiles - first);
    const int64_t r = local - g * per_group;
    *m_tile = first + r % height;
    *n_tile = r / height;
}

// One output tile: rows [row_begin, row_end) of expert `expert` (row_end - row_begin <= BM), column
// tile `n_tile`.
struct MoeGemmTile {
    int64_t expert;
    int64_t row_begin;
    int64_t row_end;
    int64_t n_tile;
};

// Tile `local` of a chunk of `count` experts starting at `first_expert`, whose segment j is
// [bounds[j], bounds[j + 1]) and whose tile_end[j] is the inclusive prefix sum of the segments' tile
// counts. Requires local < tile_end[count - 1].
MOE_HD MoeGemmTile moe_gemm_locate(const int64_t* bounds, const int64_t* tile_end, int32_t count,
                                   int64_t first_expert, int64_t local, int32_t bm,
                                   int64_t n_tiles, int32_t group) {
    const int32_t j = moe_gemm_find_segment(tile_end, count, local);
    const int64_t before = j > 0 ? tile_end[j - 1] : 0;
    const int64_t begin = bounds[j];
    const int64_t end = bounds[j + 1];
    int64_t m_tile = 0;
    int64_t n_tile = 0;
    moe_gemm_raster(local - before, moe_gemm_ceil_div(end - begin, bm), n_tiles, group, &m_tile,
                    &n_tile);
    MoeGemmTile tile;
    tile.expert = first_expert + j;
    tile.row_begin = begin + m_tile * bm;
    tile.row_end = moe_gemm_min(tile.row_begin + bm, end);
    tile.n_tile = n_tile;
    return tile;
}

// The output column of tile column `v` (0 <= v < bn) of column tile `n_tile`, for a block whose warps
// each own `wn` consecutive tile columns. Gated, only the first wn/2 columns of each warp's slice are
// outputs (the gate accumulators; the up accumulator of the same output sits wn/2 columns further).
MOE_HD int64_t moe_gemm_out_col(int32_t v, int64_t n_tile, int32_t bn, int32_t wn,
                                int32_t epilogue) {
    if (moe_gemm_is_gated(epilogue)) {
        return n_tile * (bn / 2) + static_cast<int64_t>(v / wn) * (wn / 2) + v % wn;
    }
    return n_tile * bn + v;
}

// The weight row that tile row `s` (0 <= s < bn) of column tile `n_tile` holds, in *w_row; false (and
// *w_row = 0) when there is none and the tile row is zero-filled. Not gated: row n_tile * bn + s.
// Gated: each warp's slice of wn tile rows holds wn/2 gate rows, then the wn/2 up rows of the same
// output columns, so the thread that holds the gate accumulator of an output column also holds its up
// accumulator: slice row i < wn/2 is gate row c and slice row wn/2 + i is up row n/2 + c, for
// c = moe_gemm_out_col(s - (i >= wn/2 ? wn/2 : 0)).
MOE_HD bool moe_gemm_b_row(int32_t s, int64_t n_tile, int64_t n, int32_t bn, int32_t wn,
                           int32_t epilogue, int64_t* w_row) {
    if (moe_gemm_is_gated(epilogue)) {
        const int32_t half = wn / 2;
        const int32_t i = s % wn;
        const int32_t gate_v = s - (i >= half ? half : 0);
        const int64_t c = moe_gemm_out_col(gate_v, n_tile, bn, wn, epilogue);
        const bool valid = c < n / 2;
        *w_row = valid ? (i >= half ? n / 2 + c : c) : 0;
        return valid;
    }
    const int64_t row = n_tile * bn + s;
    const bool valid = row < n;
    *w_row = valid ? row : 0;
    return valid;
}

#endif  // MOE_GEMM_SCHEDULE_CUH
