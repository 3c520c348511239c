#include "model/rope.h"

#include <cmath>
#include <numbers>

#include "util/error.h"

namespace nanoinfer {

std::vector<float> rope_inv_freq(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    inv[i] = 1.0F / std::pow(c.rope_theta, exponent);
  }
  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeScaling::Type::Linear) {
    for (float& f : inv) f /= s.factor;
  } else if (s.type == RopeScaling::Type::FreqFactors) {
    for (int i = 0; i < half; ++i) inv[i] /= s.freq_factors[i];
  } else if (s.type == RopeScaling::Type::Llama3) {
    // Long wavelengths are slowed by `factor`, short ones kept, and the band between is blended.
    const float low_wavelen = static_cast<float>(s.original_max_position) / s.low_freq_factor;
    const float high_wavelen = static_cast<float>(s.original_max_position) / s.high_freq_factor;
    for (float& f : inv) {
      const float wavelen = 2.0F * std::numbers::pi_v<float> / f;
      if (wavelen > low_wavelen) {
        f = f / s.factor;
      } else if (wavelen >= high_wavelen) {
        const float smooth =
            (static_cast<float>(s.original_max_position) / wavelen - s.low_freq_factor) /
            (s.high_freq_factor - s.low_freq_factor);
        f = (1.0F - smooth) * f / s.factor + smooth * f;
      }
    }
  }
  return inv;
}

RopeTable RopeTable::build(const ModelConfig& config, int max_positions) {
  NI_ASSERT(config.head_dim % 2 == 0 && max_positions > 0);
  RopeTable t;
  t.head_dim = config.head_dim;
  t.max_positions = max_positions;
  const int half = config.head_dim / 2;
  const std::vector<float> inv = rope_inv_freq(config);
  t.cos_sin.resize(static_cast<size_t>(max_positions) * config.head_dim);
  for (int p = 0; p < max_positions; ++p) {
    float* r = t.cos_sin.data() + static_cast<size_t>(p) * config.head_dim;
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(p) * inv[i];
      r[i] = std::cos(angle);
      r[half + i] = std::sin(angle);
    }
  }
  return t;
}

}  // namespace nanoinfer
