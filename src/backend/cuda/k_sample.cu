// Token selection on the device, so a decode step can hand back R token ids instead of R x V
// floats: greedy argmax per row, and sampling with per-row temperature / top-k / top-p / min-p
// that picks the host sampler's token for the same logits, seed and draw index. The filters
// become one threshold on the scaled logit, each found by a search over the float's
// order-preserving 32-bit key (exact, no sort); the draw scans the kept mass in index order.
// A sampled row is spread over a cluster of blocks when few rows leave SMs free.
#include <cooperative_groups.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.h"
#include "sampling/counter_rng.h"

namespace nanoinfer::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 1024;
constexpr int kMaxCluster = 8;  // blocks (SMs) sharing one row of a sampled pick

// Larger value wins; equal values go to the lower index (std::max_element's choice).
__device__ __forceinline__ void better(float& v, int& i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}

// Index of the row's maximum, valid in thread 0 (blockDim.x == kThreads). A thread keeps 8 loads
// of 16 bytes in flight (a row of 128k floats is 4 rounds, not 125 dependent loads); the order
// of the visits does not matter, ties go to the lower index. An all -inf row gives 0.
__device__ int block_argmax(const float* row, int vocab) {
  constexpr int kUnroll = 8;
  float v = -INFINITY;
  int idx = vocab;
  const bool vec = vocab % 4 == 0 && reinterpret_cast<uintptr_t>(row) % 16 == 0;
  const int n4 = vec ? vocab / 4 : 0;
  const auto* row4 = reinterpret_cast<const float4*>(row);
  for (int base = threadIdx.x; base < n4; base += kUnroll * kThreads) {
    float4 x[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = base + u * kThreads;
      x[u] = i < n4 ? row4[i] : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = 4 * (base + u * kThreads);
      better(v, idx, x[u].x, i);
      better(v, idx, x[u].y, i + 1);
      better(v, idx, x[u].z, i + 2);
      better(v, idx, x[u].w, i + 3);
    }
  }
  for (int i = 4 * n4 + threadIdx.x; i < vocab; i += blockDim.x) better(v, idx, row[i], i);
  for (int o = 16; o > 0; o >>= 1)
    better(v, idx, __shfl_xor_sync(0xffffffffU, v, o), __shfl_xor_sync(0xffffffffU, idx, o));
  __shared__ float sv[32];
  __shared__ int si[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) {
    sv[warp] = v;
    si[warp] = idx;
  }
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? sv[lane] : -INFINITY;
    idx = lane < kThreads / 32 ? si[lane] : vocab;
    for (int o = 16; o > 0; o >>= 1)
      better(v, idx, __shfl_xor_sync(0xffffffffU, v, o), __shfl_xor_sync(0xffffffffU, idx, o));
  }
  return idx;
}

__global__ void argmax_kernel(const float* logits, int vocab, int32_t* out) {
  const int idx = block_argmax(logits + int64_t{blockIdx.x} * vocab, vocab);
  if (threadIdx.x == 0) out[blockIdx.x] = idx;
}

// Order-preserving map float -> uint32 (larger float, larger key), and back.
__device__ __forceinline__ uint32_t key_of(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000U) != 0 ? ~b : b | 0x80000000U;
}
__device__ __forceinline__ float value_of(uint32_t k) {
  return __uint_as_float((k & 0x80000000U) != 0 ? k & 0x7FFFFFFFU : ~k);
}

// Thresholds a search tries per pass over the tokens. A pass costs about in proportion to its
// thresholds (and fewer spill less), so fewer and more passes won: H200, 2026-12-01, top-p on
// 128k spread logits, one row: 15 thresholds 320 us, 7 213 us, 5 200 us, 3 173 us, 2 191 us.
constexpr int kPoints = 3;

// v[j] summed over the block, for each j (red: 32 x N values of shared memory).
template <class T, int N>
__device__ void block_sums(T (&v)[N], T* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int j = 0; j < N; ++j)
    for (int o = 16; o > 0; o >>= 1) v[j] += __shfl_xor_sync(0xffffffffU, v[j], o);
  __syncthreads();
  if (lane == 0)
    for (int j = 0; j < N; ++j) red[warp * N + j] = v[j];
  __syncthreads();
#pragma unroll
  for (int j = 0; j < N; ++j) {
    v[j] = lane < static_cast<int>(blockDim.x) / 32 ? red[lane * N + j] : T{0};
    for (int o = 16; o > 0; o >>= 1) v[j] += __shfl_xor_sync(0xffffffffU, v[j], o);
  }
}

__device__ float block_max_f(float v, float* red) {
  v = warp_max(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x) / 32 ? red[lane] : -INFINITY;
  return warp_max(v);
}

// Sums and maxima over a row's blocks, a thread-block cluster of 1 to kMaxCluster blocks: each
// block reduces its share, the blocks' results go through distributed shared memory and every
// block combines them in rank order, so all of them hold the same bits. Results are published in
// one of two slots, alternate calls: a block writes a slot again only two cluster barriers later,
// when every block has read it. Once every block holds the same tokens (the candidates), a
// block decides alone: over its threads (kBlock), or over its first warp's lanes (kWarp, no
// barrier at all). first() and step() give the calling thread's share of a pass: first(),
// first() + step(), ...
struct Reducer {
  enum Scope { kCluster, kBlock, kWarp };
  float* red;     // 32 x kPoints
  double* red_d;  // 32 x kPoints
  double* slots;  // 2 x kPoints
  double* got;    // kMaxCluster x kPoints
  int parity = 0;
  Scope scope = kCluster;

  __device__ int first() const {
    return static_cast<int>(scope == kWarp ? threadIdx.x % 32 : threadIdx.x);
  }
  __device__ int step() const { return static_cast<int>(scope == kWarp ? 32 : blockDim.x); }

  template <int N>
  __device__ void sums(float (&v)[N]) {
    if (scope == kWarp) return warp_sums(v);
    block_sums(v, red);
    across(v, [](float a, float b) { return a + b; });
  }
  template <int N>
  __device__ void sums(double (&v)[N]) {
    if (scope == kWarp) return warp_sums(v);
    block_sums(v, red_d);
    across(v, [](double a, double b) { return a + b; });
  }
  template <class T, int N>
  __device__ static void warp_sums(T (&v)[N]) {
#pragma unroll
    for (int j = 0; j < N; ++j)
      for (int o = 16; o > 0; o >>= 1) v[j] += __shfl_xor_sync(0xffffffffU, v[j], o);
  }
  template <class T>
  __device__ T sum(T v) {
    T a[1] = {v};
    sums(a);
    return a[0];
  }
  __device__ float max(float v) {
    if (scope == kWarp) return warp_max(v);
    float a[1] = {block_max_f(v, red)};
    across(a, [](float x, float y) { return fmaxf(x, y); });
    return a[0];
  }
  template <class T, int N, class Op>
  __device__ void across(T (&v)[N], Op op) {
    static_assert(N <= kPoints);
    const cg::cluster_group cluster = cg::this_cluster();
    const int blocks = static_cast<int>(cluster.num_blocks());
    if (blocks == 1 || scope != kCluster) return;
    double* mine = slots + parity * kPoints;
    parity ^= 1;
    if (threadIdx.x == 0)
      for (int j = 0; j < N; ++j) mine[j] = static_cast<double>(v[j]);
    cluster.sync();
    if (static_cast<int>(threadIdx.x) < blocks * N) {
      const int b = static_cast<int>(threadIdx.x) / N, j = static_cast<int>(threadIdx.x) % N;
      got[threadIdx.x] = cluster.map_shared_rank(mine, b)[j];
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < N; ++j) {
      T acc = static_cast<T>(got[j]);
      for (int b = 1; b < blocks; ++b) acc = op(acc, static_cast<T>(got[b * N + j]));
      v[j] = acc;
    }
  }
};

// Largest t with f(t) >= target, f non-increasing in t and f(0) >= target. Each pass evaluates
// f at kPoints thresholds spread over the range left (f_at(ts, out): out[j] = f(ts[j])), which
// cuts it four ways: 16 passes over 32-bit keys where a bisection takes 32.
template <class F, class T>
__device__ uint32_t search(F f_at, T target) {
  uint32_t lo = 0, hi = 0xFFFFFFFFU;  // the answer is in [lo, hi]
  while (lo < hi) {
    const uint64_t span = uint64_t{hi} - lo;
    uint32_t ts[kPoints];
    T at[kPoints];
#pragma unroll
    for (int j = 0; j < kPoints; ++j)  // in (lo, hi], non-decreasing
      ts[j] = lo + static_cast<uint32_t>((span * (j + 1) + kPoints) / (kPoints + 1));
    f_at(ts, at);
    int best = -1;  // f >= target on a prefix of the points
#pragma unroll
    for (int j = 0; j < kPoints; ++j)
      if (at[j] >= target) best = j;
    if (best >= 0) lo = ts[best];
    if (best + 1 < kPoints) hi = ts[best + 1] - 1;
  }
  return lo;
}

constexpr int kCandidates = 4096;  // tokens near the maximum held in shared memory
// Tokens are counted by (max - x) * kSteps in kBuckets buckets (up to 128 below the maximum), so
// the candidates' cut-off is chosen without trying cut-offs that do not hold the answer.
constexpr int kBuckets = 512;
constexpr float kSteps = 4.0F;
constexpr float kFirstCutoff = 4.0F;  // top-p alone: candidates within 4, 8, ..., 128

// hist[b] becomes the tokens in buckets 0..b (an inclusive prefix sum), visible to all of warp 0's
// lanes; called by warp 0.
__device__ void prefix_sums(int* hist) {
  constexpr int kEach = kBuckets / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  int run[kEach];
  int sum = 0;
#pragma unroll
  for (int b = 0; b < kEach; ++b) run[b] = sum += hist[lane * kEach + b];
  int before = sum;  // inclusive scan over the lanes, then exclusive
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xffffffffU, before, o);
    if (lane >= o) before += v;
  }
  before -= sum;
#pragma unroll
  for (int b = 0; b < kEach; ++b) hist[lane * kEach + b] = before + run[b];
  __syncwarp();  // the callers' lanes read other lanes' sums (racecheck: a hazard without it)
}

// The fewest buckets whose tokens number at least `target` (prefix: prefix_sums'), or
// kBuckets + 1 when all of them hold fewer; called by warp 0, valid in each of its lanes.
__device__ int buckets_for(const int* prefix, int target) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  for (int base = 0; base < kBuckets; base += 32) {
    const unsigned hit = __ballot_sync(0xffffffffU, prefix[base + lane] >= target);
    if (hit != 0) return base + __ffs(static_cast<int>(hit));
  }
  return kBuckets + 1;
}

// Calls use(j, load(j)) for this thread's share of j < n (first, + step, ...), issuing kBatch
// loads before using any: one memory round trip a batch, not a token.
template <int kBatch, class Load, class Use>
__device__ __forceinline__ void strided(int n, int first, int step, Load load, Use use) {
  for (int base = first; base < n; base += kBatch * step) {
    decltype(load(0)) v[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) v[u] = load(min(base + u * step, n - 1));
#pragma unroll
    for (int u = 0; u < kBatch; ++u)
      if (base + u * step < n) use(base + u * step, v[u]);
  }
}

// out[q] = how many of the keys load(0 .. n-1) are >= ts[q] over the row's blocks (exact below
// 2^24).
template <int N, class Load>
__device__ void count_keys(int n, Load load, const uint32_t (&ts)[N], float (&out)[N], Reducer& r) {
  uint32_t t[N];
  float c[N];
#pragma unroll
  for (int q = 0; q < N; ++q) t[q] = ts[q], c[q] = 0.0F;
  strided<16>(n, r.first(), r.step(), load, [&](int, uint32_t k) {
#pragma unroll
    for (int q = 0; q < N; ++q) c[q] += k >= t[q] ? 1.0F : 0.0F;
  });
  r.sums(c);
#pragma unroll
  for (int q = 0; q < N; ++q) out[q] = c[q];
}

// Every block of the row's cluster takes the row's candidates (each block's n[b] of them, in
// rank order) into its own cand_key / cand_id, so that each block then decides the filters alone
// (no cluster barrier a pass) on the same tokens, with the same bits. Returns
// the row's count; past kCandidates (a block dropped some) nothing is moved. The caller has
// synchronised its block since writing its candidates.
__device__ int gather_candidates(uint32_t* cand_key, int32_t* cand_id, int* cand_n) {
  const cg::cluster_group cluster = cg::this_cluster();
  const int blocks = static_cast<int>(cluster.num_blocks());
  if (blocks == 1) return *cand_n;
  __shared__ int start[kMaxCluster + 1];  // rank b's first place in the row's list
  cluster.sync();                         // every block's candidates are in
  if (threadIdx.x < 32) {
    const int lane = static_cast<int>(threadIdx.x);
    int at = lane < blocks ? *cluster.map_shared_rank(cand_n, lane) : 0;
    for (int o = 1; o < 32; o <<= 1) {  // inclusive scan
      const int v = __shfl_up_sync(0xffffffffU, at, o);
      if (lane >= o) at += v;
    }
    if (lane < kMaxCluster) start[lane + 1] = at;
    if (lane == 0) start[0] = 0;
  }
  __syncthreads();
  const int total = start[kMaxCluster];
  constexpr int kEach = kCandidates / kThreads;
  uint32_t key[kEach];
  int32_t id[kEach];
  if (total <= kCandidates) {
#pragma unroll
    for (int u = 0; u < kEach; ++u) {
      const int j = static_cast<int>(threadIdx.x) + u * kThreads;
      int from = 0;  // the rank that holds place j (past the ranks start[b] = total)
      while (from + 1 < blocks && j >= start[from + 1]) ++from;
      const int at = j - start[from];
      if (j < total) {
        key[u] = cluster.map_shared_rank(cand_key, from)[at];
        id[u] = cluster.map_shared_rank(cand_id, from)[at];
      }
    }
  }
  cluster.sync();  // every block has read the others' before any of them writes its own
  if (total <= kCandidates) {
#pragma unroll
    for (int u = 0; u < kEach; ++u) {
      const int j = static_cast<int>(threadIdx.x) + u * kThreads;
      if (j < total) cand_key[j] = key[u], cand_id[j] = id[u];
    }
  }
  __syncthreads();
  return total;
}

// The tokens the filters decide on: the whole row (key and weight expf(x - max) of every token,
// in global scratch) or the candidates in shared memory (key and id; the weight computed).
struct Tokens {
  const uint32_t* key;
  const float* weight;  // null: the candidates
  const int32_t* id;    // null: the block's slice of the row (id = first + position)
  int first;
  int n;  // this block's share; sums and counts are over the row's blocks
  float mx;
  struct Entry {
    uint32_t key;
    float weight;
  };
  __device__ Entry entry(int j) const {
    return {key[j], weight != nullptr ? weight[j] : expf(value_of(key[j]) - mx)};
  }
  // f(key, id) for this thread's share of r's pass.
  template <class F>
  __device__ void for_each(const Reducer& r, F f) const {
    strided<8>(
        n, r.first(), r.step(), [&](int j) { return key[j]; },
        [&](int j, uint32_t k) { f(k, id != nullptr ? id[j] : first + j); });
  }
  // out[q] = how many tokens have key >= ts[q] (exact below 2^24) / their mass of expf(x - max).
  template <int N>
  __device__ void count(const uint32_t (&ts)[N], float (&out)[N], Reducer& r) const {
    count_keys(
        n, [&](int j) { return key[j]; }, ts, out, r);
  }
  template <int N>
  __device__ void mass(const uint32_t (&ts)[N], double (&out)[N], Reducer& r) const {
    uint32_t t[N];
    double m[N];
#pragma unroll
    for (int q = 0; q < N; ++q) t[q] = ts[q], m[q] = 0.0;
    strided<8>(
        n, r.first(), r.step(), [&](int j) { return entry(j); },
        [&](int, Entry e) {
#pragma unroll
          for (int q = 0; q < N; ++q)
            if (e.key >= t[q]) m[q] += e.weight;
        });
    r.sums(m);
#pragma unroll
    for (int q = 0; q < N; ++q) out[q] = m[q];
  }
  __device__ float count(uint32_t at_least, Reducer& r) const {
    float out[1];
    count({at_least}, out, r);
    return out[0];
  }
  __device__ double mass(uint32_t at_least, Reducer& r) const {
    double out[1];
    mass({at_least}, out, r);
    return out[0];
  }
  // The largest key with at least k tokens at or above it: the k-th largest.
  __device__ uint32_t kth(int k, Reducer& r) const {
    return search([&](const uint32_t(&ts)[kPoints], float(&out)[kPoints]) { count(ts, out, r); },
                  static_cast<float>(k));
  }
};

// The host's top-p on the tokens with key >= floor (the top-k survivors): walking down from the
// largest x, ties by descending id, keep a token while the mass before it is below `limit`.
// Returns the last kept token's key; cut = the lowest id kept among the tokens at that key.
__device__ uint32_t top_p_key(const Tokens& s, uint32_t floor, double limit, int& cut, Reducer& r) {
  const uint32_t tp = search(
      [&](const uint32_t(&ts)[kPoints], double(&out)[kPoints]) {
        uint32_t at[kPoints];
        for (int j = 0; j < kPoints; ++j) at[j] = max(ts[j], floor);
        s.mass(at, out, r);
      },
      limit);
  const double above = tp == 0xFFFFFFFFU ? 0.0 : s.mass(tp + 1, r);
  const float group = s.count(tp, r) - (tp == 0xFFFFFFFFU ? 0.0F : s.count(tp + 1, r));
  const float w = expf(value_of(tp) - s.mx);
  int keep = 0;
  for (double before = above; keep < group && before < limit; ++keep) before += w;
  cut = 0;
  if (keep < group) {  // the `keep` highest ids of the group
    cut = static_cast<int>(search(
        [&](const uint32_t(&ts)[kPoints], float(&out)[kPoints]) {
          for (int j = 0; j < kPoints; ++j) out[j] = 0.0F;
          s.for_each(r, [&](uint32_t k, int i) {
            for (int j = 0; j < kPoints; ++j)
              out[j] += k == tp && static_cast<uint32_t>(i) >= ts[j] ? 1.0F : 0.0F;
          });
          r.sums(out);
        },
        static_cast<float>(keep)));
  }
  return tp;
}

// The host sampler's pick (sampling/: temperature.cpp, top_k.cpp, top_p.cpp, min_p.cpp,
// multinomial.cpp) with its arithmetic: x = logit / temperature, weights expf(x - max) summed in
// double, the draw uniform(seed, counter) times the kept mass, the first kept token whose
// cumulative weight passes it. A filter is a threshold on x's order-preserving key (top-k keeps
// x >= the k-th largest, ties kept; top-p the fewest largest x holding p of the top-k survivors'
// mass, cut inside a tie by id as the host's order does; min-p x >= max + log(min_p)), found by
// search over the candidates near the maximum when they hold the answer (the typical row of
// a trained model), over the whole row otherwise. A row is a cluster of blocks, each with a
// contiguous slice of it; every decision is made from sums over the whole cluster (Reducer), or,
// once every block holds all the row's candidates, from the same sums in each block, so the
// blocks take the same branches.
__global__ void __launch_bounds__(kThreads)
    sample_kernel(const float* logits, int vocab, const RowPick* params, float* scratch,
                  int32_t* out) {
  __shared__ float red[32 * kPoints];
  __shared__ double red_d[32 * kPoints];
  __shared__ double slots[2 * kPoints];
  __shared__ double got[kMaxCluster * kPoints];
  __shared__ uint32_t cand_key[kCandidates];
  __shared__ int32_t cand_id[kCandidates];
  __shared__ int cand_n;
  const cg::cluster_group cluster = cg::this_cluster();
  const int blocks = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int r_idx = static_cast<int>(blockIdx.x) / blocks;
  const RowPick p = params[r_idx];
  const float* row = logits + int64_t{r_idx} * vocab;
  if (p.temperature <= 0.0F) {  // greedy: the first block alone
    if (rank != 0) return;
    const int idx = block_argmax(row, vocab);
    if (threadIdx.x == 0) out[r_idx] = idx;
    return;
  }
  // A row without a finite logit has no mass to draw from: the host then falls back to index 0
  // (its argmax's), and so does this (the walk below overwrites it otherwise).
  if (rank == 0 && threadIdx.x == 0) out[r_idx] = 0;
  // This block's slice [first, end) of the row.
  const int per = (vocab + blocks - 1) / blocks;
  const int first = min(vocab, rank * per), len = min(vocab, first + per) - first;
  // Scratch: every token's key, then (once the maximum is known) its weight expf(x - max).
  auto* keys = reinterpret_cast<uint32_t*>(scratch + 2 * int64_t{r_idx} * vocab) + first;
  float* weights = scratch + (2 * int64_t{r_idx} + 1) * vocab + first;
  Reducer r{red, red_d, slots, got};
  float mx = -INFINITY, finite = 0.0F;
  strided<8>(
      len, r.first(), r.step(), [&](int i) { return row[first + i]; },
      [&](int i, float logit) {
        const float x = logit / p.temperature;
        keys[i] = key_of(x);
        mx = fmaxf(mx, x);
        finite += x > -INFINITY ? 1.0F : 0.0F;
      });
  const bool top_k = p.top_k > 0 && p.top_k < vocab, top_p = p.top_p < 1.0F;
  __shared__ int mine_hist[kBuckets];  // tokens by (max - x) * kSteps, this block's slice
  __shared__ int hist[kBuckets];       // the row's, then its prefix sums
  for (int b = static_cast<int>(threadIdx.x); b < kBuckets; b += static_cast<int>(blockDim.x))
    mine_hist[b] = 0;
  mx = r.max(mx);
  finite = r.sum(finite);  // (the barriers also publish keys and mine_hist to the block)
  strided<8>(
      len, r.first(), r.step(), [&](int i) { return keys[i]; },
      [&](int i, uint32_t k) {
        const float x = value_of(k);
        weights[i] = expf(x - mx);
        const float d = (mx - x) * kSteps;  // NaN and -inf: no bucket
        if ((top_k || top_p) && d < static_cast<float>(kBuckets)) atomicAdd(&mine_hist[int(d)], 1);
      });
  __syncthreads();
  const Tokens whole{keys, weights, nullptr, first, len, mx};
  uint32_t thr = 0;  // kept: key > thr, or key == thr and id >= cut
  int cut = 0;
  if (top_k || top_p) {
    // Without top-k, top-p's share is of the whole row's mass.
    const double row_mass = top_k ? 0.0 : whole.mass(0, r);
    Tokens s = whole;  // decided over the cluster, or on the candidates in each block alone
    if (blocks > 1) cluster.sync();  // every block's mine_hist is complete
    for (int b = static_cast<int>(threadIdx.x); b < kBuckets; b += static_cast<int>(blockDim.x)) {
      int sum = 0;
      for (int q = 0; q < blocks; ++q) sum += cluster.map_shared_rank(mine_hist, q)[b];
      hist[b] = sum;
    }
    __syncthreads();
    __shared__ int top_k_buckets;
    if (threadIdx.x < 32) {
      prefix_sums(hist);
      const int b = top_k ? buckets_for(hist, p.top_k) : 0;
      if (threadIdx.x == 0) top_k_buckets = b;
    }
    __syncthreads();
    // The candidates x >= max - cutoff into shared memory (each block those of its slice), if
    // the histogram says they fit; true when they settle the filters: with top-k, K of them hold
    // every top-k survivor and so top-p's boundary too; without, they must hold top_p of the
    // row's mass (or be every finite token).
    auto candidates = [&](int buckets) {
      if (hist[buckets - 1] > kCandidates) return false;
      const uint32_t at_least = key_of(mx - static_cast<float>(buckets) / kSteps);
      __syncthreads();  // a last try's candidates are read by now
      if (threadIdx.x == 0) cand_n = 0;
      __syncthreads();
      // A warp takes 32 consecutive tokens at a time (loads batched as in strided) and claims
      // the slots of its candidates among them with one atomic.
      const int lane = static_cast<int>(threadIdx.x % 32), stride = static_cast<int>(blockDim.x);
      constexpr int kBatch = 8;
      for (int base = static_cast<int>(threadIdx.x) - lane; base < len; base += kBatch * stride) {
        uint32_t k[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) k[u] = keys[min(base + u * stride + lane, len - 1)];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int i = base + u * stride + lane;
          const unsigned in = __ballot_sync(0xffffffffU, i < len && k[u] >= at_least);
          if (in == 0) continue;
          int at = 0;
          if (lane == 0) at = atomicAdd(&cand_n, __popc(in));
          at = __shfl_sync(0xffffffffU, at, 0) + __popc(in & ((1U << lane) - 1U));
          if ((in >> lane & 1U) != 0 && at < kCandidates) {
            cand_key[at] = k[u];
            cand_id[at] = first + i;
          }
        }
      }
      __syncthreads();
      // The row's candidates in every block; more than shared memory holds only by rounding at
      // a bucket's edge.
      const int n = gather_candidates(cand_key, cand_id, &cand_n);
      if (n > kCandidates) return false;
      const Tokens c{cand_key, nullptr, cand_id, 0, n, mx};
      r.scope = Reducer::kBlock;  // every block holds them all
      if (static_cast<float>(n) == finite ||
          (top_k ? n >= p.top_k : c.mass(0, r) >= static_cast<double>(p.top_p) * row_mass)) {
        s = c;
        return true;
      }
      r.scope = Reducer::kCluster;
      return false;
    };
    if (top_k) {  // the fewest buckets holding k tokens (past the last: the whole row decides)
      if (top_k_buckets <= kBuckets) candidates(top_k_buckets);
    } else {  // top-p alone: growing cut-offs while they fit, a new try only if it adds tokens
      int tried = 0;
      for (float c = kFirstCutoff; c * kSteps <= kBuckets; c *= 2.0F) {
        const int b = static_cast<int>(c * kSteps);
        if (hist[b - 1] > kCandidates) break;
        if (tried > 0 && hist[b - 1] == hist[tried - 1]) continue;
        tried = b;
        if (candidates(b)) break;
      }
    }
    // On the candidates the first warp decides (its passes need no barrier; a block's took
    // ~2 us each) and hands the others its threshold.
    const bool by_warp = r.scope == Reducer::kBlock;
    if (by_warp) r.scope = Reducer::kWarp;
    if (!by_warp || threadIdx.x < 32) {
      if (top_k) thr = s.kth(p.top_k, r);
      if (top_p) {
        const double kept = top_k ? s.mass(thr, r) : row_mass;
        thr = top_p_key(s, thr, static_cast<double>(p.top_p) * kept, cut, r);
      }
    }
    if (by_warp) {
      __shared__ uint32_t warp_thr;
      __shared__ int warp_cut;
      if (threadIdx.x == 0) warp_thr = thr, warp_cut = cut;
      __syncthreads();
      thr = warp_thr, cut = warp_cut;
    }
  }
  if (p.min_p > 0.0F) {  // p >= min_p * p_max, as the host computes its floor
    const uint32_t floor = key_of(mx + logf(p.min_p));
    if (floor > thr) thr = floor, cut = 0;
  }
  auto kept = [&](uint32_t k, int i) { return k > thr || (k == thr && first + i >= cut); };

  // Draw: warp w of block b owns a contiguous segment of the row (segments in (b, w) order) and
  // sums its kept mass (coalesced loads); the segments' masses are added in order and the warp
  // whose range holds the target walks its segment 32 tokens at a time, a warp scan giving each
  // token's cumulative weight.
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  const int warps = static_cast<int>(blockDim.x / 32), seg = (len + warps - 1) / warps;
  const int begin = min(len, warp * seg), end = min(len, begin + seg);
  auto weight_of = [&](int i) { return kept(keys[i], i) ? weights[i] : 0.0F; };
  double mine = 0.0;
  constexpr int kBatch = 8;
  for (int base = begin; base < end; base += 32 * kBatch) {
    float w[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = base + 32 * u + lane;
      w[u] = i < end ? weight_of(i) : 0.0F;
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) mine += w[u];
  }
  for (int o = 16; o > 0; o >>= 1) mine += __shfl_xor_sync(0xffffffffU, mine, o);
  __shared__ double seg_mass[32];
  __shared__ double all_mass[kMaxCluster * 32];
  if (lane == 0) seg_mass[warp] = mine;
  if (blocks > 1)
    cluster.sync();
  else
    __syncthreads();
  for (int v = static_cast<int>(threadIdx.x); v < blocks * warps; v += static_cast<int>(blockDim.x))
    all_mass[v] = cluster.map_shared_rank(seg_mass, v / warps)[v % warps];
  // Every block has read the others' shared memory before any of them leaves.
  if (blocks > 1)
    cluster.sync();
  else
    __syncthreads();
  const int me = rank * warps + warp;
  double before = 0.0, total = 0.0;
  for (int v = 0; v < blocks * warps; ++v) {
    if (v < me) before += all_mass[v];
    total += all_mass[v];
  }
  // Below the total, so exactly one warp has before <= target < before + its mass (none when the
  // row has no finite weight: the sums are NaN).
  const double target = fmin(sampling::uniform(p.seed, p.counter) * total, nextafter(total, 0.0));
  if (!(target >= before && target < before + mine)) return;
  double acc = before;
  int last = -1;
  for (int base = begin; base < end; base += 32) {
    const int i = base + lane;
    const float w = i < end ? weight_of(i) : 0.0F;
    double c = w;  // inclusive scan of the 32 weights
    for (int o = 1; o < 32; o <<= 1) {
      const double up = __shfl_up_sync(0xffffffffU, c, o);
      if (lane >= o) c += up;
    }
    const unsigned kept_here = __ballot_sync(0xffffffffU, w > 0.0F);
    if (kept_here != 0) last = base + 31 - __clz(kept_here);
    const unsigned past = __ballot_sync(0xffffffffU, w > 0.0F && target < acc + c);
    if (past != 0) {
      last = base + __ffs(past) - 1;
      break;
    }
    acc += __shfl_sync(0xffffffffU, c, 31);
  }
  if (lane == 0) out[r_idx] = first + last;
}

// A row of logits summarised for beam search (BeamRow, as sampling::summarise_row makes it), the
// row over a cluster of blocks as in sample_kernel. The maximum; the exps expf(x - max) summed in
// double (in another order than the host's, so the log-sum-exp may differ in its last bit); the
// n-th largest key T by search; then, gathered in index order by warps that own contiguous
// segments (in (block, warp) order), the tokens above T (fewer than n) followed by the first of
// those at T (ties to the lower id): n tokens, in no order of value (the host sorts them).
// stats[r] = {max, lse}.
__global__ void __launch_bounds__(kThreads)
    beam_rows_kernel(const float* logits, int vocab, int n, float2* stats, float* values,
                     int32_t* ids) {
  __shared__ float red[32 * kPoints];
  __shared__ double red_d[32 * kPoints];
  __shared__ double slots[2 * kPoints];
  __shared__ double got[kMaxCluster * kPoints];
  __shared__ int seg_above[32], seg_equal[32];  // this block's warps' counts
  __shared__ int all_above[kMaxCluster * 32], all_equal[kMaxCluster * 32];
  const cg::cluster_group cluster = cg::this_cluster();
  const int blocks = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int r_idx = static_cast<int>(blockIdx.x) / blocks;
  const float* row = logits + int64_t{r_idx} * vocab;
  const int per = (vocab + blocks - 1) / blocks;  // this block's slice [first, first + len)
  const int first = min(vocab, rank * per), len = min(vocab, first + per) - first;
  Reducer r{red, red_d, slots, got};
  auto x_at = [&](int i) { return row[first + i]; };
  float mx = -INFINITY;
  strided<8>(len, r.first(), r.step(), x_at, [&](int, float x) { mx = fmaxf(mx, x); });
  mx = r.max(mx);
  double sum = 0.0;
  strided<8>(len, r.first(), r.step(), x_at, [&](int, float x) { sum += expf(x - mx); });
  sum = r.sum(sum);
  const uint32_t t = search(
      [&](const uint32_t(&ts)[kPoints], float(&out)[kPoints]) {
        count_keys(
            len, [&](int i) { return key_of(row[first + i]); }, ts, out, r);
      },
      static_cast<float>(n));
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  const int warps = static_cast<int>(blockDim.x / 32), seg = (len + warps - 1) / warps;
  const int begin = first + min(len, warp * seg), end = first + min(len, warp * seg + seg);
  const unsigned lower = (1U << lane) - 1U;
  int above = 0, equal = 0;
  for (int base = begin; base < end; base += 32) {
    const int i = base + lane;
    const uint32_t k = i < end ? key_of(row[i]) : 0U;
    above += __popc(__ballot_sync(0xffffffffU, i < end && k > t));
    equal += __popc(__ballot_sync(0xffffffffU, i < end && k == t));
  }
  if (lane == 0) seg_above[warp] = above, seg_equal[warp] = equal;
  auto sync = [&] {
    if (blocks > 1)
      cluster.sync();
    else
      __syncthreads();
  };
  sync();
  for (int v = static_cast<int>(threadIdx.x); v < blocks * warps;
       v += static_cast<int>(blockDim.x)) {
    all_above[v] = cluster.map_shared_rank(seg_above, v / warps)[v % warps];
    all_equal[v] = cluster.map_shared_rank(seg_equal, v / warps)[v % warps];
  }
  sync();  // every block has read the others' counts before any of them leaves
  int a = 0, e = 0, total_above = 0;  // this warp's first places, and the tokens above T
  const int me = rank * warps + warp;
  for (int v = 0; v < blocks * warps; ++v) {
    a += v < me ? all_above[v] : 0;
    e += v < me ? all_equal[v] : 0;
    total_above += all_above[v];
  }
  float* out_v = values + int64_t{r_idx} * n;
  int32_t* out_i = ids + int64_t{r_idx} * n;
  for (int base = begin; base < end; base += 32) {
    const int i = base + lane;
    const float x = i < end ? row[i] : 0.0F;
    const uint32_t k = key_of(x);
    const unsigned ab = __ballot_sync(0xffffffffU, i < end && k > t);
    const unsigned eq = __ballot_sync(0xffffffffU, i < end && k == t);
    int at = -1;
    if ((ab >> lane & 1U) != 0) at = a + __popc(ab & lower);
    if ((eq >> lane & 1U) != 0 && e + __popc(eq & lower) < n - total_above)
      at = total_above + e + __popc(eq & lower);
    if (at >= 0) out_v[at] = x, out_i[at] = i;
    a += __popc(ab);
    e += __popc(eq);
  }
  if (rank == 0 && threadIdx.x == 0) stats[r_idx] = make_float2(mx, static_cast<float>(log(sum)));
}

// One thread an edit: the host stages' arithmetic in their order, rounded as the host rounds
// (no contraction of x * penalty - subtract into one FMA).
__global__ void edit_kernel(float* logits, int64_t vocab, const LogitEdit* edits, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  const LogitEdit e = edits[i];
  float& x = logits[e.row * vocab + e.token];
  float v = x;
  if (e.penalty != 1.0F)  // kept finite, as the host keeps it
    v = fmaxf(v < 0.0F ? __fmul_rn(v, e.penalty) : __fdiv_rn(v, e.penalty), -FLT_MAX);
  if (e.subtract != 0.0F) v = __fsub_rn(v, e.subtract);
  if (e.suppress != 0) v = -INFINITY;
  if (e.add != 0.0F) v = __fadd_rn(v, e.add);
  x = v;
}

// A launch of sample_kernel or beam_rows_kernel over `rows` rows in clusters of `blocks` blocks
// (`cluster` holds the attribute the config points to; a one-block cluster launched as such ran
// ~25 us slower, so that is a plain launch).
cudaLaunchConfig_t row_launch(int rows, int blocks, cudaLaunchAttribute& cluster, cudaStream_t s) {
  cluster = {};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = static_cast<unsigned>(blocks);
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(rows * blocks));
  cfg.blockDim = dim3(kThreads);
  cfg.stream = s;
  cfg.attrs = &cluster;
  cfg.numAttrs = blocks > 1 ? 1 : 0;
  return cfg;
}

// How many clusters of `blocks` sample blocks the GPU holds at once (SMs come in GPCs, so this is
// not the SM count over `blocks`); asked once per size. beam_rows_kernel has the same threads and
// less shared memory, so at least as many of its clusters fit.
int resident_clusters(int blocks) {
  static int fit[kMaxCluster + 1] = {};
  if (fit[blocks] == 0) {
    cudaLaunchAttribute cluster{};
    cudaLaunchConfig_t cfg = row_launch(1, blocks, cluster, nullptr);
    cfg.numAttrs = 1;  // the query needs the cluster size, even of one
    NI_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&fit[blocks], sample_kernel, &cfg));
    fit[blocks] = std::max(fit[blocks], 1);
  }
  return fit[blocks];
}

}  // namespace

void edit_logits(float* logits, int vocab, const LogitEdit* edits, int n, cudaStream_t s) {
  if (n == 0) return;
  edit_kernel<<<(n + 255) / 256, 256, 0, s>>>(logits, vocab, edits, n);
  NI_CUDA_LAUNCH_CHECK("edit_logits");
}

void beam_rows(const float* logits, int rows, int vocab, int n, float2* stats, float* values,
               int32_t* ids, int blocks, cudaStream_t s) {
  if (rows == 0) return;
  NI_ASSERT(blocks >= 1 && blocks <= kMaxCluster);
  cudaLaunchAttribute cluster{};
  const cudaLaunchConfig_t cfg = row_launch(rows, blocks, cluster, s);
  NI_CUDA_CHECK(cudaLaunchKernelEx(&cfg, beam_rows_kernel, logits, vocab, n, stats, values, ids));
}

void argmax_rows(const float* logits, int rows, int vocab, int32_t* out, cudaStream_t s) {
  if (rows == 0) return;
  argmax_kernel<<<rows, kThreads, 0, s>>>(logits, vocab, out);
  NI_CUDA_LAUNCH_CHECK("argmax_rows");
}

void prepare_pick_kernels() {
  static const bool once = [] {
    cudaFuncAttributes attr{};
    NI_CUDA_CHECK(cudaFuncGetAttributes(&attr, argmax_kernel));
    NI_CUDA_CHECK(cudaFuncGetAttributes(&attr, edit_kernel));
    NI_CUDA_CHECK(cudaFuncGetAttributes(&attr, sample_kernel));
    NI_CUDA_CHECK(cudaFuncGetAttributes(&attr, beam_rows_kernel));
    return true;
  }();
  (void)once;
}

int row_blocks(int rows) {
  // A block's passes over a row are bound by its SM: few rows each take a cluster of blocks (one
  // an SM), the largest (up to kMaxCluster) with every row's cluster resident at once.
  int blocks = kMaxCluster;
  while (blocks > 1 && rows > resident_clusters(blocks)) blocks /= 2;
  return blocks;
}

void sample_rows(const float* logits, int rows, int vocab, const RowPick* params, float* scratch,
                 int32_t* out, int blocks, cudaStream_t s) {
  if (rows == 0) return;
  NI_ASSERT(blocks >= 1 && blocks <= kMaxCluster);
  cudaLaunchAttribute cluster{};
  const cudaLaunchConfig_t cfg = row_launch(rows, blocks, cluster, s);
  NI_CUDA_CHECK(cudaLaunchKernelEx(&cfg, sample_kernel, logits, vocab, params, scratch, out));
}

}  // namespace nanoinfer::cuda
