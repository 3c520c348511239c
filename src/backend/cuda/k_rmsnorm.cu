// RMSNorm, alone and fused with the residual add that precedes it in every block: one read of
// x and the residual, one write of each, fp32 statistics. In bf16 the normalised value is
// rounded before the weight product, as HF's LlamaRMSNorm does.
#include <algorithm>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.h"

namespace nanoinfer::cuda {
namespace {

constexpr int kMaxThreads = 1024, kMaxIter = 4;  // up to 4 x 1024 vectors a row

// One block per row, each thread owning kIter vectors of kVec consecutive elements (16-byte loads
// when the row allows: kVec = 16 / sizeof(T), else 1), held in registers between the passes. A
// programmatic dependent: the weight is loaded before waiting for the kernel ahead, which wrote x.
// With residual != null: residual += x first, and the stored (rounded) sum is what gets normalised.
template <class T, int kVec, int kIter>
__global__ void __launch_bounds__(kMaxThreads)
    rmsnorm_kernel(T* residual, const T* x, const T* w, float eps, T* out, int hidden) {
  struct alignas(sizeof(T) * kVec) Vec {
    T x[kVec];
  };
  pdl_trigger();  // the GEMV after us may start prefetching its weights
  const int n = hidden / kVec, tid = static_cast<int>(threadIdx.x);
  const int step = static_cast<int>(blockDim.x);
  const Vec* wv = reinterpret_cast<const Vec*>(w);
  Vec g[kIter], v[kIter];
#pragma unroll
  for (int j = 0; j < kIter; ++j)
    if (tid + j * step < n) g[j] = wv[tid + j * step];
  pdl_wait();
  const int64_t row = blockIdx.x;
  const Vec* src = reinterpret_cast<const Vec*>(x + row * hidden);
  Vec* res = residual != nullptr ? reinterpret_cast<Vec*>(residual + row * hidden) : nullptr;
  float ss = 0.0F;
#pragma unroll
  for (int j = 0; j < kIter; ++j) {
    const int i = tid + j * step;
    if (i >= n) continue;
    v[j] = src[i];
    if (res != nullptr) {
      Vec r = res[i];
#pragma unroll
      for (int e = 0; e < kVec; ++e) r.x[e] = from_f32<T>(to_f32(r.x[e]) + to_f32(v[j].x[e]));
      res[i] = r;
      v[j] = r;
    }
#pragma unroll
    for (int e = 0; e < kVec; ++e) ss += to_f32(v[j].x[e]) * to_f32(v[j].x[e]);
  }
  const float inv = 1.0F / sqrtf(block_sum(ss) / static_cast<float>(hidden) + eps);
  Vec* o = reinterpret_cast<Vec*>(out + row * hidden);
#pragma unroll
  for (int j = 0; j < kIter; ++j) {
    const int i = tid + j * step;
    if (i >= n) continue;
    Vec r;
#pragma unroll
    for (int e = 0; e < kVec; ++e)
      r.x[e] = from_f32<T>(round_to<T>(to_f32(v[j].x[e]) * inv) * to_f32(g[j].x[e]));
    o[i] = r;
  }
}

template <class T, int kVec>
void launch_vec(T* residual, const T* x, const T* w, float eps, T* out, int tokens, int hidden,
                cudaStream_t s) {
  const int per_row = hidden / kVec;
  if (per_row > kMaxThreads * kMaxIter)
    fail("rmsnorm: hidden size " + std::to_string(hidden) + " is past the CUDA kernel's limit of " +
         std::to_string(kMaxThreads * kMaxIter * kVec));
  const int threads = std::clamp((per_row + 31) / 32 * 32, 32, kMaxThreads);
  const int iters = (per_row + threads - 1) / threads;
  using Kernel = void (*)(T*, const T*, const T*, float, T*, int);
  const Kernel k = iters == 1   ? rmsnorm_kernel<T, kVec, 1>
                   : iters == 2 ? rmsnorm_kernel<T, kVec, 2>
                                : rmsnorm_kernel<T, kVec, kMaxIter>;
  launch_pdl(k, dim3(tokens), dim3(threads), 0, s, residual, x, w, eps, out, hidden);
}

template <class T>
void launch(T* residual, const T* x, const T* w, float eps, T* out, int tokens, int hidden,
            cudaStream_t s) {
  constexpr int kVec = 16 / sizeof(T);
  if (hidden % kVec == 0)
    launch_vec<T, kVec>(residual, x, w, eps, out, tokens, hidden, s);
  else
    launch_vec<T, 1>(residual, x, w, eps, out, tokens, hidden, s);
}

}  // namespace

void rmsnorm(DType dt, const void* x, const void* w, float eps, void* out, int tokens, int hidden,
             cudaStream_t s) {
  if (tokens == 0) return;
  NI_DISPATCH_FLOAT(dt, T,
                    launch<T>(nullptr, static_cast<const T*>(x), static_cast<const T*>(w), eps,
                              static_cast<T*>(out), tokens, hidden, s));
  NI_CUDA_LAUNCH_CHECK("rmsnorm");
}

void add_rmsnorm(DType dt, void* residual, const void* x, const void* w, float eps, void* out,
                 int tokens, int hidden, cudaStream_t s) {
  if (tokens == 0) return;
  NI_DISPATCH_FLOAT(
      dt, T,
      launch<T>(static_cast<T*>(residual), static_cast<const T*>(x), static_cast<const T*>(w), eps,
                static_cast<T*>(out), tokens, hidden, s));
  NI_CUDA_LAUNCH_CHECK("add_rmsnorm");
}

}  // namespace nanoinfer::cuda
