// combine.cuh: the combine kernels' work decomposition, shared by kernels/combine.cu and the host
// (src/gpu/combine.rs sizes the grid with the same functions through kernels/host/combine.cpp).
//
// The output [T, H] is cut into items of one token and one tile of `threads * vec` consecutive
// columns; a block takes items blockIdx.x, blockIdx.x + gridDim.x, ... and thread i of the block owns
// the `vec` consecutive columns starting at tile_start + i * vec of the item's token.
#ifndef MOE_COMBINE_CUH
#define MOE_COMBINE_CUH

#include <stdint.h>

#include "moe_lanes.cuh"

// Column tiles per token.
MOE_HD int64_t moe_combine_tiles(int64_t hidden, int64_t threads, int64_t vec) {
    const int64_t tile = threads * vec;
    return (hidden + tile - 1) / tile;
}

// Work items of a combine over `num_tokens` rows.
MOE_HD int64_t moe_combine_items(int64_t num_tokens, int64_t hidden, int64_t threads, int64_t vec) {
    return num_tokens * moe_combine_tiles(hidden, threads, vec);
}

// The token of work item `item`.
MOE_HD int64_t moe_combine_token(int64_t item, int64_t tiles) { return item / tiles; }

// The first column owned by thread `thread` in work item `item` (may be past `hidden`: no work).
MOE_HD int64_t moe_combine_column(int64_t item, int64_t tiles, int64_t thread, int64_t threads,
                                  int64_t vec) {
    return ((item % tiles) * threads + thread) * vec;
}

#endif  // MOE_COMBINE_CUH
