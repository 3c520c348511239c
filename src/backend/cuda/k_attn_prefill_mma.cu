// Prefill attention on the tensor cores (bf16, head_dim 64 or 128): the flash-attention-2 loop
// with WMMA 16x16x16 tiles. A block takes 64 query rows of one (sequence, head), 16 per warp;
// K/V tiles of 64 cache entries are gathered through the block table into shared memory. Per
// tile each warp computes S = Q K^T on the tensor cores, runs the online softmax on its rows
// (two lanes per row), and adds P V, also on the tensor cores, into fp32 registers.
#include <mma.h>

#include "backend/cuda/attn_common.cuh"
#include "backend/cuda/cuda_check.h"

namespace nanoinfer::cuda {
namespace {

namespace wmma = nvcuda::wmma;
using bf16 = __nv_bfloat16;

constexpr int kWarps = 4;
constexpr int kTileQ = 16 * kWarps;
constexpr int kTileK = 64;

template <int D>
struct Smem {
  static constexpr int kQ = D + 8, kS = kTileK + 4, kP = kTileK + 8, kO = D + 4;  // row strides
  static constexpr size_t q = 0;
  static constexpr size_t k = q + sizeof(bf16) * kTileQ * kQ;
  static constexpr size_t v = k + sizeof(bf16) * kTileK * kQ;
  static constexpr size_t s = v + sizeof(bf16) * kTileK * kQ;
  static constexpr size_t p = s + sizeof(float) * kTileQ * kS;
  static constexpr size_t o = p + sizeof(bf16) * kTileQ * kP;
  static constexpr size_t bytes = o + sizeof(float) * kTileQ * kO;
};

template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    prefill_mma_kernel(const AttnArgs a, float scale_log2) {
  using L = Smem<D>;
  const int seq = blockIdx.z, h = blockIdx.y;
  const int start = a.cu_seqlens[seq];
  const int n_new = a.cu_seqlens[seq + 1] - start;
  const int q0 = blockIdx.x * kTileQ;
  if (q0 >= n_new) return;
  const int rows = min(kTileQ, n_new - q0);
  const int ctx = a.context_lens[seq];
  const int first_new = ctx - n_new;
  const int kvh = h / (a.heads / a.kv_heads);
  const int64_t stride = int64_t{a.heads + 2 * a.kv_heads} * D;
  const bf16* qkv = static_cast<const bf16*>(a.qkv);
  const bf16* kc = static_cast<const bf16*>(a.k_cache);
  const bf16* vc = static_cast<const bf16*>(a.v_cache);

  extern __shared__ __align__(128) unsigned char smem[];
  bf16* qs = reinterpret_cast<bf16*>(smem + L::q);
  bf16* ks = reinterpret_cast<bf16*>(smem + L::k);
  bf16* vs = reinterpret_cast<bf16*>(smem + L::v);
  float* ss = reinterpret_cast<float*>(smem + L::s);
  bf16* ps = reinterpret_cast<bf16*>(smem + L::p);
  float* os = reinterpret_cast<float*>(smem + L::o);

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  constexpr int kVec = 8;  // bf16 per 16-byte load
  for (int idx = tid; idx < kTileQ * D / kVec; idx += blockDim.x) {
    const int r = idx / (D / kVec), c = (idx % (D / kVec)) * kVec;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < rows)
      v = *reinterpret_cast<const uint4*>(qkv + (start + q0 + r) * stride + int64_t{h} * D + c);
    *reinterpret_cast<uint4*>(qs + r * L::kQ + c) = v;
  }
  int kmax = -1;
  for (int r = 0; r < rows; ++r) kmax = max(kmax, min(a.q_index[start + q0 + r], ctx - 1));

  // Lane (row = lane / 2, half = lane % 2) owns row `row` of the warp's 16 and D/2 columns.
  const int my_row = warp * 16 + lane / 2, col0 = (lane % 2) * (D / 2);
  const int qi = my_row < rows ? a.q_index[start + q0 + my_row] : -1;
  float m = -INFINITY, l = 0.0F;
  float acc[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) acc[i] = 0.0F;

  __syncthreads();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> qf[D / 16];
#pragma unroll
  for (int k = 0; k < D / 16; ++k)
    wmma::load_matrix_sync(qf[k], qs + warp * 16 * L::kQ + k * 16, L::kQ);

  for (int kt = 0; kt <= kmax; kt += kTileK) {
    __syncthreads();  // the previous tile's K/V are no longer read
    for (int idx = tid; idx < kTileK * D / kVec; idx += blockDim.x) {
      const int j = idx / (D / kVec), c = (idx % (D / kVec)) * kVec, key = kt + j;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (key <= kmax) {
        const int64_t slot = cache_slot(a, seq, key);
        const int64_t off = (slot * a.kv_heads + kvh) * D + c;
        vv = *reinterpret_cast<const uint4*>(vc + off);
        if (!a.rotate_keys) {
          kv = *reinterpret_cast<const uint4*>(kc + off);
        } else {
          bf16 e[kVec];
#pragma unroll
          for (int i = 0; i < kVec; ++i)
            e[i] = __float2bfloat16_rn(load_key(a, kc + off - c, slot, c + i));
          kv = *reinterpret_cast<const uint4*>(e);
        }
      }
      *reinterpret_cast<uint4*>(ks + j * L::kQ + c) = kv;
      *reinterpret_cast<uint4*>(vs + j * L::kQ + c) = vv;
    }
    __syncthreads();

    // S = Q K^T for this warp's 16 rows (K row-major is K^T column-major).
    float* sw = ss + warp * 16 * L::kS;
#pragma unroll
    for (int n = 0; n < kTileK / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> sf;
      wmma::fill_fragment(sf, 0.0F);
#pragma unroll
      for (int k = 0; k < D / 16; ++k) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> kf;
        wmma::load_matrix_sync(kf, ks + n * 16 * L::kQ + k * 16, L::kQ);
        wmma::mma_sync(sf, qf[k], kf, sf);
      }
      wmma::store_matrix_sync(sw + n * 16, sf, L::kS, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax on the lane's half row of 32 scores; P goes to shared memory as bf16.
    const float* srow = sw + (lane / 2) * L::kS + (lane % 2) * 32;
    bf16* prow = ps + my_row * L::kP + (lane % 2) * 32;
    float s[32];
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      const int key = kt + (lane % 2) * 32 + j;
      const bool visible =
          key <= qi && key < ctx && tree_visible(a, seq, n_new, first_new, qi, key);
      s[j] = visible ? srow[j] * scale_log2 : -INFINITY;
      tile_max = fmaxf(tile_max, s[j]);
    }
    const float m_new = fmaxf(m, fmaxf(tile_max, __shfl_xor_sync(0xffffffffU, tile_max, 1)));
    const float alpha = m_new == -INFINITY ? 1.0F : exp2f(m - m_new);
    float psum = 0.0F;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      const bf16 p = __float2bfloat16_rn(m_new == -INFINITY ? 0.0F : exp2f(s[j] - m_new));
      prow[j] = p;
      psum += __bfloat162float(p);
    }
    l = l * alpha + psum + __shfl_xor_sync(0xffffffffU, psum, 1);
    m = m_new;
    __syncwarp();

    // O_tile = P V on the tensor cores, then acc = acc * alpha + O_tile.
    float* ow = os + warp * 16 * L::kO;
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> of;
      wmma::fill_fragment(of, 0.0F);
#pragma unroll
      for (int k = 0; k < kTileK / 16; ++k) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> pf;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> vf;
        wmma::load_matrix_sync(pf, ps + warp * 16 * L::kP + k * 16, L::kP);
        wmma::load_matrix_sync(vf, vs + k * 16 * L::kQ + n * 16, L::kQ);
        wmma::mma_sync(of, pf, vf, of);
      }
      wmma::store_matrix_sync(ow + n * 16, of, L::kO, wmma::mem_row_major);
    }
    __syncwarp();
    const float* orow = ow + (lane / 2) * L::kO + col0;
#pragma unroll
    for (int i = 0; i < D / 2; ++i) acc[i] = acc[i] * alpha + orow[i];
  }

  if (my_row < rows) {
    const float inv = l > 0.0F ? 1.0F / l : 0.0F;
    bf16* out = static_cast<bf16*>(a.out) + (start + q0 + my_row) * int64_t{a.heads} * D +
                int64_t{h} * D + col0;
#pragma unroll
    for (int i = 0; i < D / 2; ++i) out[i] = __float2bfloat16_rn(acc[i] * inv);
  }
}

template <int D>
void launch(const AttnArgs& a, int max_new_tokens, cudaStream_t s) {
  static bool attr_set = false;
  if (!attr_set) {
    NI_CUDA_CHECK(cudaFuncSetAttribute(prefill_mma_kernel<D>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(Smem<D>::bytes)));
    attr_set = true;
  }
  const dim3 grid((max_new_tokens + kTileQ - 1) / kTileQ, a.heads, a.seqs);
  const float scale_log2 = kLog2e / sqrtf(static_cast<float>(D));
  prefill_mma_kernel<D><<<grid, kWarps * 32, Smem<D>::bytes, s>>>(a, scale_log2);
  NI_CUDA_LAUNCH_CHECK("attention_prefill_mma");
}

}  // namespace

bool attention_prefill_mma(const AttnArgs& a, int max_new_tokens, cudaStream_t s) {
  if (a.dt != DType::BF16) return false;
  if (a.head_dim == 64) {
    launch<64>(a, max_new_tokens, s);
    return true;
  }
  if (a.head_dim == 128) {
    launch<128>(a, max_new_tokens, s);
    return true;
  }
  return false;
}

}  // namespace nanoinfer::cuda
