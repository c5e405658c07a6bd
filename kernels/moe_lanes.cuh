// moe_lanes.cuh: the "lanes" abstraction that lets one algorithm run as a CUDA warp and on the host.
//
// The per-row router and the per-chunk permutation are written once, as templates over a `Lanes`
// type, and instantiated twice: on the device with `MoeWarpLanes` (32 lanes, shuffles, match_any,
// __syncwarp) and on the host with `MoeSerialLanes` (one lane, every collective the identity). The
// host instantiation is compiled by kernels/host/*.cpp and tested against the CPU reference, so the
// decomposition logic (which lane owns which element, how partial results combine) is exercised on
// every machine. A `Lanes` type provides:
//
//   kWidth                    number of lanes (a power of two)
//   lane()                    this lane's index in 0..kWidth
//   sync()                    barrier and memory fence among the lanes
//   shfl(v, src)              v as held by lane `src`
//   shfl_xor(v, mask)         v as held by lane `lane() ^ mask`
//   match_any(key)            bitmask of the lanes whose key equals this lane's (bit i = lane i)
//   lanemask_lt()             bitmask of the lanes below this one
//   any(b)                    whether any lane passes true
//   max(v), sum(v)            reductions, every lane receives the result
//   inclusive_scan(v)         sum of v over lanes 0..=lane()
//
// All collectives must be reached by every lane with the same control flow (warp-uniform), as the
// full-mask warp intrinsics require.
#ifndef MOE_LANES_CUH
#define MOE_LANES_CUH

#include <stdint.h>

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

#include "moe_hd.cuh"

// Population count of a lane mask.
MOE_HD int moe_popc(uint32_t mask) {
#ifdef __CUDA_ARCH__
    return __popc(mask);
#else
    return __builtin_popcount(mask);
#endif
}

// Widening of the element types to f32 (exact). The 16-bit types exist only under nvcc; the host
// twins take f32 data.
MOE_HD float moe_to_float(float x) { return x; }
#ifdef __CUDACC__
MOE_HD float moe_to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
MOE_HD float moe_to_float(__half x) { return __half2float(x); }
#endif

// One lane: the host twin of a warp. Every collective returns its own argument.
struct MoeSerialLanes {
    static constexpr int kWidth = 1;
    MOE_HD int lane() const { return 0; }
    MOE_HD void sync() const {}
    template <typename V>
    MOE_HD V shfl(V v, int) const {
        return v;
    }
    template <typename V>
    MOE_HD V shfl_xor(V v, int) const {
        return v;
    }
    MOE_HD uint32_t match_any(int32_t) const { return 1u; }
    MOE_HD uint32_t lanemask_lt() const { return 0u; }
    MOE_HD bool any(bool b) const { return b; }
    MOE_HD float max(float v) const { return v; }
    MOE_HD float sum(float v) const { return v; }
    MOE_HD int64_t inclusive_scan(int64_t v) const { return v; }
};

#ifdef __CUDACC__
// A full warp. The lane is threadIdx.x % 32, so a block's warps are consecutive groups of 32 threads.
struct MoeWarpLanes {
    static constexpr int kWidth = 32;
    static constexpr unsigned kFull = 0xffffffffu;
    __device__ __forceinline__ int lane() const { return static_cast<int>(threadIdx.x % kWidth); }
    __device__ __forceinline__ void sync() const { __syncwarp(kFull); }
    template <typename V>
    __device__ __forceinline__ V shfl(V v, int src) const {
        return __shfl_sync(kFull, v, src);
    }
    template <typename V>
    __device__ __forceinline__ V shfl_xor(V v, int mask) const {
        return __shfl_xor_sync(kFull, v, mask);
    }
    __device__ __forceinline__ uint32_t match_any(int32_t key) const {
        return __match_any_sync(kFull, key);
    }
    __device__ __forceinline__ uint32_t lanemask_lt() const {
        return (1u << lane()) - 1u;
    }
    __device__ __forceinline__ bool any(bool b) const { return __any_sync(kFull, b) != 0; }
    __device__ __forceinline__ float max(float v) const {
        for (int offset = kWidth / 2; offset > 0; offset /= 2) {
            v = fmaxf(v, __shfl_xor_sync(kFull, v, offset));
        }
        return v;
    }
    // Addition is commutative, so at every butterfly step both partners compute the same sum and
    // all lanes end with bit-identical totals.
    __device__ __forceinline__ float sum(float v) const {
        for (int offset = kWidth / 2; offset > 0; offset /= 2) {
            v += __shfl_xor_sync(kFull, v, offset);
        }
        return v;
    }
    // Kogge-Stone scan: after the step with distance d, lane l holds the sum of lanes l-2d+1..=l.
    __device__ __forceinline__ int64_t inclusive_scan(int64_t v) const {
        const int l = lane();
        for (int d = 1; d < kWidth; d *= 2) {
            const int64_t other = __shfl_up_sync(kFull, v, d);
            if (l >= d) {
                v += other;
            }
        }
        return v;
    }
};
#endif  // __CUDACC__

#endif  // MOE_LANES_CUH
