/*
 * moe_abi.h: the parameter structs the Rust side passes by value to the CUDA kernels.
 *
 * Plain C (C11 or C++11 and later), only <stdint.h>: nvcc compiles it into the kernels, clang reads it
 * for bindgen (the Rust mirror is src/gpu/abi.rs, generated from this file by tests/abi_bindings.rs,
 * never written by hand), and a host C compiler can include it too.
 *
 * Layout rules: every struct is laid out without implicit padding (fields ordered 8-byte first, then
 * 4-byte, sizes a multiple of 8), and the sizes are asserted below and again by bindgen's compile-time
 * layout checks on the Rust side. Changing a struct means regenerating the bindings:
 *     MOE_KERNELS_BLESS=1 cargo test --test abi_bindings
 *
 * Items are documented with doc comments (slash, two stars) so that bindgen carries the text into the
 * Rust docs.
 */
#ifndef MOE_ABI_H
#define MOE_ABI_H

#include <stdint.h>

#ifdef __cplusplus
#define MOE_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define MOE_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

MOE_STATIC_ASSERT(sizeof(void*) == 8, "moe_abi.h assumes 64-bit pointers on host and device");

/** `MoeRoutingParams::scoring`: softmax over all experts. */
#define MOE_SCORING_SOFTMAX 0
/** `MoeRoutingParams::scoring`: element-wise sigmoid. */
#define MOE_SCORING_SIGMOID 1
/** `MoeRoutingParams::scoring`: Phi-3.5-MoE's sparse mixer (two experts by logit, each weighted by a
 * softmax over the experts within `2 * jitter_eps` relative distance of its logit; see
 * `ScoringFunc::SparseMixer`). Needs `top_k == 2`, no bias and no grouping. */
#define MOE_SCORING_SPARSE_MIXER 2

/** `MoeRoutingParams::group_score`: a group scores its best choice score. */
#define MOE_GROUP_SCORE_MAX 0
/** `MoeRoutingParams::group_score`: a group scores the sum of its two best choice scores (one expert:
 * that expert's score). */
#define MOE_GROUP_SCORE_SUM_TOP2 1

/** Kind of a non-finite value recorded in a `MoeStatus` key: NaN. */
#define MOE_NONFINITE_NAN 1
/** Kind of a non-finite value recorded in a `MoeStatus` key: positive infinity. */
#define MOE_NONFINITE_POS_INF 2
/** Kind of a non-finite value recorded in a `MoeStatus` key: negative infinity. */
#define MOE_NONFINITE_NEG_INF 3

/** Threads per block of the `moe_route_<dtype>` kernels (their `__launch_bounds__`); the host may
 * launch fewer, in whole warps, when the group scores need more shared memory. */
#define MOE_ROUTING_BLOCK_THREADS 256
/** Largest expert count the routing kernels take (lanes stride expert indices by 32 in `int32_t`). */
#define MOE_ROUTING_MAX_EXPERTS 1073741824

/** Largest token count a routing launch takes (a `MoeStatus` key has 32 bits for the token). */
#define MOE_ROUTING_MAX_TOKENS 4294967296

/**
 * Errors the kernels detect without a host synchronisation, read back by the host after the forward.
 *
 * All-zero bytes mean "nothing recorded", so resetting is one asynchronous memset. A recorded
 * non-finite value is stored as the bitwise complement of its key
 * `token << 32 | expert << 2 | kind` (`expert` < 2^30, `kind` one of the `MOE_NONFINITE_*` values;
 * `token` is 0 for the bias). Kernels combine keys with `atomicMax` on the complement, so a slot ends
 * up holding the lowest offending (token, expert) whatever the order in which threads find them.
 */
typedef struct MoeStatus {
    /** Complemented key of the first non-finite router logit, or 0. */
    uint64_t nonfinite_logit;
    /** Complemented key of the first non-finite correction-bias entry, or 0. */
    uint64_t nonfinite_bias;
    /** Complemented key `flat << 32 | (uint32_t)id` of the lowest flat position
     * `flat = token * top_k + slot` whose expert id is outside `0..num_experts`, or 0 (recorded by
     * the permutation, which skips such entries). */
    uint64_t expert_id;
    /** `top_k << 32 | num_experts` of the permutation launch that last recorded an `expert_id`, to
     * decode the position; 0 when none did. */
    uint64_t expert_id_shape;
} MoeStatus;

MOE_STATIC_ASSERT(sizeof(MoeStatus) == 32, "MoeStatus must be 32 bytes without padding");

/**
 * Arguments of the `moe_route_<dtype>` kernels: router logits to top-k expert ids and weights.
 *
 * Semantics are those of `RoutingConfig` (src/config.rs). A token row with a non-finite logit (or any
 * row when the bias has a non-finite entry) is recorded in `status` and routed to experts
 * `0, 1, ..., top_k - 1` with weight 0, so that later stages stay in bounds.
 */
typedef struct MoeRoutingParams {
    /** Router logits `[num_tokens, num_experts]`, row-major, of the kernel's element type. */
    const void* logits;
    /** Correction bias `[num_experts]` added to the scores for selection only, or NULL. */
    const float* correction_bias;
    /** Output expert ids `[num_tokens, top_k]`, best first. */
    int32_t* topk_ids;
    /** Output weights `[num_tokens, top_k]`, in the order of `topk_ids`. */
    float* topk_weights;
    /** Error record, never NULL. */
    MoeStatus* status;
    /** Number of token rows `T` (1 <= T <= MOE_ROUTING_MAX_TOKENS; the host launches nothing for 0). */
    int64_t num_tokens;
    /** Number of experts `E` (1 <= E <= MOE_ROUTING_MAX_EXPERTS). */
    int32_t num_experts;
    /** Experts per token `k` (1 <= k <= number of eligible experts). */
    int32_t top_k;
    /** `MOE_SCORING_SOFTMAX`, `MOE_SCORING_SIGMOID` or `MOE_SCORING_SPARSE_MIXER`. */
    int32_t scoring;
    /** Number of expert groups, dividing `num_experts`; 0 when selection is not grouped. */
    int32_t n_group;
    /** Groups kept per token (1 <= topk_group <= n_group); ignored when `n_group` is 0. */
    int32_t topk_group;
    /** `MOE_GROUP_SCORE_MAX` or `MOE_GROUP_SCORE_SUM_TOP2`; ignored when `n_group` is 0. */
    int32_t group_score;
    /** Nonzero: divide the chosen weights by their sum when that sum is positive. */
    int32_t renormalize;
    /** Factor applied to the final weights. */
    float routed_scaling_factor;
    /** The sparse mixer's mask threshold (finite, >= 0); ignored by the other scorings. */
    float jitter_eps;
    /** Unused, zero: keeps the struct free of padding. */
    int32_t reserved;
} MoeRoutingParams;

MOE_STATIC_ASSERT(sizeof(MoeRoutingParams) == 88, "MoeRoutingParams must be 88 bytes without padding");

/* ---------------------------------------------------------------------------------------------
 * Permutation (kernels/permute.cu): routing decisions sorted by expert, and the gather.
 * ------------------------------------------------------------------------------------------- */

/** Threads of the single-block permutation kernel and of the multi-block scan kernel. */
#define MOE_PERMUTE_SINGLE_BLOCK_THREADS 1024
/** Threads per block of the multi-block count and scatter kernels (one warp per chunk). */
#define MOE_PERMUTE_BLOCK_THREADS 256
/** Largest `num_tokens * top_k` one permutation takes (a MoeStatus key has 32 bits for it). */
#define MOE_PERMUTE_MAX_SLOTS 4294967295
/** Threads per block of the gather kernels (one warp per row). */
#define MOE_GATHER_BLOCK_THREADS 256

/**
 * Arguments of the `moe_permute_*` kernels: `[num_slots]` expert ids (flat `token * top_k + slot`)
 * to the expert-sorted row layout. Rows of expert `e` are `expert_offsets[e]..expert_offsets[e+1]`,
 * each segment padded with empty rows to a multiple of `block_size`; within an expert, rows are in
 * flat order (stable). Ids outside `0..num_global_experts` are skipped (no row, `slot_row = -1`)
 * and recorded in `status`. With an expert map (expert parallelism), the segments are this rank's
 * local experts: an id's segment is `expert_map[id]`, and an id whose entry is -1 (another rank's
 * expert) gets no row either, without being recorded.
 */
typedef struct MoePermuteParams {
    /** Expert ids `[num_slots]`, global. */
    const int32_t* topk_ids;
    /**
     * `[num_global_experts]` local expert of each global expert, -1 for another rank's; NULL: the
     * ids are the segments (then `num_global_experts == num_experts`). An entry outside
     * `0..num_experts` counts as -1.
     */
    const int32_t* expert_map;
    /** Output `[num_experts + 1]`: segment starts; `expert_offsets[num_experts]` is the row total. */
    int64_t* expert_offsets;
    /** Output `[num_experts]`: real (unpadded) rows per expert. */
    int64_t* expert_counts;
    /** Output `[row_capacity]`: flat source of each row, -1 for padding and for rows past the total. */
    int64_t* row_source;
    /** Output `[num_slots]`: the row of each flat position, -1 for a skipped id. */
    int64_t* slot_row;
    /** Scratch `[num_experts * num_chunks]`, expert-major: per-chunk counts, then per-chunk cursors. */
    uint32_t* chunk_counts;
    /** Error record, never NULL. */
    MoeStatus* status;
    /** `num_tokens * top_k` (1 <= num_slots <= MOE_PERMUTE_MAX_SLOTS). */
    int64_t num_slots;
    /** Length of `row_source`: at least `num_slots + min(num_experts, num_slots) * (block_size - 1)`. */
    int64_t row_capacity;
    /** Entries per chunk, a multiple of 32; chunk `c` is `[c * chunk_size, (c+1) * chunk_size)`. */
    int64_t chunk_size;
    /** Number of chunks, `ceil(num_slots / chunk_size)`. */
    int64_t num_chunks;
    /** Segment padding (>= 1; 1 = none). */
    int64_t block_size;
    /** Number of global experts, the range of valid ids (1 <= num_global_experts < 2^31). */
    int32_t num_global_experts;
    /** Number of segments `E`: the local experts (all experts without a map; >= 0). */
    int32_t num_experts;
    /** Experts per token `k` (>= 1), to decode positions in `status`. */
    int32_t top_k;
    /** Unused, zero: keeps the struct free of padding. */
    int32_t reserved;
} MoePermuteParams;

MOE_STATIC_ASSERT(sizeof(MoePermuteParams) == 120, "MoePermuteParams must be 120 bytes without padding");

/**
 * Arguments of the `moe_gather_*` kernels: `out[r] = x[row_source[r] / top_k]` for every row
 * `r < expert_offsets[num_experts]`, zeros where `row_source[r] < 0`. The `moe_gather_u*` kernels
 * move rows as raw bytes in units of their width (2, 4 or 16 bytes); the `moe_gather_scaled_<dtype>`
 * kernels (units of one element) multiply each row by `row_scale[row_source[r]]`, in f32, rounding
 * once (Llama 4's routing weights scaling the expert inputs).
 */
typedef struct MoeGatherParams {
    /** Hidden states `[num_tokens, row_units]` in units. */
    const void* x;
    /** `[row_capacity]` flat source per row, from the permutation. */
    const int64_t* row_source;
    /** `[num_experts + 1]` segment starts, from the permutation. */
    const int64_t* expert_offsets;
    /** Output `[row_capacity, row_units]` in units. */
    void* out;
    /** `[num_tokens * top_k]` scale of each flat source (the scaled kernels), else NULL. */
    const float* row_scale;
    /** Number of tokens `T`. */
    int64_t num_tokens;
    /** Units per row (`H * sizeof(T) / unit`). */
    int64_t row_units;
    /** Experts per token `k`. */
    int64_t top_k;
    /** Rows of `out` and `row_source`. */
    int64_t row_capacity;
    /** Number of experts `E`. */
    int64_t num_experts;
} MoeGatherParams;

MOE_STATIC_ASSERT(sizeof(MoeGatherParams) == 80, "MoeGatherParams must be 80 bytes without padding");

/* ---------------------------------------------------------------------------------------------
 * Combine (kernels/combine.cu): expert outputs back to token order, and the shared experts' sum.
 * ------------------------------------------------------------------------------------------- */

/** Threads per block of the `moe_combine_*` kernels. */
#define MOE_COMBINE_BLOCK_THREADS 128
/** Columns per thread on the vector path of the `moe_combine_*` kernels (`*_v8`). */
#define MOE_COMBINE_VEC 8
/** Threads per block of the `moe_shared_accumulate_*` kernels. */
#define MOE_SHARED_BLOCK_THREADS 256

/**
 * Arguments of the `moe_combine_*` kernels:
 * `out[t] = sum over s in 0..top_k of weights[t, s] * expert_out[slot_row[t * top_k + s]] (+ shared[t])`
 * (weight 1 when `weights` is NULL),
 * accumulated in f32 in slot order, rounded once. Slots whose row is outside `0..num_rows` (ids the
 * permutation skipped) contribute nothing.
 */
typedef struct MoeCombineParams {
    /** Expert outputs `[num_rows, hidden]`, permuted order. */
    const void* expert_out;
    /** `[num_tokens * top_k]` row of each (token, slot). */
    const int64_t* slot_row;
    /** Routing weights `[num_tokens, top_k]`, or NULL: every weight 1 (the inputs were scaled). */
    const float* weights;
    /** Shared experts' output `[num_tokens, hidden]`, or NULL. */
    const void* shared;
    /** Output `[num_tokens, hidden]`. */
    void* out;
    /** Number of tokens `T`. */
    int64_t num_tokens;
    /** Columns `H`. */
    int64_t hidden;
    /** Experts per token `k`. */
    int64_t top_k;
    /** Rows of `expert_out`. */
    int64_t num_rows;
} MoeCombineParams;

MOE_STATIC_ASSERT(sizeof(MoeCombineParams) == 72, "MoeCombineParams must be 72 bytes without padding");

/**
 * Arguments of the `moe_shared_accumulate_*` kernels, one shared expert's contribution:
 * `sum[t] = (accumulate ? sum[t] : 0) + g[t] * part[t]` with `g[t] = sigmoid(x[t] . gate)` when
 * `gate` is given, 1 otherwise.
 */
typedef struct MoeSharedAccumulateParams {
    /** Hidden states `[num_tokens, hidden]` of the kernel's element type (read only with a gate). */
    const void* x;
    /** Sigmoid gate weight `[hidden]` of the kernel's element type, or NULL. */
    const void* gate;
    /** This shared expert's output `[num_tokens, hidden]`. */
    const float* part;
    /** The running sum `[num_tokens, hidden]`. */
    float* sum;
    /** Number of tokens `T`. */
    int64_t num_tokens;
    /** Columns `H`. */
    int64_t hidden;
    /** Nonzero: add to `sum`; zero: overwrite it. */
    int64_t accumulate;
} MoeSharedAccumulateParams;

MOE_STATIC_ASSERT(sizeof(MoeSharedAccumulateParams) == 56,
                  "MoeSharedAccumulateParams must be 56 bytes without padding");

/* ---- Expert activations (kernels/activation.cuh) ---- */

/** An expert nonlinearity: `silu(x) = x * sigmoid(x)`. */
#define MOE_ACTIVATION_SILU 0
/** An expert nonlinearity: the tanh approximation of GELU. */
#define MOE_ACTIVATION_GELU_TANH 1
/** An expert nonlinearity: gpt-oss's clamped SiLU, `g * sigmoid(alpha * g)` with `g = min(x, limit)`;
 * gated, `up` is clamped to `[-limit, limit]` and the output is `act(gate) * (up + 1)`. Its `alpha`
 * and `limit` are `MoeGemmParams::clamp_alpha` and `clamp_limit`. */
#define MOE_ACTIVATION_CLAMPED_SILU 2

/* ---- Grouped expert GEMM (kernels/grouped_gemm.cu) ---- */

/** `MoeGemmParams::epilogue`: `out[r, c] = acc[r, c]`, `out` is `[rows, n]`. */
#define MOE_GEMM_EPILOGUE_STORE 0
/** `MoeGemmParams::epilogue`: `out[r, c] = act(acc[r, c])`, `out` is `[rows, n]`. */
#define MOE_GEMM_EPILOGUE_ACTIVATION 1
/** `MoeGemmParams::epilogue`: `out[r, c] = act(acc[r, c]) * acc[r, n/2 + c]` (weight rows `[0, n/2)` are
 * the gate, `[n/2, n)` the up projection), `out` is `[rows, n/2]`. */
#define MOE_GEMM_EPILOGUE_GATED 2

/* Tile configurations of the `moe_gemm_<config>_<input>_<output>` kernels: rows (BM) and weight rows
 * (BN) of one output tile, threads per block, and the dynamic shared memory of the cp.async pipeline.
 * The kernels static_assert their template parameters against these. */

/** `small` (decode, up to about 16 rows per expert): rows per tile. */
#define MOE_GEMM_SMALL_BM 16
/** `small`: weight rows per tile. */
#define MOE_GEMM_SMALL_BN 64
/** `small`: threads per block. */
#define MOE_GEMM_SMALL_THREADS 128
/** `small`: dynamic shared memory per block in bytes. */
#define MOE_GEMM_SMALL_SMEM_BYTES 61440

/** `medium` (about 16 to 64 rows per expert), also the tile of the `generic` (unaligned) kernels: rows
 * per tile. */
#define MOE_GEMM_MEDIUM_BM 64
/** `medium`: weight rows per tile. */
#define MOE_GEMM_MEDIUM_BN 128
/** `medium`: threads per block. */
#define MOE_GEMM_MEDIUM_THREADS 128
/** `medium`: dynamic shared memory per block in bytes. */
#define MOE_GEMM_MEDIUM_SMEM_BYTES 49152

/** `large` (prefill): rows per tile. */
#define MOE_GEMM_LARGE_BM 128
/** `large`: weight rows per tile. */
#define MOE_GEMM_LARGE_BN 128
/** `large`: threads per block. */
#define MOE_GEMM_LARGE_THREADS 256
/** `large`: dynamic shared memory per block in bytes. */
#define MOE_GEMM_LARGE_SMEM_BYTES 65536

/**
 * Arguments of the `moe_gemm_<config>_<input>_<output>` kernels: for every expert `e`,
 * `out[rows of e] = epilogue(x[rows of e] @ w[e]^T)`, accumulated in f32.
 *
 * Expert `e` owns rows `[m_e, m_{e+1})` where `m_j` is the running maximum of
 * `clamp(expert_offsets[i], 0, rows)` over `i <= j`: valid (non-decreasing, in-range) offsets are used as
 * given, and any other content still yields disjoint in-range segments (a decreasing segment is empty).
 * Rows outside every segment are not written. Every index is computed in 64 bits.
 */
typedef struct MoeGemmParams {
    /** Activations `[rows, k]`, row-major, of the kernel's input type. */
    const void* x;
    /** Expert weights `[num_experts, n, k]`, `k` contiguous: of the kernel's input type, FP8 e4m3
     * codes (one byte each) for the `moe_gemm_<config>_e4m3_<input>_<output>` kernels, or MXFP4
     * e2m1 codes for the `moe_gemm_<config>_mxfp4_<input>_<output>` kernels: two per byte, each row
     * `ceil(k / 2)` bytes (weight `[e, r, c]` in byte `(e * n + r) * ceil(k / 2) + c / 2`, the low
     * nibble for even `c`; a row of odd `k` ends in a half-used byte). */
    const void* w;
    /** FP8 weights only (else NULL): the scales `[num_experts, n, scale_groups]`, f32, one per weight
     * row and group of `scale_group` columns; weight `[e, r, c]` is
     * `e4m3(code) * w_scales[(e * n + r) * scale_groups + c / scale_group]`. */
    const float* w_scales;
    /** Quantized (FP8 or MXFP4) weights only: columns per scale (>= 1). */
    int64_t scale_group;
    /** Quantized weights only: scales per weight row, `ceil(k / scale_group)`. */
    int64_t scale_groups;
    /** Segment starts `[num_experts + 1]` on the device, or NULL for one segment of all rows
     * (then `num_experts` is 1). */
    const int64_t* expert_offsets;
    /** Output `[rows, n]` (`[rows, n/2]` for MOE_GEMM_EPILOGUE_GATED), of the kernel's output type. */
    void* out;
    /** Rows of `x` and `out` (>= 1). */
    int64_t rows;
    /** Weight rows per expert (>= 1, even for MOE_GEMM_EPILOGUE_GATED, < 2^31). */
    int64_t n;
    /** Reduction length (< 2^31; 0 gives zero accumulators). */
    int64_t k;
    /** Number of experts (1 <= num_experts < 2^31). */
    int64_t num_experts;
    /** One of the MOE_GEMM_EPILOGUE_* values. */
    int32_t epilogue;
    /** One of the MOE_ACTIVATION_* values; ignored by MOE_GEMM_EPILOGUE_STORE. */
    int32_t activation;
    /** Per-expert bias `[num_experts, n]` (f32, one per weight row), added to the accumulators before
     * the epilogue's activation (gated: gate bias `[0, n/2)`, up bias `[n/2, n)`), or NULL. */
    const float* bias;
    /** MOE_ACTIVATION_CLAMPED_SILU only: the sigmoid's gain `alpha`. */
    float clamp_alpha;
    /** MOE_ACTIVATION_CLAMPED_SILU only: the clamp `limit` (> 0). */
    float clamp_limit;
    /** MXFP4 weights only (else NULL): the e8m0 scales `[num_experts, n, scale_groups]`, one byte
     * each (a quarter of an f32 scale: with groups of 32, 1/32 byte per weight next to the codes'
     * 1/2), one per weight row and group of `scale_group` columns; weight `[e, r, c]` is
     * `e2m1(code) * 2^(w_scale_bytes[(e * n + r) * scale_groups + c / scale_group] - 127)` (byte 0
     * is 2^-127; the host never passes 255). */
    const uint8_t* w_scale_bytes;
} MoeGemmParams;

MOE_STATIC_ASSERT(sizeof(MoeGemmParams) == 120, "MoeGemmParams must be 120 bytes without padding");

/* FP8 x FP8 ("W8A8") grouped GEMM and the activation quantisation feeding it (kernels/w8a8_gemm.cu;
 * sm_89 and newer). */

/** Columns per activation scale, and per weight scale group of the W8A8 GEMM: DeepSeek-V3's 128
 * (its weights carry one scale per 128 x 128 block, stored here per weight row). */
#define MOE_FP8_BLOCK 128
/** Threads per block of `moe_fp8_quant_<input>` (one warp per row and group of MOE_FP8_BLOCK). */
#define MOE_FP8_QUANT_THREADS 256
/** `moe_w8a8_gemm_[generic_]<output>`: rows per tile. */
#define MOE_W8A8_BM 64
/** `moe_w8a8_gemm_*`: weight rows per tile. */
#define MOE_W8A8_BN 64
/** `moe_w8a8_gemm_*`: threads per block. */
#define MOE_W8A8_THREADS 256
/** `moe_w8a8_gemm_*`: dynamic shared memory per block in bytes (4 stages of A and B codes and their
 * scales). */
#define MOE_W8A8_SMEM_BYTES 67584

/**
 * Arguments of `moe_fp8_quant_<input>`: per row and group of MOE_FP8_BLOCK columns (the last one
 * possibly shorter), `scale = amax / 448` (448: the largest FP8 e4m3 value; 1 when the group is all
 * zeros) and `codes = e4m3(x / scale)`, rounded to nearest even and saturated to +-448. A group with a
 * NaN or infinite input gets NaN codes where `x / scale` is NaN (NaN is skipped by the amax).
 */
typedef struct MoeFp8QuantParams {
    /** Activations `[rows, k]`, row-major, of the kernel's input type. */
    const void* x;
    /** Output: FP8 e4m3 codes `[rows, k]`, one byte each. */
    void* codes;
    /** Output: f32 scales `[rows, groups]`. */
    float* scales;
    /** Rows (>= 1). */
    int64_t rows;
    /** Columns (>= 1). */
    int64_t k;
    /** Scales per row, `ceil(k / MOE_FP8_BLOCK)`. */
    int64_t groups;
} MoeFp8QuantParams;

MOE_STATIC_ASSERT(sizeof(MoeFp8QuantParams) == 48, "MoeFp8QuantParams must be 48 bytes");

/**
 * Arguments of `moe_w8a8_gemm_[generic_]<output>`: the grouped GEMM of MoeGemmParams with FP8 e4m3
 * activations and weights. `gemm.x` holds the activation codes `[rows, k]` (one byte each) and
 * `gemm.w` the weight codes `[num_experts, n, k]`; `gemm.w_scales` is `[num_experts, n, scale_groups]`
 * with `gemm.scale_group` = MOE_FP8_BLOCK. Every 128-deep block `kb` of the reduction is summed in f32
 * on its own and added to the f32 accumulator times `x_scales[row, kb] * w_scales[e, col, kb]`.
 */
typedef struct MoeW8a8GemmParams {
    /** The grouped GEMM's arguments, as above. */
    MoeGemmParams gemm;
    /** Activation scales `[rows, gemm.scale_groups]`, f32. */
    const float* x_scales;
} MoeW8a8GemmParams;

MOE_STATIC_ASSERT(sizeof(MoeW8a8GemmParams) == 128, "MoeW8a8GemmParams must be 128 bytes");

#endif /* MOE_ABI_H */
