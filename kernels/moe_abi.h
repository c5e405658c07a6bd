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
} MoeStatus;

MOE_STATIC_ASSERT(sizeof(MoeStatus) == 16, "MoeStatus must be 16 bytes without padding");

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
    /** `MOE_SCORING_SOFTMAX` or `MOE_SCORING_SIGMOID`. */
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
} MoeRoutingParams;

MOE_STATIC_ASSERT(sizeof(MoeRoutingParams) == 80, "MoeRoutingParams must be 80 bytes without padding");

#endif /* MOE_ABI_H */
