// Token selection on the device, so a decode step can hand back R token ids instead of R x V
// floats: greedy argmax per row, and sampling with per-row temperature / top-k / top-p / min-p.
// The filters become one threshold on the scaled logit, each found by a bisection over the
// float's order-preserving 32-bit key (exact, no sort); the draw scans the kept mass in index
// order.
#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.h"

namespace nanoinfer::cuda {
namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

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

// Order-preserving map float -> uint32 (larger float, larger key).
__device__ __forceinline__ uint32_t key_of(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000U) != 0 ? ~b : b | 0x80000000U;
}

__device__ float block_sum_f(float v, float* red) {
  v = warp_sum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x) / 32 ? red[lane] : 0.0F;
  return warp_sum(v);
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

// Largest key t with f(t) >= target, f non-increasing in t (count or mass of x >= t).
template <class F>
__device__ uint32_t bisect_keys(F f, float target) {
  uint32_t lo = 0, hi = 0xFFFFFFFFU;  // f(lo) >= target always (everything is kept)
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2 + 1;
    if (f(mid) >= target)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

__global__ void sample_kernel(const float* logits, int vocab, const RowSampling* params,
                              uint64_t step, int32_t* out) {
  __shared__ float red[32];
  const RowSampling p = params[blockIdx.x];
  const float* row = logits + int64_t{blockIdx.x} * vocab;
  if (p.temperature <= 0.0F) {  // greedy
    const int idx = block_argmax(row, vocab);
    if (threadIdx.x == 0) out[blockIdx.x] = idx;
    return;
  }
  const float inv_t = 1.0F / p.temperature;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, row[i] * inv_t);
  mx = block_max_f(mx, red);
  // Unnormalised probability of scaled logit x: exp(x - max).
  auto mass_at_least = [&](uint32_t t) {
    float m = 0.0F;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float x = row[i] * inv_t;
      if (key_of(x) >= t) m += __expf(x - mx);
    }
    return block_sum_f(m, red);
  };
  uint32_t thr = 0;
  if (p.top_k > 0 && p.top_k < vocab) {
    thr = bisect_keys(
        [&](uint32_t t) {
          float c = 0.0F;
          for (int i = threadIdx.x; i < vocab; i += blockDim.x)
            c += key_of(row[i] * inv_t) >= t ? 1.0F : 0.0F;
          return block_sum_f(c, red);
        },
        static_cast<float>(p.top_k));
  }
  if (p.top_p < 1.0F) {
    // Smallest high-probability set of the top-k survivors holding top_p of their mass.
    const float kept = mass_at_least(thr);
    const uint32_t tp =
        bisect_keys([&](uint32_t t) { return mass_at_least(max(t, thr)); }, p.top_p * kept);
    thr = max(thr, tp);
  }
  if (p.min_p > 0.0F) thr = max(thr, key_of(mx + __logf(p.min_p)));  // p >= min_p * p_max

  // Draw: u in [0, 1) times the kept mass; each thread owns a contiguous chunk, chunk masses are
  // scanned in thread order and the owning thread walks its chunk.
  const int chunk = (vocab + blockDim.x - 1) / blockDim.x;
  const int begin = min(vocab, static_cast<int>(threadIdx.x) * chunk),
            end = min(vocab, begin + chunk);
  float mine = 0.0F;
  for (int i = begin; i < end; ++i) {
    const float x = row[i] * inv_t;
    if (key_of(x) >= thr) mine += __expf(x - mx);
  }
  __shared__ float prefix[kThreads];
  prefix[threadIdx.x] = mine;
  __syncthreads();
  for (int o = 1; o < static_cast<int>(blockDim.x); o <<= 1) {  // inclusive scan
    const float add = threadIdx.x >= static_cast<unsigned>(o) ? prefix[threadIdx.x - o] : 0.0F;
    __syncthreads();
    prefix[threadIdx.x] += add;
    __syncthreads();
  }
  const float total = prefix[blockDim.x - 1];
  const uint64_t h = splitmix64(p.seed ^ splitmix64(step + 0x632BE59BD9B4E019ULL));
  // u < total, so exactly one thread has before <= u < its prefix (and a nonzero mass).
  const float u =
      fminf(static_cast<float>(h >> 40) * (1.0F / 16777216.0F) * total, nextafterf(total, 0.0F));
  const float before = prefix[threadIdx.x] - mine;
  if (u >= before && u < prefix[threadIdx.x]) {
    float acc = before;
    int last = -1;
    for (int i = begin; i < end; ++i) {
      const float x = row[i] * inv_t;
      if (key_of(x) < thr) continue;
      last = i;
      acc += __expf(x - mx);
      if (u < acc) break;
    }
    out[blockIdx.x] = last;
  }
}

}  // namespace

void argmax_rows(const float* logits, int rows, int vocab, int32_t* out, cudaStream_t s) {
  if (rows == 0) return;
  argmax_kernel<<<rows, kThreads, 0, s>>>(logits, vocab, out);
  NI_CUDA_LAUNCH_CHECK("argmax_rows");
}

void sample_rows(const float* logits, int rows, int vocab, const RowSampling* params, uint64_t step,
                 int32_t* out, cudaStream_t s) {
  if (rows == 0) return;
  sample_kernel<<<rows, kThreads, 0, s>>>(logits, vocab, params, step, out);
  NI_CUDA_LAUNCH_CHECK("sample_rows");
}

}  // namespace nanoinfer::cuda
