// Device helpers shared by the kernels: element loads/stores as fp32 whatever the storage type,
// warp and block reductions, programmatic dependent launch, and what the launchers share (the
// device's limits, the shared-memory opt-in, the dtype dispatch).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "tensor/tensor.h"
#include "util/error.h"

namespace nanoinfer::cuda {

__device__ __forceinline__ float to_f32(float x) {
  return x;
}
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// The value a store of x to T would read back as (identity for fp32).
template <class T>
__device__ __forceinline__ float round_to(float x) {
  return to_f32(from_f32<T>(x));
}

// The 8 bf16 values of a 16-byte word as floats.
__device__ __forceinline__ void unpack8(const uint4& v, float* out) {
  const auto* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffU, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffU, v, o));
  return v;
}

// Sum over the block; every thread gets the result. blockDim.x must be a multiple of 32.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = static_cast<int>(blockDim.x) / 32;
  float t = lane < warps ? partial[lane] : 0.0F;
  return warp_sum(t);
}

// Programmatic dependent launch (sm_90): a kernel launched with the programmatic-serialization
// attribute may start while the kernel before it on the stream is finishing; before pdl_wait()
// returns it must touch nothing that kernel writes (it may read weights, say). pdl_trigger() in
// the earlier kernel lets such a successor start once all its blocks have begun; for ordinary
// launches both are no-ops.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Launches kernel<<<grid, block, smem, s>>>(args...) as a programmatic dependent of the kernel
// before it on the stream (see pdl_wait): the kernel must call pdl_wait() before it touches that
// kernel's outputs or writes anything that kernel reads.
template <class... Params, class... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                Args&&... args) {
  cudaLaunchAttribute pdl{};
  pdl.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  pdl.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = &pdl;
  cfg.numAttrs = 1;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, static_cast<Args&&>(args)...);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // a failed launch is not sticky: leave nothing for the next check
    cuda_fail(e, "cudaLaunchKernelEx", __FILE__, __LINE__);
  }
}

// Lets kernel take up to `bytes` of dynamic shared memory (needed past 48 KB).
template <class Kernel>
void allow_dynamic_smem(Kernel kernel, size_t bytes) {
  NI_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(bytes)));
}

// The current device's SM count and the shared memory one block may opt into (read once: a
// process drives one device).
struct DeviceLimits {
  int sms = 0, smem_optin = 0;
};
inline const DeviceLimits& device_limits() {
  static const DeviceLimits m = [] {
    DeviceLimits r;
    int device = 0;
    NI_CUDA_CHECK(cudaGetDevice(&device));
    NI_CUDA_CHECK(cudaDeviceGetAttribute(&r.sms, cudaDevAttrMultiProcessorCount, device));
    NI_CUDA_CHECK(
        cudaDeviceGetAttribute(&r.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    return r;
  }();
  return m;
}

inline unsigned blocks_for(int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

}  // namespace nanoinfer::cuda

// Runs the body with `T` bound to the storage type of dtype (f32 or bf16).
#define NI_DISPATCH_FLOAT(dtype, T, ...)                                     \
  do {                                                                       \
    if ((dtype) == ::nanoinfer::DType::F32) {                                \
      using T = float;                                                       \
      __VA_ARGS__;                                                           \
    } else if ((dtype) == ::nanoinfer::DType::BF16) {                        \
      using T = __nv_bfloat16;                                               \
      __VA_ARGS__;                                                           \
    } else {                                                                 \
      ::nanoinfer::fail(std::string("CUDA kernels take f32 or bf16, not ") + \
                        ::nanoinfer::dtype_name(dtype));                     \
    }                                                                        \
  } while (0)
