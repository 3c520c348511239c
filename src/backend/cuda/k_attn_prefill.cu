// Varlen prefill attention, flash style: one block per (query tile of one sequence, head). K/V
// tiles of the sequence's cache entries are staged in shared memory through its block table and
// each warp keeps an online softmax for its query rows, so scores never reach device memory.
// Handles any batch (mixed prefill and decode tokens, tree masks); decode-only batches take the
// split-K kernel instead.
#include <cfloat>

#include "backend/cuda/attn_common.cuh"
#include "backend/cuda/cuda_check.h"

namespace nanoinfer::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 8;
constexpr int kTileQ = kWarps * kRowsPerWarp;  // query rows per block
constexpr int kTileK = 32;                     // keys per shared-memory tile (one per lane)

// NI = ceil(head_dim / 32): output elements per lane (d = lane + 32 i).
template <class T, int NI>
__global__ void __launch_bounds__(kWarps * 32) prefill_kernel(const AttnArgs a, float q_scale) {
  const int seq = blockIdx.z, h = blockIdx.y;
  const int start = a.cu_seqlens[seq];
  const int n_new = a.cu_seqlens[seq + 1] - start;
  const int q0 = blockIdx.x * kTileQ;
  if (q0 >= n_new) return;
  const int rows = min(kTileQ, n_new - q0);
  const int ctx = a.context_lens[seq];
  const int first_new = ctx - n_new;
  const int D = a.head_dim;
  const int kvh = h / (a.heads / a.kv_heads);
  const int64_t stride = int64_t{a.heads + 2 * a.kv_heads} * D;
  const T* qkv = static_cast<const T*>(a.qkv);
  const T* kc = static_cast<const T*>(a.k_cache);
  const T* vc = static_cast<const T*>(a.v_cache);

  extern __shared__ float smem[];
  float* ks = smem;                   // [kTileK][D + 1] (padded: lane j reads row j)
  float* vs = ks + kTileK * (D + 1);  // [kTileK][D]
  float* qs = vs + kTileK * D;        // [kTileQ][D], pre-scaled

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  for (int idx = tid; idx < kTileQ * D; idx += blockDim.x) {
    const int r = idx / D, d = idx % D;
    qs[idx] =
        r < rows ? to_f32(qkv[(start + q0 + r) * stride + int64_t{h} * D + d]) * q_scale : 0.0F;
  }
  int kmax = -1;  // last key any row of the block may see
  for (int r = 0; r < rows; ++r) kmax = max(kmax, min(a.q_index[start + q0 + r], ctx - 1));
  int qi[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int row = warp * kRowsPerWarp + r;
    qi[r] = row < rows ? a.q_index[start + q0 + row] : -1;
  }
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][NI];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0F;
#pragma unroll
    for (int i = 0; i < NI; ++i) acc[r][i] = 0.0F;
  }

  for (int kt = 0; kt <= kmax; kt += kTileK) {
    __syncthreads();  // the previous tile is no longer read
    for (int idx = tid; idx < kTileK * D; idx += blockDim.x) {
      const int j = idx / D, d = idx % D, key = kt + j;
      float kv = 0.0F, vv = 0.0F;
      if (key <= kmax) {
        const int64_t slot = cache_slot(a, seq, key);
        const int64_t off = (slot * a.kv_heads + kvh) * D;
        kv = load_key(a, kc + off, slot, d);
        vv = to_f32(vc[off + d]);
      }
      ks[j * (D + 1) + d] = kv;
      vs[j * D + d] = vv;
    }
    __syncthreads();

    const int key = kt + lane;
    float sc[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) sc[r] = 0.0F;
    const float* qw = qs + warp * kRowsPerWarp * D;
    for (int d = 0; d < D; ++d) {
      const float kd = ks[lane * (D + 1) + d];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) sc[r] += qw[r * D + d] * kd;
    }
    float p[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const bool visible =
          key <= qi[r] && key < ctx && tree_visible(a, seq, n_new, first_new, qi[r], key);
      const float s = visible ? sc[r] : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(s));
      const float alpha = m_new == -INFINITY ? 1.0F : exp2f(m[r] - m_new);
      p[r] = m_new == -INFINITY ? 0.0F : exp2f(s - m_new);
      l[r] = l[r] * alpha + warp_sum(p[r]);
      m[r] = m_new;
#pragma unroll
      for (int i = 0; i < NI; ++i) acc[r][i] *= alpha;
    }
    for (int j = 0; j < kTileK; ++j) {
      float vj[NI];
#pragma unroll
      for (int i = 0; i < NI; ++i) {
        const int d = lane + 32 * i;
        vj[i] = d < D ? vs[j * D + d] : 0.0F;
      }
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const float pj = __shfl_sync(0xffffffffU, p[r], j);
#pragma unroll
        for (int i = 0; i < NI; ++i) acc[r][i] += pj * vj[i];
      }
    }
  }

  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int row = warp * kRowsPerWarp + r;
    if (row >= rows) continue;
    const float inv = l[r] > 0.0F ? 1.0F / l[r] : 0.0F;
#pragma unroll
    for (int i = 0; i < NI; ++i) {
      const int d = lane + 32 * i;
      if (d < D)
        out[(start + q0 + row) * int64_t{a.heads} * D + int64_t{h} * D + d] =
            from_f32<T>(acc[r][i] * inv);
    }
  }
}

template <class T, int NI>
void launch_prefill(const AttnArgs& a, int max_new_tokens, cudaStream_t s) {
  const size_t smem =
      sizeof(float) * (kTileK * (a.head_dim + 1) + kTileK * a.head_dim + kTileQ * a.head_dim);
  static bool attr_set = false;  // per instantiation; the limit covers the largest head_dim
  if (!attr_set) {
    NI_CUDA_CHECK(cudaFuncSetAttribute(
        prefill_kernel<T, NI>, cudaFuncAttributeMaxDynamicSharedMemorySize,
        static_cast<int>(sizeof(float) * (3 * kTileK + kTileQ) * 32 * NI + 256)));
    attr_set = true;
  }
  const dim3 grid((max_new_tokens + kTileQ - 1) / kTileQ, a.heads, a.seqs);
  const float q_scale = kLog2e / sqrtf(static_cast<float>(a.head_dim));
  prefill_kernel<T, NI><<<grid, kWarps * 32, smem, s>>>(a, q_scale);
  NI_CUDA_LAUNCH_CHECK("attention_prefill");
}

}  // namespace

void attention_prefill(const AttnArgs& a, int max_new_tokens, cudaStream_t s) {
  if (a.tokens == 0) return;
  if (a.head_dim > 256 || a.head_dim % 2 != 0)
    fail("attention: head_dim " + std::to_string(a.head_dim) + " is not supported (even, <= 256)");
  const int ni = (a.head_dim + 31) / 32;
  NI_DISPATCH_FLOAT(a.dt, T, {
    if (ni == 1)
      launch_prefill<T, 1>(a, max_new_tokens, s);
    else if (ni == 2)
      launch_prefill<T, 2>(a, max_new_tokens, s);
    else if (ni <= 4)
      launch_prefill<T, 4>(a, max_new_tokens, s);
    else
      launch_prefill<T, 8>(a, max_new_tokens, s);
  });
}

}  // namespace nanoinfer::cuda
