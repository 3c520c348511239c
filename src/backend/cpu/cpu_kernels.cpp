#include "backend/cpu/cpu_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

namespace nanoinfer::cpu {

namespace {

inline float hsum(__m256 v) {
  const __m128 lo = _mm256_castps256_ps128(v);
  const __m128 hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Four dot products sharing each load of w: the prefill inner loop. Accumulation order per
// output equals dot()'s, which keeps results batch-invariant.
inline void dot4(const float* x0, const float* x1, const float* x2, const float* x3, const float* w,
                 int64_t K, float* out4) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
         a3 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256 wv = _mm256_loadu_ps(w + k);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x0 + k), wv, a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x1 + k), wv, a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x2 + k), wv, a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x3 + k), wv, a3);
  }
  float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
  for (; k < K; ++k) {
    s0 += x0[k] * w[k];
    s1 += x1[k] * w[k];
    s2 += x2[k] * w[k];
    s3 += x3[k] * w[k];
  }
  out4[0] = s0;
  out4[1] = s1;
  out4[2] = s2;
  out4[3] = s3;
}

}  // namespace

float dot(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc);
  float s = hsum(acc);
  for (; k < n; ++k) s += a[k] * b[k];
  return s;
}

void matmul(const float* x, const float* w, float* y, int64_t T, int64_t K, int64_t N) {
  // Blocks of 64 weight rows per task keep one task's weights in L2 while every token reuses them.
  constexpr int64_t kRows = 64;
  const int64_t tasks = (N + kRows - 1) / kRows;
#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t n_end = std::min(N, (task + 1) * kRows);
    int64_t t = 0;
    for (; t + 4 <= T; t += 4) {
      const float* x0 = x + t * K;
      for (int64_t n = task * kRows; n < n_end; ++n) {
        float r[4];
        dot4(x0, x0 + K, x0 + 2 * K, x0 + 3 * K, w + n * K, K, r);
        for (int i = 0; i < 4; ++i) y[(t + i) * N + n] = r[i];
      }
    }
    for (; t < T; ++t)
      for (int64_t n = task * kRows; n < n_end; ++n) y[t * N + n] = dot(x + t * K, w + n * K, K);
  }
}

void rmsnorm(const float* x, const float* w, float eps, float* out, int64_t T, int64_t H) {
#pragma omp parallel for schedule(static) if (T > 1)
  for (int64_t t = 0; t < T; ++t) {
    const float* r = x + t * H;
    const float inv = 1.0F / std::sqrt(dot(r, r, H) / static_cast<float>(H) + eps);
    float* o = out + t * H;
    for (int64_t i = 0; i < H; ++i) o[i] = w[i] * (r[i] * inv);
  }
}

void silu_mul(const float* gu, float* out, int64_t T, int64_t F) {
#pragma omp parallel for schedule(static) if (T > 1)
  for (int64_t t = 0; t < T; ++t) {
    const float* g = gu + t * 2 * F;
    for (int64_t f = 0; f < F; ++f) {
      const float a = g[f];
      out[t * F + f] = a / (1.0F + std::exp(-a)) * g[F + f];
    }
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
