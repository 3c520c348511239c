// Matrix-vector products for decode (a few rows of x against the whole weight matrix): at batch 1
// the step is a pure stream over the weights, so the kernel's one job is to keep enough of that
// stream in flight from its first cycle to its last, whatever the matrix's shape.
//  - One block of 16 warps per SM, a single wave: no late blocks, no ramp-up per block; each warp
//    streams its rows as gemv_rows.cuh says (up to 8 KB per warp, 128 KB per SM in flight).
//  - The block stages the TOK x k activations in shared memory once, while its first chunks load;
//    when they do not fit (TOK * k * 2 bytes over the opt-in limit) x is read through the L1.
//  - Launched as a programmatic dependent launch: the first chunk's loads are issued before
//    waiting for the kernel ahead (which triggers its dependents early: norms, SiLU, attention).
#include <cuda_bf16.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/gemv_rows.cuh"
#include "backend/cuda/kernels.h"

namespace nanoinfer::cuda {
namespace {

template <int TOK, bool kShared, class Y>
__global__ void __launch_bounds__(kGemvWarps * 32, 1)
    gemv_kernel(const __nv_bfloat16* x, const __nv_bfloat16* w, Y* y, int k, int n) {
  extern __shared__ uint4 x_smem[];  // [TOK, k / 8] when kShared
  const uint4* x4 = kShared ? x_smem : reinterpret_cast<const uint4*>(x);
  gemv_rows<TOK, kShared>(w, k, n, x4, y, [&] {
    pdl_wait();  // x (and y's readers) belong to the kernels before this one
    if constexpr (kShared) {
      const auto* src = reinterpret_cast<const uint4*>(x);
      for (int i = static_cast<int>(threadIdx.x); i < TOK * k / 8; i += kGemvWarps * 32)
        x_smem[i] = __ldg(src + i);
      __syncthreads();
    }
  });
}

template <int TOK, class Y>
void launch(const void* x, const void* w, void* y, int k, int n, cudaStream_t s) {
  const DeviceLimits& m = device_limits();
  const auto grid = static_cast<unsigned>(std::min(m.sms, (n + kGemvWarps - 1) / kGemvWarps));
  const auto* xb = static_cast<const __nv_bfloat16*>(x);
  const auto* wb = static_cast<const __nv_bfloat16*>(w);
  auto* yy = static_cast<Y*>(y);
  const size_t smem = sizeof(__nv_bfloat16) * TOK * k;
  // Launched as a programmatic dependent: its first weight loads overlap the previous kernel's
  // tail (the weights are never written by a kernel).
  if (smem <= static_cast<size_t>(m.smem_optin)) {
    [[maybe_unused]] static const bool once =  // any size up to the opt-in limit
        (allow_dynamic_smem(gemv_kernel<TOK, true, Y>, m.smem_optin), true);
    launch_pdl(gemv_kernel<TOK, true, Y>, dim3(grid), dim3(kGemvWarps * 32), smem, s, xb, wb, yy, k,
               n);
  } else {
    launch_pdl(gemv_kernel<TOK, false, Y>, dim3(grid), dim3(kGemvWarps * 32), 0, s, xb, wb, yy, k,
               n);
  }
  NI_CUDA_LAUNCH_CHECK("gemv_bf16");
}

template <int TOK>
void launch_y(const void* x, const void* w, DType y_dt, void* y, int k, int n, cudaStream_t s) {
  if (y_dt == DType::F32)
    launch<TOK, float>(x, w, y, k, n, s);
  else
    launch<TOK, __nv_bfloat16>(x, w, y, k, n, s);
}

}  // namespace

void gemv_bf16(const void* x, const void* w, DType y_dt, void* y, int tokens, int k, int n,
               cudaStream_t s) {
  NI_ASSERT(k % 8 == 0 && tokens >= 1 && tokens <= kGemvMaxTokens && n >= 1);
  // One instantiation per row count: rows past `tokens` must be neither read nor written.
  using Launch = void (*)(const void*, const void*, DType, void*, int, int, cudaStream_t);
  static constexpr Launch kByTokens[kGemvMaxTokens] = {launch_y<1>, launch_y<2>, launch_y<3>,
                                                       launch_y<4>};
  kByTokens[tokens - 1](x, w, y_dt, y, k, n, s);
}

}  // namespace nanoinfer::cuda
