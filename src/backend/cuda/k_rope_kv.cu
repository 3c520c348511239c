// RoPE fused with the cache write: one pass over a token's qkv row rotates q (always) and k
// (PostRope), and stores k and v at the token's slot with the position it was written at.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.h"

namespace nanoinfer::cuda {
namespace {

constexpr int kThreads = 128;

// One block per token. Work items: (head, i) rotation pairs for the q and k heads, then the v
// elements. A k pair is written to the cache by the thread that rotated it.
template <class T>
__global__ void rope_store_kv_kernel(T* qkv, int heads, int kv_heads, int head_dim,
                                     const int32_t* positions, const int32_t* slots,
                                     const float* cos_sin, T* k_cache, T* v_cache,
                                     int32_t* slot_pos, bool rotate_k) {
  const int t = blockIdx.x;
  const int half = head_dim / 2;
  const int64_t stride = int64_t{heads + 2 * kv_heads} * head_dim;
  T* row = qkv + t * stride;
  const int pos = positions[t];
  const int64_t slot = slots[t];
  const float* cs = cos_sin + int64_t{pos} * head_dim;
  const int pairs = (heads + kv_heads) * half;
  const int v_items = kv_heads * head_dim;
  for (int item = threadIdx.x; item < pairs + v_items; item += blockDim.x) {
    if (item < pairs) {
      const int h = item / half, i = item % half;
      T* x = row + int64_t{h} * head_dim;
      const bool is_k = h >= heads;
      float a = to_f32(x[i]), b = to_f32(x[i + half]);
      if (!is_k || rotate_k) {
        const float c = cs[i], s = cs[half + i];
        const float ra = a * c - b * s, rb = b * c + a * s;
        a = ra;
        b = rb;
        x[i] = from_f32<T>(a);
        x[i + half] = from_f32<T>(b);
      }
      if (is_k && slot >= 0) {
        T* dst = k_cache + (slot * kv_heads + (h - heads)) * head_dim;
        dst[i] = from_f32<T>(a);
        dst[i + half] = from_f32<T>(b);
      }
    } else if (slot >= 0) {
      const int e = item - pairs;
      v_cache[slot * kv_heads * head_dim + e] = row[int64_t{heads + kv_heads} * head_dim + e];
    }
  }
  if (threadIdx.x == 0 && slot >= 0) slot_pos[slot] = pos;
}

}  // namespace

void rope_store_kv(const RopeKvArgs& a, cudaStream_t s) {
  if (a.tokens == 0) return;
  NI_DISPATCH_FLOAT(a.dt, T,
                    rope_store_kv_kernel<T><<<a.tokens, kThreads, 0, s>>>(
                        static_cast<T*>(a.qkv), a.heads, a.kv_heads, a.head_dim, a.positions,
                        a.slots, a.cos_sin, static_cast<T*>(a.k_cache), static_cast<T*>(a.v_cache),
                        a.slot_pos, a.rotate_k));
  NI_CUDA_LAUNCH_CHECK("rope_store_kv");
}

}  // namespace nanoinfer::cuda
