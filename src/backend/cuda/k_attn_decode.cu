// Split-K decode attention (flash-decoding): every sequence has one new token. Blocks of
// (split, kv head, sequence) each cover a slice of the context for all the query heads that
// share the kv head, so K and V are read once per group; each warp streams whole key rows
// (contiguous elements per lane, several rows in flight) with an online softmax in registers.
// A second kernel merges the splits' partial (max, sum, output) triples.
#include "backend/cuda/attn_common.cuh"
#include "backend/cuda/cuda_check.h"

namespace nanoinfer::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kUnroll = 4;                   // key rows each warp has in flight
constexpr int kMinChunk = kWarps * kUnroll;  // one pass of the block's warps

// Partial results of one (sequence, head, split): m, l, then head_dim accumulator values.
__device__ __forceinline__ float* partial(float* ws, const AttnArgs& a, int seq, int h, int split,
                                          int splits) {
  return ws + ((int64_t{seq} * a.heads + h) * splits + split) * (a.head_dim + 2);
}

// NI: elements per lane (d = lane * NI + i); G: bound on query heads per kv head.
template <class T, int NI, int G>
__global__ void __launch_bounds__(kWarps * 32)
    decode_kernel(const AttnArgs a, float q_scale, int splits, float* ws) {
  const int split = blockIdx.x, kvh = blockIdx.y, seq = blockIdx.z;
  const int group = a.heads / a.kv_heads;
  const int D = a.head_dim;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int t = seq;  // decode: token t is sequence t's only new token
  const int ctx = a.context_lens[seq];
  const int qi = a.q_index[t];
  const int n_keys = max(0, min(ctx, qi + 1));
  // Short contexts leave trailing splits empty rather than cut slices below kMinChunk keys.
  const int chunk = max(kMinChunk, (n_keys + splits - 1) / splits);
  const int k_begin = split * chunk, k_end = min(n_keys, k_begin + chunk);
  const int64_t stride = int64_t{a.heads + 2 * a.kv_heads} * D;
  const T* qkv = static_cast<const T*>(a.qkv);
  const T* kc = static_cast<const T*>(a.k_cache);
  const T* vc = static_cast<const T*>(a.v_cache);
  const bool full = D == 32 * NI;  // every lane owns NI valid elements: vector loads

  float q[G][NI], acc[G][NI], m[G], l[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0F;
#pragma unroll
    for (int i = 0; i < NI; ++i) {
      const int d = lane * NI + i;
      const int h = kvh * group + g;
      q[g][i] = g < group && d < D ? to_f32(qkv[t * stride + int64_t{h} * D + d]) * q_scale : 0.0F;
      acc[g][i] = 0.0F;
    }
  }

  // Online softmax over kUnroll keys for every query head of the group.
  auto consume = [&](const float(&kr)[kUnroll][NI], const float(&vr)[kUnroll][NI],
                     const bool(&ok)[kUnroll]) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (g >= group) break;
      float s[kUnroll];
      float tile_max = -INFINITY;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        float dot = 0.0F;
#pragma unroll
        for (int i = 0; i < NI; ++i) dot += q[g][i] * kr[u][i];
        dot = warp_sum(dot);
        s[u] = ok[u] ? dot : -INFINITY;
        tile_max = fmaxf(tile_max, s[u]);
      }
      const float m_new = fmaxf(m[g], tile_max);
      if (m_new == -INFINITY) continue;
      const float alpha = exp2f(m[g] - m_new);
      m[g] = m_new;
      l[g] *= alpha;
#pragma unroll
      for (int i = 0; i < NI; ++i) acc[g][i] *= alpha;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const float p = exp2f(s[u] - m_new);
        l[g] += p;
#pragma unroll
        for (int i = 0; i < NI; ++i) acc[g][i] += p * vr[u][i];
      }
    }
  };

  const int step = kWarps * kUnroll;
  if (full && !a.rotate_keys) {
    // NI contiguous elements per lane: one 4/8/16-byte load each for K and V, and the next
    // iteration's rows are requested before this one's arithmetic (software pipelining).
    struct alignas(sizeof(T) * NI) Vec {
      T x[NI];
    };
    Vec kn[kUnroll], vn[kUnroll];
    auto fetch = [&](int base) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int j = base + u;
        // Rows past the slice read as zeros: a masked key must not bring NaN into p * v.
        kn[u] = vn[u] = Vec{};
        if (j < k_end) {
          const int64_t off = (cache_slot(a, seq, j) * a.kv_heads + kvh) * D + lane * NI;
          kn[u] = *reinterpret_cast<const Vec*>(kc + off);
          vn[u] = *reinterpret_cast<const Vec*>(vc + off);
        }
      }
    };
    fetch(k_begin + warp * kUnroll);
    for (int base = k_begin + warp * kUnroll; base < k_end; base += step) {
      float kr[kUnroll][NI], vr[kUnroll][NI];
      bool ok[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        ok[u] = base + u < k_end && tree_visible(a, seq, 1, ctx - 1, qi, base + u);
#pragma unroll
        for (int i = 0; i < NI; ++i) {
          kr[u][i] = to_f32(kn[u].x[i]);
          vr[u][i] = to_f32(vn[u].x[i]);
        }
      }
      fetch(base + step);
      consume(kr, vr, ok);
    }
  } else {
    for (int base = k_begin + warp * kUnroll; base < k_end; base += step) {
      float kr[kUnroll][NI], vr[kUnroll][NI];
      bool ok[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int j = base + u;
        ok[u] = j < k_end && tree_visible(a, seq, 1, ctx - 1, qi, j);
        const int64_t slot = j < k_end ? cache_slot(a, seq, j) : 0;
        const int64_t off = (slot * a.kv_heads + kvh) * D;
#pragma unroll
        for (int i = 0; i < NI; ++i) {
          const int d = lane * NI + i;
          const bool in = j < k_end && d < D;
          kr[u][i] = in ? load_key(a, kc + off, slot, d) : 0.0F;
          vr[u][i] = in ? to_f32(vc[off + d]) : 0.0F;
        }
      }
      consume(kr, vr, ok);
    }
  }

  // Merge the warps through shared memory: [warp][g] (m, l) and [warp][g][D] accumulators.
  extern __shared__ float smem[];
  float* sm = smem;                   // [kWarps][group]
  float* sl = sm + kWarps * group;    // [kWarps][group]
  float* sacc = sl + kWarps * group;  // [kWarps][group][D]
#pragma unroll
  for (int g = 0; g < G; ++g) {
    if (g >= group) break;
    if (lane == 0) {
      sm[warp * group + g] = m[g];
      sl[warp * group + g] = l[g];
    }
#pragma unroll
    for (int i = 0; i < NI; ++i) {
      const int d = lane * NI + i;
      if (d < D) sacc[(warp * group + g) * D + d] = acc[g][i];
    }
  }
  __syncthreads();
  for (int idx = tid; idx < group * (D + 2); idx += blockDim.x) {
    const int g = idx / (D + 2), e = idx % (D + 2);
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, sm[w * group + g]);
    float v = 0.0F;
    if (e == 0) {
      v = mx;
    } else if (mx != -INFINITY) {
      for (int w = 0; w < kWarps; ++w) {
        const float sc = exp2f(sm[w * group + g] - mx);
        v += sc * (e == 1 ? sl[w * group + g] : sacc[(w * group + g) * D + (e - 2)]);
      }
    }
    partial(ws, a, seq, kvh * group + g, split, splits)[e] = v;
  }
}

// One block per (head, sequence): out = sum_s A_s 2^(m_s - M) / sum_s l_s 2^(m_s - M). The
// split weights are computed once into shared memory; then each thread sums one output element
// over the splits (coalesced across threads).
constexpr int kMaxSplits = 128;

template <class T>
__global__ void combine_kernel(const AttnArgs a, int splits, const float* ws) {
  const int h = blockIdx.x, seq = blockIdx.y;
  const int D = a.head_dim;
  const float* base = ws + (int64_t{seq} * a.heads + h) * splits * (D + 2);
  __shared__ float weight[kMaxSplits];
  __shared__ float red[2];
  if (threadIdx.x < 32) {
    float mx = -INFINITY;
    for (int s = threadIdx.x; s < splits; s += 32) mx = fmaxf(mx, base[s * (D + 2)]);
    mx = warp_max(mx);
    float denom = 0.0F;
    for (int s = threadIdx.x; s < splits; s += 32) {
      const float w = mx == -INFINITY ? 0.0F : exp2f(base[s * (D + 2)] - mx);
      weight[s] = w;
      denom += w * base[s * (D + 2) + 1];
    }
    denom = warp_sum(denom);
    if (threadIdx.x == 0) red[0] = denom;
  }
  __syncthreads();
  const float denom = red[0];
  T* out = static_cast<T*>(a.out) + (int64_t{seq} * a.heads + h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float num = 0.0F;
    for (int s = 0; s < splits; ++s) num += base[s * (D + 2) + 2 + d] * weight[s];
    out[d] = from_f32<T>(denom > 0.0F ? num / denom : 0.0F);
  }
}

template <class T, int NI, int G>
void launch_decode(const AttnArgs& a, int splits, float* ws, cudaStream_t s) {
  const int group = a.heads / a.kv_heads;
  const size_t smem = sizeof(float) * kWarps * group * (a.head_dim + 2);
  static bool attr_set = false;
  if (!attr_set) {
    NI_CUDA_CHECK(
        cudaFuncSetAttribute(decode_kernel<T, NI, G>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(sizeof(float) * kWarps * G * (32 * NI + 2))));
    attr_set = true;
  }
  const float q_scale = kLog2e / sqrtf(static_cast<float>(a.head_dim));
  decode_kernel<T, NI, G>
      <<<dim3(splits, a.kv_heads, a.seqs), kWarps * 32, smem, s>>>(a, q_scale, splits, ws);
  NI_CUDA_LAUNCH_CHECK("attention_decode");
  combine_kernel<T><<<dim3(a.heads, a.seqs), 128, 0, s>>>(a, splits, ws);
  NI_CUDA_LAUNCH_CHECK("attention_decode_combine");
}

template <class T, int NI>
void dispatch_group(const AttnArgs& a, int splits, float* ws, cudaStream_t s) {
  const int group = a.heads / a.kv_heads;
  if (group == 1)
    launch_decode<T, NI, 1>(a, splits, ws, s);
  else if (group == 2)
    launch_decode<T, NI, 2>(a, splits, ws, s);
  else if (group <= 4)
    launch_decode<T, NI, 4>(a, splits, ws, s);
  else if (group <= 8)
    launch_decode<T, NI, 8>(a, splits, ws, s);
  else if (group <= 16)
    launch_decode<T, NI, 16>(a, splits, ws, s);
  else
    fail("decode attention: " + std::to_string(group) + " query heads per kv head (at most 16)");
}

}  // namespace

int64_t decode_workspace_floats(int seqs, int heads, int splits, int head_dim) {
  return int64_t{seqs} * heads * splits * (head_dim + 4);  // the tensor-core kernel's stride
}

void attention_decode(const AttnArgs& a, int splits, float* workspace, cudaStream_t s) {
  if (a.seqs == 0) return;
  NI_ASSERT(splits >= 1 && splits <= kMaxSplits);
  if (a.head_dim > 256 || a.head_dim % 2 != 0)
    fail("attention: head_dim " + std::to_string(a.head_dim) + " is not supported (even, <= 256)");
  const int ni = (a.head_dim + 31) / 32;
  NI_DISPATCH_FLOAT(a.dt, T, {
    if (ni == 1)
      dispatch_group<T, 1>(a, splits, workspace, s);
    else if (ni == 2)
      dispatch_group<T, 2>(a, splits, workspace, s);
    else if (ni <= 4)
      dispatch_group<T, 4>(a, splits, workspace, s);
    else
      dispatch_group<T, 8>(a, splits, workspace, s);
  });
}

}  // namespace nanoinfer::cuda
