// gemm_weights.cuh: the grouped GEMM's stored weight formats and their decoding.
//
// The B tile in shared memory always holds the activations' 16-bit type, so the tensor-core pipeline
// (ldmatrix, mma) is the same for every format; formats differ only in how a thread turns 8 stored
// weights of one row into its 16-byte chunk of the tile (TileLoader in grouped_gemm.cu):
// - weights of the input type are copied as they are (cp.async on the aligned path);
// - FP8 e4m3 codes (one byte each) are loaded, decoded exactly to f32 (every e4m3 value is an f32),
//   multiplied by their scale (one f32 per row and group of columns) and rounded once to the input
//   type: the CPU reference's dequantisation (src/quant.rs), then the rounding any 16-bit weight has;
// - MXFP4 (W = MoeMxfp4E2M1): e2m1 codes two to a byte, low nibble first (8 codes, 4 bytes, per
//   chunk), and e8m0 scale bytes (2^(s - 127), one per row and group of columns), decoded exactly to
//   f32 (every e2m1 value times every finite e8m0 scale is an f32), multiplied and rounded once to the
//   input type, as for FP8.
//
// moe_e4m3_to_float, moe_e2m1_to_float and moe_e8m0_to_float are shared with the host
// (kernels/host/gemm.cpp), which checks them on every code.
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

// The TileLoader's weight type of MXFP4 weights (a tag: the stored bytes are e2m1 code pairs, read
// as uint8_t). FP8 e4m3 weights are plain uint8_t.
struct MoeMxfp4E2M1 {};

// The value of an FP4 e2m1 code (the low 4 bits of `code`): sign bit 3, 2 exponent bits (bias 1), 1
// mantissa bit; codes 0..7 are 0, 0.5, 1, 1.5, 2, 3, 4, 6. Branch-free as for e4m3: the 3 magnitude
// bits shifted to the top of an f32 (<< 22) are the f32 2^(e-127) (1 + m/2), or for e = 0 the
// subnormal m * 2^-127; both are the code's value times 2^-126, which one exact multiplication by
// 2^126 removes. The sign bit goes to the f32's sign (code 8 is -0).
MOE_HD float moe_e2m1_to_float(uint32_t code) {
    const uint32_t sign = (code & 0x8u) << 28;
    return moe_float_from_bits(sign | ((code & 0x7u) << 22)) * 0x1p126f;
}

// The value of an e8m0 scale byte: 2^(code - 127), the f32 whose exponent field is the code; code 0
// is the subnormal 2^-127 and code 255 (NaN in the OCP MX spec) +inf, as in src/quant.rs (the host
// refuses it before any upload).
MOE_HD float moe_e8m0_to_float(uint32_t code) {
    code &= 0xffu;
    return moe_float_from_bits(code == 0 ? 0x00400000u : code << 23);
}

#endif  // MOE_GEMM_WEIGHTS_CUH
