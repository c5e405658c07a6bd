// moe_status.cuh: encoding of the errors kernels record in a MoeStatus (see moe_abi.h), shared by
// the kernel families and their host twins.
#ifndef MOE_STATUS_CUH
#define MOE_STATUS_CUH

#include <stdint.h>

#include "moe_abi.h"
#include "moe_lanes.cuh"

// Classify a value that is known not to be finite as one of the MOE_NONFINITE_* kinds.
MOE_HD uint32_t moe_nonfinite_kind(float value) {
    if (value != value) {
        return MOE_NONFINITE_NAN;
    }
    return value > 0.0f ? MOE_NONFINITE_POS_INF : MOE_NONFINITE_NEG_INF;
}

// The value stored in a MoeStatus slot for a non-finite value of kind `kind` at (token, expert), see
// moe_abi.h: the complement of the key, so that atomicMax keeps the lowest (token, expert).
MOE_HD uint64_t moe_status_key(uint32_t token, uint32_t expert, uint32_t kind) {
    return ~(((uint64_t)token << 32) | ((uint64_t)expert << 2) | (uint64_t)kind);
}

// The value stored in `MoeStatus::expert_id` for the out-of-range id `id` at flat position
// `flat = token * top_k + slot` (< 2^32): the complement of `flat << 32 | (uint32_t)id`, so that
// atomicMax keeps the lowest position.
MOE_HD uint64_t moe_expert_id_key(int64_t flat, int32_t id) {
    return ~(((uint64_t)flat << 32) | (uint64_t)(uint32_t)id);
}

// `MoeStatus::expert_id_shape` of a launch with `top_k` and `num_experts`.
MOE_HD uint64_t moe_expert_id_shape(int32_t top_k, int32_t num_experts) {
    return ((uint64_t)(uint32_t)top_k << 32) | (uint64_t)(uint32_t)num_experts;
}

// Keep the larger of `*slot` and `value`: atomically on the device; the host twins are
// single-threaded.
MOE_HD void moe_status_max(uint64_t* slot, uint64_t value) {
#ifdef __CUDA_ARCH__
    atomicMax(reinterpret_cast<unsigned long long*>(slot), static_cast<unsigned long long>(value));
#else
    if (value > *slot) {
        *slot = value;
    }
#endif
}

// Record an out-of-range expert id at flat position `flat` of a launch with (top_k, num_experts).
// Every reporting thread of a launch stores the same shape, so the plain store needs no atomic.
MOE_HD void moe_report_expert_id(MoeStatus* status, int64_t flat, int32_t id, int32_t top_k,
                                 int32_t num_experts) {
    moe_status_max(&status->expert_id, moe_expert_id_key(flat, id));
    status->expert_id_shape = moe_expert_id_shape(top_k, num_experts);
}

#endif  // MOE_STATUS_CUH
