// gemm_layout.cuh: where each element of a block tile lives, from shared memory to the mma.sync
// fragments, for the grouped GEMM. Plain C++ on integers shared with the host build
// (kernels/host/gemm.cpp), where tests/host_math_gemm.rs emulates a whole block tile with these
// functions and a model of ldmatrix and mma.sync written from the PTX ISA, against a plain matrix
// product.
//
// Shared tiles (A: BM x BK, B: BN x BK, K contiguous) are rows of `chunks_per_row` 16-byte chunks (8
// elements); chunk positions within a row are XOR-swizzled (moe_gemm_swizzle).
//
// Fragments (PTX ISA, mma.m16n8k16 with 16-bit inputs; g = lane / 4, t = lane % 4):
// - A, 16 x 16 row-major, 4 registers of 2 elements: register r holds row g + 8 (r % 2), columns
//   2t + 8 (r / 2) + {0, 1}. ldmatrix.x4 delivers matrix i of the four 8x8 matrices into register i,
//   lane l receiving row l / 4, columns 2 (l % 4) + {0, 1}, from the row addresses of lanes 8i..8i+7.
//   So matrix i must be rows 8 (i % 2).., columns 8 (i / 2)..: lane l addresses tile row
//   moe_gemm_a_frag_row(l), K chunk moe_gemm_a_frag_chunk(l, kk).
// - B, 16 x 8 column-major (stored as 8 rows of N by 16 of K), 2 registers: register r holds column
//   g, rows (K) 2t + 8 r + {0, 1}: the 8x8 matrix (n rows, k columns) ldmatrix delivers as is. One
//   ldmatrix.x4 loads two n8 fragments: register j of it is B register j % 2 of n8 fragment j / 2
//   (moe_gemm_b_frag_of), and lane l addresses tile row moe_gemm_b_frag_row(l), K chunk
//   moe_gemm_b_frag_chunk(l, kk).
// - Accumulators, 16 x 8 f32, 4 registers: register r holds row g + 8 (r / 2), column 2t + r % 2
//   (moe_gemm_acc_row / moe_gemm_acc_col).
#ifndef MOE_GEMM_LAYOUT_CUH
#define MOE_GEMM_LAYOUT_CUH

#include <stdint.h>

#include "moe_hd.cuh"

// The physical 16-byte chunk of logical chunk `chunk` in row `row` of a shared-memory tile whose rows
// hold `chunks_per_row` (2, 4 or 8) chunks, i.e. 32, 64 or 128 bytes. XOR-ing with a key that changes
// every 8 / chunks_per_row rows makes any 8 consecutive rows of one logical chunk (an ldmatrix phase)
// and any 8 consecutive chunks in row-major order (a cp.async phase) land in 8 distinct 16-byte bank
// groups: conflict-free reads and writes. The key repeats every 8 rows.
MOE_HD int32_t moe_gemm_swizzle(int32_t row, int32_t chunk, int32_t chunks_per_row) {
    return chunk ^ ((row / (8 / chunks_per_row)) % chunks_per_row);
}

// Byte offset of logical chunk `chunk` of row `row` in a shared tile of `chunks_per_row` chunks per row.
MOE_HD int32_t moe_gemm_smem_offset(int32_t row, int32_t chunk, int32_t chunks_per_row) {
    return (row * chunks_per_row + moe_gemm_swizzle(row, chunk, chunks_per_row)) * 16;
}

// The row (within an m16 fragment) whose address lane `lane` gives to the A ldmatrix.x4.
MOE_HD int32_t moe_gemm_a_frag_row(int32_t lane) {
    return lane % 16;
}

// The K chunk (of 8 elements, within the BK tile) lane `lane` addresses for 16-deep K step `kk`.
MOE_HD int32_t moe_gemm_a_frag_chunk(int32_t lane, int32_t kk) {
    return 2 * kk + lane / 16;
}

// The row (within a pair of n8 fragments) whose address lane `lane` gives to the B ldmatrix.x4.
MOE_HD int32_t moe_gemm_b_frag_row(int32_t lane) {
    return lane % 8 + 8 * (lane / 16);
}

// The K chunk lane `lane` addresses for the B ldmatrix.x4 of K step `kk`.
MOE_HD int32_t moe_gemm_b_frag_chunk(int32_t lane, int32_t kk) {
    return 2 * kk + (lane / 8) % 2;
}

// Register j of a B ldmatrix.x4 is B register *reg of n8 fragment 2 np + *pair (0 or 1).
MOE_HD void moe_gemm_b_frag_of(int32_t j, int32_t* pair, int32_t* reg) {
    *pair = j / 2;
    *reg = j % 2;
}

// Row (0..15) of accumulator register `reg` of lane `lane` in an m16n8 fragment.
MOE_HD int32_t moe_gemm_acc_row(int32_t lane, int32_t reg) {
    return lane / 4 + 8 * (reg / 2);
}

// Column (0..7) of accumulator register `reg` of lane `lane` in an m16n8 fragment.
MOE_HD int32_t moe_gemm_acc_col(int32_t lane, int32_t reg) {
    return 2 * (lane % 4) + reg % 2;
}

#endif  // MOE_GEMM_LAYOUT_CUH
