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

#endif  // MOE_HD_CUH
