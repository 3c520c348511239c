// RoPE tables against closed-form values for default, linear and llama3 scaling.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "model/rope.h"

namespace nanoinfer {
namespace {

ModelConfig config(RopeScaling::Type type, float theta, int head_dim) {
  ModelConfig c;
  c.head_dim = head_dim;
  c.rope_theta = theta;
  c.rope_scaling.type = type;
  c.rope_scaling.factor = 8.0F;
  c.rope_scaling.low_freq_factor = 1.0F;
  c.rope_scaling.high_freq_factor = 4.0F;
  c.rope_scaling.original_max_position = 8192;
  return c;
}

// The llama3 rule written independently in double precision.
double llama3_freq(double f, const RopeScaling& s) {
  const double wavelen = 2 * std::numbers::pi / f;
  const double low = s.original_max_position / s.low_freq_factor;
  const double high = s.original_max_position / s.high_freq_factor;
  if (wavelen < high) return f;
  if (wavelen > low) return f / s.factor;
  const double smooth = (s.original_max_position / wavelen - s.low_freq_factor) /
                        (s.high_freq_factor - s.low_freq_factor);
  return (1 - smooth) * f / s.factor + smooth * f;
}

struct RopeCase {
  RopeScaling::Type type;
  float theta;
  int head_dim;
};

class RopeTableTest : public ::testing::TestWithParam<RopeCase> {};

TEST_P(RopeTableTest, MatchesClosedForm) {
  const RopeCase rc = GetParam();
  const ModelConfig c = config(rc.type, rc.theta, rc.head_dim);
  const RopeTable t = RopeTable::build(c, 600);
  const int half = rc.head_dim / 2;
  for (int pos : {0, 1, 7, 100, 599}) {
    for (int i = 0; i < half; ++i) {
      double f = std::pow(double{rc.theta}, -2.0 * i / rc.head_dim);
      if (rc.type == RopeScaling::Type::Linear) f /= c.rope_scaling.factor;
      if (rc.type == RopeScaling::Type::Llama3) f = llama3_freq(f, c.rope_scaling);
      const double angle = pos * f;
      // fp32 angles: the error grows with the angle (~ pos * ulp).
      const double tol = 2e-6 + 2e-7 * std::abs(angle);
      EXPECT_NEAR(t.row(pos)[i], std::cos(angle), tol) << "pos " << pos << " i " << i;
      EXPECT_NEAR(t.row(pos)[half + i], std::sin(angle), tol) << "pos " << pos << " i " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Scalings, RopeTableTest,
                         ::testing::Values(RopeCase{RopeScaling::Type::None, 10000.0F, 64},
                                           RopeCase{RopeScaling::Type::None, 100000.0F, 8},
                                           RopeCase{RopeScaling::Type::Linear, 10000.0F, 32},
                                           RopeCase{RopeScaling::Type::Llama3, 500000.0F, 128},
                                           RopeCase{RopeScaling::Type::Llama3, 500000.0F, 64}));

TEST(RopeLlama3, KeepsHighFrequenciesAndSlowsLowOnes) {
  const ModelConfig c = config(RopeScaling::Type::Llama3, 500000.0F, 128);
  ModelConfig plain = c;
  plain.rope_scaling.type = RopeScaling::Type::None;
  const std::vector<float> scaled = rope_inv_freq(c), base = rope_inv_freq(plain);
  EXPECT_EQ(scaled.front(), base.front());  // wavelength 2*pi: untouched
  EXPECT_FLOAT_EQ(scaled.back(), base.back() / c.rope_scaling.factor);  // longest: divided
}

}  // namespace
}  // namespace nanoinfer
