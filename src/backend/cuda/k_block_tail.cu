// The tail of a decode block in one persistent kernel: from the attention's output to the next
// block's qkv, four GEMVs with the small ops between them done in each block's shared memory.
//   proj = attn o^T;   h = residual + proj;   x = rmsnorm(h) * mlp_norm
//   gu = x gate_up^T;  x = silu(gu[:F]) * gu[F:]
//   proj = x down^T;   h += proj;             x = rmsnorm(h) * next_norm
//   qkv = x next_qkv^T (when given);          residual = h
// Separate kernels leave the memory idle at every product's end: the last rows drain, the next
// kernel launches, and its blocks cannot start on an SM before the GEMV ahead leaves it (one
// 512-thread block fills the register file). Here one block per SM stays for all four products;
// when a warp is done with its rows of one product it issues its first loads of the next, and
// the blocks meet at a grid-wide barrier before reading what the others wrote.
//  - Every block keeps all of h in its shared memory and works out the norms itself from the
//    products it reads back (a few KB from the L2), so nothing but the products crosses blocks.
//  - Bit for bit the kernels it replaces: the GEMVs are gemv_rows.cuh's, the norm's sums are
//    taken in rmsnorm's order (a thread per 8 features, hidden <= 4096), and the per-element
//    formulas are cuda_common.cuh's, as theirs. The GPU tests compare the two paths exactly.
//  - The barrier needs every block resident at once: one block per SM, launched cooperatively.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdio>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/gemv_rows.cuh"
#include "backend/cuda/kernels.h"

namespace nanoinfer::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = kGemvWarps * 32;

struct alignas(16) Vec8 {
  bf16 x[8];
};

// All blocks of the grid meet; what any block wrote before is visible to every block after.
// bar[0] counts arrivals, bar[1] is the generation: the last block to arrive resets the count
// and moves the generation on, so the pair is ready for the next barrier and the next launch.
__device__ void grid_barrier(unsigned* bar) {
  __syncthreads();
  if (threadIdx.x == 0) {
    volatile unsigned* gen = bar + 1;
    const unsigned g = *gen;  // cannot move on before this block arrives
    __threadfence();          // the block's writes (ordered before by the barrier) go first
    if (atomicAdd(bar, 1U) == gridDim.x - 1) {
      atomicExch(bar, 0U);
      __threadfence();
      atomicAdd(bar + 1, 1U);
    } else {
      while (*gen == g) {
      }
    }
    __threadfence();
  }
  __syncthreads();
}

// x[t] = rmsnorm(h[t]) * w where h[t] = base[t] + add[t] (rounded to bf16; also stored in h).
// Thread i owns features 8i..8i+7 as rmsnorm_kernel does for rows of up to 512 vectors, so the
// sums, and the bits, are that kernel's. add, and base when kGlobalBase, are read from the L2.
template <int TOK, bool kGlobalBase>
__device__ void add_norm(const bf16* base, const bf16* add, const bf16* w, float eps, int hidden,
                         bf16* h, bf16* x) {
  const int i = static_cast<int>(threadIdx.x), vecs = hidden / 8;
  Vec8 g{};
  if (i < vecs) g = reinterpret_cast<const Vec8*>(w)[i];
#pragma unroll
  for (int t = 0; t < TOK; ++t) {
    Vec8 v{};
    float ss = 0.0F;
    if (i < vecs) {
      const auto* base4 = reinterpret_cast<const uint4*>(base + t * hidden) + i;
      const uint4 au = kGlobalBase ? __ldcg(base4) : *base4;
      const uint4 bu = __ldcg(reinterpret_cast<const uint4*>(add + t * hidden) + i);
      const Vec8& a = *reinterpret_cast<const Vec8*>(&au);
      const Vec8& b = *reinterpret_cast<const Vec8*>(&bu);
#pragma unroll
      for (int e = 0; e < 8; ++e) v.x[e] = __float2bfloat16_rn(to_f32(a.x[e]) + to_f32(b.x[e]));
      reinterpret_cast<Vec8*>(h + t * hidden)[i] = v;
#pragma unroll
      for (int e = 0; e < 8; ++e) ss += to_f32(v.x[e]) * to_f32(v.x[e]);
    }
    const float inv = rms_inverse(block_sum(ss), hidden, eps);
    if (i < vecs) {
      Vec8 r;
#pragma unroll
      for (int e = 0; e < 8; ++e) r.x[e] = rmsnorm_out<bf16>(to_f32(v.x[e]), inv, to_f32(g.x[e]));
      reinterpret_cast<Vec8*>(x + t * hidden)[i] = r;
    }
  }
}

// x[t] = silu(gu[t, :F]) * gu[t, F:], rounded as silu_mul_kernel rounds; a thread's loads all
// issued before its arithmetic (F a multiple of 8).
template <int TOK>
__device__ void stage_silu_mul(const bf16* gu, int ffn, bf16* x) {
  constexpr int kBatch = 4;
  const int fv = ffn / 8, n = TOK * fv;
  const auto* gu4 = reinterpret_cast<const uint4*>(gu);
  for (int v0 = static_cast<int>(threadIdx.x); v0 < n; v0 += kBatch * kThreads) {
    uint4 g[kBatch], u[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int v = v0 + j * kThreads, t = v / fv, f = v - t * fv;
      if (v >= n) continue;
      g[j] = __ldcg(gu4 + int64_t{t} * 2 * fv + f);  // written by other blocks: from the L2
      u[j] = __ldcg(gu4 + int64_t{t} * 2 * fv + fv + f);
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int v = v0 + j * kThreads;
      if (v >= n) continue;
      const auto& gv = *reinterpret_cast<const Vec8*>(&g[j]);
      const auto& uv = *reinterpret_cast<const Vec8*>(&u[j]);
      Vec8 r;
#pragma unroll
      for (int e = 0; e < 8; ++e) r.x[e] = silu_mul_out<bf16>(to_f32(gv.x[e]), to_f32(uv.x[e]));
      reinterpret_cast<Vec8*>(x)[v] = r;
    }
  }
}

template <int TOK>
__global__ void __launch_bounds__(kThreads, 1) block_tail_kernel(const BlockTailArgs a) {
  extern __shared__ uint4 smem[];
  uint4* h4 = smem;                     // h: [TOK, hidden]
  uint4* x4 = h4 + TOK * a.hidden / 8;  // x: [TOK, max(attn_dim, hidden, ffn)]
  auto* h = reinterpret_cast<bf16*>(h4);
  auto* x = reinterpret_cast<bf16*>(x4);
  const int tid = static_cast<int>(threadIdx.x);
  const auto in = [](const void* p) { return static_cast<const bf16*>(p); };
  const auto out = [](void* p) { return static_cast<bf16*>(p); };

  gemv_rows<TOK, true>(in(a.w_o), a.attn_dim, a.hidden, x4, out(a.proj), [&] {
    pdl_wait();  // attn comes from the kernel ahead
    for (int i = tid; i < TOK * a.attn_dim / 8; i += kThreads)
      x4[i] = __ldg(reinterpret_cast<const uint4*>(a.attn) + i);
    __syncthreads();
  });
  gemv_rows<TOK, true>(in(a.w_gate_up), a.hidden, 2 * a.ffn, x4, out(a.gate_up), [&] {
    grid_barrier(a.barrier);
    add_norm<TOK, true>(in(a.residual), in(a.proj), in(a.mlp_norm), a.eps, a.hidden, h, x);
    __syncthreads();
  });
  gemv_rows<TOK, true>(in(a.w_down), a.ffn, a.hidden, x4, out(a.proj), [&] {
    grid_barrier(a.barrier);
    stage_silu_mul<TOK>(in(a.gate_up), a.ffn, x);
    __syncthreads();
  });
  gemv_rows<TOK, true>(
      in(a.w_qkv), a.hidden, a.w_qkv != nullptr ? a.qkv_dim : 0, x4, out(a.qkv), [&] {
        grid_barrier(a.barrier);
        add_norm<TOK, false>(h, in(a.proj), in(a.next_norm), a.eps, a.hidden, h, x);
        __syncthreads();
        if (blockIdx.x == 0)
          for (int i = tid; i < TOK * a.hidden / 8; i += kThreads) {
            reinterpret_cast<uint4*>(a.residual)[i] = h4[i];
            reinterpret_cast<uint4*>(a.x)[i] = x4[i];
          }
      });
}

// Dynamic shared memory a block may take: the opt-in limit less the kernel's static arrays.
size_t smem_limit() {
  return static_cast<size_t>(device_limits().smem_optin) - 1024;
}

template <int TOK>
void launch(const BlockTailArgs& a, cudaStream_t s) {
  const DeviceLimits& m = device_limits();
  const size_t smem = sizeof(bf16) * TOK * (a.hidden + std::max({a.attn_dim, a.hidden, a.ffn}));
  [[maybe_unused]] static const bool once =
      (allow_dynamic_smem(block_tail_kernel<TOK>, smem_limit()), true);
  // Cooperative: every block resident at once, which the barrier needs. Programmatic too where
  // the driver takes both, so that the first weight loads overlap the attention's end.
  static bool programmatic = true;
  cudaLaunchAttribute attrs[2] = {};
  attrs[0].id = cudaLaunchAttributeCooperative;
  attrs[0].val.cooperative = 1;
  attrs[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attrs[1].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(m.sms));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = attrs;
  cfg.numAttrs = programmatic ? 2 : 1;
  if (programmatic && cudaLaunchKernelEx(&cfg, block_tail_kernel<TOK>, a) == cudaSuccess) return;
  if (programmatic) {
    const cudaError_t e = cudaGetLastError();  // (not sticky)
    std::fprintf(stderr, "nanoinfer: block_tail launches without programmatic serialization (%s)\n",
                 cudaGetErrorString(e));
    programmatic = false;
    cfg.numAttrs = 1;
  }
  NI_CUDA_CHECK(cudaLaunchKernelEx(&cfg, block_tail_kernel<TOK>, a));
}

}  // namespace

bool block_tail_fits(const BlockTailArgs& b, int tokens) {
  const auto ok = [](int d) { return d > 0 && d % 8 == 0; };
  const int widest = std::max({b.attn_dim, b.hidden, b.ffn});
  // The norm's thread-per-8-features layout is rmsnorm_kernel's for rows of up to 512 vectors.
  return tokens >= 1 && tokens <= kGemvMaxTokens && ok(b.attn_dim) && ok(b.hidden) && ok(b.ffn) &&
         b.hidden / 8 <= kThreads && (b.w_qkv == nullptr || b.qkv_dim >= 1) &&
         sizeof(bf16) * tokens * (b.hidden + widest) <= smem_limit();
}

void block_tail_bf16(const BlockTailArgs& b, int tokens, cudaStream_t s) {
  NI_ASSERT(block_tail_fits(b, tokens));
  using Launch = void (*)(const BlockTailArgs&, cudaStream_t);
  static constexpr Launch kByTokens[kGemvMaxTokens] = {launch<1>, launch<2>, launch<3>, launch<4>};
  kByTokens[tokens - 1](b, s);
}

}  // namespace nanoinfer::cuda
