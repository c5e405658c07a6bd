// Host entry points for the combine kernels' work decomposition (kernels/combine.cuh), for
// src/gpu/combine.rs (grid size) and tests/host_math.rs (every output element owned exactly once).
#include "combine.cuh"

extern "C" {

// Work items (token, column tile) of a combine.
int64_t moe_host_combine_items(int64_t num_tokens, int64_t hidden, int64_t threads, int64_t vec) {
    return moe_combine_items(num_tokens, hidden, threads, vec);
}

// The token and first column thread `thread` owns in work item `item`.
void moe_host_combine_owner(int64_t item, int64_t hidden, int64_t thread, int64_t threads,
                            int64_t vec, int64_t* token, int64_t* column) {
    const int64_t tiles = moe_combine_tiles(hidden, threads, vec);
    *token = moe_combine_token(item, tiles);
    *column = moe_combine_column(item, tiles, thread, threads, vec);
}

}  // extern "C"
