// activation.cuh: the expert nonlinearities, shared by every kernel that applies one and by the host.
//
// These are the formulas of `ActivationKind::apply` (src/config.rs), operation for operation: SiLU is
// x * (1 / (1 + exp(-x))), the tanh GELU is 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))),
// both in f32 with the accurate expf/tanhf (never the __expf fast path), so a kernel and the CPU
// reference differ only by the libraries' last-ulp rounding. tests/host_math_gemm.rs compares the
// host build of this file against the Rust definitions.
#ifndef MOE_ACTIVATION_CUH
#define MOE_ACTIVATION_CUH

#include <math.h>
#include <stdint.h>

#include "moe_abi.h"

#include "moe_hd.cuh"

// silu(x) = x * sigmoid(x), with sigmoid(x) = 1 / (1 + exp(-x)) as in `crate::cpu::sigmoid`.
MOE_HD float moe_silu(float x) {
    return x * (1.0f / (1.0f + expf(-x)));
}

// The tanh approximation of GELU.
MOE_HD float moe_gelu_tanh(float x) {
    const float sqrt_2_over_pi = 0.7978846f;
    return 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * (x + 0.044715f * x * x * x)));
}

// gpt-oss's clamped SiLU on the gate: g * sigmoid(alpha * g) with g = min(x, limit) (fminf, like
// Rust's f32::min, returns `limit` for a NaN x).
MOE_HD float moe_clamped_silu(float x, float alpha, float limit) {
    const float g = fminf(x, limit);
    return g * (1.0f / (1.0f + expf(-(alpha * g))));
}

// gpt-oss's clamped SwiGLU on one (gate, up) pair: clamped_silu(gate) * (clamp(up, -limit, limit) + 1),
// the clamp written as comparisons so that a NaN up stays NaN, like Rust's f32::clamp.
MOE_HD float moe_clamped_swiglu(float gate, float up, float alpha, float limit) {
    const float u = up < -limit ? -limit : (up > limit ? limit : up);
    return moe_clamped_silu(gate, alpha, limit) * (u + 1.0f);
}

// The nonlinearity `kind` (MOE_ACTIVATION_SILU or MOE_ACTIVATION_GELU_TANH) applied to `x`.
MOE_HD float moe_activation(int32_t kind, float x) {
    return kind == MOE_ACTIVATION_GELU_TANH ? moe_gelu_tanh(x) : moe_silu(x);
}

#endif  // MOE_ACTIVATION_CUH
