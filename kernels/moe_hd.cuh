// moe_hd.cuh: MOE_HD, the qualifier of the functions that the kernels share with their host twins
// (kernels/host/*.cpp): inlined host-and-device functions under nvcc, plain inline functions under a
// host C++ compiler.
#ifndef MOE_HD_CUH
#define MOE_HD_CUH

#ifdef __CUDACC__
#define MOE_HD __host__ __device__ __forceinline__
#else
#define MOE_HD inline
#endif

// Keeps a device loop rolled (`#pragma unroll 1` under nvcc, nothing in the host twins): for
// loops whose unrolled copies multiply the predicates live across warp collectives until ptxas
// spills them.
#ifdef __CUDACC__
#define MOE_NO_UNROLL _Pragma("unroll 1")
#else
#define MOE_NO_UNROLL
#endif

#endif  // MOE_HD_CUH
