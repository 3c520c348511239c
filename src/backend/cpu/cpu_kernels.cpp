#include "backend/cpu/cpu_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <type_traits>
#include <vector>

#include "tensor/quant_blocks.h"

namespace nanoinfer::cpu {

namespace {

// Lanes [0, n) set: the K % 8 tail is loaded with a mask, so every dot product runs the same
// vector instructions in the same order (batch invariance) and needs no scalar tail.
inline __m256i tail_mask(int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), idx);
}

// e^x in eight lanes, within 1 ulp of the exact value (0.91 at most over every 64th float of
// [-87, 88]): x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, so n ln2 is exact enough), e^r
// by its Taylor series to r^7 (the next term is below 5e-9 of it), times 2^n built in the exponent
// bits. x is clamped to [-87, 88] first, where 2^n stays a normal float; below -87 the result is 0
// (std::exp's denormals there are under 2e-38), so a masked score of -inf weighs nothing. A NaN
// stays a NaN.
inline __m256 exp8(__m256 x) {
  const __m256 zero_below = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0F), _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_set1_ps(88.0F), _mm256_max_ps(_mm256_set1_ps(-87.0F), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504F)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375F), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4F), r);
  __m256 p = _mm256_set1_ps(1.0F / 5040);
  for (const float c : {1.0F / 720, 1.0F / 120, 1.0F / 24, 1.0F / 6, 0.5F, 1.0F, 1.0F})
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(zero_below, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

inline float hsum(__m256 v) {
  const __m128 lo = _mm256_castps256_ps128(v);
  const __m128 hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// R x C dot products, R rows of x (stride ldx) against C rows of w (stride ldw), into y (row
// stride ldy): the prefill inner loop. Every load of x serves C products and every load of w R;
// at 4 x 3 the 12 accumulators, 3 weight vectors and 1 activation vector fill the 16 AVX2
// registers, 7 loads for 12 FMAs (one row of w against 4 tokens took 5 loads for 4). Each product
// accumulates in its own register in dot()'s order, so the results equal dot()'s bit for bit
// whatever the blocking (batch invariance).
// The rows of w are given by pointers (the attention's keys, gathered through the cache slots).
template <int R, int C>
inline void dot_block(const float* x, int64_t ldx, const float* const (&w)[C], int64_t K, float* y,
                      int64_t ldy) {
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  auto step = [&](int64_t k, auto load) {
    __m256 wv[C];
    for (int c = 0; c < C; ++c) wv[c] = load(w[c] + k);
    for (int r = 0; r < R; ++r) {
      const __m256 xv = load(x + r * ldx + k);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  };
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) step(k, [](const float* p) { return _mm256_loadu_ps(p); });
  if (k < K) {
    const __m256i m = tail_mask(K - k);
    step(k, [m](const float* p) { return _mm256_maskload_ps(p, m); });
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) y[r * ldy + c] = hsum(acc[r][c]);
}

template <int R, int C>
inline void dot_block(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t K, float* y,
                      int64_t ldy) {
  const float* rows[C];
  for (int c = 0; c < C; ++c) rows[c] = w + c * ldw;
  dot_block<R, C>(x, ldx, rows, K, y, ldy);
}

}  // namespace

float dot(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc);
  if (k < n) {
    const __m256i m = tail_mask(n - k);
    acc = _mm256_fmadd_ps(_mm256_maskload_ps(a + k, m), _mm256_maskload_ps(b + k, m), acc);
  }
  return hsum(acc);
}

namespace {

template <int NV>
void dot_rows_fixed(const float* q, const float* k, const int32_t* slots, int64_t slot_stride,
                    int n, float* out) {
  __m256 qv[NV];
  for (int c = 0; c < NV; ++c) qv[c] = _mm256_loadu_ps(q + 8 * c);
  auto rows = [&](auto count, int j) {
    constexpr int kR = decltype(count)::value;
    __m256 acc[kR];
    const float* row[kR];
    for (int r = 0; r < kR; ++r) {
      acc[r] = _mm256_setzero_ps();
      row[r] = k + slots[j + r] * slot_stride;
    }
    for (int c = 0; c < NV; ++c)
      for (int r = 0; r < kR; ++r)
        acc[r] = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(row[r] + 8 * c), acc[r]);
    for (int r = 0; r < kR; ++r) out[j + r] = hsum(acc[r]);
  };
  int j = 0;
  for (; j + 4 <= n; j += 4) rows(std::integral_constant<int, 4>{}, j);
  for (; j < n; ++j) rows(std::integral_constant<int, 1>{}, j);
}

template <int NV>
void weighted_rows_fixed(const float* p, int n, const float* v, const int32_t* slots,
                         int64_t slot_stride, float* out) {
  __m256 o[NV];
  for (int c = 0; c < NV; ++c) o[c] = _mm256_setzero_ps();
  for (int j = 0; j < n; ++j) {
    if (p[j] == 0.0F) continue;
    const __m256 w = _mm256_set1_ps(p[j]);
    const float* row = v + slots[j] * slot_stride;
    for (int c = 0; c < NV; ++c)
      o[c] = _mm256_add_ps(o[c], _mm256_mul_ps(w, _mm256_loadu_ps(row + 8 * c)));
  }
  for (int c = 0; c < NV; ++c) _mm256_storeu_ps(out + 8 * c, o[c]);
}

}  // namespace

void dot_rows(const float* q, const float* k, const int32_t* slots, int64_t slot_stride, int n,
              int D, float* out) {
  if (D == 64) return dot_rows_fixed<8>(q, k, slots, slot_stride, n, out);
  if (D == 128) return dot_rows_fixed<16>(q, k, slots, slot_stride, n, out);
  for (int j = 0; j < n; ++j) out[j] = dot(q, k + slots[j] * slot_stride, D);
}

void weighted_rows(const float* p, int n, const float* v, const int32_t* slots, int64_t slot_stride,
                   int D, float* out) {
  if (D == 64) return weighted_rows_fixed<8>(p, n, v, slots, slot_stride, out);
  if (D == 128) return weighted_rows_fixed<16>(p, n, v, slots, slot_stride, out);
  std::fill(out, out + D, 0.0F);
  for (int j = 0; j < n; ++j) {
    if (p[j] == 0.0F) continue;
    const float w = p[j];
    const float* row = v + slots[j] * slot_stride;
    for (int d = 0; d < D; ++d) out[d] += w * row[d];
  }
}

namespace {

template <int R>
void attend_fixed(const float* q, int64_t q_stride, int n0, float scale, const float* k,
                  const float* v, const int32_t* slots, int64_t slot_stride, int D, float* scores,
                  float* out, int64_t out_stride) {
  const int n = n0 + R - 1;  // the last query's keys; scores: R rows of n
  auto key = [&](int j) { return k + slots[j] * slot_stride; };
  int j = 0;
  for (; j + 3 <= n; j += 3) {
    const float* rows[3] = {key(j), key(j + 1), key(j + 2)};
    dot_block<R, 3>(q, q_stride, rows, D, scores + j, n);
  }
  for (; j < n; ++j) {
    const float* rows[1] = {key(j)};
    dot_block<R, 1>(q, q_stride, rows, D, scores + j, n);
  }
  for (int r = 0; r < R; ++r) {
    float* s = scores + int64_t{r} * n;
    for (int i = 0; i < n0 + r; ++i) s[i] *= scale;
    softmax(s, n0 + r);
    std::fill(s + n0 + r, s + n, 0.0F);  // keys after query r: weight 0, skipped below
  }
  // P V, 16 values of D at a time: each value row loaded once for the R queries. A row some
  // query gives weight 0 (the keys after it, or an e^x flushed to 0) is skipped for that query,
  // as weighted_rows skips it.
  for (int d0 = 0; d0 < D; d0 += 16) {
    __m256 o[R][2];
    for (int r = 0; r < R; ++r) o[r][0] = o[r][1] = _mm256_setzero_ps();
    for (int i = 0; i < n; ++i) {
      const float* row = v + slots[i] * slot_stride + d0;
      const __m256 v0 = _mm256_loadu_ps(row), v1 = _mm256_loadu_ps(row + 8);
      for (int r = 0; r < R; ++r) {
        const float p = scores[int64_t{r} * n + i];
        if (p == 0.0F) continue;
        const __m256 w = _mm256_set1_ps(p);
        o[r][0] = _mm256_add_ps(o[r][0], _mm256_mul_ps(w, v0));
        o[r][1] = _mm256_add_ps(o[r][1], _mm256_mul_ps(w, v1));
      }
    }
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_ps(out + r * out_stride + d0, o[r][0]);
      _mm256_storeu_ps(out + r * out_stride + d0 + 8, o[r][1]);
    }
  }
}

}  // namespace

void attend_queries(const float* q, int64_t q_stride, int R, int n0, float scale, const float* k,
                    const float* v, const int32_t* slots, int64_t slot_stride, int D, float* scores,
                    float* out, int64_t out_stride) {
  switch (R) {
    case 1:  // one query: q and the output held in registers across the rows
      dot_rows(q, k, slots, slot_stride, n0, D, scores);
      for (int j = 0; j < n0; ++j) scores[j] *= scale;
      softmax(scores, n0);
      return weighted_rows(scores, n0, v, slots, slot_stride, D, out);
    case 2:
      return attend_fixed<2>(q, q_stride, n0, scale, k, v, slots, slot_stride, D, scores, out,
                             out_stride);
    case 3:
      return attend_fixed<3>(q, q_stride, n0, scale, k, v, slots, slot_stride, D, scores, out,
                             out_stride);
    default:
      return attend_fixed<4>(q, q_stride, n0, scale, k, v, slots, slot_stride, D, scores, out,
                             out_stride);
  }
}

namespace {

// y[:, n0:n1] for weight rows w (already f32) that start at row n0: blocks of 4 tokens x 3 rows,
// then the leftover rows and tokens in smaller blocks of the same kernel.
void matmul_tile(const float* x, const float* w, float* y, int64_t T, int64_t K, int64_t N,
                 int64_t n0, int64_t n1) {
  auto rows = [&](auto tokens, int64_t t) {
    constexpr int kR = decltype(tokens)::value;
    int64_t n = n0;
    for (; n + 3 <= n1; n += 3)
      dot_block<kR, 3>(x + t * K, K, w + (n - n0) * K, K, K, y + t * N + n, N);
    for (; n < n1; ++n) dot_block<kR, 1>(x + t * K, K, w + (n - n0) * K, K, K, y + t * N + n, N);
  };
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) rows(std::integral_constant<int, 4>{}, t);
  for (; t < T; ++t) rows(std::integral_constant<int, 1>{}, t);
}

// A block's f16 scale in every lane, converted by F16C (part of x86-64-v3; exact, as
// f16_to_f32 is, and inlined where that is a call).
inline __m256 f16x1(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _mm256_set1_ps(_cvtsh_ss(h));
}

}  // namespace

void matmul(const float* x, const float* w, float* y, int64_t T, int64_t K, int64_t N) {
  // Blocks of 64 weight rows per task keep one task's weights in L2 while every token reuses them.
  constexpr int64_t kRows = 64;
  const int64_t tasks = (N + kRows - 1) / kRows;
#pragma omp parallel for schedule(static) if (T * K * N >= kParallelWork)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t n0 = task * kRows, n1 = std::min(N, n0 + kRows);
    matmul_tile(x, w + n0 * K, y, T, K, N, n0, n1);
  }
}

namespace {

// A Q8_0 / Q4_0 / Q4_1 block of 32 values widened into four vectors (values 0-7, 8-15, 16-23,
// 24-31), to the scalar reference's values: d * q, (q - 8) * d and d * q + m in f32, each product
// rounded before the add (no fused multiply-add). Q4 byte j holds value j (low nibble) and j + 16.
template <DType kType>
inline void widen_block(const uint8_t* p, __m256 v[4]) {
  const __m256 d = f16x1(p);
  if constexpr (kType == DType::Q8_0) {
    for (int c = 0; c < 4; ++c) {
      const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 2 + 8 * c));
      v[c] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)), d);
    }
  } else {
    const uint8_t* qs = p + (kType == DType::Q4_1 ? 4 : 2);
    const __m256 m = kType == DType::Q4_1 ? f16x1(p + 2) : _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi32(0xF);
    for (int i = 0; i < 2; ++i) {
      const __m256i q =
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + 8 * i)));
      const __m256i lo = _mm256_and_si256(q, low4), hi = _mm256_srli_epi32(q, 4);
      if constexpr (kType == DType::Q4_1) {
        v[i] = _mm256_add_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(lo)), m);
        v[2 + i] = _mm256_add_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(hi)), m);
      } else {
        const __m256i eight = _mm256_set1_epi32(8);
        v[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(lo, eight)), d);
        v[2 + i] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(hi, eight)), d);
      }
    }
  }
}

template <DType kType>
void widen_rows(const uint8_t* w, int64_t blocks, float* out) {
  for (int64_t b = 0; b < blocks; ++b) {
    __m256 v[4];
    widen_block<kType>(w + b * dtype_size(kType), v);
    for (int c = 0; c < 4; ++c) _mm256_storeu_ps(out + b * 32 + 8 * c, v[c]);
  }
}

// y[t, n0:n1] for T <= 3 tokens straight from the blocks: each block is widened in registers and
// multiplied into every token's accumulator, in dot()'s order (8 values at a time, ascending),
// so the results equal matmul_tile's over the widened rows bit for bit without storing and
// reloading them. Four rows at a time give the FMA units independent chains.
template <DType kType, int kT>
void dot_blocks(const float* x, const uint8_t* w, size_t row_bytes, float* y, int64_t K, int64_t N,
                int64_t n0, int64_t n1) {
  constexpr int kR = 4;
  const int64_t blocks = K / 32;
  auto rows = [&](auto count, int64_t n) {
    constexpr int R = decltype(count)::value;
    __m256 acc[R][kT];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < kT; ++t) acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b)
      for (int r = 0; r < R; ++r) {
        __m256 v[4];
        widen_block<kType>(w + (n + r) * row_bytes + b * dtype_size(kType), v);
        for (int c = 0; c < 4; ++c)
          for (int t = 0; t < kT; ++t)
            acc[r][t] =
                _mm256_fmadd_ps(_mm256_loadu_ps(x + t * K + b * 32 + 8 * c), v[c], acc[r][t]);
      }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < kT; ++t) y[t * N + n + r] = hsum(acc[r][t]);
  };
  int64_t n = n0;
  for (; n + kR <= n1; n += kR) rows(std::integral_constant<int, kR>{}, n);
  for (; n < n1; ++n) rows(std::integral_constant<int, 1>{}, n);
}

template <DType kType>
void dot_blocks(const float* x, const uint8_t* w, size_t row_bytes, float* y, int64_t T, int64_t K,
                int64_t N, int64_t n0, int64_t n1) {
  if (T == 1) return dot_blocks<kType, 1>(x, w, row_bytes, y, K, N, n0, n1);
  if (T == 2) return dot_blocks<kType, 2>(x, w, row_bytes, y, K, N, n0, n1);
  dot_blocks<kType, 3>(x, w, row_bytes, y, K, N, n0, n1);
}

}  // namespace

void dequantize_rows(DType type, const uint8_t* w, int64_t rows, int64_t K, float* out) {
  const int64_t blocks = rows * K / dtype_block(type);
  if (type == DType::Q8_0) return widen_rows<DType::Q8_0>(w, blocks, out);
  if (type == DType::Q4_0) return widen_rows<DType::Q4_0>(w, blocks, out);
  if (type == DType::Q4_1) return widen_rows<DType::Q4_1>(w, blocks, out);
  dequantize_blocks(type, w, blocks, out);  // the other formats: the scalar reference
}

void matmul_quantized(const float* x, DType type, const uint8_t* w, float* y, int64_t T, int64_t K,
                      int64_t N) {
  // Small tiles: the widened rows (kRows * K floats) stay in L1/L2 while all tokens use them.
  constexpr int64_t kRows = 16;
  const int64_t tasks = (N + kRows - 1) / kRows;
  const size_t row_bytes = dtype_nbytes(type, K);
  // Up to 3 tokens (decode): the widened rows would serve too few tokens to pay for their store
  // and reload, so the blocks are multiplied in registers.
  const bool in_registers =
      T <= 3 && (type == DType::Q8_0 || type == DType::Q4_0 || type == DType::Q4_1);
  if (in_registers) {
#pragma omp parallel for schedule(static) if (T * K * N >= kParallelWork)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t n0 = task * kRows, n1 = std::min(N, n0 + kRows);
      if (type == DType::Q8_0) dot_blocks<DType::Q8_0>(x, w, row_bytes, y, T, K, N, n0, n1);
      if (type == DType::Q4_0) dot_blocks<DType::Q4_0>(x, w, row_bytes, y, T, K, N, n0, n1);
      if (type == DType::Q4_1) dot_blocks<DType::Q4_1>(x, w, row_bytes, y, T, K, N, n0, n1);
    }
    return;
  }
#pragma omp parallel if (T * K * N >= kParallelWork)
  {
    std::vector<float> tile(static_cast<size_t>(kRows * K));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t n0 = task * kRows, n1 = std::min(N, n0 + kRows);
      dequantize_rows(type, w + static_cast<size_t>(n0) * row_bytes, n1 - n0, K, tile.data());
      matmul_tile(x, tile.data(), y, T, K, N, n0, n1);
    }
  }
}

void rmsnorm(const float* x, const float* w, float eps, float* out, int64_t T, int64_t H) {
#pragma omp parallel for schedule(static) if (T > 1 && T * H >= kParallelElements)
  for (int64_t t = 0; t < T; ++t) {
    const float* r = x + t * H;
    const float inv = 1.0F / std::sqrt(dot(r, r, H) / static_cast<float>(H) + eps);
    float* o = out + t * H;
    for (int64_t i = 0; i < H; ++i) o[i] = w[i] * (r[i] * inv);
  }
}

void silu_mul(const float* gu, float* out, int64_t T, int64_t F) {
#pragma omp parallel for schedule(static) if (T > 1 && T * F >= kParallelElements)
  for (int64_t t = 0; t < T; ++t) {
    const float* g = gu + t * 2 * F;
    for (int64_t f = 0; f < F; f += 8) {
      const __m256i m = tail_mask(F - f);
      const __m256 a = _mm256_maskload_ps(g + f, m);
      const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), a));
      const __m256 y = _mm256_mul_ps(_mm256_div_ps(a, _mm256_add_ps(_mm256_set1_ps(1.0F), e)),
                                     _mm256_maskload_ps(g + F + f, m));
      _mm256_maskstore_ps(out + t * F + f, m, y);
    }
  }
}

void softmax(float* s, int n) {
  const __m256 minus_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 mv = minus_inf;
  for (int j = 0; j < n; j += 8) {
    const __m256i m = tail_mask(n - j);
    mv = _mm256_max_ps(
        mv, _mm256_blendv_ps(minus_inf, _mm256_maskload_ps(s + j, m), _mm256_castsi256_ps(m)));
  }
  const __m128 h = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
  const __m128 h2 = _mm_max_ps(h, _mm_movehl_ps(h, h));
  const __m256 mx = _mm256_set1_ps(_mm_cvtss_f32(_mm_max_ss(h2, _mm_movehdup_ps(h2))));
  __m256 sum = _mm256_setzero_ps();
  for (int j = 0; j < n; j += 8) {
    const __m256i m = tail_mask(n - j);
    const __m256 x = _mm256_blendv_ps(minus_inf, _mm256_sub_ps(_mm256_maskload_ps(s + j, m), mx),
                                      _mm256_castsi256_ps(m));
    const __m256 e = exp8(x);
    _mm256_maskstore_ps(s + j, m, e);
    sum = _mm256_add_ps(sum, e);
  }
  const __m256 total = _mm256_set1_ps(hsum(sum));
  for (int j = 0; j < n; j += 8) {
    const __m256i m = tail_mask(n - j);
    _mm256_maskstore_ps(s + j, m, _mm256_div_ps(_mm256_maskload_ps(s + j, m), total));
  }
}

void rope_rotate(float* x, const float* cs, int head_dim) {
  const int half = head_dim / 2;
  const float* c = cs;
  const float* s = cs + half;
  for (int i = 0; i < half; ++i) {
    const float a = x[i];
    const float b = x[i + half];
    x[i] = a * c[i] - b * s[i];
    x[i + half] = b * c[i] + a * s[i];
  }
}

}  // namespace nanoinfer::cpu
