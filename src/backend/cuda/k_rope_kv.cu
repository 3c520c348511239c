// RoPE fused with the cache write: one pass over a token's qkv row rotates q (always) and k
// (PostRope), and stores k and v at the token's slot with the position it was written at.
#include <algorithm>
#include <climits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.h"

namespace nanoinfer::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kItems = 2;        // items a thread has in flight
constexpr int kBlocksPerSm = 4;  // the grid: at most this many blocks an SM, striding over items
constexpr int kMinItems = 64;    // ... and at least this many items a block

template <class T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

// An item is V pairs (i, i + D/2), i = j V ... j V + V - 1, of one (token, head) row of qkv: two
// vector loads of the row and two of cos / sin. q items (and k items under PostRope) rotate
// their pairs; k and v items go to the cache at the token's slot. Each thread issues the loads
// of its kItems items before it stores anything. (A block per row, as this kernel first was,
// left a 4,096-token prefill waiting on the launch of ~200k tiny blocks; a warp per row with
// 2-byte loads moved ~1.1 TB/s, a round trip per 256 bytes a warp.)
template <class T, int V>
__global__ void __launch_bounds__(kThreads)
    rope_store_kv_kernel(T* qkv, int tokens, int heads, int kv_heads, int head_dim,
                         const int32_t* positions, const int32_t* slots, const float* cos_sin,
                         T* k_cache, T* v_cache, int32_t* slot_pos, bool rotate_k) {
  pdl_trigger();  // decode attention may start copying older cache entries
  pdl_wait();     // qkv comes from the kernel before (launched as its programmatic dependent)
  const int row_heads = heads + 2 * kv_heads, half = head_dim / 2, per_row = half / V;
  const int items = tokens * row_heads * per_row;  // < INT_MAX (the launcher checks)
  const int stride = static_cast<int>(gridDim.x * blockDim.x);
  for (int base = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); base < items;
       base += stride * kItems) {
    Vec<T, V> a[kItems], b[kItems];
    Vec<float, V> c[kItems], s[kItems];
    T* x[kItems];
    T* dst[kItems];  // the cache row to write, or null
    bool rotate[kItems];
    int64_t record[kItems];
    int pos[kItems];
#pragma unroll
    for (int u = 0; u < kItems; ++u) {
      const int item = base + u * stride;
      const bool ok = item < items;
      const int r = ok ? item / per_row : 0, i = item % per_row * V;
      const int t = r / row_heads, h = r % row_heads;
      const int64_t slot = ok ? slots[t] : -1;
      pos[u] = positions[t];
      const bool is_q = h < heads, is_k = !is_q && h < heads + kv_heads;
      x[u] = qkv + int64_t{r} * head_dim + i;
      rotate[u] = ok && (is_q || (is_k && rotate_k));
      dst[u] = is_q || slot < 0 ? nullptr
               : is_k           ? k_cache + (slot * kv_heads + (h - heads)) * head_dim + i
                      : v_cache + (slot * kv_heads + (h - heads - kv_heads)) * head_dim + i;
      if (rotate[u] || dst[u] != nullptr) {
        a[u] = *reinterpret_cast<const Vec<T, V>*>(x[u]);
        b[u] = *reinterpret_cast<const Vec<T, V>*>(x[u] + half);
      }
      if (rotate[u]) {
        const float* cs = cos_sin + int64_t{pos[u]} * head_dim + i;
        c[u] = *reinterpret_cast<const Vec<float, V>*>(cs);
        s[u] = *reinterpret_cast<const Vec<float, V>*>(cs + half);
      }
      // The first k head's first item records the position its token's slot holds (stored
      // below: a store here would keep the next item's loads waiting for this one's).
      record[u] = ok && h == heads && i == 0 ? slot : -1;
    }
#pragma unroll
    for (int u = 0; u < kItems; ++u)
      if (record[u] >= 0) slot_pos[record[u]] = pos[u];
#pragma unroll
    for (int u = 0; u < kItems; ++u) {
      if (rotate[u]) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          // In bf16 every product and the sum round to bf16, cos/sin included, as HF's
          // q * cos + rotate_half(q) * sin does in the model dtype (identity in fp32).
          const float p = to_f32(a[u].v[e]), q = to_f32(b[u].v[e]);
          const float co = round_to<T>(c[u].v[e]), si = round_to<T>(s[u].v[e]);
          a[u].v[e] = from_f32<T>(round_to<T>(p * co) - round_to<T>(q * si));
          b[u].v[e] = from_f32<T>(round_to<T>(q * co) + round_to<T>(p * si));
        }
        *reinterpret_cast<Vec<T, V>*>(x[u]) = a[u];
        *reinterpret_cast<Vec<T, V>*>(x[u] + half) = b[u];
      }
      if (dst[u] != nullptr) {
        *reinterpret_cast<Vec<T, V>*>(dst[u]) = a[u];
        *reinterpret_cast<Vec<T, V>*>(dst[u] + half) = b[u];
      }
    }
  }
}

template <class T, int V>
void launch(const RopeKvArgs& a, cudaStream_t s) {
  const int64_t items = int64_t{a.tokens} * (a.heads + 2 * a.kv_heads) * (a.head_dim / 2 / V);
  NI_ASSERT(items < INT_MAX / 2);
  // A block per kMinItems items up to kBlocksPerSm an SM: a decode step's few items spread over
  // several SMs (one block of them all took 0.5 us longer alone), a prefill's stride kItems deep.
  const int blocks = static_cast<int>(std::min<int64_t>(
      (items + kMinItems - 1) / kMinItems, int64_t{device_limits().sms} * kBlocksPerSm));
  // A programmatic dependent: its launch overlaps the tail of the QKV product.
  launch_pdl(rope_store_kv_kernel<T, V>, dim3(blocks), dim3(kThreads), 0, s, static_cast<T*>(a.qkv),
             a.tokens, a.heads, a.kv_heads, a.head_dim, a.positions, a.slots, a.cos_sin,
             static_cast<T*>(a.k_cache), static_cast<T*>(a.v_cache), a.slot_pos, a.rotate_k);
}

}  // namespace

void rope_store_kv(const RopeKvArgs& a, cudaStream_t s) {
  if (a.tokens == 0) return;
  const int half = a.head_dim / 2;
  const bool aligned =
      (reinterpret_cast<uintptr_t>(a.qkv) | reinterpret_cast<uintptr_t>(a.k_cache) |
       reinterpret_cast<uintptr_t>(a.v_cache)) %
          32 ==
      0;
  // 16-byte vectors where a half row divides into them (head_dim 64, 128, ...), else pairs or one.
  NI_DISPATCH_FLOAT(a.dt, T, {
    constexpr int kVec = 16 / sizeof(T);
    if (!aligned)
      launch<T, 1>(a, s);
    else if (half % kVec == 0)
      launch<T, kVec>(a, s);
    else if (half % 2 == 0)
      launch<T, 2>(a, s);
    else
      launch<T, 1>(a, s);
  });
  NI_CUDA_LAUNCH_CHECK("rope_store_kv");
}

}  // namespace nanoinfer::cuda
