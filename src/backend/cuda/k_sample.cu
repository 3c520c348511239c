// Token selection on the device: greedy argmax per row of the f32 logits, so a decode step can
// hand back R token ids instead of R x V floats.
#include <cfloat>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.h"

namespace nanoinfer::cuda {
namespace {

constexpr int kThreads = 1024;

// Larger value wins; equal values go to the lower index (std::max_element's choice).
__device__ __forceinline__ void better(float& v, int& i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}

__global__ void argmax_kernel(const float* logits, int vocab, int32_t* out) {
  const float* row = logits + int64_t{blockIdx.x} * vocab;
  float v = -FLT_MAX;
  int idx = vocab;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) better(v, idx, row[i], i);
  for (int o = 16; o > 0; o >>= 1)
    better(v, idx, __shfl_xor_sync(0xffffffffU, v, o), __shfl_xor_sync(0xffffffffU, idx, o));
  __shared__ float sv[32];
  __shared__ int si[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) {
    sv[warp] = v;
    si[warp] = idx;
  }
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? sv[lane] : -FLT_MAX;
    idx = lane < kThreads / 32 ? si[lane] : vocab;
    for (int o = 16; o > 0; o >>= 1)
      better(v, idx, __shfl_xor_sync(0xffffffffU, v, o), __shfl_xor_sync(0xffffffffU, idx, o));
    if (lane == 0) out[blockIdx.x] = idx;
  }
}

}  // namespace

void argmax_rows(const float* logits, int rows, int vocab, int32_t* out, cudaStream_t s) {
  if (rows == 0) return;
  argmax_kernel<<<rows, kThreads, 0, s>>>(logits, vocab, out);
  NI_CUDA_LAUNCH_CHECK("argmax_rows");
}

}  // namespace nanoinfer::cuda
