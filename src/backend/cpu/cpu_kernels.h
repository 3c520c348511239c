// The CPU reference kernels (fp32), shared by the CPU backend and by tests that check the CUDA
// kernels against them. Each output element is computed by the same instruction sequence whatever
// the batch size, so a sequence's results do not depend on what else is in the batch.
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace nanoinfer::cpu {

// Below this much work a thread team costs more than it saves (tiny models, tests), and on a busy
// machine far more: a team waits for every thread to be scheduled, each op a time slice.
inline constexpr int64_t kParallelWork = 1 << 18;      // multiply-adds (products, attention)
inline constexpr int64_t kParallelElements = 1 << 16;  // elements of a row-wise op

// y[t, n] = sum_k x[t, k] * w[n, k]      x: [T, K], w: [N, K], y: [T, N]
void matmul(const float* x, const float* w, float* y, int64_t T, int64_t K, int64_t N);
// out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w      x, out: [T, H]
void rmsnorm(const float* x, const float* w, float eps, float* out, int64_t T, int64_t H);
// out[t, f] = silu(gu[t, f]) * gu[t, F + f]        gu: [T, 2F]; a / (1 + e^-a) * u, with e^x
// in AVX2 (within 1 ulp of e^x).
void silu_mul(const float* gu, float* out, int64_t T, int64_t F);
// s[0, n) = softmax(s) in place: e^(s[j] - max) / sum, the exponentials in AVX2 (within 1 ulp of
// e^x) and summed eight lanes at a time; an entry of -inf (masked) gets 0.
void softmax(float* s, int n);
// Rotate-half RoPE of one head vector in place; cs = [cos(half) | sin(half)].
void rope_rotate(float* x, const float* cs, int head_dim);
float dot(const float* a, const float* b, int64_t n);
// out[j] = dot(q, k + slots[j] * slot_stride, D) for j < n, bit-equal to dot(); for D = 64 or 128
// q stays in registers and four rows are in flight at once.
void dot_rows(const float* q, const float* k, const int32_t* slots, int64_t slot_stride, int n,
              int D, float* out);
// out[0, D) = sum over j < n with p[j] != 0, in order, of p[j] * V[j]: V[j] = v +
// slots[j] * slot_stride. Each step rounds as `out[d] += p[j] * V[j][d]` would (no fused
// multiply-add); for D = 64 or 128 out stays in registers across the rows.
void weighted_rows(const float* p, int n, const float* v, const int32_t* slots, int64_t slot_stride,
                   int D, float* out);
// Causal attention of R <= 4 consecutive queries of one head (query r at q + r * q_stride sees
// keys j < n0 + r) over keys and values gathered through slots (D a multiple of 16). Each query's
// output is bit for bit what dot_rows, a scale, softmax and weighted_rows give it alone, but each
// key and value row is loaded once for the R queries. scores: R * (n0 + R - 1) floats of scratch.
void attend_queries(const float* q, int64_t q_stride, int R, int n0, float scale, const float* k,
                    const float* v, const int32_t* slots, int64_t slot_stride, int D, float* scores,
                    float* out, int64_t out_stride);

// Rows of a GGUF block-quantised matrix widened to f32, bit-identical to the loader's
// dequantize(): AVX2 for Q8_0, Q4_0 and Q4_1 (d * q, (q - 8) * d and d * q + m in f32, no fused
// multiply-add), tensor/quant_blocks.h's scalar code for the other formats.
void dequantize_rows(DType type, const uint8_t* w, int64_t rows, int64_t K, float* out);
// y = x w^T with w block-quantised [N, K]: each tile of rows is widened into a small buffer and
// multiplied exactly as matmul() would, so results equal those of the widened matrix. For 1-3
// tokens of Q8_0 / Q4_0 / Q4_1 each block is widened in registers instead, with the same results.
void matmul_quantized(const float* x, DType type, const uint8_t* w, float* y, int64_t T, int64_t K,
                      int64_t N);

}  // namespace nanoinfer::cpu
