// Shared by the GPU tests: the CUDA backend (or a clean skip where there is no GPU), random host
// tensors already rounded to the compute dtype (so the CPU reference sees the exact inputs),
// and the relative error ||out - ref|| / ||ref||.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "backend/backend.h"

namespace nanoinfer::test {

inline std::unique_ptr<Backend> cuda_or_null(DType dt) {
  return make_cuda_backend(dt);
}

#define NI_REQUIRE_CUDA(var, dtype)                  \
  auto var = ::nanoinfer::test::cuda_or_null(dtype); \
  if (!(var)) GTEST_SKIP() << "no CUDA backend here (no GPU or a CPU-only build)"

// fp32 relative-error bound per compute dtype (bf16: one rounding of every stored value).
inline double rel_bound(DType dt) {
  return dt == DType::F32 ? 1e-5 : 1e-2;
}

inline float round_as(DType dt, float v) {
  return dt == DType::BF16 ? bf16_to_f32(f32_to_bf16(v)) : v;
}

// normal(0, std) values, each representable in dt.
inline Tensor random_host(std::vector<int64_t> shape, DType dt, std::mt19937& rng,
                          float std = 1.0F) {
  Tensor t = Tensor::zeros(DType::F32, std::move(shape));
  std::normal_distribution<float> nd(0.0F, std);
  for (int64_t i = 0; i < t.numel(); ++i) t.as<float>()[i] = round_as(dt, nd(rng));
  return t;
}

inline double rel_error(const std::vector<float>& out, const float* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    num += (double{out[i]} - ref[i]) * (double{out[i]} - ref[i]);
    den += double{ref[i]} * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

inline double rel_error(Backend& be, const Tensor& dev, const Tensor& ref_host) {
  std::vector<float> out;
  be.to_host_f32(dev, out);
  EXPECT_EQ(out.size(), static_cast<size_t>(ref_host.numel()));
  return rel_error(out, ref_host.as<const float>(), out.size());
}

}  // namespace nanoinfer::test
