// The streaming core of the decode GEMVs (k_gemv.cu, and the fused block tail of
// k_block_tail.cu): one warp's share of y[t, r] = sum_k x[t, k] w[r, k] for TOK rows of x.
//  - Warp g of the G in the grid (kGemvWarps a block) owns rows g, g + G, g + 2G, ... (consecutive
//    rows on different SMs, so every SM gets an even share) and walks them as one stream of
//    chunks, a chunk being kGemvUnroll loads of 16 bytes per lane (4 KB). The loads of the next
//    chunk, in the same row or the next, are issued before the FMAs of the current one, also
//    across row ends (the reduction and store of a row overlap the next row's loads).
//  - The first chunk's loads are issued before the caller waits for its input (between()), so
//    they overlap whatever comes before (the weights are never written by a kernel).
//  - A row's per-lane partial sums meet by warp shuffles in a fixed order: no atomics, the same
//    bits every run and whichever warp owns the row. Rows past n and tokens past TOK are neither
//    read nor written.
//  - The fp32 sums are rounded to bf16 also when y is f32 (the logits): an HF model in bf16
//    returns bf16 logits, and its greedy pick breaks their ties by the lowest index.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/cuda_common.cuh"

namespace nanoinfer::cuda {

constexpr int kGemvWarps = 16;                // one block of 512 threads per SM
constexpr int kGemvUnroll = 8;                // 16-byte weight loads per lane per chunk
constexpr int kGemvChunk = 32 * kGemvUnroll;  // vectors of 8 weights per chunk

__device__ __forceinline__ void unpack8(const uint4& v, float* out) {
  const auto* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

template <bool kShared>
__device__ __forceinline__ uint4 load_x(const uint4* x, int i) {
  if constexpr (kShared)
    return x[i];
  else
    return __ldg(x + i);
}

// One warp's rows of y = x w^T, w: [n, k] bf16 (k a multiple of 8), x: [TOK, k] bf16 at x4 (shared
// memory when kShared, else global memory read through the L1). Called by every thread of every
// block: issues the first chunk's loads, runs between() (the caller waits for its inputs and
// stages x there; it must leave the block synchronised), then streams the rest.
template <int TOK, bool kShared, class Y, class Between>
__device__ __forceinline__ void gemv_rows(const __nv_bfloat16* w, int k, int n, const uint4* x4,
                                          Y* y, Between&& between) {
  const int lane = threadIdx.x % 32, vecs = k / 8;
  const int stride = static_cast<int>(gridDim.x) * kGemvWarps;
  int row = static_cast<int>((threadIdx.x / 32) * gridDim.x + blockIdx.x), base = 0;
  const uint4* w4 = reinterpret_cast<const uint4*>(w) + lane;
  float acc[TOK][2] = {};  // even and odd elements: two independent FMA chains

  // Chunk (r, b): vectors b + lane + 32u of row r; streamed (evict-first: read once per step).
  auto load = [&](uint4(&buf)[kGemvUnroll], int r, int b) {
    const uint4* p = w4 + int64_t{r} * vecs + b;
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u)
      buf[u] = r < n && b + lane + 32 * u < vecs ? __ldcs(p + 32 * u) : make_uint4(0, 0, 0, 0);
  };
  auto consume = [&](const uint4(&buf)[kGemvUnroll], int b) {
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int v = b + lane + 32 * u;  // past the row: w and x both read as zeros
      float wf[8];
      unpack8(buf[u], wf);
#pragma unroll
      for (int t = 0; t < TOK; ++t) {
        float xf[8];
        unpack8(v < vecs ? load_x<kShared>(x4, t * vecs + v) : make_uint4(0, 0, 0, 0), xf);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[t][e % 2] = fmaf(wf[e], xf[e], acc[t][e % 2]);
      }
    }
  };
  // Loads the chunk after (row, base) into nxt, then applies cur (holding (row, base)).
  auto step = [&](const uint4(&cur)[kGemvUnroll], uint4(&nxt)[kGemvUnroll]) {
    int next_row = row, next_base = base + kGemvChunk;
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

  uint4 buf0[kGemvUnroll], buf1[kGemvUnroll];
  load(buf0, row, 0);  // in flight while the caller waits for its inputs and stages x
  between();
  while (row < n) {  // unrolled by two so that the buffers swap without register copies
    step(buf0, buf1);
    if (row >= n) break;
    step(buf1, buf0);
  }
}

}  // namespace nanoinfer::cuda
