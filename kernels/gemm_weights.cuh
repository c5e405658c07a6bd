// gemm_weights.cuh: the grouped GEMM's stored weight formats and their decoding.
//
// The B tile in shared memory always holds the activations' 16-bit type, so the tensor-core pipeline
// (ldmatrix, mma) is the same for every format; formats differ only in how a thread turns 8 stored
// weights of one row into its 16-byte chunk of the tile (TileLoader in grouped_gemm.cu):
// - weights of the input type are copied as they are (cp.async on the aligned path);
// - FP8 e4m3 codes (one byte each) are loaded, decoded exactly to f32 (every e4m3 value is an f32),
//   multiplied by their scale (one f32 per row and group of columns) and rounded once to the input
//   type: the CPU reference's dequantisation (src/quant.rs), then the rounding any 16-bit weight has.
//
// moe_e4m3_to_float is shared with the host (kernels/host/gemm.cpp), which checks it on all 256 codes.
#ifndef MOE_GEMM_WEIGHTS_CUH
#define MOE_GEMM_WEIGHTS_CUH

#include <stdint.h>
#include <string.h>

#include "moe_hd.cuh"

// The f32 whose bits are `bits`.
MOE_HD float moe_float_from_bits(uint32_t bits) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(bits);
#else
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
#endif
}

// The value of an FP8 e4m3 (`fn`: no infinities) code: sign bit, 4 exponent bits (bias 7), 3
// mantissa bits; exponent 0 is subnormal (m * 2^-9); S.1111.111 is NaN. Branch-free: the code's 7
// magnitude bits shifted to the top of an f32 (<< 20) are the f32 2^(e-127) (1 + m/8), or for e = 0
// the f32 subnormal m * 2^-129; both are the code's value times 2^-120, which one exact
// multiplication by 2^120 removes. The sign bit goes to the f32's sign.
MOE_HD float moe_e4m3_to_float(uint32_t code) {
    const uint32_t magnitude = code & 0x7fu;
    const uint32_t sign = (code & 0x80u) << 24;
    const float value = moe_float_from_bits(sign | (magnitude << 20)) * 0x1p120f;
    return magnitude == 0x7fu ? moe_float_from_bits(sign | 0x7fc00000u) : value;
}

#endif  // MOE_GEMM_WEIGHTS_CUH
