// Matrix-vector products for decode (a few rows of x against the whole weight matrix): at batch 1
// the step is a pure stream over the weights, so the kernel's one job is to keep enough of that
// stream in flight from its first cycle to its last, whatever the matrix's shape.
//  - One block of 16 warps per SM, a single wave: no late blocks, no ramp-up per block.
//  - Warp g of the G in the grid owns rows g, g + G, g + 2G, ... (consecutive rows on different
//    SMs, so every SM gets an even share) and walks them as one stream of chunks, a chunk being
//    4 loads of 16 bytes per lane (2 KB). The loads of the next chunk, in the same row or the
//    next, are issued before the FMAs of the current one: up to 4 KB per warp, 64 KB per SM in
//    flight, also across row ends (the reduction and store of a row overlap the next row's loads).
//    That is enough to stream at the copy bandwidth; chunks of 4 KB (H200, 2026-12-01) streamed
//    no faster at one token and 4-6 points of copy slower at four (more registers, no gain).
//    A lane's FMAs run over its 16-byte vectors lane, lane + 32, ... in order whatever the
//    chunk size, so the chunk does not change the bits.
//  - The block stages the TOK x k activations in shared memory once, while its first chunks load
//    (one row as f32, converted there once; more rows as bf16); when they do not fit (TOK * k * 2
//    bytes over the opt-in limit) x is read through the L1.
//  - A row's per-lane partial sums meet by warp shuffles in a fixed order: no atomics, the same
//    bits every run. Rows past n and tokens past TOK are neither read nor written.
//  - The fp32 sums are rounded to bf16 also when y is f32 (the logits): an HF model in bf16
//    returns bf16 logits, and its greedy pick breaks their ties by the lowest index.
//  - Launched as a programmatic dependent launch: the first chunk's loads are issued before
//    waiting for the kernel ahead (which triggers its dependents early: norms, SiLU, attention).
#include <cuda_bf16.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.h"

namespace nanoinfer::cuda {
namespace {

constexpr int kWarps = 16;            // one block of 512 threads per SM
constexpr int kUnroll = 4;            // 16-byte weight loads per lane per chunk (two chunks live)
constexpr int kChunk = 32 * kUnroll;  // vectors of 8 weights per chunk

// Where a block keeps x: converted to f32 in shared memory (two planes of float4, elements 0-3 and
// 4-7 of each 8-vector, so a warp's loads are contiguous), as bf16 there, or read through the L1.
enum class XIn { kSharedF32, kSharedBf16, kGlobal };

template <bool kShared>
__device__ __forceinline__ uint4 load_x(const uint4* x, int i) {
  if constexpr (kShared)
    return x[i];
  else
    return __ldg(x + i);
}

// x's 8-vector i of the f32 planes (each `planes` float4 long).
__device__ __forceinline__ void load_x8_f32(const float4* x, int i, int planes, float* out) {
  const float4 a = x[i], b = x[planes + i];
  out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
  out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}

template <int TOK, XIn kX, class Y>
__global__ void __launch_bounds__(kWarps * 32, 1)
    gemv_kernel(const __nv_bfloat16* x, const __nv_bfloat16* w, Y* y, int k, int n) {
  extern __shared__ uint4 x_smem[];  // kX's layout of the TOK x k activations
  const int lane = threadIdx.x % 32, vecs = k / 8;
  const int stride = static_cast<int>(gridDim.x) * kWarps;
  int row = static_cast<int>((threadIdx.x / 32) * gridDim.x + blockIdx.x), base = 0;
  const uint4* w4 = reinterpret_cast<const uint4*>(w) + lane;
  const uint4* x4 = kX == XIn::kGlobal ? reinterpret_cast<const uint4*>(x) : x_smem;
  float acc[TOK][2] = {};  // even and odd elements: two independent FMA chains

  // Chunk (r, b): vectors b + lane + 32u of row r; streamed (evict-first: read once per step).
  auto load = [&](uint4(&buf)[kUnroll], int r, int b) {
    const uint4* p = w4 + int64_t{r} * vecs + b;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      buf[u] = r < n && b + lane + 32 * u < vecs ? __ldcs(p + 32 * u) : make_uint4(0, 0, 0, 0);
  };
  auto consume = [&](const uint4(&buf)[kUnroll], int b) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int v = b + lane + 32 * u;  // past the row: w and x both read as zeros
      float wf[8];
      unpack8(buf[u], wf);
#pragma unroll
      for (int t = 0; t < TOK; ++t) {
        float xf[8] = {};
        if constexpr (kX == XIn::kSharedF32) {
          if (v < vecs)
            load_x8_f32(reinterpret_cast<const float4*>(x_smem), t * vecs + v, TOK * vecs, xf);
        } else {
          unpack8(
              v < vecs ? load_x<kX == XIn::kSharedBf16>(x4, t * vecs + v) : make_uint4(0, 0, 0, 0),
              xf);
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[t][e % 2] = fmaf(wf[e], xf[e], acc[t][e % 2]);
      }
    }
  };
  // Loads the chunk after (row, base) into nxt, then applies cur (holding (row, base)).
  auto step = [&](const uint4(&cur)[kUnroll], uint4(&nxt)[kUnroll]) {
    int next_row = row, next_base = base + kChunk;
    if (next_base >= vecs) next_row += stride, next_base = 0;
    load(nxt, next_row, next_base);
    consume(cur, base);
    if (next_base == 0) {  // row done (warp-uniform)
#pragma unroll
      for (int t = 0; t < TOK; ++t) {
        const float s = warp_sum(acc[t][0] + acc[t][1]);
        if (lane == 0) y[int64_t{t} * n + row] = from_f32<Y>(round_to<__nv_bfloat16>(s));
        acc[t][0] = acc[t][1] = 0.0F;
      }
    }
    row = next_row;
    base = next_base;
  };

  uint4 buf0[kUnroll], buf1[kUnroll];
  load(buf0, row, 0);  // in flight while the kernel before finishes and the block stages x
  pdl_wait();          // x (and y's readers) belong to the kernels before this one
  if constexpr (kX != XIn::kGlobal) {
    const auto* src = reinterpret_cast<const uint4*>(x);
    for (int i = static_cast<int>(threadIdx.x); i < TOK * vecs; i += kWarps * 32) {
      if constexpr (kX == XIn::kSharedF32) {  // converted once here, not at every row
        float f[8];
        unpack8(__ldg(src + i), f);
        auto* d = reinterpret_cast<float4*>(x_smem);
        d[i] = make_float4(f[0], f[1], f[2], f[3]);
        d[TOK * vecs + i] = make_float4(f[4], f[5], f[6], f[7]);
      } else {
        x_smem[i] = __ldg(src + i);
      }
    }
    __syncthreads();
  }
  while (row < n) {  // unrolled by two so that the buffers swap without register copies
    step(buf0, buf1);
    if (row >= n) break;
    step(buf1, buf0);
  }
}

template <int TOK, class Y>
void launch(const void* x, const void* w, void* y, int k, int n, cudaStream_t s) {
  const DeviceLimits& m = device_limits();
  const auto grid = static_cast<unsigned>(std::min(m.sms, (n + kWarps - 1) / kWarps));
  const auto* xb = static_cast<const __nv_bfloat16*>(x);
  const auto* wb = static_cast<const __nv_bfloat16*>(w);
  auto* yy = static_cast<Y*>(y);
  const size_t bf16_bytes = sizeof(__nv_bfloat16) * TOK * k, limit = m.smem_optin;
  // Launched as a programmatic dependent: its first weight loads overlap the previous kernel's
  // tail (the weights are never written by a kernel).
  auto go = [&](auto kernel, size_t smem) {
    launch_pdl(kernel, dim3(grid), dim3(kWarps * 32), smem, s, xb, wb, yy, k, n);
    NI_CUDA_LAUNCH_CHECK("gemv_bf16");
  };
  // x as f32 at one row (twice the bytes, no conversion at every row): H200, 2026-12-01, three
  // calls, every one-row product 1-2 points of copy faster and W1 +0.4 to +0.9 %; at four rows
  // (the kernel then took up to four) 2-4 points slower: f32 x read from shared memory at every
  // chunk.
  if constexpr (TOK == 1) {
    if (2 * bf16_bytes <= limit) {
      [[maybe_unused]] static const bool once =  // any size up to the opt-in limit
          (allow_dynamic_smem(gemv_kernel<TOK, XIn::kSharedF32, Y>, m.smem_optin), true);
      go(gemv_kernel<TOK, XIn::kSharedF32, Y>, 2 * bf16_bytes);
      return;
    }
  }
  if (bf16_bytes <= limit) {
    [[maybe_unused]] static const bool once =
        (allow_dynamic_smem(gemv_kernel<TOK, XIn::kSharedBf16, Y>, m.smem_optin), true);
    go(gemv_kernel<TOK, XIn::kSharedBf16, Y>, bf16_bytes);
  } else {
    go(gemv_kernel<TOK, XIn::kGlobal, Y>, 0);
  }
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
  static constexpr Launch kByTokens[kGemvMaxTokens] = {launch_y<1>, launch_y<2>};
  kByTokens[tokens - 1](x, w, y_dt, y, k, n, s);
}

}  // namespace nanoinfer::cuda
