// RMSNorm, alone and fused with the residual add that precedes it in every block: one read of
// x and the residual, one write of each, fp32 statistics. In bf16 the normalised value is
// rounded before the weight product, as HF's LlamaRMSNorm does.
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.h"

namespace nanoinfer::cuda {
namespace {

// One block per row, each thread owning kVec consecutive elements per pass (16-byte loads when
// the row allows: kVec = 16 / sizeof(T), else 1). With residual != null: residual += x first,
// and the stored (rounded) sum is what gets normalised.
template <class T, int kVec>
__global__ void rmsnorm_kernel(T* residual, const T* x, const T* w, float eps, T* out, int hidden) {
  struct alignas(sizeof(T) * kVec) Vec {
    T x[kVec];
  };
  pdl_trigger();  // the GEMV after us may start prefetching its weights
  const int64_t row = blockIdx.x;
  const Vec* src = reinterpret_cast<const Vec*>(x + row * hidden);
  Vec* res = residual != nullptr ? reinterpret_cast<Vec*>(residual + row * hidden) : nullptr;
  const int n = hidden / kVec;
  float ss = 0.0F;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    Vec v = src[i];
    if (res != nullptr) {
      Vec r = res[i];
#pragma unroll
      for (int e = 0; e < kVec; ++e) r.x[e] = from_f32<T>(to_f32(r.x[e]) + to_f32(v.x[e]));
      res[i] = r;
      v = r;
    }
#pragma unroll
    for (int e = 0; e < kVec; ++e) ss += to_f32(v.x[e]) * to_f32(v.x[e]);
  }
  const float inv = 1.0F / sqrtf(block_sum(ss) / static_cast<float>(hidden) + eps);
  const Vec* normed = res != nullptr ? res : src;
  const Vec* wv = reinterpret_cast<const Vec*>(w);
  Vec* o = reinterpret_cast<Vec*>(out + row * hidden);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const Vec v = normed[i], g = wv[i];
    Vec r;
#pragma unroll
    for (int e = 0; e < kVec; ++e)
      r.x[e] = from_f32<T>(round_to<T>(to_f32(v.x[e]) * inv) * to_f32(g.x[e]));
    o[i] = r;
  }
}

template <class T>
void launch(T* residual, const T* x, const T* w, float eps, T* out, int tokens, int hidden,
            cudaStream_t s) {
  constexpr int kVec = 16 / sizeof(T);
  const bool vec = hidden % kVec == 0;
  const int per_row = vec ? hidden / kVec : hidden;
  const int threads = std::clamp((per_row + 31) / 32 * 32, 32, 1024);
  if (vec)
    rmsnorm_kernel<T, kVec><<<tokens, threads, 0, s>>>(residual, x, w, eps, out, hidden);
  else
    rmsnorm_kernel<T, 1><<<tokens, threads, 0, s>>>(residual, x, w, eps, out, hidden);
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
