// Attention on the tensor cores for bf16 caches with head_dim 64 or 128, flash-attention-2 style
// (mma.sync m16n8k16, scores and probabilities never leave registers). The kernels stage the
// cache through the block table into shared memory, 64 entries a tile (prefill: cp.async, the
// next tile in flight while one is used; decode, where the keys are stored rotated and blocks hold
// a multiple of 16 entries: six or three tiles filled by one warp's tensor memory access boxes;
// other decode calls: one tile at a time by cp.async, the SM's other blocks computing while its
// copies land, or, when the call has few sequences, six tiles filled by four warps that only
// copy), and a warp keeps
// an online softmax over 16 query rows: S = Q K^T into C fragments, the row max and sum over the
// four lanes that share a row, P re-packed as the A operand of P V. A row is one (token, query
// head) pair of a kv head's group, so the group's heads share each K/V tile: prefill packs 64 rows
// per block (16 per warp); decode has one token per sequence, so its 16 rows are the group's heads
// (padded) and the four warps split the tile's entries instead. Decode also splits every context
// over blocks; each block merges its warps, writes its partial (max, sum, output) and the last
// block of a (sequence, kv head) to finish merges all the splits, so there is no second kernel.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <climits>
#include <optional>

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
// 85 %; at B=32 x 4k two stages 79 %, one 85 %. Calls with few (sequence, kv head) pairs, and
// calls whose tiles tensor memory access can stage, take other kernels (launch_decode, below).
constexpr int kDecodeBlocksPerSm = 4;
// The copying-warp decode kernel: one block an SM, six stages (209 KB with Q for D = 128), four
// warps that copy and four that attend. A warp issues a 16-byte cp.async of 32 lanes only every
// ~170 cycles on an H200, so one copying warp an SM streamed 1.7 TB/s and four stream as fast as
// the copies alone (B=1 16k: tiles in 15.5 us, 67 MB). H200, 2026-12-02, B=1 640 / 4k / 16k:
// one copying warp and six stages 6.8 / 12.5 / 40.0 us, two warps and three stages (two blocks
// an SM) 6.1 / 11.3 / 25.3, four warps and six stages 5.5 / 9.8 / 24.2; the two-stage kernel
// before it 7.1 / 10.1 / 25.7. Bulk copies by the copy engine, a row (256 bytes) each, took
// 72 us at 16k.
constexpr int kCopyStages = 6, kCopyWarps = 4;
// The tensor-memory-access decode kernel for calls with more pairs than SMs: three stages, so two
// blocks share an SM and each one's start-up and merge overlap the other's stream (launch_decode).
constexpr int kManyStages = 3;
constexpr int kRows = 64;  // prefill: (token, head) rows per block, 16 per warp
constexpr int kMaxSplits = 128;

template <int D>
struct Layout {
  static constexpr int kStride = D + 8;  // bf16 per shared row: ldmatrix rows hit distinct banks
  static constexpr int kTile = kTileK * kStride;
  // Decode's merge scratch, laid over the stages once the tiles are done: [warp][row][D] outputs,
  // [warp][row] maxima and sums, [row][split] weights (decode_finish's so, sm, sl, weight).
  static constexpr size_t kMergeFloats = 4 * 16 * D + 2 * 4 * 16 + 16 * kMaxSplits;
  // Q rows, then stages x (K tile, V tile).
  static constexpr size_t bytes(int q_rows, int stages) {
    return sizeof(bf16) * (q_rows * kStride + 2 * stages * kTile);
  }
};

// Element (row, col) of a staged K or V tile: rows of Layout<D>::kStride bf16, or (kSwizzled: the
// tiles that tensor memory access stages) D / 64 blocks of 64 rows x 128 bytes, a row's 16-byte
// chunk c stored at chunk c ^ (row % 8) (the tensor map's 128-byte swizzle), so that the eight
// rows of an ldmatrix tile hit distinct banks.
template <int D, bool kSwizzled>
__device__ __forceinline__ const bf16* tile_at(const bf16* t, int row, int col) {
  if constexpr (kSwizzled)
    return t + (col / 64) * kTileK * 64 + row * 64 + ((col % 64 / 8) ^ (row % 8)) * 8 + col % 8;
  else
    return t + row * Layout<D>::kStride + col;
}

// One warp's 16 query rows: Q as A fragments, and for the lane's two rows (lane / 4 and
// lane / 4 + 8) the running max, the running sum (of the lane's own columns until finish()) and
// the output accumulators, D / 8 C tiles. kQShared: Q's fragments are loaded from shared memory
// at every step instead of held in D / 4 registers (the one-stage decode instance, capped at 128
// registers a thread for four blocks an SM: with Q in registers it spilled ~70 bytes a thread
// inside its tile loop; a few more ldmatrix a tile cost less). kSwizzled: K and V tiles laid out
// as tensor memory access stages them (tile_at).
template <int D, bool kQShared = false, bool kSwizzled = false>
struct WarpAttn {
  uint32_t q[kQShared ? 1 : D / 16][4];
  const bf16* qrow = nullptr;  // kQShared: the lane's ldmatrix row of Q (k chunk 0)
  float o[D / 8][4];
  float m[2], l[2];

  __device__ void q_frag(uint32_t (&f)[4], int kc) const { ldmatrix_x4(f, qrow + kc * 16); }

  __device__ void init(const bf16* qs, int row0) {
    const int lane = threadIdx.x % 32;
    qrow = qs + (row0 + lane % 8 + lane / 8 % 2 * 8) * Layout<D>::kStride + lane / 16 * 8;
    if constexpr (!kQShared) {
#pragma unroll
      for (int kc = 0; kc < D / 16; ++kc) q_frag(q[kc], kc);
    }
    reset();
  }

  // init() with Q's fragments read straight from memory: row i at q0 + i D, rows past `rows`
  // zeros.
  __device__ void init_rows(const bf16* q0, int rows) {
    static_assert(!kQShared);
    const int lane = threadIdx.x % 32, r = lane / 4, c = 2 * (lane % 4);
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = r + i % 2 * 8, col = kc * 16 + c + i / 2 * 8;
        q[kc][i] = row < rows ? *reinterpret_cast<const uint32_t*>(q0 + row * D + col) : 0U;
      }
    reset();
  }

  __device__ void reset() {
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
    // Q K^T sums over D / 16 chunks. A decode warp's 16 entries give only two accumulators, so
    // where registers are not capped even and odd chunks sum into separate ones (half the chain
    // of dependent mma), added after.
    constexpr int kChains = NK == 16 && !kQShared ? 2 : 1;
    float acc[kChains][NK / 8][4] = {};
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
      uint32_t qf[4];
      if constexpr (kQShared) q_frag(qf, kc);
      const uint32_t(&a)[4] = kQShared ? qf : q[kQShared ? 0 : kc];
      float(&c)[NK / 8][4] = acc[kc % kChains];
#pragma unroll
      for (int np = 0; np < NK / 16; ++np) {
        uint32_t b[4];
        ldmatrix_x4(b, tile_at<D, kSwizzled>(ks, k0 + np * 16 + lane % 8 + lane / 16 * 8,
                                             kc * 16 + lane / 8 % 2 * 8));
        mma_bf16(c[2 * np], a, b[0], b[1]);
        mma_bf16(c[2 * np + 1], a, b[2], b[3]);
      }
    }
    float(&s)[NK / 8][4] = acc[0];
    if constexpr (kChains == 2) {
#pragma unroll
      for (int n = 0; n < NK / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] += acc[1][n][e];
    }
    // Masked tiles only (a branch a tile, not one an element): hidden entries to -inf first, so
    // that the rest runs without branches. Scores stay unscaled until the exponent: scale > 0
    // keeps the row max, and p = 2^(s * scale - m) is one fma (m: the scaled max, or 0 while a
    // row has seen nothing, so that -inf scores give 0 rather than NaN).
    if (masked) {
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int n = 0; n < NK / 8; ++n)
#pragma unroll
          for (int e = 0; e < 2; ++e)
            if (!visible(h, n * 8 + 2 * (lane % 4) + e)) s[n][2 * h + e] = -INFINITY;
    }
    float alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < NK / 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * h], s[n][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffU, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffU, mx, 2));
      const float m_new = fmaxf(m[h], mx * scale);
      const float m_use = m_new == -INFINITY ? 0.0F : m_new;
      alpha[h] = exp2_approx(m[h] - m_use);
      float sum = 0.0F;
#pragma unroll
      for (int n = 0; n < NK / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = exp2_approx(fmaf(s[n][2 * h + e], scale, -m_use));
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
        ldmatrix_x4_trans(b, tile_at<D, kSwizzled>(vs, k0 + kc * 16 + lane % 8 + lane / 8 % 2 * 8,
                                                   dp * 16 + lane / 16 * 8));
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

// A thread copies one 16-byte column of kRowsEach rows of a tile: its block-table lookups are
// made one tile ahead, so that the copies can be issued as soon as a stage frees up, without
// waiting for a lookup. Neither lookups nor copies branch a row (a row past `last` looks up the
// last row's block and copies zeros), so that all the loads are in flight at once and nothing
// waits for them until copy(); the block size's one branch (a power of two: shift and mask) is
// taken once a tile, around the row loop. With a branch a row, each lookup's latency stalled the
// warp in turn (H200, 2026-12-02: ~15 % of the prefill kernel's stall samples).
template <int D>
struct TileRows {
  static constexpr int kChunks = D / 8, kRowStep = kThreads / kChunks;
  static constexpr int kRowsEach = kTileK / kRowStep;
  int32_t block[kRowsEach];  // the rows' block-table entries

  // Calls f(i, key, page_of, offset_of) for the thread's rows i, keys k0 + its row.
  template <class F>
  __device__ static void rows(const AttnArgs& a, int k0, const F& f) {
    const int r0 = static_cast<int>(threadIdx.x) / kChunks, bs = a.block_size;
    auto each = [&](const auto& page_of, const auto& offset_of) {
#pragma unroll
      for (int i = 0; i < kRowsEach; ++i) f(i, k0 + r0 + i * kRowStep, page_of, offset_of);
    };
    if ((bs & (bs - 1)) == 0) {
      const int shift = __ffs(bs) - 1;
      each([=](int j) { return j >> shift; }, [=](int j) { return j & (bs - 1); });
    } else {
      each([=](int j) { return j / bs; }, [=](int j) { return j % bs; });
    }
  }

  __device__ void lookup(const AttnArgs& a, int seq, int k0, int last) {
    const int32_t* table = a.block_tables + int64_t{seq} * a.bt_stride;
    rows(a, k0, [&](int i, int key, const auto& page_of, const auto&) {
      block[i] = last >= 0 ? table[page_of(min(key, last))] : 0;
    });
  }

  // Stages the rows into ks / vs. Rows past `last` read as zeros: their scores are masked, and
  // zero V keeps 0 x garbage out of the sums. Under PreRope (pos not null) each row's slot
  // position goes to pos[row] beside it, for rotate_keys once the tile is in. (k0 and last:
  // lookup's.)
  __device__ void copy(const AttnArgs& a, int kvh, int k0, int last, bf16* ks, bf16* vs,
                       int32_t* pos) const {
    constexpr int S = Layout<D>::kStride;
    const bf16* kc = static_cast<const bf16*>(a.k_cache);
    const bf16* vc = static_cast<const bf16*>(a.v_cache);
    const int c = static_cast<int>(threadIdx.x) % kChunks;
    rows(a, k0, [&](int i, int key, const auto&, const auto& offset_of) {
      const int r = key - k0;
      const bool ok = key <= last;  // else a slot of the block looked up, not read
      const int32_t slot = block[i] * a.block_size + offset_of(key);
      const int64_t row = (int64_t{slot} * a.kv_heads + kvh) * D;
      cp_async16(vs + r * S + c * 8, vc + row + c * 8, ok);
      cp_async16(ks + r * S + c * 8, kc + row + c * 8, ok);
      if (pos != nullptr && c == 0) cp_async4(pos + r, a.slot_pos + slot, ok);
    });
  }
};

// Pre-RoPE caches: 8 pairs of a key, lo = elements i..i+7 and hi = elements i+D/2..i+D/2+7,
// rotated as load_key does: element d < D/2 becomes k[d] c - k[d + D/2] s, element d + D/2
// becomes k[d + D/2] c + k[d] s, with c, s the table's fp32 cos and sin of index d (cs: the
// table row's 8 cos then its 8 sin), rounded to bf16 once.
__device__ __forceinline__ void rotate_pairs(uint4& lo, uint4& hi, const float4 (&cs)[4]) {
  const auto* c = reinterpret_cast<const float*>(&cs[0]);
  const auto* sn = reinterpret_cast<const float*>(&cs[2]);
  const auto* x = reinterpret_cast<const bf16*>(&lo);
  const auto* y = reinterpret_cast<const bf16*>(&hi);
  alignas(16) bf16 u[8], v[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const float xe = __bfloat162float(x[e]), ye = __bfloat162float(y[e]);
    u[e] = __float2bfloat16_rn(xe * c[e] - ye * sn[e]);
    v[e] = __float2bfloat16_rn(ye * c[e] + xe * sn[e]);
  }
  lo = *reinterpret_cast<const uint4*>(u);
  hi = *reinterpret_cast<const uint4*>(v);
}

// The cos and sin of 8 pairs from index i of the table row of position pos (rotate_pairs' cs).
template <int D>
__device__ __forceinline__ void load_cos_sin(const AttnArgs& a, int pos, int i, float4 (&cs)[4]) {
  const auto* table = reinterpret_cast<const float4*>(a.cos_sin + int64_t{pos} * D + i);
  cs[0] = table[0];
  cs[1] = table[1];
  cs[2] = table[D / 8];
  cs[3] = table[D / 8 + 1];
}

// cs (load_cos_sin's cos and sin of 8 pairs at one position) advanced by the angles of `by`, the
// same pairs' cos and sin at another: cos(x + y) = cos x cos y - sin x sin y, sin(x + y) = sin x
// cos y + cos x sin y.
__device__ __forceinline__ void turn_pairs(float4 (&cs)[4], const float4 (&by)[4]) {
  auto* c = reinterpret_cast<float*>(&cs[0]);
  auto* sn = reinterpret_cast<float*>(&cs[2]);
  const auto* bc = reinterpret_cast<const float*>(&by[0]);
  const auto* bs = reinterpret_cast<const float*>(&by[2]);
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const float ce = c[e] * bc[e] - sn[e] * bs[e];
    sn[e] = sn[e] * bc[e] + c[e] * bs[e];
    c[e] = ce;
  }
}

// Pre-RoPE caches: rotates a staged tile's keys in place by their positions (pos[row], staged
// with the tile). Thread tid of kThreads takes 8 pairs of a row at a time (rotate_pairs), kBatch
// rows' table loads in flight together (1 where registers are capped at 128: 2 spilled).
template <int D, int kBatch>
__device__ void rotate_keys(const AttnArgs& a, bf16* ks, const int32_t* pos, int tid) {
  constexpr int S = Layout<D>::kStride, kHalf = D / 2, kPieces = kHalf / 8;
  constexpr int kEach = kTileK * kPieces / kThreads;
  static_assert(kEach % kBatch == 0);
#pragma unroll
  for (int b = 0; b < kEach; b += kBatch) {
    float4 cs[kBatch][4];
    uint4 lo[kBatch], hi[kBatch];
    bf16* at[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int piece = tid + (b + j) * kThreads, r = piece / kPieces, i = piece % kPieces * 8;
      load_cos_sin<D>(a, pos[r], i, cs[j]);
      at[j] = ks + r * S + i;
      lo[j] = *reinterpret_cast<const uint4*>(at[j]);
      hi[j] = *reinterpret_cast<const uint4*>(at[j] + kHalf);
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      rotate_pairs(lo[j], hi[j], cs[j]);
      *reinterpret_cast<uint4*>(at[j]) = lo[j];
      *reinterpret_cast<uint4*>(at[j] + kHalf) = hi[j];
    }
  }
}

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
// kRotate (pre-RoPE caches): once a tile is in, its keys are rotated in place, one barrier more.
template <int D, int kStages, bool kFillAll, bool kRotate, class Start, class Body>
__device__ void for_each_tile(const AttnArgs& a, int seq, int kvh, int first, int last,
                              int safe_last, bf16* stages, const Start& start, const Body& body) {
  constexpr int kTile = Layout<D>::kTile;
  constexpr int kAhead = kFillAll ? kStages : kStages - 1;  // tiles copied before body(0)
  auto k_stage = [&](int t) { return stages + (t % kStages) * 2 * kTile; };
  // Pre-RoPE: each stage's key positions, staged with it.
  __shared__ int32_t stage_pos[kRotate ? kStages : 1][kTileK];
  auto copy = [&](const TileRows<D>& rows, int t) {
    rows.copy(a, kvh, first + t * kTileK, last, k_stage(t), k_stage(t) + kTile,
              kRotate ? stage_pos[t % kStages] : nullptr);
  };
  auto early = [&](int t) { return min(last, first + t * kTileK + kTileK - 1) <= safe_last; };
  const int n_tiles = last >= first ? (last - first) / kTileK + 1 : 0;
  TileRows<D> rows;
  // Early copies join the first group, which body(0) waits for; tile t's others join group t.
#pragma unroll
  for (int t = 0; t < kAhead; ++t) {
    if (t < n_tiles && early(t)) {
      rows.lookup(a, seq, first + t * kTileK, last);
      copy(rows, t);
    }
  }
  start();
#pragma unroll
  for (int t = 0; t < kAhead; ++t) {
    if (t < n_tiles && !early(t)) {
      rows.lookup(a, seq, first + t * kTileK, last);
      copy(rows, t);
    }
    cp_async_commit();
  }
  rows.lookup(a, seq, first + kAhead * kTileK, last);
  for (int t = 0; t < n_tiles; ++t) {
    cp_async_wait<kAhead - 1>();  // group t holds tile t; the ones after it may be in flight
    __syncthreads();  // tile t is in for every thread (prefill: tile t - 1's stage is free)
    if constexpr (kRotate) {
      // (Decode's one-stage instance is the one capped at 128 registers.)
      rotate_keys<D, kFillAll ? 1 : 2>(a, k_stage(t), stage_pos[t % kStages],
                                       static_cast<int>(threadIdx.x));
      __syncthreads();
    }
    const int next = t + kAhead;
    if constexpr (kFillAll) {
      body(t, k_stage(t), k_stage(t) + kTile, first + t * kTileK);
      __syncthreads();  // every warp is done with tile t's stage
    }
    if (next < n_tiles) {
      copy(rows, next);
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
// context for the group's heads, in slices of whole tiles; short contexts leave trailing splits
// empty (used < splits).
struct DecodeSlice {
  int split, splits, kvh, seq, group, ctx, qi, used, first, last;
  __device__ explicit DecodeSlice(const AttnArgs& a)
      : split(static_cast<int>(blockIdx.x)),
        splits(static_cast<int>(gridDim.x)),
        kvh(static_cast<int>(blockIdx.y)),
        seq(static_cast<int>(blockIdx.z)),
        group(a.heads / a.kv_heads),
        ctx(a.context_lens[seq]),
        qi(a.q_index[seq]) {
    const int n_keys = max(0, min(ctx, qi + 1));
    const int per_split = (n_keys + splits - 1) / splits;
    const int chunk = max(1, (per_split + kTileK - 1) / kTileK) * kTileK;
    used = max(1, (n_keys + chunk - 1) / chunk);
    first = split * chunk;
    last = min(n_keys, first + chunk) - 1;
  }
};

// The group's query rows (padded to 16 with zeros) into qs, by threads tid of n (cp.async: the
// caller commits and waits).
template <int D>
__device__ void load_q(const AttnArgs& a, const DecodeSlice& d, bf16* qs, int tid, int n) {
  constexpr int S = Layout<D>::kStride, kChunks = D / 8;
  const int64_t stride = int64_t{a.heads + 2 * a.kv_heads} * D;
  const bf16* qkv = static_cast<const bf16*>(a.qkv);
  for (int i = tid; i < 16 * kChunks; i += n) {
    const int r = i / kChunks, c = i % kChunks;
    const int64_t src = r < d.group ? d.seq * stride + int64_t{d.kvh * d.group + r} * D + c * 8 : 0;
    cp_async16(qs + r * S + c * 8, qkv + src, r < d.group);
  }
}

// The calling warp's 16 entries of the tile that starts at entry k0.
template <class W>
__device__ void decode_tile(W& w, const AttnArgs& a, const DecodeSlice& d, const bf16* ks,
                            const bf16* vs, int k0, float scale) {
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int kw = k0 + warp * 16;
  if (kw > d.last) return;
  const bool tree = a.tree_mask != nullptr;
  const bool masked = kw + 15 > d.last || (tree && kw + 15 >= d.ctx - 1);
  w.template step<16>(ks, vs, warp * 16, scale, masked, [&](int, int j) {
    const int key = kw + j;
    return key <= d.last && tree_visible(a, d.seq, 1, d.ctx - 1, d.qi, key);
  });
}

// The four attending warps (threads 0-127) synchronise among themselves: a decode block may
// also hold a copying warp.
__device__ __forceinline__ void attn_warps_sync() {
  asm volatile("bar.sync 1, 128;\n" ::: "memory");
}

// After the tiles (w.finish() done, the stages free for scratch): merges the four warps, writes
// the block's partial, and the last split of the (sequence, kv head) to finish merges them all
// into the output (one split: the output directly). ws holds [seq][head][split][4 + D] partials
// (max, sum, two floats of padding so that the output starts 16-byte aligned, output); counters
// [seq][kv head] count finished splits (zero between launches: the last block resets). kFirst:
// splits whose partials a thread requests before the split weights are known.
template <int D, int kFirst, class W>
__device__ void decode_finish(const AttnArgs& a, const DecodeSlice& d, const W& w, float* scratch,
                              float* ws, int* counters) {
  constexpr int kPart = D + 4;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const int group = d.group, used = d.used, splits = d.splits;
  bf16* out = static_cast<bf16*>(a.out) + (int64_t{d.seq} * a.heads + d.kvh * group) * D;
  // [warp][row][D] outputs, [warp][row] maxima and sums, then [row][split] weights.
  float* so = scratch;
  float* sm = so + 4 * 16 * D;
  float* sl = sm + 4 * 16;
  float* weight = sl + 4 * 16;
  const bool any = d.last >= d.first;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = lane / 4 + 8 * h;
    if (r >= group) continue;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      so[(warp * 16 + r) * D + n * 8 + 2 * (lane % 4)] = any ? w.o[n][2 * h] : 0.0F;
      so[(warp * 16 + r) * D + n * 8 + 2 * (lane % 4) + 1] = any ? w.o[n][2 * h + 1] : 0.0F;
    }
    if (lane % 4 == 0) {  // (-inf and 0 where the warp saw no tile: both kernels start so)
      sm[warp * 16 + r] = w.m[h];
      sl[warp * 16 + r] = w.l[h];
    }
  }
  attn_warps_sync();
  for (int i = tid; i < group * D; i += kThreads) {
    const int r = i / D, dd = i % D;
    float mx = -INFINITY;
#pragma unroll
    for (int v = 0; v < 4; ++v) mx = fmaxf(mx, sm[v * 16 + r]);
    float sum = 0.0F, acc = 0.0F;
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const float wt = mx == -INFINITY ? 0.0F : exp2f(sm[v * 16 + r] - mx);
      sum += wt * sl[v * 16 + r];
      acc += wt * so[(v * 16 + r) * D + dd];
    }
    if (used == 1) {
      out[r * D + dd] = __float2bfloat16_rn(sum > 0.0F ? acc / sum : 0.0F);
    } else {
      float* part =
          ws + ((int64_t{d.seq} * a.heads + d.kvh * group + r) * splits + d.split) * kPart;
      part[4 + dd] = acc;
      if (dd == 0) {
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
  attn_warps_sync();
  if (tid == 0) {
    int* count = counters + int64_t{d.seq} * a.kv_heads + d.kvh;
    int done = 0;
    asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], 1;\n"
                 : "=r"(done)
                 : "l"(count)
                 : "memory");
    last_block = done == used - 1;
    if (last_block) *count = 0;
  }
  attn_warps_sync();
  if (!last_block) return;
  const float* base = ws + (int64_t{d.seq} * a.heads + d.kvh * group) * splits * kPart;
  // Outputs: a thread per 4 elements of a row (an item), 16-byte loads of kFirst splits in
  // flight. The loads of a thread's first item do not depend on the split weights, so they are
  // issued before the weights are worked out: the two round trips to the L2 overlap.
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
  attn_warps_sync();
  for (int i = tid; i < items; i += kThreads) {
    const int r = i / (D / 4), dd = i % (D / 4) * 4;
    if (i != tid) load_first(i);
    float4 acc = make_float4(0.0F, 0.0F, 0.0F, 0.0F);
    auto add = [&](float wt, const float4& v) {
      acc.x += wt * v.x;
      acc.y += wt * v.y;
      acc.z += wt * v.z;
      acc.w += wt * v.w;
    };
#pragma unroll
    for (int sp = 0; sp < kFirst; ++sp)
      if (sp < used) add(weight[r * kMaxSplits + sp], early[sp]);
    const float* row = item_row(i);
#pragma unroll 16
    for (int sp = kFirst; sp < used; ++sp)
      add(weight[r * kMaxSplits + sp], __ldcg(reinterpret_cast<const float4*>(row + sp * kPart)));
    *reinterpret_cast<__nv_bfloat162*>(out + r * D + dd) = __floats2bfloat162_rn(acc.x, acc.y);
    *reinterpret_cast<__nv_bfloat162*>(out + r * D + dd + 2) = __floats2bfloat162_rn(acc.z, acc.w);
  }
}

// The decode kernel whose own threads copy the tiles (cp.async), alternating with their use
// (for_each_tile's decode schedule, one stage: four blocks an SM, their copies overlapping each
// other's arithmetic).
template <int D, bool kRotate>
__global__ void __launch_bounds__(kThreads, kDecodeBlocksPerSm)
    decode_kernel(const AttnArgs a, float scale, float* ws, int* counters) {
  constexpr int S = Layout<D>::kStride;
  pdl_trigger();  // the O GEMV may start prefetching its weights
  const DecodeSlice d(a);
  if (d.split >= d.used) return;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* stages = qs + 16 * S;
  // Launched as a programmatic dependent of the RoPE kernel, which writes Q and this step's
  // cache entry (the last, ctx - 1): older entries are copied before waiting for it.
  auto start = [&] {
    pdl_wait();
    load_q<D>(a, d, qs, static_cast<int>(threadIdx.x), kThreads);
  };
  WarpAttn<D, true> w;          // (Q from shared memory: registers are capped at 128)
  w.m[0] = w.m[1] = -INFINITY;  // for an empty context (no tile): nothing seen
  w.l[0] = w.l[1] = 0.0F;
  auto body = [&](int t, const bf16* ks, const bf16* vs, int k0) {
    if (t == 0) w.init(qs, 0);
    decode_tile(w, a, d, ks, vs, k0, scale);
  };
  for_each_tile<D, 1, true, kRotate>(a, d.seq, d.kvh, d.first, d.last, d.ctx - 2, stages, start,
                                     body);
  w.finish();
  decode_finish<D, 16>(a, d, w, reinterpret_cast<float*>(stages), ws, counters);
}

// The decode kernel with copying warps (calls with few (sequence, kv head) pairs): warps 4-7 copy
// each tile's K and V rows (cp.async) as soon as a stage is free, up to kCopyStages tiles ahead,
// while warps 0-3 attend; full[s] / empty[s] mbarriers hand the stages back and forth, so the
// copies never wait for the arithmetic. Pre-RoPE (kRotate): the copying warps also rotate each
// tile's keys once it is in, while the next tile's copies are in flight.
template <int D, bool kRotate>
__global__ void __launch_bounds__(kThreads + 32 * kCopyWarps, 1)
    decode_copier_kernel(const AttnArgs a, float scale, float* ws, int* counters) {
  constexpr int S = Layout<D>::kStride, kTile = Layout<D>::kTile, kWarps = kThreads / 32;
  constexpr int kStages = kCopyStages, kCopiers = kCopyWarps;
  pdl_trigger();
  const DecodeSlice d(a);
  if (d.split >= d.used) return;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* stages = qs + 16 * S;
  __shared__ uint64_t full[kStages], empty[kStages];
  if (tid == 0) {
    for (int st = 0; st < kStages; ++st) {
      mbar_init(&full[st], 32 * kCopiers);  // the copying threads
      mbar_init(&empty[st], kWarps);
    }
    mbar_init_fence();
  }
  __syncthreads();
  const int n_tiles = d.last >= d.first ? (d.last - d.first) / kTileK + 1 : 0;

  if (warp >= kWarps) {  // the copying warps: kN threads, a row in kChunks 16-byte pieces
    constexpr int kChunks = D / 8, kN = 32 * kCopiers;
    static_assert(kN == kThreads);  // rotate_keys' share of a tile
    const int ct = tid - kThreads;
    auto copiers_sync = [] { asm volatile("bar.sync 2, %0;\n" ::"n"(kN) : "memory"); };
    const bf16* kc = static_cast<const bf16*>(a.k_cache);
    const bf16* vc = static_cast<const bf16*>(a.v_cache);
    // Cache rows of the tile being copied and of the two after it (-1 past the slice). A copying
    // thread never waits for a block-table load: tile t + kRing's entry is fetched into a
    // register at iteration t and turned into its row in shared memory an iteration later
    // (keep), so the load has landed by then. (Made and used at once, its latency held up every
    // tile's copies, and the attending warps waited for data: B=2 16k, H200, 2026-12-02, 72 -> 85 %
    // of copy.)
    constexpr int kRing = 3;
    __shared__ int64_t rows[kRing][kTileK];
    // Pre-RoPE: the rows' slots, and each stage's key positions.
    __shared__ int32_t slots[kRotate ? kRing : 1][kTileK], stage_pos[kRotate ? kStages : 1][kTileK];
    const int32_t* table = a.block_tables + int64_t{d.seq} * a.bt_stride;
    const int bs = a.block_size;
    // Thread ct < kTileK looks up row ct of each tile (a row past the slice: the last row's).
    static_assert(kN >= kTileK);
    auto fetch = [&](int t) {
      const int key = min(d.first + t * kTileK + ct, d.last);
      return ct < kTileK ? table[key / bs] : 0;
    };
    auto keep = [&](int t, int32_t entry) {
      if (ct >= kTileK) return;
      const int key = d.first + t * kTileK + ct;
      const int64_t slot = key <= d.last ? int64_t{entry} * bs + key % bs : -1;
      rows[t % kRing][ct] = slot >= 0 ? (slot * a.kv_heads + d.kvh) * D : -1;
      if constexpr (kRotate) slots[t % kRing][ct] = static_cast<int32_t>(slot);
    };
    // Pre-RoPE: tile t is in once this thread's group t is and the other copiers have passed
    // the barrier; rotated, it is handed over.
    auto rotate_and_hand_over = [&](int t) {
      copiers_sync();
      rotate_keys<D, 2>(a, stages + t % kStages * 2 * kTile, stage_pos[t % kStages], ct);
      mbar_arrive(&full[t % kStages]);
    };
    int32_t fetched = 0;        // tile t + kRing - 1's entry during iteration t, until kept
    static_assert(kRing == 3);  // the prologue keeps tiles 0 and 1 and fetches tile 2
    if (n_tiles > 0) {
      const int32_t e0 = fetch(0), e1 = n_tiles > 1 ? fetch(1) : 0;
      if (n_tiles > 2) fetched = fetch(2);
      keep(0, e0);
      if (n_tiles > 1) keep(1, e1);
    }
    for (int t = 0; t < n_tiles; ++t) {
      const int st = t % kStages, k0 = d.first + t * kTileK;
      if (t >= kStages) mbar_wait(&empty[st], (t / kStages - 1) & 1);
      // This step's entry (ctx - 1) is written by the kernel ahead: wait for it.
      if (min(d.last, k0 + kTileK - 1) > d.ctx - 2) pdl_wait();
      copiers_sync();  // tile t's rows are in; every copier is done with tile t - 1's
      bf16* ks = stages + st * 2 * kTile;
      bf16* vs = ks + kTile;
      // Consecutive threads copy consecutive pieces of a row; rows past the slice read as zeros.
#pragma unroll 8
      for (int i = ct; i < kTileK * kChunks; i += kN) {
        const int r = i / kChunks, c = i % kChunks;
        const int64_t row = rows[t % kRing][r];
        cp_async16(ks + r * S + c * 8, kc + (row < 0 ? 0 : row) + c * 8, row >= 0);
        cp_async16(vs + r * S + c * 8, vc + (row < 0 ? 0 : row) + c * 8, row >= 0);
        if constexpr (kRotate) {
          const int32_t slot = slots[t % kRing][r];
          if (c == 0) cp_async4(&stage_pos[st][r], a.slot_pos + max(slot, 0), slot >= 0);
        }
      }
      if constexpr (kRotate) {
        cp_async_commit();
        if (t > 0) {
          cp_async_wait<1>();
          rotate_and_hand_over(t - 1);
        }
      } else {
        cp_async_mbar_arrive(&full[st]);  // once this thread's copies have landed
      }
      if (t + kRing - 1 < n_tiles) keep(t + kRing - 1, fetched);  // into tile t - 1's rows
      if (t + kRing < n_tiles) fetched = fetch(t + kRing);
    }
    if (kRotate && n_tiles > 0) {
      cp_async_wait<0>();
      rotate_and_hand_over(n_tiles - 1);
    }
    return;
  }

  pdl_wait();  // Q is written by the kernel ahead
  load_q<D>(a, d, qs, tid, kThreads);
  cp_async_commit();
  cp_async_wait<0>();
  attn_warps_sync();
  WarpAttn<D> w;
  w.init(qs, 0);
  for (int t = 0; t < n_tiles; ++t) {
    const int st = t % kStages;
    mbar_wait(&full[st], (t / kStages) & 1);
    const bf16* ks = stages + st * 2 * kTile;
    decode_tile(w, a, d, ks, ks + kTile, d.first + t * kTileK, scale);
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[st]);
  }
  w.finish();
  attn_warps_sync();  // every warp is done with the stages: the scratch overlays them
  decode_finish<D, 32>(a, d, w, reinterpret_cast<float*>(stages), ws, counters);
}

// decode_tma_kernel's rotating warps: three, so that with the four attending warps and the
// copying one each of the SM's four schedulers holds at most two warps and a thread may take 255
// registers (a ninth warp capped them at 168, and the attending warps spilled). None, with each
// attending warp rotating its own rows before it attends to them, was slower wherever a block
// holds more than one tile (H200, 2026-12-06, 8B shapes: B=1 4k 9.6 -> 11.6 us, B=32 16k 640 ->
// 714).
constexpr int kRotThreads = 96;

// The rotating warps' loop over a block's tiles (thread rt of kRotThreads): each tile's keys are
// turned in place once it has landed, then passed on (rotated). Thread rt's pieces of a tile (8
// pairs of a row) share one column (col) and lie kStep rows apart (r0, r0 + kStep, ...). Where a
// tile's entries sit at the positions of their indices (every cache but one a tree step wrote
// into), their cos and sin are worked out, not loaded: row r0 + kStep j turns the row of entry
// k0 + r0 by kStep positions j times, and that row is the last tile's turned by kTileK positions
// (turn_pairs). So the table is read three rows a block, not one a piece (H100, 2026-12-06, 8B
// shapes, entries at their positions: B=1 16k 35.6 -> 27.7 us, B=8 16k 233 -> 175, B=32 16k 938
// -> 698; loading instead the one row a tile needs, three tiles ahead, was no faster than a row a
// piece, for a reason not found). The turns are exact rotations to within fp32 rounding (7e-5 off
// after 2,048 hops), where the table holds the cos and sin of fp32-rounded angles (position x
// frequency, off by up to position x 2^-24 radians: 2.4e-4 at 4k, 1e-3 at 16k), so keys may differ
// from the table's rotation by that much; their bf16 rounding is 2e-3. In a tile not at its
// positions (or of a context of kStep entries or fewer, or of more entries than the table has
// rows) each piece loads its position's row, one after another (all in flight together, the
// eight warps would need 255 registers).
template <int D, int kStages>
__device__ void rotate_tma_tiles(const AttnArgs& a, const DecodeSlice& d, int n_tiles, bf16* stages,
                                 const int32_t (*stage_pos)[kTileK], uint64_t* full,
                                 uint64_t* posted, uint64_t* rotated, int rt) {
  constexpr int kPieces = D / 16, kStep = kRotThreads / kPieces;
  constexpr int kEach = (kTileK + kStep - 1) / kStep;
  static_assert(kRotThreads % kPieces == 0 && kStep < kTileK);
  const int col = rt % kPieces * 8, r0 = rt / kPieces;
  // The turns need the table's row kStep, which a context longer than kStep implies, the hops
  // (blocks of more than one tile: contexts longer than kTileK) its row kTileK, and the base the
  // row of the block's first entry: within the table wherever the context is (entries written
  // with explicit positions may outnumber its rows; the engine's never do).
  const bool stepped = d.ctx > kStep && d.ctx <= a.rope_rows && n_tiles > 0;
  float4 turn[4], hop[4] = {}, base[4];
  if (stepped) {
    load_cos_sin<D>(a, kStep, col, turn);
    if (n_tiles > 1) load_cos_sin<D>(a, kTileK, col, hop);
    load_cos_sin<D>(a, min(d.first + r0, d.last), col, base);  // (rows past last: never used)
  }
  for (int t = 0; t < n_tiles; ++t) {
    const int st = t % kStages, k0 = d.first + t * kTileK;
    const uint32_t phase = (t / kStages) & 1;
    const int32_t* pos = stage_pos[st];
    bf16* ks = stages + st * 2 * kTileK * D;
    mbar_wait(&posted[st], phase);
    bool indexed = stepped;
#pragma unroll
    for (int j = 0; j < kEach; ++j) {
      const int row = r0 + j * kStep;
      if (row < kTileK && k0 + row <= d.last) indexed = indexed && pos[row] == k0 + row;
    }
    mbar_wait(&full[st], phase);
    auto rotate_row = [&](int row, const float4(&cs)[4]) {
      auto* lo = reinterpret_cast<uint4*>(const_cast<bf16*>(tile_at<D, true>(ks, row, col)));
      auto* hi =
          reinterpret_cast<uint4*>(const_cast<bf16*>(tile_at<D, true>(ks, row, col + D / 2)));
      uint4 x = *lo, y = *hi;
      rotate_pairs(x, y, cs);
      *lo = x;
      *hi = y;
    };
    if (indexed) {
      float4 cs[4] = {base[0], base[1], base[2], base[3]};
#pragma unroll
      for (int j = 0; j < kEach; ++j) {
        const int row = r0 + j * kStep;
        if (row < kTileK && k0 + row <= d.last) rotate_row(row, cs);
        if (j + 1 < kEach) turn_pairs(cs, turn);
      }
    } else {
#pragma unroll 1
      for (int row = r0; row < kTileK && k0 + row <= d.last; row += kStep) {
        float4 cs[4];
        load_cos_sin<D>(a, pos[row], col, cs);
        rotate_row(row, cs);
      }
    }
    fence_proxy_async_smem();  // the stage's next tile is written by tensor memory access
    mbar_arrive(&rotated[st]);
    if (stepped && t + 1 < n_tiles) turn_pairs(base, hop);
  }
}

// The decode kernel whose tiles are staged by tensor memory access (keys stored rotated, block
// sizes a multiple of 16; kStages: six, one block an SM, or kManyStages, three, two blocks an SM):
// one copying warp, whose lane issues one box a tile (16 cache rows of the kv head, 64 columns: one
// block's rows of a half of K or of V at head_dim 128), up to kStages tiles ahead but at most
// kInFlight tiles issued and not yet landed, the stage's full mbarrier counting the bytes; the four
// attending warps as in decode_copier_kernel, on swizzled tiles, with Q's fragments read straight
// into registers. Boxes wholly past the slice are not loaded; the rows of a loaded box past the
// slice are other cache entries, which the scores mask, and their V rows are zeroed before use, so
// that no stale non-finite value meets a zero weight. Against the copying warps' cp.async (H100,
// 2026-12-05, 8B shapes, % of copy): B=1 4k 64.4-64.7 against 62.9-63.1, 16k 88.0 against 84.2, B=2
// 4k 80.0-80.4 against 77.4-77.7, 16k 95.8-96.0 against 91.6; at 640 entries (one tile a
// block) 5.2-5.3 us against 4.9, W1 unchanged within noise. Tiles in flight at six stages (H100,
// 2026-12-06, 8B shapes, three runs, µs a call with six / four / two): B=1 4k 8.5 / 8.5 / 8.3,
// 16k 24.9 / 24.8-24.9 / 25.0; B=2 4k 13.8 / 13.8 / 13.7, 16k 45.8-45.9 / 45.8-45.9 / 45.5-45.6;
// B=8 4k 45.3 / 45.0 / 45.8-45.9, 16k 175.4-176.9 / 172.1-172.2 / 169.6. Behind the RoPE kernel, as
// the engine runs it (H100, 2026-12-06, another call, all six against the launcher's two): B=1 4k
// 8.8-8.9 against 7.7-7.8 us, B=2 4k 13.5 against 12.6-12.7. Why fewer copies in flight help was
// not measured. The caps are the H100's: on an H200 (2026-12-06) two in flight against six cost
// 1-3 % at B=2 and at B=1 16k, and gained only at B=1 4k behind the RoPE kernel (docs/perf.md).
// kRotate (pre-RoPE keys): the copying warp also brings each box's 16 positions (slot_pos, a bulk
// copy on a barrier of its own, posted), and three rotating warps turn each landed tile's keys in
// place (rotate_tma_tiles) before the attending warps take it, so that the copies are never held
// up by the rotation. H100, 2026-12-06, 8B shapes, entries at their positions, B=1 pre-RoPE 640 /
// 4k / 16k: 6.2 / 9.9 / 27.7 us (post-RoPE keys: 5.2 / 8.3 / 24.9); on all 132 SMs 10.5 us at 4k
// (an earlier call), so it leaves a seventh free too. With the stages read through LDS / STS (not
// generic loads; another H100, same day): 6.0 / 9.6 / 27.0 us, post-RoPE 5.2 / 8.3 / 25.3. Earlier
// measurements (the fifty-fourth and fifty-fifth sessions') wrote position 0 into every entry, so
// that every table load hit one row.
template <int D, int kStages, int kInFlight, bool kRotate>
__global__ void __launch_bounds__(kThreads + 32 + (kRotate ? kRotThreads : 0),
                                  kCopyStages / kStages)
    decode_tma_kernel(const AttnArgs a, float scale, float* ws, int* counters,
                      const __grid_constant__ CUtensorMap kmap,
                      const __grid_constant__ CUtensorMap vmap) {
  constexpr int kTile = kTileK * D, kWarps = kThreads / 32;
  constexpr int kHalves = D / 64, kBoxBytes = 16 * 64 * sizeof(bf16);
  static_assert(sizeof(float) * Layout<D>::kMergeFloats <= sizeof(bf16) * kStages * 2 * kTile);
  pdl_trigger();
  const DecodeSlice d(a);
  if (d.split >= d.used) return;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  // The swizzle is a function of the address: the stages start on a 1024-byte boundary. (An
  // offset from smem_raw, not an address rounded as an integer, so that the compiler still knows
  // them for shared memory and reads and writes them with shared-memory instructions.)
  bf16* stages = reinterpret_cast<bf16*>(smem_raw + (1024 - smem_addr(smem_raw) % 1024) % 1024);
  __shared__ uint64_t full[kStages], empty[kStages], rotated[kRotate ? kStages : 1],
      posted[kRotate ? kStages : 1];
  __shared__ __align__(16) int32_t stage_pos[kRotate ? kStages : 1][kTileK];
  const int n_tiles = d.last >= d.first ? (d.last - d.first) / kTileK + 1 : 0;
  // The copying warp's lane l holds the cache block of rows 16 (l % 4).. of tile 8 r + l / 4 of
  // run r (eight tiles a run, a load a lane), the next run's loaded a run ahead. The first
  // loads and the tensor maps' fetch are on their way while the barriers are set up.
  const int32_t* table = a.block_tables + int64_t{d.seq} * a.bt_stride;
  auto lookup = [&](int run) {
    const int t = run * 8 + lane / 4, key = d.first + t * kTileK + lane % 4 * 16;
    return t < n_tiles && key <= d.last ? table[key / a.block_size] : 0;
  };
  int32_t blocks = 0, ahead = 0;
  if (warp == kWarps) {
    tma_prefetch_map(&kmap);
    tma_prefetch_map(&vmap);
    blocks = lookup(0);
    if (n_tiles > 8) ahead = lookup(1);
  }
  if (tid == 0) {
    for (int st = 0; st < kStages; ++st) {
      mbar_init(&full[st], 1);  // the copying warp's lane 0, with the bytes of the tile's boxes
      mbar_init(&empty[st], kWarps);
      if constexpr (kRotate) {
        mbar_init(&rotated[st], kRotThreads);
        mbar_init(&posted[st], 1);  // the copying warp's lane 0, with the positions' bytes
      }
    }
    mbar_init_fence();
  }
  __syncthreads();

  if constexpr (kRotate) {
    if (warp > kWarps) {  // the rotating warps
      const int rt = tid - kThreads - 32;
      rotate_tma_tiles<D, kStages>(a, d, n_tiles, stages, stage_pos, full, posted, rotated, rt);
      return;
    }
  }

  if (warp == kWarps) {  // the copying warp: lane = (K or V, half, box)
    const int box = lane % 4, half = lane / 4 % kHalves, kind = lane / (4 * kHalves);
    const CUtensorMap* map = kind == 0 ? &kmap : &vmap;
    for (int t = 0; t < n_tiles; ++t) {
      if (t % 8 == 0 && t > 0) {
        blocks = ahead;
        if (t + 8 < n_tiles) ahead = lookup(t / 8 + 1);
      }
      const int st = t % kStages, k0 = d.first + t * kTileK;
      if (t >= kStages) mbar_wait(&empty[st], (t / kStages - 1) & 1);
      if (kInFlight < kStages && t >= kInFlight)  // tile t - kInFlight has landed
        mbar_wait(&full[(t - kInFlight) % kStages], ((t - kInFlight) / kStages) & 1);
      // This step's entry (ctx - 1) is written by the kernel ahead: wait for it.
      if (min(d.last, k0 + kTileK - 1) > d.ctx - 2) pdl_wait();
      const int boxes = min(4, (d.last - k0) / 16 + 1);  // those with entries in the slice
      constexpr int kPosBytes = kRotate ? 16 * sizeof(int32_t) : 0;  // a box's positions
      if (lane == 0) {
        mbar_arrive_expect_tx(&full[st], boxes * 2 * kHalves * kBoxBytes);
        if constexpr (kRotate) mbar_arrive_expect_tx(&posted[st], boxes * kPosBytes);
      }
      const int32_t block = __shfl_sync(0xffffffffU, blocks, t % 8 * 4 + box);
      if (kind < 2 && box < boxes) {
        const int key = k0 + box * 16, slot = block * a.block_size + key % a.block_size;
        tma_load_3d(stages + (st * 2 + kind) * kTile + half * kTileK * 64 + box * 16 * 64, map,
                    half * 64, d.kvh, slot, &full[st]);
        if constexpr (kRotate)
          if (lane < 4)  // lanes 0-3: K's first half, box = lane
            bulk_load(stage_pos[st] + box * 16, a.slot_pos + slot, kPosBytes, &posted[st]);
      }
    }
    return;
  }

  pdl_wait();  // Q is written by the kernel ahead
  WarpAttn<D, false, true> w;
  w.init_rows(static_cast<const bf16*>(a.qkv) + int64_t{d.seq} * (a.heads + 2 * a.kv_heads) * D +
                  int64_t{d.kvh} * d.group * D,
              d.group);
  for (int t = 0; t < n_tiles; ++t) {
    const int st = t % kStages, k0 = d.first + t * kTileK;
    mbar_wait(kRotate ? &rotated[st] : &full[st], (t / kStages) & 1);
    bf16* ks = stages + st * 2 * kTile;
    // The warp's rows past the slice (in the last tile only): V to zeros.
    const int kw = k0 + warp * 16;
    if (kw <= d.last && kw + 15 > d.last) {
      for (int i = lane; i < 16 * kHalves * 8; i += 32) {
        const int r = i / (kHalves * 8), h = i / 8 % kHalves, c = i % 8;
        if (kw + r > d.last)
          *reinterpret_cast<uint4*>(ks + kTile + h * kTileK * 64 + (warp * 16 + r) * 64 + c * 8) =
              make_uint4(0, 0, 0, 0);
      }
      __syncwarp();
    }
    decode_tile(w, a, d, ks, ks + kTile, k0, scale);
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[st]);
  }
  w.finish();
  attn_warps_sync();  // every warp is done with the stages: the scratch overlays them
  decode_finish<D, 32>(a, d, w, reinterpret_cast<float*>(stages), ws, counters);
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

// One block per (split, kv head, sequence); the split count is best_splits' for the blocks an SM
// holds, on all SMs or (kSpareSms) all but a seventh of them.
template <auto kKernel, int kBlockThreads, size_t kSmem, bool kSpareSms = false, class... Extra>
void launch_decode(const AttnArgs& a, int max_splits, float* ws, int* counters, cudaStream_t s,
                   const Extra&... extra) {
  static const int resident = [] {
    allow_dynamic_smem(kKernel, kSmem);
    int per_sm = 0;
    NI_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kKernel, kBlockThreads, kSmem));
    const int sms = device_limits().sms;
    return (kSpareSms ? sms - sms / 7 : sms) * std::max(1, per_sm);
  }();
  const int splits = best_splits(a.seqs * a.kv_heads, resident, max_splits);
  launch_pdl(kKernel, dim3(splits, a.kv_heads, a.seqs), dim3(kBlockThreads), kSmem, s, a,
             kLog2e / sqrtf(static_cast<float>(a.head_dim)), ws, counters, extra...);
  NI_CUDA_LAUNCH_CHECK("attention_decode_mma");
}

// Q and the stages, or Q and the merge scratch that replaces the stages after the tiles.
template <int D, int kStages>
constexpr size_t decode_smem() {
  return std::max(Layout<D>::bytes(16, kStages),
                  Layout<D>::bytes(16, 0) + sizeof(float) * Layout<D>::kMergeFloats);
}

// Few (sequence, kv head) pairs leave every block a long slice of the context, and with its
// own threads both copying and attending a block stalls on the copies' issue: the copying-warp
// kernel. Many pairs: one stage and four blocks an SM stream faster (H200, 2026-12-02, the
// copying-warp kernel for every batch: B=8 4k 71 % of copy against 78 %, B=32 16k 79 % against
// 89 %; pre-RoPE keys B=8 4k 48 % against 66 %, B=32 16k 51 % against 76 %).
constexpr int kFewPairs = 16;
// The few-pair kernels (one block an SM) leave a seventh of the SMs free where the keys are
// stored rotated: there the next call's blocks, launched early (PDL), start copying while this
// call's blocks attend and merge. H100, 2026-12-05, 8B shapes: B=1 4k 10.3 -> 8.9 us (16 -> 14
// splits; 13 used at 4k: 104 blocks), 16k 27.8 -> 26.5; B=2 4k 15.8 -> 14.4 (8 -> 7 splits).
// Fewer blocks are slower again: at 16k each SM's copy rate bounds them (B=1, 8 splits: 34.3
// us). Pre-RoPE keys are rotated by the copying warps, and there all the SMs do better (B=1
// 16k: 34.7 us with 16 splits, 39.1 with 14).

// A tensor map of a cache layer ([slots, kv heads, D] bf16) whose boxes are decode_tma_kernel's:
// 16 rows of one kv head, 64 columns, swizzled by 128 bytes; none where the driver refuses it.
std::optional<CUtensorMap> cache_map(const void* base, int64_t slots, int kv_heads, int d) {
  static const auto encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000,
                                                           cudaEnableDefault, &found);
    return e == cudaSuccess && found == cudaDriverEntryPointSuccess
               ? reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn)
               : nullptr;
  }();
  if (encode == nullptr) return std::nullopt;
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(d), static_cast<cuuint64_t>(kv_heads),
                              static_cast<cuuint64_t>(slots)};
  const cuuint64_t strides[2] = {sizeof(bf16) * d, sizeof(bf16) * d * kv_heads};
  const cuuint32_t box[3] = {64, 1, 16}, steps[3] = {1, 1, 1};
  CUtensorMap map{};
  if (encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void*>(base), dims, strides, box,
             steps, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
             CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS)
    return std::nullopt;
  return map;
}

template <int D, int kStages>
constexpr size_t decode_tma_smem() {
  return 1024 + sizeof(bf16) * 2 * kStages * kTileK * D;
}

// decode_tma_kernel, where the driver makes the layer's tensor maps (and, for kRotate, the
// positions can be bulk-copied: 16-byte aligned); false (nothing launched) otherwise.
template <int D, int kStages, int kInFlight, bool kSpareSms, bool kRotate = false>
bool launch_decode_tma(const AttnArgs& a, int max_splits, float* ws, int* counters,
                       cudaStream_t s) {
  if (kRotate && reinterpret_cast<uintptr_t>(a.slot_pos) % 16 != 0) return false;
  const auto km = cache_map(a.k_cache, a.cache_slots, a.kv_heads, D);
  const auto vm = cache_map(a.v_cache, a.cache_slots, a.kv_heads, D);
  if (!km || !vm) return false;
  launch_decode<decode_tma_kernel<D, kStages, kInFlight, kRotate>,
                kThreads + 32 + (kRotate ? kRotThreads : 0), decode_tma_smem<D, kStages>(),
                kSpareSms>(a, max_splits, ws, counters, s, *km, *vm);
  return true;
}

// Keys stored rotated in blocks of a multiple of 16 entries: the tensor-memory-access kernel, with
// six stages and one block an SM while every (sequence, kv head) pair fits one wave of blocks on
// the SMs, with three stages and two blocks an SM beyond (a seventh of the SMs left free at few
// pairs). Six stages keep two tiles in flight at few pairs, four beyond (decode_tma_kernel).
// H100, 2026-12-06, 8B shapes, µs a call against the one-stage kernel's: six stages at B=8 640 /
// 4k / 16k 10.2 / 45.2 / 171.5 against 11.4 / 49.0 / 181.2, B=16 15.3 / 85.9 / 337.0 against
// 18.1 / 93.9 / 356.1 (three stages: 11.5 / 48.0 / 173.7 and 18.9 / 89.0 / 341.7); three stages
// at B=32 28.8 / 170.1 / 672.5 against 32.2 / 181.2 / 709.6, B=64 57.7 / 339.1 / 1,343 against
// 59.3 / 353.4 / 1,411, B=128 112.5 / 683.3 / 2,720 against 114.0 / 703.4 / 2,806 (six stages:
// 30.0 / 171.3 / 675.2, 59.7 / 345.7 / 1,365, 117.4 / 697.8 / 2,788). Pre-RoPE keys in such
// blocks: the six-stage kernel with rotating warps, at any number of pairs (H100, 2026-12-06, µs
// a call at 640 / 4k / 16k against the one-stage kernel's in the same call, every entry at
// position 0 as the benchmark then left them: B=8 12.0 / 48.4 / 174.9 against 14.7 / 52.5 /
// 188.0; B=32 35.2 / 176.8 / 684.8 against 36.9 / 188.2 / 732.0).
// Three stages at two blocks an SM would leave the eight warps 128 registers. Other block sizes:
// the copying-warp kernel at few pairs, the one-stage kernel at more.
template <int D, bool kRotate>
void launch_decode(const AttnArgs& a, int max_splits, float* ws, int* counters, cudaStream_t s) {
  const int pairs = a.seqs * a.kv_heads;
  if (a.block_size % 16 == 0) {
    bool launched = false;
    if (pairs <= kFewPairs)
      launched =
          launch_decode_tma<D, kCopyStages, 2, true, kRotate>(a, max_splits, ws, counters, s);
    else if (kRotate || pairs <= device_limits().sms)
      launched =
          launch_decode_tma<D, kCopyStages, 4, false, kRotate>(a, max_splits, ws, counters, s);
    else if constexpr (!kRotate)  // (the rotating warps' 239 registers allow one block an SM)
      launched =
          launch_decode_tma<D, kManyStages, kManyStages, false>(a, max_splits, ws, counters, s);
    if (launched) return;
  }
  if (pairs > kFewPairs) {
    launch_decode<decode_kernel<D, kRotate>, kThreads, decode_smem<D, 1>()>(a, max_splits, ws,
                                                                            counters, s);
  } else {
    launch_decode<decode_copier_kernel<D, kRotate>, kThreads + 32 * kCopyWarps,
                  decode_smem<D, kCopyStages>(), !kRotate>(a, max_splits, ws, counters, s);
  }
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
