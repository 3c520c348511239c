// Attention on the tensor cores for bf16 caches with head_dim 64 or 128, flash-attention-2 style
// (mma.sync m16n8k16, scores and probabilities never leave registers). Both kernels stage the cache
// through the block table into shared memory with cp.async, 64 entries a tile (prefill: the next
// tile in flight while one is used; decode: one tile in shared memory at a time, the SM's other
// blocks computing while its copies land, or two when the call has few sequences), and a warp keeps
// an online softmax over 16 query rows: S = Q K^T into C fragments, the row max and sum over the
// four lanes that share a row, P re-packed as the A operand of P V. A row is one (token, query
// head) pair of a kv head's group, so the group's heads share each K/V tile: prefill packs 64 rows
// per block (16 per warp); decode has one token per sequence, so its 16 rows are the group's heads
// (padded) and the four warps split the tile's entries instead. Decode also splits every context
// over blocks; each block merges its warps, writes its partial (max, sum, output) and the last
// block of a (sequence, kv head) to finish merges all the splits, so there is no second kernel.
#include <algorithm>
#include <climits>

#include "backend/cuda/attn_common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/mma.cuh"

namespace nanoinfer::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = 128;      // four warps
constexpr int kTileK = 64;         // cache entries per shared-memory stage
constexpr int kPrefillStages = 2;  // tiles in shared memory: compute-bound, double buffering
// Decode is bound by how many warps an SM holds to hide the copies' latency, so a block keeps a
// single stage (46 KB with the merge's scratch, at most 128 registers a thread): four blocks
// share an SM and each one's copies overlap the others' arithmetic. H200, 2026-12-01, % of copy
// at B=8 x 16k: three stages (two blocks an SM) 67 %, two stages (three) 84 %, one stage (four)
// 85 %; at B=32 x 4k two stages 79 %, one 85 %. Only calls with few (sequence, kv head) pairs,
// where a block has a tile or two and nothing else on its SM to overlap, take two stages
// (kFewPairs, below).
constexpr int kDecodeBlocksPerSm = 4;
constexpr int kRows = 64;  // prefill: (token, head) rows per block, 16 per warp
constexpr int kMaxSplits = 128;

template <int D>
struct Layout {
  static constexpr int kStride = D + 8;  // bf16 per shared row: ldmatrix rows hit distinct banks
  static constexpr int kTile = kTileK * kStride;
  // Decode's merge scratch, laid over the stages once the tiles are done: [warp][row][D] outputs,
  // [warp][row] maxima and sums, [row][split] weights (decode_kernel's so, sm, sl, weight).
  static constexpr size_t kMergeFloats = 4 * 16 * D + 2 * 4 * 16 + 16 * kMaxSplits;
  // Q rows, then stages x (K tile, V tile).
  static constexpr size_t bytes(int q_rows, int stages) {
    return sizeof(bf16) * (q_rows * kStride + 2 * stages * kTile);
  }
};

// One warp's 16 query rows: Q as A fragments, and for the lane's two rows (lane / 4 and
// lane / 4 + 8) the running max, the running sum (of the lane's own columns until finish()) and
// the output accumulators, D / 8 C tiles. kQShared: Q's fragments are loaded from shared memory
// at every step instead of held in D / 4 registers (the one-stage decode instance, capped at 128
// registers a thread for four blocks an SM: with Q in registers it spilled ~70 bytes a thread
// inside its tile loop; a few more ldmatrix a tile cost less).
template <int D, bool kQShared = false>
struct WarpAttn {
  static constexpr int S = Layout<D>::kStride;
  uint32_t q[kQShared ? 1 : D / 16][4];
  const bf16* qrow = nullptr;  // kQShared: the lane's ldmatrix row of Q (k chunk 0)
  float o[D / 8][4];
  float m[2], l[2];

  __device__ void q_frag(uint32_t (&f)[4], int kc) const { ldmatrix_x4(f, qrow + kc * 16); }

  __device__ void init(const bf16* qs, int row0) {
    const int lane = threadIdx.x % 32;
    qrow = qs + (row0 + lane % 8 + lane / 8 % 2 * 8) * S + lane / 16 * 8;
    if constexpr (!kQShared) {
#pragma unroll
      for (int kc = 0; kc < D / 16; ++kc) q_frag(q[kc], kc);
    }
#pragma unroll
    for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0F;
    m[0] = m[1] = -INFINITY;
    l[0] = l[1] = 0.0F;
  }

  // Attends to the NK entries at shared rows k0.. of ks / vs. When `masked`, visible(h, j) says
  // whether tile column j is visible to the lane's row h (0: lane / 4, 1: lane / 4 + 8).
  template <int NK, class Visible>
  __device__ void step(const bf16* ks, const bf16* vs, int k0, float scale, bool masked,
                       const Visible& visible) {
    const int lane = threadIdx.x % 32;
    float s[NK / 8][4];
#pragma unroll
    for (int n = 0; n < NK / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0F;
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
      uint32_t qf[4];
      if constexpr (kQShared) q_frag(qf, kc);
      const uint32_t(&a)[4] = kQShared ? qf : q[kQShared ? 0 : kc];
#pragma unroll
      for (int np = 0; np < NK / 16; ++np) {
        uint32_t b[4];
        ldmatrix_x4(
            b, ks + (k0 + np * 16 + lane % 8 + lane / 16 * 8) * S + kc * 16 + lane / 8 % 2 * 8);
        mma_bf16(s[2 * np], a, b[0], b[1]);
        mma_bf16(s[2 * np + 1], a, b[2], b[3]);
      }
    }
    float alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < NK / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float v = s[n][2 * h + e] * scale;
          if (masked && !visible(h, n * 8 + 2 * (lane % 4) + e)) v = -INFINITY;
          s[n][2 * h + e] = v;
          mx = fmaxf(mx, v);
        }
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffU, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffU, mx, 2));
      const float m_new = fmaxf(m[h], mx);
      alpha[h] = m_new == -INFINITY ? 1.0F : exp2f(m[h] - m_new);
      float sum = 0.0F;
#pragma unroll
      for (int n = 0; n < NK / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = m_new == -INFINITY ? 0.0F : exp2f(s[n][2 * h + e] - m_new);
          s[n][2 * h + e] = p;
          sum += p;
        }
      }
      l[h] = l[h] * alpha[h] + sum;
      m[h] = m_new;
    }
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }
#pragma unroll
    for (int kc = 0; kc < NK / 16; ++kc) {
      const uint32_t p[4] = {pack_bf16(s[2 * kc][0], s[2 * kc][1]),
                             pack_bf16(s[2 * kc][2], s[2 * kc][3]),
                             pack_bf16(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                             pack_bf16(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(
            b, vs + (k0 + kc * 16 + lane % 8 + lane / 8 % 2 * 8) * S + dp * 16 + lane / 16 * 8);
        mma_bf16(o[2 * dp], p, b[0], b[1]);
        mma_bf16(o[2 * dp + 1], p, b[2], b[3]);
      }
    }
  }

  // Row sums over the four lanes of a row.
  __device__ void finish() {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      l[h] += __shfl_xor_sync(0xffffffffU, l[h], 1);
      l[h] += __shfl_xor_sync(0xffffffffU, l[h], 2);
    }
  }
};

// A thread copies one 16-byte column of kRowsEach rows of a tile: its block-table lookups
// (the rows' cache slots, -1 past `last`) are made one tile ahead, so that the copies can be
// issued as soon as a stage frees up, without waiting for a lookup.
template <int D>
struct TileRows {
  static constexpr int kChunks = D / 8, kRowStep = kThreads / kChunks;
  static constexpr int kRowsEach = kTileK / kRowStep;
  int32_t slot[kRowsEach];

  __device__ void lookup(const AttnArgs& a, int seq, int k0, int last) {
    const int r0 = static_cast<int>(threadIdx.x) / kChunks;
#pragma unroll
    for (int i = 0; i < kRowsEach; ++i) {
      const int key = k0 + r0 + i * kRowStep;
      slot[i] = key <= last ? static_cast<int32_t>(cache_slot(a, seq, key)) : -1;
    }
  }

  // Stages the rows into ks / vs. Rows past `last` read as zeros: their scores are masked, and
  // zero V keeps 0 x garbage out of the sums. Under PreRope the keys are rotated by their slot
  // positions on the way (plain loads instead of cp.async).
  template <bool kRotate>
  __device__ void copy(const AttnArgs& a, int kvh, bf16* ks, bf16* vs) const {
    constexpr int S = Layout<D>::kStride;
    const bf16* kc = static_cast<const bf16*>(a.k_cache);
    const bf16* vc = static_cast<const bf16*>(a.v_cache);
    const int c = static_cast<int>(threadIdx.x) % kChunks,
              r0 = static_cast<int>(threadIdx.x) / kChunks;
#pragma unroll
    for (int i = 0; i < kRowsEach; ++i) {
      const int r = r0 + i * kRowStep;
      const bool ok = slot[i] >= 0;
      const int64_t row = ok ? (int64_t{slot[i]} * a.kv_heads + kvh) * D : 0;
      cp_async16(vs + r * S + c * 8, vc + row + c * 8, ok);
      if constexpr (kRotate) {
        alignas(16) bf16 e[8];
#pragma unroll
        for (int j = 0; j < 8; ++j)
          e[j] = __float2bfloat16_rn(ok ? load_key(a, kc + row, slot[i], c * 8 + j) : 0.0F);
        *reinterpret_cast<uint4*>(ks + r * S + c * 8) = *reinterpret_cast<const uint4*>(e);
      } else {
        cp_async16(ks + r * S + c * 8, kc + row + c * 8, ok);
      }
    }
  }
};

// Calls body(t, ks, vs, k0) for the tiles of entries first..last (t = 0, 1, ...) while later
// tiles are copied. start() runs once before the first copies that may depend on the kernel
// ahead (entries past safe_last): a programmatic dependent waits for that kernel there and copies
// its Q; the first tiles' older entries are already on their way. Copies issued before the call
// or in start() have landed when body(0, ...) runs. On return every copy is done and the stages
// may be reused. Two schedules:
//  - kFillAll = false (prefill, compute-bound): tile t + kStages - 1 is copied before body(t),
//    so kStages - 1 tiles are in flight while a tile is used; one barrier a tile.
//  - kFillAll = true (decode, memory-bound): every stage is filled before the first body, and
//    tile t + kStages is copied into tile t's stage right after body(t); two barriers a tile.
//    With one stage a block copies, then computes: the other blocks of its SM fill the gaps.
template <int D, int kStages, bool kFillAll, bool kRotate, class Start, class Body>
__device__ void for_each_tile(const AttnArgs& a, int seq, int kvh, int first, int last,
                              int safe_last, bf16* stages, const Start& start, const Body& body) {
  constexpr int kTile = Layout<D>::kTile;
  constexpr int kAhead = kFillAll ? kStages : kStages - 1;  // tiles copied before body(0)
  auto k_stage = [&](int t) { return stages + (t % kStages) * 2 * kTile; };
  auto early = [&](int t) { return min(last, first + t * kTileK + kTileK - 1) <= safe_last; };
  const int n_tiles = last >= first ? (last - first) / kTileK + 1 : 0;
  TileRows<D> rows;
  // Early copies join the first group, which body(0) waits for; tile t's others join group t.
#pragma unroll
  for (int t = 0; t < kAhead; ++t) {
    if (t < n_tiles && early(t)) {
      rows.lookup(a, seq, first + t * kTileK, last);
      rows.template copy<kRotate>(a, kvh, k_stage(t), k_stage(t) + kTile);
    }
  }
  start();
#pragma unroll
  for (int t = 0; t < kAhead; ++t) {
    if (t < n_tiles && !early(t)) {
      rows.lookup(a, seq, first + t * kTileK, last);
      rows.template copy<kRotate>(a, kvh, k_stage(t), k_stage(t) + kTile);
    }
    cp_async_commit();
  }
  rows.lookup(a, seq, first + kAhead * kTileK, last);
  for (int t = 0; t < n_tiles; ++t) {
    cp_async_wait<kAhead - 1>();  // group t holds tile t; the ones after it may be in flight
    __syncthreads();  // tile t is in for every thread (prefill: tile t - 1's stage is free)
    const int next = t + kAhead;
    if constexpr (kFillAll) {
      body(t, k_stage(t), k_stage(t) + kTile, first + t * kTileK);
      __syncthreads();  // every warp is done with tile t's stage
    }
    if (next < n_tiles) {
      rows.template copy<kRotate>(a, kvh, k_stage(next), k_stage(next) + kTile);
      rows.lookup(a, seq, first + (next + 1) * kTileK, last);  // in flight during body
    }
    cp_async_commit();
    if constexpr (!kFillAll) body(t, k_stage(t), k_stage(t) + kTile, first + t * kTileK);
  }
  cp_async_wait<0>();
  __syncthreads();
}

template <int D, bool kRotate>
__global__ void __launch_bounds__(kThreads, 2) prefill_kernel(const AttnArgs a, float scale) {
  constexpr int S = Layout<D>::kStride, kChunks = D / 8;
  const int kvh = blockIdx.x, seq = blockIdx.z;
  const int group = a.heads / a.kv_heads;
  const int start = a.cu_seqlens[seq], n_new = a.cu_seqlens[seq + 1] - start;
  const int rows = n_new * group;  // row p: token p / group, head kvh * group + p % group
  const int row0 = (static_cast<int>(gridDim.y) - 1 - static_cast<int>(blockIdx.y)) * kRows;
  if (row0 >= rows) return;  // (the longest, latest tiles are scheduled first)
  const int ctx = a.context_lens[seq], first_new = ctx - n_new;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t stride = int64_t{a.heads + 2 * a.kv_heads} * D;
  const bf16* qkv = static_cast<const bf16*>(a.qkv);
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* stages = qs + kRows * S;

  for (int i = threadIdx.x; i < kRows * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks, p = row0 + r;
    const int64_t src =
        p < rows ? (start + p / group) * stride + int64_t{kvh * group + p % group} * D + c * 8 : 0;
    cp_async16(qs + r * S + c * 8, qkv + src, p < rows);
  }
  // The last cache entry any row of the block sees.
  __shared__ int kmax_s;
  if (threadIdx.x == 0) kmax_s = -1;
  __syncthreads();
  const int tok_end = min(n_new, (row0 + kRows - 1) / group + 1);
  for (int t = row0 / group + static_cast<int>(threadIdx.x); t < tok_end; t += kThreads)
    atomicMax(&kmax_s, min(a.q_index[start + t], ctx - 1));
  __syncthreads();

  int qi[2], lim[2];  // the lane's rows: query index, last visible entry (-1 for padding rows)
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int p = row0 + warp * 16 + lane / 4 + 8 * h;
    qi[h] = p < rows ? a.q_index[start + p / group] : -1;
    lim[h] = min(qi[h], ctx - 1);
  }
  // Entries up to lo are visible to every real row of the warp; past hi, to none.
  const int lo = __reduce_min_sync(
      0xffffffffU, min(lim[0] < 0 ? INT_MAX : lim[0], lim[1] < 0 ? INT_MAX : lim[1]));
  const int hi = __reduce_max_sync(0xffffffffU, max(lim[0], lim[1]));
  const bool tree = a.tree_mask != nullptr;

  WarpAttn<D> w;
  for_each_tile<D, kPrefillStages, false, kRotate>(
      a, seq, kvh, 0, kmax_s, -1, stages, [] {},
      [&](int t, const bf16* ks, const bf16* vs, int k0) {
        if (t == 0) w.init(qs, warp * 16);
        if (k0 > hi) return;
        const int k_end = k0 + kTileK - 1;
        const bool masked = k_end > lo || (tree && k_end >= first_new);
        w.template step<kTileK>(ks, vs, 0, scale, masked, [&](int h, int j) {
          const int key = k0 + j;
          return key <= lim[h] && tree_visible(a, seq, n_new, first_new, qi[h], key);
        });
      });
  w.finish();
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int p = row0 + warp * 16 + lane / 4 + 8 * h;
    if (p >= rows) continue;
    const float inv = w.l[h] > 0.0F ? 1.0F / w.l[h] : 0.0F;
    bf16* out = static_cast<bf16*>(a.out) + (start + p / group) * int64_t{a.heads} * D +
                int64_t{kvh * group + p % group} * D + 2 * (lane % 4);
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<__nv_bfloat162*>(out + n * 8) =
          __floats2bfloat162_rn(w.o[n][2 * h] * inv, w.o[n][2 * h + 1] * inv);
  }
}

// Decode: block (split, kv head, sequence) covers entries [split * chunk, ...) of the sequence's
// context for the group's heads. ws holds [seq][head][split][4 + D] partials (max, sum, two
// floats of padding so that the output starts 16-byte aligned, output);
// counters [seq][kv head] count finished splits (zero between launches: the last block resets).
template <int D, bool kRotate, int kStages>
__global__ void __launch_bounds__(kThreads, kStages == 1 ? kDecodeBlocksPerSm : 1)
    decode_kernel(const AttnArgs a, float scale, float* ws, int* counters) {
  constexpr int S = Layout<D>::kStride, kChunks = D / 8, kPart = D + 4;
  pdl_trigger();  // the O GEMV may start prefetching its weights
  const int split = blockIdx.x, splits = gridDim.x, kvh = blockIdx.y, seq = blockIdx.z;
  const int group = a.heads / a.kv_heads;
  const int ctx = a.context_lens[seq], qi = a.q_index[seq];
  const int n_keys = max(0, min(ctx, qi + 1));
  // Slices of whole tiles; short contexts leave trailing splits empty.
  const int per_split = (n_keys + splits - 1) / splits;
  const int chunk = max(1, (per_split + kTileK - 1) / kTileK) * kTileK;
  const int used = max(1, (n_keys + chunk - 1) / chunk);
  if (split >= used) return;
  const int first = split * chunk, last = min(n_keys, first + chunk) - 1;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t stride = int64_t{a.heads + 2 * a.kv_heads} * D;
  const bf16* qkv = static_cast<const bf16*>(a.qkv);
  bf16* out = static_cast<bf16*>(a.out) + (int64_t{seq} * a.heads + kvh * group) * D;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* stages = qs + 16 * S;

  // Launched as a programmatic dependent of the RoPE kernel, which writes Q and this step's
  // cache entry (the last, ctx - 1): older entries are copied before waiting for it.
  auto start = [&] {
    pdl_wait();
    for (int i = tid; i < 16 * kChunks; i += kThreads) {
      const int r = i / kChunks, c = i % kChunks;
      const int64_t src = r < group ? seq * stride + int64_t{kvh * group + r} * D + c * 8 : 0;
      cp_async16(qs + r * S + c * 8, qkv + src, r < group);
    }
  };
  const bool tree = a.tree_mask != nullptr;
  WarpAttn<D, kStages == 1> w;  // (Q from shared memory where registers are capped at 128)
  w.m[0] = w.m[1] = -INFINITY;  // for an empty context (no tile): nothing seen
  w.l[0] = w.l[1] = 0.0F;
  for_each_tile<D, kStages, true, kRotate>(
      a, seq, kvh, first, last, ctx - 2, stages, start,
      [&](int t, const bf16* ks, const bf16* vs, int k0) {
        if (t == 0) w.init(qs, 0);
        const int kw = k0 + warp * 16;  // the warp's 16 entries of the tile
        if (kw > last) return;
        const bool masked = kw + 15 > last || (tree && kw + 15 >= ctx - 1);
        w.template step<16>(ks, vs, warp * 16, scale, masked, [&](int, int j) {
          const int key = kw + j;
          return key <= last && tree_visible(a, seq, 1, ctx - 1, qi, key);
        });
      });
  w.finish();

  // Merge the warps: [warp][row][D] outputs, [warp][row] maxima and sums, then [row][split]
  // weights for the final merge (the stages are free now).
  float* so = reinterpret_cast<float*>(stages);
  float* sm = so + 4 * 16 * D;
  float* sl = sm + 4 * 16;
  float* weight = sl + 4 * 16;
  const bool any = last >= first;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = lane / 4 + 8 * h;
    if (r >= group) continue;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      so[(warp * 16 + r) * D + n * 8 + 2 * (lane % 4)] = any ? w.o[n][2 * h] : 0.0F;
      so[(warp * 16 + r) * D + n * 8 + 2 * (lane % 4) + 1] = any ? w.o[n][2 * h + 1] : 0.0F;
    }
    if (lane % 4 == 0) {
      sm[warp * 16 + r] = w.m[h];
      sl[warp * 16 + r] = w.l[h];
    }
  }
  __syncthreads();
  for (int i = tid; i < group * D; i += kThreads) {
    const int r = i / D, d = i % D;
    float mx = -INFINITY;
#pragma unroll
    for (int v = 0; v < 4; ++v) mx = fmaxf(mx, sm[v * 16 + r]);
    float sum = 0.0F, acc = 0.0F;
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const float wt = mx == -INFINITY ? 0.0F : exp2f(sm[v * 16 + r] - mx);
      sum += wt * sl[v * 16 + r];
      acc += wt * so[(v * 16 + r) * D + d];
    }
    if (used == 1) {
      out[r * D + d] = __float2bfloat16_rn(sum > 0.0F ? acc / sum : 0.0F);
    } else {
      float* part = ws + ((int64_t{seq} * a.heads + kvh * group + r) * splits + split) * kPart;
      part[4 + d] = acc;
      if (d == 0) {
        part[0] = mx;
        part[1] = sum;
      }
    }
  }
  if (used == 1) return;

  // The last split to finish merges them all (partials read past L1: other blocks wrote them).
  // One thread counts for the block after the barrier: its acquire-release add publishes the
  // block's partial (ordered before it by the barrier) and, in the last block, makes every other
  // block's visible to the threads that pass the next barrier.
  __shared__ bool last_block;
  __syncthreads();
  if (tid == 0) {
    int* count = counters + int64_t{seq} * a.kv_heads + kvh;
    int done = 0;
    asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], 1;\n"
                 : "=r"(done)
                 : "l"(count)
                 : "memory");
    last_block = done == used - 1;
    if (last_block) *count = 0;
  }
  __syncthreads();
  if (!last_block) return;
  const float* base = ws + (int64_t{seq} * a.heads + kvh * group) * splits * kPart;
  // Outputs: a thread per 4 elements of a row (an item), 16-byte loads of 16 splits in flight.
  // The loads of a thread's first item do not depend on the split weights, so they are issued
  // before the weights are worked out: the two round trips to the L2 overlap.
  constexpr int kFirst = 16;
  const int items = group * D / 4;
  auto item_row = [&](int i) {  // split 0's 4 elements of item i
    return base + int64_t{i / (D / 4)} * splits * kPart + 4 + i % (D / 4) * 4;
  };
  float4 early[kFirst];
  auto load_first = [&](int i) {
    const float* row = item_row(i);
#pragma unroll
    for (int sp = 0; sp < kFirst; ++sp)
      early[sp] = sp < used ? __ldcg(reinterpret_cast<const float4*>(row + sp * kPart))
                            : make_float4(0.0F, 0.0F, 0.0F, 0.0F);
  };
  if (tid < items) load_first(tid);
  // Split weights: a warp per row, a lane per split, so every load is in flight at once.
  for (int r = warp; r < group; r += kThreads / 32) {
    const float* row = base + int64_t{r} * splits * kPart;
    float wt[kMaxSplits / 32], ls[kMaxSplits / 32];
    float mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < kMaxSplits / 32; ++i) {
      const int sp = lane + 32 * i;
      wt[i] = sp < used ? __ldcg(row + sp * kPart) : -INFINITY;
      ls[i] = sp < used ? __ldcg(row + sp * kPart + 1) : 0.0F;
      mx = fmaxf(mx, wt[i]);
    }
    mx = warp_max(mx);
    float sum = 0.0F;
#pragma unroll
    for (int i = 0; i < kMaxSplits / 32; ++i) {
      wt[i] = mx == -INFINITY ? 0.0F : exp2f(wt[i] - mx);
      sum += wt[i] * ls[i];
    }
    sum = warp_sum(sum);
    const float inv = sum > 0.0F ? 1.0F / sum : 0.0F;
#pragma unroll
    for (int i = 0; i < kMaxSplits / 32; ++i)
      if (lane + 32 * i < used) weight[r * kMaxSplits + lane + 32 * i] = wt[i] * inv;
  }
  __syncthreads();
  for (int i = tid; i < items; i += kThreads) {
    const int r = i / (D / 4), d = i % (D / 4) * 4;
    if (i != tid) load_first(i);
    float4 acc = make_float4(0.0F, 0.0F, 0.0F, 0.0F);
    auto add = [&](float w, const float4& v) {
      acc.x += w * v.x;
      acc.y += w * v.y;
      acc.z += w * v.z;
      acc.w += w * v.w;
    };
#pragma unroll
    for (int sp = 0; sp < kFirst; ++sp)
      if (sp < used) add(weight[r * kMaxSplits + sp], early[sp]);
    const float* row = item_row(i);
#pragma unroll 16
    for (int sp = kFirst; sp < used; ++sp)
      add(weight[r * kMaxSplits + sp], __ldcg(reinterpret_cast<const float4*>(row + sp * kPart)));
    *reinterpret_cast<__nv_bfloat162*>(out + r * D + d) = __floats2bfloat162_rn(acc.x, acc.y);
    *reinterpret_cast<__nv_bfloat162*>(out + r * D + d + 2) = __floats2bfloat162_rn(acc.z, acc.w);
  }
}

template <int D, bool kRotate>
void launch_prefill(const AttnArgs& a, int max_new_tokens, cudaStream_t s) {
  constexpr size_t smem = Layout<D>::bytes(kRows, kPrefillStages);
  [[maybe_unused]] static const bool once =
      (allow_dynamic_smem(prefill_kernel<D, kRotate>, smem), true);
  const int group = a.heads / a.kv_heads;
  const dim3 grid(a.kv_heads, (max_new_tokens * group + kRows - 1) / kRows, a.seqs);
  prefill_kernel<D, kRotate><<<grid, kThreads, smem, s>>>(a, kLog2e / sqrtf(static_cast<float>(D)));
  NI_CUDA_LAUNCH_CHECK("attention_prefill_mma");
}

// The split count that keeps the most resident block slots busy. pairs x splits blocks run in
// ceil(blocks / resident) waves, and every wave after the first costs about a seventh of a call
// (its blocks' start-up and merges). Measured on an H200 (2026-12-01, three blocks an SM then: 396
// slots): 64 pairs at 4k, 6 splits in one wave 71 % of copy, 12 in two 61 %; 256 pairs (B=32), 1
// split (one wave, 65 % of the slots) 68 %, 3 splits (two waves, 97 %) 80 %, 4 or 6 splits 74-76 %.
int best_splits(int pairs, int resident, int max_splits) {
  int best = 1;
  double best_score = 0.0;
  for (int s = 1; s <= max_splits; ++s) {
    const int blocks = pairs * s, waves = (blocks + resident - 1) / resident;
    const double busy = static_cast<double>(blocks) / (static_cast<double>(waves) * resident);
    const double score = busy / (1.0 + 0.15 * (waves - 1));
    if (score > best_score + 1e-9) best = s, best_score = score;
  }
  return best;
}

// One block per (split, kv head, sequence); the split count is best_splits'.
template <int D, bool kRotate, int kStages>
void launch_decode(const AttnArgs& a, int max_splits, float* ws, int* counters, cudaStream_t s) {
  // Q and the stages, or Q and the merge scratch that replaces the stages after the tiles.
  constexpr size_t smem =
      std::max(Layout<D>::bytes(16, kStages),
               Layout<D>::bytes(16, 0) + sizeof(float) * Layout<D>::kMergeFloats);
  static const int resident = [] {
    allow_dynamic_smem(decode_kernel<D, kRotate, kStages>, smem);
    int per_sm = 0;
    NI_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, decode_kernel<D, kRotate, kStages>, kThreads, smem));
    return device_limits().sms * std::max(1, per_sm);
  }();
  const int splits = best_splits(a.seqs * a.kv_heads, resident, max_splits);
  launch_pdl(decode_kernel<D, kRotate, kStages>, dim3(splits, a.kv_heads, a.seqs), dim3(kThreads),
             smem, s, a, kLog2e / sqrtf(static_cast<float>(D)), ws, counters);
  NI_CUDA_LAUNCH_CHECK("attention_decode_mma");
}

// Few (sequence, kv head) pairs leave an SM a block or two of work, and the call is bound by
// latency: two stages (170 registers, two blocks an SM) keep a block's two tiles in flight at
// once. Many pairs: one stage and four blocks an SM stream faster. H200, 2026-12-01, two stages
// against one: B=1 (8 pairs) 4k 13.2 -> 10.8 us, 16k 27.1 -> 26.5 us; B=8 (64 pairs) 4k 41.6 ->
// 47.8 us, 16k 145 -> 179 us; B=32 4k 146 -> 178 us. Four stages (one block an SM): B=1 4k
// 12.6 us, B=8 4k 77.9 us.
constexpr int kFewPairs = 16;

template <int D, bool kRotate>
void launch_decode(const AttnArgs& a, int max_splits, float* ws, int* counters, cudaStream_t s) {
  if (a.seqs * a.kv_heads <= kFewPairs)
    launch_decode<D, kRotate, 2>(a, max_splits, ws, counters, s);
  else
    launch_decode<D, kRotate, 1>(a, max_splits, ws, counters, s);
}

bool supported(const AttnArgs& a) {
  return a.dt == DType::BF16 && (a.head_dim == 64 || a.head_dim == 128);
}

template <int D>
void dispatch_prefill(const AttnArgs& a, int max_new_tokens, cudaStream_t s) {
  if (a.rotate_keys)
    launch_prefill<D, true>(a, max_new_tokens, s);
  else
    launch_prefill<D, false>(a, max_new_tokens, s);
}

template <int D>
void dispatch_decode(const AttnArgs& a, int max_splits, float* ws, int* counters, cudaStream_t s) {
  if (a.rotate_keys)
    launch_decode<D, true>(a, max_splits, ws, counters, s);
  else
    launch_decode<D, false>(a, max_splits, ws, counters, s);
}

}  // namespace

bool attention_prefill_mma(const AttnArgs& a, int max_new_tokens, cudaStream_t s) {
  if (!supported(a)) return false;
  if (a.tokens == 0) return true;
  if (a.head_dim == 64)
    dispatch_prefill<64>(a, max_new_tokens, s);
  else
    dispatch_prefill<128>(a, max_new_tokens, s);
  return true;
}

bool attention_decode_mma(const AttnArgs& a, int max_splits, float* workspace, int* counters,
                          cudaStream_t s) {
  if (!supported(a) || a.heads / a.kv_heads > 16) return false;
  if (a.seqs == 0) return true;
  NI_ASSERT(max_splits >= 1 && max_splits <= kMaxSplits);
  if (a.head_dim == 64)
    dispatch_decode<64>(a, max_splits, workspace, counters, s);
  else
    dispatch_decode<128>(a, max_splits, workspace, counters, s);
  return true;
}

}  // namespace nanoinfer::cuda
