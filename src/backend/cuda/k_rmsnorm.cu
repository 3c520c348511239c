// RMSNorm, alone and fused with the residual add that precedes it in every block: one read of
// x and the residual, one write of each, fp32 statistics. In bf16 the normalised value is
// rounded before the weight product, as HF's LlamaRMSNorm does.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.h"

namespace nanoinfer::cuda {
namespace {

constexpr int kThreads = 1024;  // one row per block: decode rows are latency-bound

// One block per row. With residual != null: residual += x first, and the stored (rounded) sum
// is what gets normalised.
template <class T>
__global__ void rmsnorm_kernel(T* residual, const T* x, const T* w, float eps, T* out, int hidden) {
  const int64_t row = blockIdx.x;
  const T* src = x + row * hidden;
  T* res = residual != nullptr ? residual + row * hidden : nullptr;
  float ss = 0.0F;
  for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
    float v = to_f32(src[h]);
    if (res != nullptr) {
      v = round_to<T>(to_f32(res[h]) + v);
      res[h] = from_f32<T>(v);
    }
    ss += v * v;
  }
  const float inv = 1.0F / sqrtf(block_sum(ss) / static_cast<float>(hidden) + eps);
  const T* normed = res != nullptr ? res : src;
  for (int h = threadIdx.x; h < hidden; h += blockDim.x)
    out[row * hidden + h] = from_f32<T>(round_to<T>(to_f32(normed[h]) * inv) * to_f32(w[h]));
}

}  // namespace

void rmsnorm(DType dt, const void* x, const void* w, float eps, void* out, int tokens, int hidden,
             cudaStream_t s) {
  if (tokens == 0) return;
  NI_DISPATCH_FLOAT(dt, T,
                    rmsnorm_kernel<T><<<tokens, kThreads, 0, s>>>(nullptr, static_cast<const T*>(x),
                                                                  static_cast<const T*>(w), eps,
                                                                  static_cast<T*>(out), hidden));
  NI_CUDA_LAUNCH_CHECK("rmsnorm");
}

void add_rmsnorm(DType dt, void* residual, const void* x, const void* w, float eps, void* out,
                 int tokens, int hidden, cudaStream_t s) {
  if (tokens == 0) return;
  NI_DISPATCH_FLOAT(dt, T,
                    rmsnorm_kernel<T><<<tokens, kThreads, 0, s>>>(
                        static_cast<T*>(residual), static_cast<const T*>(x),
                        static_cast<const T*>(w), eps, static_cast<T*>(out), hidden));
  NI_CUDA_LAUNCH_CHECK("add_rmsnorm");
}

}  // namespace nanoinfer::cuda
