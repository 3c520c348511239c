// The CPU reference kernels (fp32), shared by the CPU backend and by tests that check the CUDA
// kernels against them. Each output element is computed by the same instruction sequence whatever
// the batch size, so a sequence's results do not depend on what else is in the batch.
#pragma once

#include <cstdint>

namespace nanoinfer::cpu {

// y[t, n] = sum_k x[t, k] * w[n, k]      x: [T, K], w: [N, K], y: [T, N]
void matmul(const float* x, const float* w, float* y, int64_t T, int64_t K, int64_t N);
// out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w      x, out: [T, H]
void rmsnorm(const float* x, const float* w, float eps, float* out, int64_t T, int64_t H);
// out[t, f] = silu(gu[t, f]) * gu[t, F + f]        gu: [T, 2F]
void silu_mul(const float* gu, float* out, int64_t T, int64_t F);
// Rotate-half RoPE of one head vector in place; cs = [cos(half) | sin(half)].
void rope_rotate(float* x, const float* cs, int head_dim);
float dot(const float* a, const float* b, int64_t n);

}  // namespace nanoinfer::cpu
