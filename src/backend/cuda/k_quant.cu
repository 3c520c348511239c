// Products and gathers over GGUF blocks kept on the device (quant_units.cuh's formats).
//  - repack_blocks puts GGUF's blocks into the device layout (quant_units.cuh: one plane per
//    field, so that every load is aligned and a warp's loads are contiguous).
//  - dequant_rows widens whole rows, value for value as the loader does (rounded to bf16 once
//    when the output is bf16): the embedding gather, and the weights of a product of more rows
//    than the GEMV takes, widened into a scratch matrix for cuBLASLt.
//  - gemv_quant: a few rows of x against the blocks, read once. One block of 16 warps per SM;
//    warp g of the G in the grid owns rows g, g + G, ...; lane l takes units (32 values) l,
//    l + 32, ... of the row, kUnroll of them loaded before any is used (H200, 2026-12-03: a
//    stream of two-unit chunks with the next one's loads issued before the current one's
//    arithmetic ran 35 % slower than these four-unit batches). x is staged in shared
//    memory (f32 for one row, else bf16) in planes of 16-byte words, lanes on consecutive words,
//    with each 16 values' sum when the format has offsets, so a unit costs sum_e q_e x_e per 16
//    values and one a * s - b * sum(x) per pair: value = a * q - b. Quants become floats by
//    a byte permute and a subtraction, not by the quarter-rate conversion instruction.
//  - A row's sums are rounded to bf16, also into f32 y (the logits), as gemv_bf16 does.
#include <cuda_bf16.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/quant_units.cuh"

namespace nanoinfer::cuda {
namespace {

using quant::Unit;

// 32 values at o (64-byte aligned) in 16-byte stores.
__device__ __forceinline__ void store32(float* o, const float* v) {
#pragma unroll
  for (int i = 0; i < 8; ++i)
    reinterpret_cast<float4*>(o)[i] =
        make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
}
__device__ __forceinline__ void store32(__nv_bfloat16* o, const float* v) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    uint4 pack;
    auto* h = reinterpret_cast<__nv_bfloat162*>(&pack);
#pragma unroll
    for (int e = 0; e < 4; ++e)
      h[e] = __floats2bfloat162_rn(v[8 * i + 2 * e], v[8 * i + 2 * e + 1]);
    reinterpret_cast<uint4*>(o)[i] = pack;
  }
}

template <class F, class Out>
__global__ void dequant_rows_kernel(quant::Planes P, int64_t src_rows, int k, const int32_t* ids,
                                    Out* out) {
  const int64_t r = blockIdx.x;
  const int64_t src = ids != nullptr ? ids[r] : r;
  const int units = k / 32;
  Out* o = out + r * k;
  for (int u = static_cast<int>(threadIdx.x); u < units; u += static_cast<int>(blockDim.x)) {
    float v[32] = {};
    if (src >= 0 && src < src_rows) {
      const Unit q = quant::row_unit<F>(P, src, units, u);
#pragma unroll
      for (int e = 0; e < 32; ++e) v[e] = quant::value(q, e);
    }
    store32(o + 32 * u, v);
  }
}

// GGUF's blocks (src) into the device layout (dst): byte `off` of block i goes to its plane.
struct PlaneTable {
  quant::Plane p[4];
  int count, block_bytes;
};

__global__ void repack_kernel(const uint8_t* src, int64_t blocks, PlaneTable tab, uint8_t* dst) {
  const int64_t bytes = blocks * tab.block_bytes;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < bytes;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = t / tab.block_bytes;
    const int off = static_cast<int>(t % tab.block_bytes);
    int64_t base = 0;
    for (int k = 0; k < tab.count; ++k) {
      const quant::Plane pl = tab.p[k];
      if (off >= pl.offset && off < pl.offset + pl.size)
        dst[base + i * pl.size + off - pl.offset] = src[t];
      base += blocks * pl.size;
    }
  }
}

constexpr int kWarps = 16;  // one block of 512 threads per SM
constexpr int kUnroll = 4;  // units a lane loads before using the first

// Where a block keeps x: in shared memory as f32 (one row: no conversion per weight row) or as
// bf16, in planes of 16-byte words (word p of unit u for token t at (t * planes + p) * units + u,
// so that a warp's lanes read consecutive words), or read from global memory through the L1.
enum class XIn { kSharedF32, kSharedBf16, kGlobal };

// x's 8 values 8p .. 8p + 7 of unit u for token t, as floats.
template <XIn kX>
__device__ __forceinline__ void x8(const uint4* xs, const __nv_bfloat16* xg, int units, int k,
                                   int t, int u, int p, float* out) {
  if constexpr (kX == XIn::kSharedF32) {
    const auto* x4 = reinterpret_cast<const float4*>(xs);
    const float4 a = x4[(t * 8 + 2 * p) * units + u], b = x4[(t * 8 + 2 * p + 1) * units + u];
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
    out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
    return;
  }
  if constexpr (kX == XIn::kSharedBf16)
    unpack8(xs[(t * 4 + p) * units + u], out);
  else
    unpack8(__ldg(reinterpret_cast<const uint4*>(xg + int64_t{t} * k + 32 * u + 8 * p)), out);
}

template <class F, int TOK, XIn kX, class Y>
__global__ void __launch_bounds__(kWarps * 32, 1)
    gemv_quant_kernel(const __nv_bfloat16* x, quant::Planes P, Y* y, int tokens, int k, int n) {
  extern __shared__ uint4 smem[];  // x in kX's planes, then [TOK][2 units] sums of 16 values
  const int lane = threadIdx.x % 32, units = k / 32;
  const int stride = static_cast<int>(gridDim.x) * kWarps;
  constexpr int kXWords = kX == XIn::kSharedF32 ? 8 : (kX == XIn::kSharedBf16 ? 4 : 0);
  float* sums = reinterpret_cast<float*>(smem + kXWords * TOK * units);
  const int first = static_cast<int>((threadIdx.x / 32) * gridDim.x + blockIdx.x);
  float acc[TOK] = {};

  // acc[t] += unit u (quants q) . x[t]: four independent FMA chains per unit.
  auto apply = [&](const Unit& q, int u) {
    float qf[32];
#pragma unroll
    for (int e = 0; e < 32; ++e) qf[e] = quant::quant(q, e);
#pragma unroll
    for (int t = 0; t < TOK; ++t) {
      float s[4] = {};
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        float xf[8];
        x8<kX>(smem, x, units, k, t, u, p, xf);
#pragma unroll
        for (int e = 0; e < 8; ++e) s[p] = fmaf(qf[8 * p + e], xf[e], s[p]);
      }
      float d = fmaf(q.a[0], s[0] + s[1], q.a[1] * (s[2] + s[3]));
      if constexpr (F::kOffset) {
        const float2 g = reinterpret_cast<const float2*>(sums)[t * units + u];
        d -= fmaf(q.b[0], g.x, q.b[1] * g.y);
      }
      acc[t] += d;
    }
  };

  pdl_wait();  // x belongs to the kernel before this one
  for (int i = static_cast<int>(threadIdx.x); (kXWords > 0 || F::kOffset) && i < TOK * units;
       i += kWarps * 32) {
    const int t = i / units, u = i % units;
    float part[2] = {};
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      uint4 v = make_uint4(0, 0, 0, 0);
      if (t < tokens) v = __ldg(reinterpret_cast<const uint4*>(x + int64_t{t} * k + 32 * u) + p);
      float f[8];
      unpack8(v, f);
#pragma unroll
      for (int e = 0; e < 8; e += 2) part[p / 2] += f[e] + f[e + 1];
      if constexpr (kX == XIn::kSharedF32) {
        auto* d = reinterpret_cast<float4*>(smem);
        d[(t * 8 + 2 * p) * units + u] = make_float4(f[0], f[1], f[2], f[3]);
        d[(t * 8 + 2 * p + 1) * units + u] = make_float4(f[4], f[5], f[6], f[7]);
      } else if constexpr (kX == XIn::kSharedBf16) {
        smem[(t * 4 + p) * units + u] = v;
      }
    }
    if constexpr (F::kOffset) {
      sums[2 * i] = part[0];
      sums[2 * i + 1] = part[1];
    }
  }
  __syncthreads();

  for (int row = first; row < n; row += stride) {
    int u0 = lane;
    for (; u0 + 32 * (kUnroll - 1) < units; u0 += 32 * kUnroll) {  // kUnroll loads, then use
      Unit q[kUnroll];
#pragma unroll
      for (int i = 0; i < kUnroll; ++i) q[i] = quant::row_unit<F>(P, row, units, u0 + 32 * i);
#pragma unroll
      for (int i = 0; i < kUnroll; ++i) apply(q[i], u0 + 32 * i);
    }
    for (; u0 < units; u0 += 32) apply(quant::row_unit<F>(P, row, units, u0), u0);
#pragma unroll
    for (int t = 0; t < TOK; ++t) {
      const float sum = warp_sum(acc[t]);
      if (lane == 0 && t < tokens)
        y[int64_t{t} * n + row] = from_f32<Y>(round_to<__nv_bfloat16>(sum));
      acc[t] = 0.0F;
    }
  }
}

template <class F, int TOK, class Y>
void launch_gemv(const void* x, const void* w, void* y, int tokens, int k, int n, cudaStream_t s) {
  const DeviceLimits& m = device_limits();
  const auto grid = static_cast<unsigned>(std::min(m.sms, (n + kWarps - 1) / kWarps));
  const size_t units = static_cast<size_t>(k / 32), limit = static_cast<size_t>(m.smem_optin);
  const size_t sums = F::kOffset ? sizeof(float) * 2 * TOK * units : 0;
  const size_t bf16 = sizeof(uint4) * 4 * TOK * units + sums;
  const quant::Planes P = quant::planes_of<F>(w, int64_t{n} * (k / F::kValues));
  auto go = [&](auto kernel, size_t smem) {
    [[maybe_unused]] static const bool once = (allow_dynamic_smem(kernel, m.smem_optin), true);
    launch_pdl(kernel, dim3(grid), dim3(kWarps * 32), smem, s, static_cast<const __nv_bfloat16*>(x),
               P, static_cast<Y*>(y), tokens, k, n);
    NI_CUDA_LAUNCH_CHECK("gemv_quant");
  };
  if constexpr (TOK == 1) {
    if (2 * bf16 - sums <= limit) {
      go(gemv_quant_kernel<F, TOK, XIn::kSharedF32, Y>, 2 * bf16 - sums);
      return;
    }
  }
  if (bf16 <= limit)
    go(gemv_quant_kernel<F, TOK, XIn::kSharedBf16, Y>, bf16);
  else
    go(gemv_quant_kernel<F, TOK, XIn::kGlobal, Y>, sums);
}

template <class F, class Y>
void gemv_tokens(const void* x, const void* w, void* y, int tokens, int k, int n, cudaStream_t s) {
  if (tokens == 1)
    launch_gemv<F, 1, Y>(x, w, y, tokens, k, n, s);
  else if (tokens == 2)
    launch_gemv<F, 2, Y>(x, w, y, tokens, k, n, s);
  else if (tokens <= 4)
    launch_gemv<F, 4, Y>(x, w, y, tokens, k, n, s);
  else
    launch_gemv<F, 8, Y>(x, w, y, tokens, k, n, s);
}

}  // namespace

bool quant_kept(DType w_dt) {
  return quant::with_format(w_dt, [](auto) {});
}

void repack_blocks(DType w_dt, const void* src, int64_t blocks, void* dst, cudaStream_t s) {
  const bool known = quant::with_format(w_dt, [&](auto f) {
    using F = decltype(f);
    const int64_t bytes = blocks * F::kBytes;
    const auto grid = static_cast<unsigned>(std::min<int64_t>((bytes + 255) / 256, 65536));
    PlaneTable tab{{}, F::kPlaneCount, F::kBytes};
    for (int k = 0; k < F::kPlaneCount; ++k) tab.p[k] = F::kPlanes[k];
    if (bytes > 0)
      repack_kernel<<<grid, 256, 0, s>>>(static_cast<const uint8_t*>(src), blocks, tab,
                                         static_cast<uint8_t*>(dst));
    NI_CUDA_LAUNCH_CHECK("repack_blocks");
  });
  if (!known)
    fail(std::string("repack_blocks: the device keeps no ") + dtype_name(w_dt) + " blocks");
}

void dequant_rows(DType w_dt, const void* w, int64_t src_rows, int64_t k, const int32_t* ids,
                  int64_t rows, DType out_dt, void* out, cudaStream_t s) {
  NI_ASSERT(k % dtype_block(w_dt) == 0);
  if (rows == 0) return;
  const int threads = static_cast<int>(std::min<int64_t>(256, (k / 32 + 31) / 32 * 32));
  const bool known = quant::with_format(w_dt, [&](auto f) {
    using F = decltype(f);
    const quant::Planes P = quant::planes_of<F>(w, src_rows * (k / F::kValues));
    NI_DISPATCH_FLOAT(out_dt, T,
                      dequant_rows_kernel<F, T><<<static_cast<unsigned>(rows), threads, 0, s>>>(
                          P, src_rows, static_cast<int>(k), ids, static_cast<T*>(out)));
    NI_CUDA_LAUNCH_CHECK("dequant_rows");
  });
  if (!known)
    fail(std::string("dequant_rows: the device keeps no ") + dtype_name(w_dt) + " blocks");
}

void gemv_quant(DType w_dt, const void* x, const void* w, DType y_dt, void* y, int tokens, int k,
                int n, cudaStream_t s) {
  NI_ASSERT(tokens >= 1 && tokens <= kQuantGemvMaxTokens && n >= 1 && k % 32 == 0);
  const bool known = quant::with_format(w_dt, [&](auto f) {
    using F = decltype(f);
    if (y_dt == DType::F32)
      gemv_tokens<F, float>(x, w, y, tokens, k, n, s);
    else
      gemv_tokens<F, __nv_bfloat16>(x, w, y, tokens, k, n, s);
  });
  if (!known) fail(std::string("gemv_quant: the device keeps no ") + dtype_name(w_dt) + " blocks");
}

}  // namespace nanoinfer::cuda
