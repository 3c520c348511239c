// RoPE fused with the cache write: one pass over a token's qkv row rotates q (always) and k
// (PostRope), and stores k and v at the token's slot with the position it was written at.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.h"

namespace nanoinfer::cuda {
namespace {

constexpr int kThreads = 64;  // a pair per thread up to head_dim 128

// One block per (token, head) of the qkv row: q and k heads rotate their (i, i + D/2) pairs,
// one pair per thread; v heads copy. k and v go to the cache at the token's slot.
template <class T>
__global__ void rope_store_kv_kernel(T* qkv, int heads, int kv_heads, int head_dim,
                                     const int32_t* positions, const int32_t* slots,
                                     const float* cos_sin, T* k_cache, T* v_cache,
                                     int32_t* slot_pos, bool rotate_k) {
  pdl_trigger();  // decode attention may start copying older cache entries
  pdl_wait();     // qkv comes from the kernel before (launched as its programmatic dependent)
  const int t = blockIdx.x, h = blockIdx.y;
  const int half = head_dim / 2;
  T* x = qkv + t * int64_t{heads + 2 * kv_heads} * head_dim + int64_t{h} * head_dim;
  const int pos = positions[t];
  const int64_t slot = slots[t];
  const bool is_q = h < heads, is_v = h >= heads + kv_heads;
  if (is_v) {
    if (slot < 0) return;
    T* dst = v_cache + (slot * kv_heads + (h - heads - kv_heads)) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) dst[d] = x[d];
    return;
  }
  const float* cs = cos_sin + int64_t{pos} * head_dim;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    float a = to_f32(x[i]), b = to_f32(x[i + half]);
    if (is_q || rotate_k) {
      // In bf16 every product and the sum round to bf16, cos/sin included, as HF's
      // q * cos + rotate_half(q) * sin does in the model dtype (identity in fp32).
      const float c = round_to<T>(cs[i]), s = round_to<T>(cs[half + i]);
      const float ra = round_to<T>(round_to<T>(a * c) - round_to<T>(b * s));
      const float rb = round_to<T>(round_to<T>(b * c) + round_to<T>(a * s));
      a = ra;
      b = rb;
      x[i] = from_f32<T>(a);
      x[i + half] = from_f32<T>(b);
    }
    if (!is_q && slot >= 0) {
      T* dst = k_cache + (slot * kv_heads + (h - heads)) * head_dim;
      dst[i] = from_f32<T>(a);
      dst[i + half] = from_f32<T>(b);
    }
  }
  if (h == heads && threadIdx.x == 0 && slot >= 0) slot_pos[slot] = pos;
}

}  // namespace

void rope_store_kv(const RopeKvArgs& a, cudaStream_t s) {
  if (a.tokens == 0) return;
  // A programmatic dependent: its launch overlaps the tail of the QKV product.
  NI_DISPATCH_FLOAT(
      a.dt, T,
      launch_pdl(rope_store_kv_kernel<T>, dim3(a.tokens, a.heads + 2 * a.kv_heads), dim3(kThreads),
                 0, s, static_cast<T*>(a.qkv), a.heads, a.kv_heads, a.head_dim, a.positions,
                 a.slots, a.cos_sin, static_cast<T*>(a.k_cache), static_cast<T*>(a.v_cache),
                 a.slot_pos, a.rotate_k));
  NI_CUDA_LAUNCH_CHECK("rope_store_kv");
}

}  // namespace nanoinfer::cuda
