// gemm_mma.cuh: the sm_80 data-movement and tensor-core instructions of the grouped GEMM, one thin
// wrapper each: cp.async (global -> shared, asynchronous, with zero-fill), ldmatrix (shared -> the
// register fragments of mma), and mma.sync m16n8k16 with f32 accumulators. Device code only.
//
// Shared-memory operands are 32-bit shared-window addresses (`smem_address`), as the instructions take
// them. Every asm that reads or writes shared memory clobbers "memory", so the compiler never moves
// an ordinary shared-memory access across it; ordering between threads is the caller's barriers.
#ifndef MOE_GEMM_MMA_CUH
#define MOE_GEMM_MMA_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

namespace moe_gemm {

// The shared-window address of a pointer into shared memory.
__device__ __forceinline__ uint32_t smem_address(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Copy 16 bytes from global `src` to shared `dst` asynchronously, bypassing L1 (.cg: the operands are
// streamed once per tile, L2 is where reuse happens). When `copy` is false nothing is read (source size
// 0) and the 16 bytes are zero-filled; `src` must still be a valid address then.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool copy) {
    const int src_bytes = copy ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_bytes)
                 : "memory");
}

// Close the group of cp.async issued by this thread since the last commit (possibly empty).
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Wait until at most `Pending` of this thread's committed groups are still in flight.
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
}

// A plain 16-byte shared store (the unaligned path fills the same tiles synchronously).
__device__ __forceinline__ void st_shared_16(uint32_t dst, uint4 v) {
    asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(dst), "r"(v.x), "r"(v.y),
                 "r"(v.z), "r"(v.w)
                 : "memory");
}

// ldmatrix .x4: lanes 8i..8i+7 give the row addresses (16 bytes each) of 8x8 matrix i; every lane
// receives, in r[i], the two 16-bit elements (row lane / 4, columns 2 (lane % 4) + {0, 1}) of matrix i.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t address) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address)
                 : "memory");
}

// d += a * b for one m16n8k16 tile: a is the row-major 16x16 A fragment (4 registers), b the
// column-major 16x8 B fragment (2 registers), d the 16x8 f32 accumulator (lane holds rows lane / 4 and
// lane / 4 + 8, columns 2 (lane % 4) + {0, 1}).
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4],
                                          const uint32_t (&b)[2]);

template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                         const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4],
                                                  const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

}  // namespace moe_gemm

#endif  // MOE_GEMM_MMA_CUH
