// Matrix-vector products for decode (a few rows of x against the whole weight matrix): at batch 1
// the step is a pure stream over the weights, so each warp owns one output row n and streams
// w[n, :] with 16-byte loads, several in flight, applying it to every row of x.
#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.h"

namespace nanoinfer::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kUnroll = 4;  // 16-byte weight loads per lane in flight

__device__ __forceinline__ void unpack8(const uint4& v, float* out) {
  const auto* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

// WPR warps share one output row, each streaming a contiguous 1/WPR of it (short matrices get
// more warps, so more loads in flight); their partial sums meet in shared memory.
template <int TOK, int WPR, class Y>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_kernel(const __nv_bfloat16* x, const __nv_bfloat16* w, Y* y, int k, int n) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int row = blockIdx.x * (kWarps / WPR) + warp / WPR, part = warp % WPR;
  const int vecs = k / 8;
  const int per_part = (vecs + WPR - 1) / WPR;
  const int v_begin = part * per_part, v_end = min(vecs, v_begin + per_part);
  float acc[TOK];
#pragma unroll
  for (int t = 0; t < TOK; ++t) acc[t] = 0.0F;
  if (row < n) {
    const uint4* wr = reinterpret_cast<const uint4*>(w + int64_t{row} * k);
    for (int base = v_begin + lane; base < v_end; base += 32 * kUnroll) {
      uint4 wv[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int v = base + u * 32;
        wv[u] = v < v_end ? __ldg(wr + v) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int v = base + u * 32;
        if (v >= v_end) break;
        float wf[8];
        unpack8(wv[u], wf);
#pragma unroll
        for (int t = 0; t < TOK; ++t) {
          float xf[8];
          unpack8(__ldg(reinterpret_cast<const uint4*>(x + int64_t{t} * k) + v), xf);
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[t] += wf[e] * xf[e];
        }
      }
    }
  }
  __shared__ float partial[kWarps][TOK];
#pragma unroll
  for (int t = 0; t < TOK; ++t) {
    const float s = warp_sum(acc[t]);
    if (lane == 0) partial[warp][t] = s;
  }
  __syncthreads();
  if (part == 0 && lane < TOK && row < n) {
    float s = 0.0F;
#pragma unroll
    for (int p = 0; p < WPR; ++p) s += partial[warp + p][lane];
    y[int64_t{lane} * n + row] = from_f32<Y>(s);
  }
}

template <int TOK, int WPR>
void launch_rows(const void* x, const void* w, DType y_dt, void* y, int k, int n, cudaStream_t s) {
  constexpr int kRowsPerBlock = kWarps / WPR;
  const unsigned grid = static_cast<unsigned>((n + kRowsPerBlock - 1) / kRowsPerBlock);
  const auto* xb = static_cast<const __nv_bfloat16*>(x);
  const auto* wb = static_cast<const __nv_bfloat16*>(w);
  if (y_dt == DType::F32)
    gemv_kernel<TOK, WPR, float><<<grid, kWarps * 32, 0, s>>>(xb, wb, static_cast<float*>(y), k, n);
  else
    gemv_kernel<TOK, WPR, __nv_bfloat16>
        <<<grid, kWarps * 32, 0, s>>>(xb, wb, static_cast<__nv_bfloat16*>(y), k, n);
  NI_CUDA_LAUNCH_CHECK("gemv_bf16");
}

// About 16k warps fill an H100 with loads in flight: short matrices split their rows.
template <int TOK>
void launch(const void* x, const void* w, DType y_dt, void* y, int k, int n, cudaStream_t s) {
  if (n >= 16384 || k < 2048)
    launch_rows<TOK, 1>(x, w, y_dt, y, k, n, s);
  else if (n >= 8192)
    launch_rows<TOK, 2>(x, w, y_dt, y, k, n, s);
  else
    launch_rows<TOK, 4>(x, w, y_dt, y, k, n, s);
}

}  // namespace

void gemv_bf16(const void* x, const void* w, DType y_dt, void* y, int tokens, int k, int n,
               cudaStream_t s) {
  NI_ASSERT(k % 8 == 0 && tokens >= 1 && tokens <= kGemvMaxTokens);
  // One instantiation per row count: rows past `tokens` must be neither read nor written.
  using Launch = void (*)(const void*, const void*, DType, void*, int, int, cudaStream_t);
  static constexpr Launch kByTokens[kGemvMaxTokens] = {launch<1>, launch<2>, launch<3>, launch<4>};
  kByTokens[tokens - 1](x, w, y_dt, y, k, n, s);
}

}  // namespace nanoinfer::cuda
