// The CPU reference kernels against naive double-precision loops, over several shapes
// (odd sizes included, so the vector tails are exercised).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_kernels.h"
#include "random_blocks.h"
#include "tensor/quant_blocks.h"

namespace nanoinfer {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0F, 1.0F);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

class MatmulTest : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(MatmulTest, MatchesNaiveReference) {
  const auto [T, K, N] = GetParam();
  const std::vector<float> x = random_vec(static_cast<size_t>(T) * K, 1);
  const std::vector<float> w = random_vec(static_cast<size_t>(N) * K, 2);
  std::vector<float> y(static_cast<size_t>(T) * N, std::nanf(""));
  cpu::matmul(x.data(), w.data(), y.data(), T, K, N);
  for (int t = 0; t < T; ++t)
    for (int n = 0; n < N; ++n) {
      double ref = 0;
      for (int k = 0; k < K; ++k) ref += double{x[t * K + k]} * w[n * K + k];
      EXPECT_NEAR(y[t * N + n], ref, 1e-4 * std::sqrt(K)) << "t=" << t << " n=" << n;
    }
}

TEST_P(MatmulTest, EachRowIsIndependentOfTheBatch) {
  const auto [T, K, N] = GetParam();
  const std::vector<float> x = random_vec(static_cast<size_t>(T) * K, 3);
  const std::vector<float> w = random_vec(static_cast<size_t>(N) * K, 4);
  std::vector<float> all(static_cast<size_t>(T) * N), one(static_cast<size_t>(N));
  cpu::matmul(x.data(), w.data(), all.data(), T, K, N);
  for (int t = 0; t < T; ++t) {
    cpu::matmul(x.data() + t * K, w.data(), one.data(), 1, K, N);
    for (int n = 0; n < N; ++n) ASSERT_EQ(all[t * N + n], one[n]) << "bitwise, t=" << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatmulTest,
                         ::testing::Values(std::make_tuple(1, 8, 8), std::make_tuple(1, 576, 192),
                                           std::make_tuple(3, 13, 7), std::make_tuple(4, 64, 65),
                                           std::make_tuple(9, 100, 130),
                                           std::make_tuple(17, 72, 300)));

// dequantize_rows() (AVX2 for Q8_0, Q4_0 and Q4_1) widens every block format as the scalar
// reference does, bit for bit: 64 random blocks of each, scales from tiny to large.
TEST(CpuDequantizeRows, EqualsTheScalarReferenceForEveryFormat) {
  for (const DType type : test::block_formats()) {
    for (const int exp : {-24, -16, -6}) {
      const int64_t K = 4 * dtype_block(type), rows = 16;
      const std::vector<uint8_t> w =
          test::random_blocks(type, rows * K, static_cast<unsigned>(exp + 40), exp);
      std::vector<float> want(static_cast<size_t>(rows * K)), got(want.size(), std::nanf(""));
      dequantize_blocks(type, w.data(), rows * K / dtype_block(type), want.data());
      cpu::dequantize_rows(type, w.data(), rows, K, got.data());
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i]))
            << dtype_name(type) << " 2^" << exp << " value " << i;
    }
  }
}

// GGUF block weights multiplied as stored (tile by tile, or for 1-3 tokens of Q8_0 / Q4_0 / Q4_1
// block by block in registers) against matmul() over the same rows widened by dequantize_rows(),
// bit for bit (random scales, offsets and quants).
class QuantMatmulTest : public ::testing::TestWithParam<std::tuple<DType, int, int, int>> {};

TEST_P(QuantMatmulTest, EqualsMatmulOfTheWidenedRows) {
  const auto [type, T, K, N] = GetParam();
  const std::vector<uint8_t> w = test::random_blocks(type, int64_t{N} * K, 13);
  const std::vector<float> x = random_vec(static_cast<size_t>(T) * K, 14);
  std::vector<float> wide(static_cast<size_t>(N) * K), want(static_cast<size_t>(T) * N),
      got(static_cast<size_t>(T) * N, std::nanf(""));
  cpu::dequantize_rows(type, w.data(), N, K, wide.data());
  cpu::matmul(x.data(), wide.data(), want.data(), T, K, N);
  cpu::matmul_quantized(x.data(), type, w.data(), got.data(), T, K, N);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << "i=" << i;
}

INSTANTIATE_TEST_SUITE_P(
    Blocks, QuantMatmulTest,
    ::testing::Values(
        std::make_tuple(DType::Q8_0, 1, 64, 50), std::make_tuple(DType::Q4_0, 5, 96, 33),
        std::make_tuple(DType::Q4_1, 9, 576, 70), std::make_tuple(DType::Q4_1, 1, 1536, 17),
        // 1-3 tokens of Q8_0 / Q4_0 / Q4_1: multiplied in registers, four rows at a time
        std::make_tuple(DType::Q4_0, 2, 128, 37), std::make_tuple(DType::Q4_1, 3, 576, 23),
        std::make_tuple(DType::Q8_0, 3, 96, 7), std::make_tuple(DType::Q4_0, 1, 32, 3),
        std::make_tuple(DType::Q8_0, 2, 256, 1030), std::make_tuple(DType::Q5_0, 3, 96, 20),
        std::make_tuple(DType::Q5_1, 2, 64, 9), std::make_tuple(DType::IQ4_NL, 4, 160, 11),
        std::make_tuple(DType::Q2_K, 1, 256, 7), std::make_tuple(DType::Q3_K, 5, 512, 13),
        std::make_tuple(DType::Q4_K, 9, 256, 70), std::make_tuple(DType::Q5_K, 2, 768, 5),
        std::make_tuple(DType::Q6_K, 3, 512, 17), std::make_tuple(DType::IQ4_XS, 4, 256, 10)),
    [](const auto& info) {
      return std::string(dtype_name(std::get<0>(info.param))) + "_" + std::to_string(info.index);
    });

class RowOpTest : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(RowOpTest, RmsNormMatchesReference) {
  const auto [T, H] = GetParam();
  const std::vector<float> x = random_vec(static_cast<size_t>(T) * H, 5);
  const std::vector<float> w = random_vec(H, 6);
  std::vector<float> out(x.size());
  cpu::rmsnorm(x.data(), w.data(), 1e-5F, out.data(), T, H);
  for (int t = 0; t < T; ++t) {
    double ss = 0;
    for (int i = 0; i < H; ++i) ss += double{x[t * H + i]} * x[t * H + i];
    const double inv = 1.0 / std::sqrt(ss / H + 1e-5);
    for (int i = 0; i < H; ++i) EXPECT_NEAR(out[t * H + i], w[i] * x[t * H + i] * inv, 1e-5);
  }
}

TEST_P(RowOpTest, SiluMulMatchesReference) {
  const auto [T, F] = GetParam();
  const std::vector<float> gu = random_vec(static_cast<size_t>(T) * 2 * F, 7);
  std::vector<float> out(static_cast<size_t>(T) * F);
  cpu::silu_mul(gu.data(), out.data(), T, F);
  for (int t = 0; t < T; ++t)
    for (int f = 0; f < F; ++f) {
      const double g = gu[t * 2 * F + f], u = gu[t * 2 * F + F + f];
      EXPECT_NEAR(out[t * F + f], g / (1 + std::exp(-g)) * u, 1e-5);
    }
}

INSTANTIATE_TEST_SUITE_P(Shapes, RowOpTest,
                         ::testing::Values(std::make_tuple(1, 8), std::make_tuple(2, 576),
                                           std::make_tuple(5, 33), std::make_tuple(7, 1)));

// SiLU's e^-a across the whole float range: where it overflows (a < -88), where it is flushed to
// 0 (a > 87), and a NaN.
TEST(SiluMul, HoldsAtTheEndsOfTheRange) {
  const std::vector<float> a = {-200,   -100,  -89,   -88.5F, -87.5F,       -30,
                                -1e-3F, 0,     1e-3F, 5,      30,           86.9F,
                                87.1F,  88.5F, 100,   1e30F,  std::nanf("")};
  const int F = static_cast<int>(a.size());
  std::vector<float> gu(2 * F, 1.5F), out(F);
  std::copy(a.begin(), a.end(), gu.begin());
  cpu::silu_mul(gu.data(), out.data(), 1, F);
  for (int f = 0; f + 1 < F; ++f) {
    const double ref = a[f] / (1 + std::exp(-double{a[f]})) * 1.5;
    EXPECT_NEAR(out[f], ref, 1e-6 * std::abs(ref) + 1e-30) << "a=" << a[f];
  }
  EXPECT_TRUE(std::isnan(out[F - 1]));
}

// The attention's P V sum against the plain loop it replaced, bit for bit (the register-held
// sums for D = 64 and 128, the loop for other sizes), rows gathered through slots, zero weights
// skipped.
class WeightedRowsTest : public ::testing::TestWithParam<int> {};

TEST_P(WeightedRowsTest, EqualsThePlainLoopBitForBit) {
  const int D = GetParam(), n = 37, slot_stride = 3 * D;
  std::vector<float> p = random_vec(n, 9);
  for (float& x : p) x = std::exp(x) / 40;
  p[5] = p[20] = 0.0F;
  const std::vector<float> v = random_vec(static_cast<size_t>(n + 5) * slot_stride, 10);
  std::vector<int32_t> slots(n);
  for (int j = 0; j < n; ++j) slots[j] = (j * 7 + 3) % (n + 5);
  std::vector<float> out(D, std::nanf("")), ref(D, 0.0F);
  cpu::weighted_rows(p.data(), n, v.data() + D, slots.data(), slot_stride, D, out.data());
  for (int j = 0; j < n; ++j) {
    if (p[j] == 0.0F) continue;
    for (int d = 0; d < D; ++d) ref[d] += p[j] * v[slots[j] * slot_stride + D + d];
  }
  for (int d = 0; d < D; ++d) ASSERT_EQ(out[d], ref[d]) << "d=" << d;
}

INSTANTIATE_TEST_SUITE_P(HeadDims, WeightedRowsTest, ::testing::Values(64, 128, 40, 3));

// The attention's softmax (AVX2 exponentials) against double precision, over lengths with and
// without a tail of eight, scores whose differences from the maximum reach the range where e^x is
// flushed to 0, masked entries and a NaN.
class SoftmaxTest : public ::testing::TestWithParam<int> {};

TEST_P(SoftmaxTest, MatchesDoublePrecision) {
  const int n = GetParam();
  std::vector<float> s = random_vec(n, 11);
  for (int j = 0; j < n; ++j) s[j] = s[j] * 60 - 40 + (j % 3 == 0 ? 0.1F * j : 0.0F);
  if (n > 2) s[1] = -std::numeric_limits<float>::infinity();
  std::vector<float> out = s;
  cpu::softmax(out.data(), n);
  double mx = -INFINITY, sum = 0;
  for (const float x : s) mx = std::max(mx, double{x});
  for (const float x : s) sum += std::exp(x - mx);
  for (int j = 0; j < n; ++j) {
    const double ref = std::exp(s[j] - mx) / sum;
    EXPECT_NEAR(out[j], ref, 1e-6 * ref + 1e-37) << "j=" << j << " s=" << s[j];
  }
  if (n > 2) {
    EXPECT_EQ(out[1], 0.0F);
  }
  out = s;
  out[n - 1] = std::nanf("");
  cpu::softmax(out.data(), n);
  for (int j = 0; j < n; ++j) EXPECT_TRUE(std::isnan(out[j])) << "j=" << j;
}

INSTANTIATE_TEST_SUITE_P(Lengths, SoftmaxTest, ::testing::Values(1, 7, 8, 37, 1000));

// The attention's q . k over gathered rows against dot(), bit for bit (q in registers and four
// rows at a time for D = 64 and 128; 38 rows leave a tail of two).
class DotRowsTest : public ::testing::TestWithParam<int> {};

TEST_P(DotRowsTest, EqualsDotBitForBit) {
  const int D = GetParam(), n = 38, slot_stride = 2 * D;
  const std::vector<float> q = random_vec(D, 11);
  const std::vector<float> k = random_vec(static_cast<size_t>(n + 3) * slot_stride, 12);
  std::vector<int32_t> slots(n);
  for (int j = 0; j < n; ++j) slots[j] = (j * 5 + 1) % (n + 3);
  std::vector<float> out(n, std::nanf(""));
  cpu::dot_rows(q.data(), k.data() + D, slots.data(), slot_stride, n, D, out.data());
  for (int j = 0; j < n; ++j)
    ASSERT_EQ(out[j], cpu::dot(q.data(), k.data() + D + slots[j] * slot_stride, D)) << "j=" << j;
}

INSTANTIATE_TEST_SUITE_P(HeadDims, DotRowsTest, ::testing::Values(64, 128, 40, 3));

// Random weights: the same seed gives the same values, another seed others; mean 0 and the
// standard deviation asked, over an odd count (the last element has no pair).
TEST(CpuRandomNormal, IsSeededAndScaled) {
  const std::unique_ptr<Backend> be = make_cpu_backend();
  const int64_t n = 200001;
  Tensor a = be->alloc({n}, DType::F32), b = be->alloc({n}, DType::F32);
  Tensor c = be->alloc({n}, DType::F32);
  be->random_normal(a, 0.02F, 7);
  be->random_normal(b, 0.02F, 7);
  be->random_normal(c, 0.02F, 8);
  const std::vector<float> va(a.as<float>(), a.as<float>() + n);
  EXPECT_EQ(va, std::vector<float>(b.as<float>(), b.as<float>() + n));
  EXPECT_NE(va, std::vector<float>(c.as<float>(), c.as<float>() + n));
  EXPECT_NE(va.back(), 0.0F);
  double sum = 0, sq = 0;
  for (const float v : va) {
    ASSERT_TRUE(std::isfinite(v));
    sum += v;
    sq += double{v} * v;
  }
  const double mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 5 * 0.02 / std::sqrt(double(n)));
  EXPECT_NEAR(sd, 0.02, 0.02 * 0.01);
}

TEST(RopeRotate, RotatesEachPairByItsAngle) {
  const int D = 8;
  std::vector<float> x = random_vec(D, 8);
  const std::vector<float> orig = x;
  const std::vector<double> angles = {0.3, -1.2, 2.5, 0.0};
  std::vector<float> cs(D);
  for (int i = 0; i < D / 2; ++i) {
    cs[i] = static_cast<float>(std::cos(angles[i]));
    cs[D / 2 + i] = static_cast<float>(std::sin(angles[i]));
  }
  cpu::rope_rotate(x.data(), cs.data(), D);
  for (int i = 0; i < D / 2; ++i) {
    // (a, b) = (x_i, x_{i+D/2}) is rotated as the complex number a + ib by the angle.
    const double a = orig[i], b = orig[i + D / 2];
    EXPECT_NEAR(x[i], a * std::cos(angles[i]) - b * std::sin(angles[i]), 1e-6);
    EXPECT_NEAR(x[i + D / 2], b * std::cos(angles[i]) + a * std::sin(angles[i]), 1e-6);
  }
}

}  // namespace
}  // namespace nanoinfer
