// Products and gathers over GGUF blocks kept on the device (quant_units.cuh's formats).
//  - repack_blocks puts GGUF's blocks into the device layout (quant_units.cuh: one plane per
//    field, so that every load is aligned and a warp's loads are contiguous).
//  - dequant_rows widens whole rows, value for value as the loader does (rounded to bf16 once
//    when the output is bf16): the embedding gather, and the weights of a product of more rows
//    than mma_quant takes, widened into a scratch matrix for cuBLASLt. Each warp's stores go out
//    through shared memory in consecutive words (H200, 8B Q4_K_M: 512-token prefill 15.6 against
//    19.7 ms with each lane storing its own unit; 2026-12-04, docs/perf.md).
//  - gemv_quant: one or two rows of x against the blocks, in integer dot products (dp4a): x is
//    split per unit into two int8 parts (XUnit below), so a unit costs 16 dp4a and a few float
//    operations a row instead of a conversion and a multiply-add per value; the rows share each
//    unit's loads and its widening to bytes. One block of 16 warps per SM; warp g
//    of the G in the grid owns rows g, g + G, ...; lane l takes units (32 values) l, l + 32, ...
//    of the row, kUnroll of them loaded before any is used, each lane's block index carried and
//    the 4-bit formats' high nibbles left in place (2026-12-04: +1.2 % then +2.1 % at one
//    sequence, +4.2 % then +0.6 % at two, each against the build before; docs/perf.md). H200,
//    8B Q4_K_M decode at one sequence: 384 tok/s against 329 with a float multiply-add per value,
//    at two 577 against mma_quant's 491; at three and four mma_quant wins, 704 and 936 against 542
//    and 721 (the three- and four-row kernels at 128 registers, Q6_K's spilling; 2026-12-04).
//    Slower there: two-unit chunks with the next one's loads issued before the current one's
//    arithmetic (-35 %, 2026-12-03), four-unit chunks so in two register buffers (-27 %); with
//    dp4a, one flat loop over chunks whose first loads go out before x is staged (-25 % to
//    -40 % however deep), a lane on a block's four consecutive units, loading their words once
//    (-14 %), each warp's weights copied ahead into shared memory by cp.async (-9 %, 2026-12-04).
//  - mma_quant: up to 32 rows on the tensor cores (below; the backend's from three rows).
//  - Sums are rounded to bf16, also into f32 y (the logits), as gemv_bf16 does.
#include <cuda_bf16.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/quant_units.cuh"

namespace nanoinfer::cuda {
namespace {

using quant::Unit;

// 32 values at o (64-byte aligned) in 16-byte stores.
__device__ __forceinline__ void store32(float* o, const float* v) {
#pragma unroll
  for (int i = 0; i < 8; ++i)
    reinterpret_cast<float4*>(o)[i] =
        make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
}
__device__ __forceinline__ void store32(__nv_bfloat16* o, const float* v) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    uint4 pack;
    auto* h = reinterpret_cast<__nv_bfloat162*>(&pack);
#pragma unroll
    for (int e = 0; e < 4; ++e)
      h[e] = __floats2bfloat162_rn(v[8 * i + 2 * e], v[8 * i + 2 * e + 1]);
    reinterpret_cast<uint4*>(o)[i] = pack;
  }
}

// A block of kWidenWarps warps a row; lane l of a warp widens unit u0 + l into the warp's slice
// of shared memory, then the warp stores the 32 units' values in consecutive 16-byte words (a
// lane's own 64 or 128 bytes would leave each store instruction's words a unit apart). Chunk c of
// a unit's 16-byte words sits at c ^ (unit % 4) there: two lanes a bank group, not four.
constexpr int kWidenWarps = 4;

template <class F, class Out>
__global__ void __launch_bounds__(32 * kWidenWarps)
    dequant_rows_kernel(quant::Planes P, int64_t src_rows, int k, const int32_t* ids, Out* out) {
  constexpr int kChunks = 32 * static_cast<int>(sizeof(Out)) / 16;  // 16-byte words a unit
  __shared__ uint4 stage[kWidenWarps][32 * kChunks];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t r = blockIdx.x;
  const int64_t src = ids != nullptr ? ids[r] : r;
  const bool inside = src >= 0 && src < src_rows;
  const int units = k / 32;
  uint4* o = reinterpret_cast<uint4*>(out + r * k);
  uint4* mine = stage[warp] + lane * kChunks;
  for (int u0 = 32 * warp; u0 < units; u0 += 32 * kWidenWarps) {
    if (u0 + lane < units) {
      float v[32] = {};
      if (inside) {
        const Unit q = quant::row_unit<F>(P, src, units, u0 + lane);
#pragma unroll
        for (int e = 0; e < 32; ++e) v[e] = quant::value(q, e);
      }
      uint4 words[kChunks];
      store32(reinterpret_cast<Out*>(words), v);
#pragma unroll
      for (int c = 0; c < kChunks; ++c) mine[c ^ (lane % 4)] = words[c];
    }
    __syncwarp();
    const int n = min(32, units - u0) * kChunks;
    for (int w = lane; w < n; w += 32)
      o[u0 * kChunks + w] =
          stage[warp][(w / kChunks) * kChunks + ((w % kChunks) ^ (w / kChunks % 4))];
    __syncwarp();
  }
}

// GGUF's blocks (src) into the device layout (dst): byte `off` of block i goes to its plane.
struct PlaneTable {
  quant::Plane p[4];
  int count, block_bytes;
};

__global__ void repack_kernel(const uint8_t* src, int64_t blocks, PlaneTable tab, uint8_t* dst) {
  const int64_t bytes = blocks * tab.block_bytes;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < bytes;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = t / tab.block_bytes;
    const int off = static_cast<int>(t % tab.block_bytes);
    int64_t base = 0;
    for (int k = 0; k < tab.count; ++k) {
      const quant::Plane pl = tab.p[k];
      if (off >= pl.offset && off < pl.offset + pl.size)
        dst[base + i * pl.size + off - pl.offset] = src[t];
      base += blocks * pl.size;
    }
  }
}

constexpr int kWarps = 16;  // one block of 512 threads per SM
constexpr int kUnroll = 4;  // units a lane loads before using the first

// x for the block GEMV, per unit of 32 values: two int8 parts, x_e ~ s (h_e + l_e / 254) with
// s = max |x| / 127, so that a unit's product is integer dot products (dp4a) of the quants with h
// and with l; |x_e - s (h_e + l_e / 254)| <= max |x| / 64,516, under the bf16 spacing of every
// value above max |x| / 252.
// m = (s / 254, sum of values 0-15, of 16-31): the scale of h * 254 + l and, for the formats with
// offsets, b's factors. In shared memory a unit is five planes of 16-byte words (h of values
// 0-15, h of 16-31, l of 0-15, l of 16-31, m; word p of unit u at p * units + u), so that a
// warp's lanes read consecutive words.
struct XUnit {
  uint32_t h[8], l[8];
  float4 m;
};
constexpr int kXPlanes = 5;

// max |v| with NaN kept (fmaxf drops it), so that a NaN in x makes the unit's scale NaN.
__device__ __forceinline__ float nan_max(float a, float b) {
  return (a > b || a != a) ? a : b;
}

// 4 values as bytes of h and l, given 127 / max |x| (0 where the unit is zero, not finite or tiny).
__device__ __forceinline__ void split4(const float* v, float inv, uint32_t& h, uint32_t& l) {
  h = l = 0;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float t = v[e] * inv, hi = rintf(t);
    h |= (static_cast<uint32_t>(static_cast<int>(hi)) & 0xFFU) << (8 * e);
    l |= (static_cast<uint32_t>(static_cast<int>(rintf((t - hi) * 254.0F))) & 0xFFU) << (8 * e);
  }
}
__device__ __forceinline__ float inverse_scale(float mx) {
  return mx >= 1e-30F && mx <= 3e38F ? 127.0F / mx : 0.0F;
}
// XUnit::m.x: s / 254, the factor of h * 254 + l.
__device__ __forceinline__ float unit_scale(float mx) {
  return mx / (127.0F * 254.0F);
}

// Unit u of x, from shared memory or (x too long for it) made from global memory.
template <bool kShared>
__device__ __forceinline__ XUnit x_unit(const uint4* xs, const __nv_bfloat16* xg, int units,
                                        int u) {
  XUnit r;
  if constexpr (kShared) {
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      const uint4 w = xs[p * units + u];
      quant::words(w, (p < 2 ? r.h : r.l) + 4 * (p % 2));
    }
    const uint4 m = xs[4 * units + u];
    r.m = make_float4(__uint_as_float(m.x), __uint_as_float(m.y), __uint_as_float(m.z), 0.0F);
  } else {
    float v[32], mx = 0.0F, sum[2] = {};
#pragma unroll
    for (int p = 0; p < 4; ++p)
      unpack8(__ldg(reinterpret_cast<const uint4*>(xg + 32 * u) + p), v + 8 * p);
#pragma unroll
    for (int e = 0; e < 32; ++e) {
      mx = nan_max(mx, fabsf(v[e]));
      sum[e / 16] += v[e];
    }
    const float inv = inverse_scale(mx);
#pragma unroll
    for (int g = 0; g < 8; ++g) split4(v + 4 * g, inv, r.h[g], r.l[g]);
    r.m = make_float4(unit_scale(mx), sum[0], sum[1], 0.0F);
  }
  return r;
}

// Stages x into xs as XUnits: 8 threads a unit, 4 values each.
__device__ __forceinline__ void stage_x(const __nv_bfloat16* x, int units, uint4* xs) {
  auto* words32 = reinterpret_cast<uint32_t*>(xs);
  const int lane = static_cast<int>(threadIdx.x % 32);
  for (int base = static_cast<int>(threadIdx.x - lane); base < 8 * units;
       base += static_cast<int>(blockDim.x)) {  // whole warps, for the shuffles
    const int t = base + lane, u = t / 8, g = t % 8;
    float v[4] = {};
    if (t < 8 * units) {
      const uint2 w = __ldg(reinterpret_cast<const uint2*>(x + 32 * u + 4 * g));
      const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w.x));
      const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w.y));
      v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
    }
    float mx = nan_max(nan_max(fabsf(v[0]), fabsf(v[1])), nan_max(fabsf(v[2]), fabsf(v[3])));
    float sum = (v[0] + v[1]) + (v[2] + v[3]);
#pragma unroll
    for (int o = 1; o < 8; o <<= 1) {
      mx = nan_max(mx, __shfl_xor_sync(0xffffffffU, mx, o));
      if (o < 4) sum += __shfl_xor_sync(0xffffffffU, sum, o);
    }
    const float high_sum = __shfl_xor_sync(0xffffffffU, sum, 4);
    if (t >= 8 * units) continue;
    uint32_t h = 0, l = 0;
    split4(v, inverse_scale(mx), h, l);
    words32[4 * ((g / 4) * units + u) + g % 4] = h;
    words32[4 * ((2 + g / 4) * units + u) + g % 4] = l;
    if (g == 0)
      xs[4 * units + u] = make_uint4(__float_as_uint(unit_scale(mx)), __float_as_uint(sum),
                                     __float_as_uint(high_sum), 0U);
  }
}

// The GEMV's unit: raw where the format has the form.
template <class F>
__device__ __forceinline__ Unit gemv_unit(const quant::Planes& P, int64_t i, int j) {
  if constexpr (F::kRaw)
    return F::template unit<true>(P, i, j);
  else
    return F::unit(P, i, j);
}

// c + the dot product of a's 4 bytes (unsigned where F's raw units are) with b's (signed).
template <class F>
__device__ __forceinline__ int dp4a(uint32_t a, uint32_t b, int c) {
  if constexpr (F::kRawUnsigned) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
  } else {
    return __dp4a(static_cast<int>(a), static_cast<int>(b), c);
  }
}

constexpr int kMagic = 0x4B400000;  // 1.5 * 2^23 as a float: its low 22 bits read as an integer
constexpr float kMagicF = 12582912.0F;

template <class F, bool kShared, class Y, int kRows>
__global__ void __launch_bounds__(kWarps * 32, 1)
    gemv_quant_kernel(const __nv_bfloat16* x, quant::Planes P, Y* y, int k, int n) {
  extern __shared__ uint4 xs[];  // kShared: each row of x as XUnits, kXPlanes * units words a row
  const int lane = threadIdx.x % 32, units = k / 32;
  const int stride = static_cast<int>(gridDim.x) * kWarps;
  const int first = static_cast<int>((threadIdx.x / 32) * gridDim.x + blockIdx.x);
  float acc[kRows] = {};

  // The lane's units of a row are u0 = lane, lane + 32, ...: unit j = lane % kUnits of blocks
  // that advance by kStep, so the block index is carried, not divided out of u0 each time.
  constexpr int kUnits = F::kValues / 32, kStep = 32 / kUnits;
  const int j = lane % kUnits;
  // Raw units (the 4-bit formats): the sums of a half holding high nibbles are 16x, scaled back
  // (exactly: a power of two) where the chain's magic is taken off.
  float scale[2] = {1.0F, 1.0F};
  if constexpr (F::kRaw) scale[0] = F::raw_scale(j, 0), scale[1] = F::raw_scale(j, 1);

  // acc[r] += unit u (quants q) . x[r]: per 16 values sum_e q_e h_e and sum_e q_e l_e in dp4a
  // chains started at kMagic (|sums| < 2^22, 16 x 240 x 127 at most, so each chain's bits are the
  // float 1.5 * 2^23 + sum).
  auto apply = [&](const Unit& q, int u) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const XUnit xu = x_unit<kShared>(xs + r * kXPlanes * units, x + int64_t{r} * k, units, u);
      float c[2];
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        int h = kMagic, l = kMagic;
#pragma unroll
        for (int w = 4 * p; w < 4 * p + 4; ++w) {
          h = dp4a<F>(q.q[w], xu.h[w], h);
          l = dp4a<F>(q.q[w], xu.l[w], l);
        }
        const float off = -kMagicF * scale[p];
        c[p] = fmaf(254.0F, fmaf(__int_as_float(h), scale[p], off),
                    fmaf(__int_as_float(l), scale[p], off));
      }
      float d = xu.m.x * fmaf(q.a[0], c[0], q.a[1] * c[1]);
      if constexpr (F::kOffset) d -= fmaf(q.b[0], xu.m.y, q.b[1] * xu.m.z);
      acc[r] += d;
    }
  };

  pdl_wait();  // x belongs to the kernel before this one
  if constexpr (kShared) {
    for (int r = 0; r < kRows; ++r) stage_x(x + int64_t{r} * k, units, xs + r * kXPlanes * units);
    __syncthreads();
  }

  for (int row = first; row < n; row += stride) {
    int u0 = lane;
    int64_t b = int64_t{row} * (units / kUnits) + lane / kUnits;
    for (; u0 + 32 * (kUnroll - 1) < units; u0 += 32 * kUnroll, b += kStep * kUnroll) {
      Unit q[kUnroll];  // kUnroll loads, then use
#pragma unroll
      for (int i = 0; i < kUnroll; ++i) q[i] = gemv_unit<F>(P, b + kStep * i, j);
#pragma unroll
      for (int i = 0; i < kUnroll; ++i) apply(q[i], u0 + 32 * i);
    }
    for (; u0 < units; u0 += 32, b += kStep) apply(gemv_unit<F>(P, b, j), u0);
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float sum = warp_sum(acc[r]);
      if (lane == 0) y[int64_t{r} * n + row] = from_f32<Y>(round_to<__nv_bfloat16>(sum));
      acc[r] = 0.0F;
    }
  }
}

// One GEMV kernel's launch; its shared-memory allowance is raised on its own first launch (the
// two forms of launch_gemv below share a type, so one static for both would raise only the first
// one launched).
template <auto kKernel, class Y>
void launch_gemv_kernel(const void* x, quant::Planes P, void* y, int k, int n, size_t smem,
                        cudaStream_t s) {
  const DeviceLimits& m = device_limits();
  [[maybe_unused]] static const bool once = (allow_dynamic_smem(kKernel, m.smem_optin), true);
  const auto grid = static_cast<unsigned>(std::min(m.sms, (n + kWarps - 1) / kWarps));
  launch_pdl(kKernel, dim3(grid), dim3(kWarps * 32), smem, s, static_cast<const __nv_bfloat16*>(x),
             P, static_cast<Y*>(y), k, n);
  NI_CUDA_LAUNCH_CHECK("gemv_quant");
}

template <class F, class Y, int kRows>
void launch_gemv(const void* x, const void* w, void* y, int k, int n, cudaStream_t s) {
  const size_t shared = sizeof(uint4) * kXPlanes * static_cast<size_t>(k / 32) * kRows;
  const quant::Planes P = quant::planes_of<F>(w, int64_t{n} * (k / F::kValues));
  if (shared <= static_cast<size_t>(device_limits().smem_optin))
    launch_gemv_kernel<gemv_quant_kernel<F, true, Y, kRows>, Y>(x, P, y, k, n, shared, s);
  else
    launch_gemv_kernel<gemv_quant_kernel<F, false, Y, kRows>, Y>(x, P, y, k, n, 0, s);
}

// mma_quant: up to 32 rows of x against the blocks on the tensor cores (mma.sync m16n8k16,
// bf16 in, f32 sums). A block of kMmaWarps warps owns 16 weight rows per row group: one group up
// to 16 rows of x, above that as many as still fill every SM with two blocks (4, 2 or 1). K is
// cut into steps of four units (128 values); the warps of a row group take the steps in turn
// (warp w is row group w % groups, K group kg = w / groups: steps kg, kg + kMmaWarps / groups,
// ...). Lane (g, t) = (lane / 4, lane % 4) widens unit 4s + t of rows g and g + 8 to bf16 (as
// dequant_rows does, so the sums are the scratch path's up to their order) and holds its word i
// (values 4i .. 4i + 3) as its A-fragment columns of product i (i = 0 .. 7): the sum over K does
// not care which physical values a product's K slots hold as long as x's fragment holds the same
// ones, and then x's fragment is 8 bytes of token g's row as stored. Up to 16 rows a lane reads
// them from global memory tile by tile of 8 tokens (the L1 serves the SM's other row tiles);
// above, where those reads (16 cache lines an instruction) held the L1/TEX pipe at 80 %, the K
// group's warps first copy the step's x into their shared-memory slice, 512 contiguous bytes an
// instruction, and meet at a named barrier; the row groups share it, so x crosses from L2 once a
// block of 16 x groups rows. The next step's units load while this step's products run, and a
// lane's first units before pdl_wait (weights are no kernel's output). The warps add their sums
// in shared memory in a fixed order.
// (H200, 2026-12-03: loading two steps' units ahead spilled Q6_K's registers and ran 3 % slower;
// a variant templated on the tile count with x loaded before the widening ran 11 % slower at 16
// rows and 4 % faster at 32. 2026-12-04: staging x at every count ran 9 % slower at 8 rows and
// 6 % faster at 32; staging it in two slices, landing one step ahead, 1-2 % faster at 16 rows
// and 14 % slower at 32, where 128 KB a block leaves one block an SM. Row groups: the 8B gate|up
// at 32 rows 101 -> 87 us with four, decode +7.7 % at 32 rows (+3.5-3.7 % at 17 and 24 with
// idle rounds guarded inside the loop); four groups at every product ran the 4,096-row ones (64
// blocks) 2.2x slower; groups at 8 and 16 rows, where the L1 already shares x, 2-4 % slower.)
constexpr int kMmaWarps = 8;
constexpr int kMmaTiles = kQuantMmaMaxTokens / 8;  // 8-token tiles of x
// Above 16 rows, x is staged in shared memory (see above); up to 16 the direct reads win.
constexpr int kMmaStagedAbove = 16;

// x's 16-byte chunk c (0-15) of a step, token tok, in a K group's shared-memory slice: the chunk's
// low two bits are XORed with (c / 8, tok % 2) so that the 8 lanes of a quarter-warp, reading
// chunks 4t + p of tokens g (two tokens, t = 0..3), hit 8 different 16-byte bank groups.
__device__ __forceinline__ int x_slot(int tok, int c) {
  return tok * 16 + (c ^ (((c >> 3) & 1) << 1) ^ (tok & 1));
}

// The block's dynamic shared memory, in 16-byte words per 8-token tile: each K group's step of x
// (8 tokens x 16 chunks) where staged; after the steps, each warp's sums (32 lanes x 4 floats).
template <bool kStaged, int kGroups>
constexpr int kMmaSmemWords = std::max(kStaged ? kMmaWarps / kGroups * 8 * 16 : 0, kMmaWarps * 32);

// A group of 32 * kGroups threads waits for each other (named barrier 1 + id; one warp: syncwarp).
template <int kGroups>
__device__ __forceinline__ void group_sync(int id) {
  if constexpr (kGroups == 1)
    __syncwarp();
  else
    asm volatile("bar.sync %0, %1;\n" ::"r"(1 + id), "n"(32 * kGroups) : "memory");
}

template <class F, class Y, bool kStaged, int kGroups>
__global__ void __launch_bounds__(kMmaWarps * 32, 2)
    mma_quant_kernel(const __nv_bfloat16* x, quant::Planes P, Y* y, int tokens, int k, int n) {
  constexpr int kSplit = kMmaWarps / kGroups;  // warps along K (per row group)
  extern __shared__ uint4 sm[];
  const int lane = threadIdx.x % 32, warp = static_cast<int>(threadIdx.x / 32);
  const int rg = warp % kGroups, kg = warp / kGroups;  // row group, K group
  const int g = lane / 4, t = lane % 4, units = k / 32, steps = (units + 3) / 4;
  const int tiles = (tokens + 7) / 8;
  uint4* xs = sm + kg * tiles * 128;  // the K group's staged step (shared by its row groups)
  const int row0 = (static_cast<int>(blockIdx.x) * kGroups + rg) * 16 + g;
  const int rows[2] = {min(row0, n - 1), min(row0 + 8, n - 1)};  // beyond n: discarded sums
  float c[kMmaTiles][4] = {};

  auto load = [&](int s, Unit(&w)[2]) {
    const int u = min(4 * s + t, units - 1);  // (beyond: x's fragment is zero)
#pragma unroll
    for (int h = 0; h < 2; ++h) w[h] = quant::row_unit<F>(P, rows[h], units, u);
  };
  // x's 128 values of step s for every token of the tiles into the K group's slice (zeros past
  // the tokens and past k), 512 contiguous bytes a copy instruction, its warps taking turns.
  auto stage = [&](int s) {
    for (int i = rg * 32 + lane; i < tiles * 128; i += kGroups * 32) {
      const int tok = i / 16, ch = i % 16;
      const bool live = tok < tokens && 4 * s + ch / 4 < units;
      cp_async16_ca(xs + x_slot(tok, ch), x + (live ? int64_t{tok} * k + 128 * s + 8 * ch : 0),
                    live);
    }
    cp_async_commit();
  };
  uint32_t a[8][4];  // A fragments of the 8 products of a step
  auto widen = [&](const Unit(&w)[2]) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      float v[2][4];
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int e = 0; e < 4; ++e) v[h][e] = quant::value(w[h], 4 * i + e);
      a[i][0] = pack_bf16(v[0][0], v[0][1]), a[i][1] = pack_bf16(v[1][0], v[1][1]);
      a[i][2] = pack_bf16(v[0][2], v[0][3]), a[i][3] = pack_bf16(v[1][2], v[1][3]);
    }
  };
  auto multiply = [&](int s) {  // each tile of x against the A fragments
    const int u = 4 * s + t;
#pragma unroll
    for (int j = 0; j < kMmaTiles; ++j) {
      if (j >= tiles) break;  // (the same for the whole warp)
      const int tok = 8 * j + g;
      const bool live = tok < tokens && u < units;
      const auto* src = reinterpret_cast<const uint4*>(x + int64_t{live ? tok : 0} * k + 32 * u);
      uint32_t xw[16];
#pragma unroll
      for (int p = 0; p < 4; ++p)
        quant::words(kStaged ? xs[x_slot(tok, 4 * t + p)]
                     : live  ? __ldg(src + p)
                             : make_uint4(0, 0, 0, 0),
                     xw + 4 * p);
#pragma unroll
      for (int i = 0; i < 8; ++i) mma_bf16(c[j], a[i], xw[2 * i], xw[2 * i + 1]);
    }
  };

  int s = kg;
  Unit w[2];
  if (s < steps) load(s, w);
  pdl_wait();  // x belongs to the kernel before this one
  if (kStaged && s < steps) stage(s);
  for (; s < steps; s += kSplit) {
    widen(w);
    if (s + kSplit < steps) load(s + kSplit, w);
    if constexpr (kStaged) {
      cp_async_wait<0>();
      group_sync<kGroups>(kg);  // every thread's copies of this step have landed
    }
    multiply(s);
    if constexpr (kStaged) {
      group_sync<kGroups>(kg);  // every thread has read them
      if (s + kSplit < steps) stage(s + kSplit);
    }
  }
  // A K group with a step fewer meets its barrier as often as the others all the same: nothing
  // needs it, but compute-sanitizer's racecheck, seeing the warps' barrier counts differ, reports
  // the block barriers below as no ordering.
  if constexpr (kGroups > 1)
    if (s < kg + (steps + kSplit - 1) / kSplit * kSplit)
      group_sync<kGroups>(kg), group_sync<kGroups>(kg);

  // The warps' sums, each in its own slice, added over the K groups in a fixed order.
  if constexpr (kStaged) __syncthreads();  // (the slices overlap the staged x)
  auto* part = reinterpret_cast<float(*)[32][4]>(sm + warp * tiles * 32);  // [tile][lane][e]
#pragma unroll
  for (int j = 0; j < kMmaTiles; ++j)
    if (j < tiles)
#pragma unroll
      for (int e = 0; e < 4; ++e) part[j][lane][e] = c[j][e];
  __syncthreads();
  for (int i = static_cast<int>(threadIdx.x); i < kGroups * tiles * 128; i += kMmaWarps * 32) {
    const int r = kGroups == 1 ? 0 : i / (tiles * 128), j = i / 128 - r * tiles;
    const int l = (i / 4) % 32, e = i % 4;
    float sum = 0.0F;
#pragma unroll
    for (int v = 0; v < kSplit; ++v)
      sum += reinterpret_cast<const float(*)[32][4]>(sm + (v * kGroups + r) * tiles * 32)[j][l][e];
    const int row = (static_cast<int>(blockIdx.x) * kGroups + r) * 16 + l / 4 + (e >= 2 ? 8 : 0);
    const int tok = 8 * j + 2 * (l % 4) + (e & 1);
    if (row < n && tok < tokens)
      y[int64_t{tok} * n + row] = from_f32<Y>(round_to<__nv_bfloat16>(sum));
  }
}

template <class F, class Y, bool kStaged, int kGroups>
void launch_mma(const void* x, const void* w, void* y, int tokens, int k, int n, cudaStream_t s) {
  const quant::Planes P = quant::planes_of<F>(w, int64_t{n} * (k / F::kValues));
  const auto kernel = mma_quant_kernel<F, Y, kStaged, kGroups>;
  constexpr size_t kTileBytes = size_t{kMmaSmemWords<kStaged, kGroups>} * 16;
  [[maybe_unused]] static const bool once =
      (allow_dynamic_smem(kernel, kMmaTiles * kTileBytes), true);
  const int blocks = (n + 16 * kGroups - 1) / (16 * kGroups);
  launch_pdl(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kMmaWarps * 32),
             (tokens + 7) / 8 * kTileBytes, s, static_cast<const __nv_bfloat16*>(x), P,
             static_cast<Y*>(y), tokens, k, n);
  NI_CUDA_LAUNCH_CHECK("mma_quant");
}

// Staged, as many row groups a block (4, 2, 1) as still fill every SM with two blocks.
template <class F, class Y>
void launch_mma_staged(const void* x, const void* w, void* y, int tokens, int k, int n,
                       cudaStream_t s) {
  const int resident = 2 * device_limits().sms;
  if ((n + 63) / 64 >= resident)
    launch_mma<F, Y, true, 4>(x, w, y, tokens, k, n, s);
  else if ((n + 31) / 32 >= resident)
    launch_mma<F, Y, true, 2>(x, w, y, tokens, k, n, s);
  else
    launch_mma<F, Y, true, 1>(x, w, y, tokens, k, n, s);
}

// Runs f(F{}) for w_dt's format; fails naming op where the device keeps no such blocks.
template <class Fn>
void for_kept(const char* op, DType w_dt, Fn&& f) {
  if (!quant::with_format(w_dt, f))
    fail(std::string(op) + ": the device keeps no " + dtype_name(w_dt) + " blocks");
}

}  // namespace

bool quant_kept(DType w_dt) {
  return quant::with_format(w_dt, [](auto) {});
}

void repack_blocks(DType w_dt, const void* src, int64_t blocks, void* dst, cudaStream_t s) {
  for_kept("repack_blocks", w_dt, [&](auto f) {
    using F = decltype(f);
    const int64_t bytes = blocks * F::kBytes;
    const auto grid = static_cast<unsigned>(std::min<int64_t>((bytes + 255) / 256, 65536));
    PlaneTable tab{{}, F::kPlaneCount, F::kBytes};
    for (int k = 0; k < F::kPlaneCount; ++k) tab.p[k] = F::kPlanes[k];
    if (bytes > 0)
      repack_kernel<<<grid, 256, 0, s>>>(static_cast<const uint8_t*>(src), blocks, tab,
                                         static_cast<uint8_t*>(dst));
    NI_CUDA_LAUNCH_CHECK("repack_blocks");
  });
}

void dequant_rows(DType w_dt, const void* w, int64_t src_rows, int64_t k, const int32_t* ids,
                  int64_t rows, DType out_dt, void* out, cudaStream_t s) {
  NI_ASSERT(k % dtype_block(w_dt) == 0);
  if (rows == 0) return;
  for_kept("dequant_rows", w_dt, [&](auto f) {
    using F = decltype(f);
    const quant::Planes P = quant::planes_of<F>(w, src_rows * (k / F::kValues));
    NI_DISPATCH_FLOAT(out_dt, T,
                      dequant_rows_kernel<F, T>
                      <<<static_cast<unsigned>(rows), 32 * kWidenWarps, 0, s>>>(
                          P, src_rows, static_cast<int>(k), ids, static_cast<T*>(out)));
    NI_CUDA_LAUNCH_CHECK("dequant_rows");
  });
}

void gemv_quant(DType w_dt, const void* x, const void* w, DType y_dt, void* y, int tokens, int k,
                int n, cudaStream_t s) {
  NI_ASSERT(tokens >= 1 && tokens <= kQuantGemvMaxTokens && n >= 1 && k % 32 == 0);
  for_kept("gemv_quant", w_dt, [&](auto f) {
    NI_DISPATCH_FLOAT(y_dt, Y, {
      using Fmt = decltype(f);
      if (tokens == 1)
        launch_gemv<Fmt, Y, 1>(x, w, y, k, n, s);
      else
        launch_gemv<Fmt, Y, 2>(x, w, y, k, n, s);
    });
  });
}

void mma_quant(DType w_dt, const void* x, const void* w, DType y_dt, void* y, int tokens, int k,
               int n, cudaStream_t s) {
  NI_ASSERT(tokens >= 1 && tokens <= kQuantMmaMaxTokens && n >= 1 && k % 32 == 0);
  for_kept("mma_quant", w_dt, [&](auto f) {
    if (tokens > kMmaStagedAbove)
      NI_DISPATCH_FLOAT(y_dt, Y, launch_mma_staged<decltype(f), Y>(x, w, y, tokens, k, n, s));
    else
      NI_DISPATCH_FLOAT(y_dt, Y, launch_mma<decltype(f), Y, false, 1>(x, w, y, tokens, k, n, s));
  });
}

}  // namespace nanoinfer::cuda
