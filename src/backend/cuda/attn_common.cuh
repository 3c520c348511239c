// What the two attention kernels share: where logical cache entry j of a sequence lives, which
// entries a query may see, and how a stored key is read (rotated by its slot position under
// PreRope). Scores are kept in base 2: q is pre-scaled by softmax_scale * log2(e).
#pragma once

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.h"

namespace nanoinfer::cuda {

constexpr float kLog2e = 1.4426950408889634F;

// (A power-of-two block size, the usual one, takes a shift and a mask instead of an integer
// division, which costs a few dozen instructions a lookup.)
__device__ __forceinline__ int64_t cache_slot(const AttnArgs& a, int seq, int j) {
  const int bs = a.block_size;
  const bool pow2 = (bs & (bs - 1)) == 0;
  const int page = pow2 ? j >> (__ffs(bs) - 1) : j / bs;
  const int in_page = pow2 ? j & (bs - 1) : j % bs;
  return int64_t{a.block_tables[int64_t{seq} * a.bt_stride + page]} * bs + in_page;
}

// Entry j (j <= qi, j < ctx) is visible to the query at logical index qi, unless the tree mask
// among the sequence's new tokens says otherwise.
__device__ __forceinline__ bool tree_visible(const AttnArgs& a, int seq, int n_new, int first_new,
                                             int qi, int j) {
  if (a.tree_mask == nullptr || j < first_new) return true;
  return a.tree_mask[a.tree_offsets[seq] + (qi - first_new) * n_new + (j - first_new)] != 0;
}

// Element d of the key stored at `slot` (rotated by slot_pos when rotate_keys).
template <class T>
__device__ __forceinline__ float load_key(const AttnArgs& a, const T* krow, int64_t slot, int d) {
  const float x = to_f32(krow[d]);
  if (!a.rotate_keys) return x;
  const int half = a.head_dim / 2;
  const int i = d < half ? d : d - half;
  const float* cs = a.cos_sin + int64_t{a.slot_pos[slot]} * a.head_dim;
  const float c = cs[i], s = cs[half + i];
  const float partner = to_f32(krow[d < half ? d + half : d - half]);
  return d < half ? x * c - partner * s : x * c + partner * s;
}

}  // namespace nanoinfer::cuda
