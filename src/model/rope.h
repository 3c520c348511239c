// RoPE as its own module: the inverse frequencies of a config (default, linear, llama3 scaling or
// a GGUF's per-frequency factors) and a table of cos/sin per position, computed as HF does (fp32
// angle = pos * inv_freq).
#pragma once

#include <vector>

#include "nanoinfer/model_config.h"

namespace nanoinfer {

// inv_freq[i] = theta^(-2i/d), then scaled per config.rope_scaling. Size head_dim / 2.
std::vector<float> rope_inv_freq(const ModelConfig& config);

// cos/sin for positions [0, max_positions): row p holds head_dim/2 cos values then head_dim/2 sin.
struct RopeTable {
  int head_dim = 0;
  int max_positions = 0;
  std::vector<float> cos_sin;  // [max_positions, head_dim]

  static RopeTable build(const ModelConfig& config, int max_positions);
  const float* row(int pos) const { return cos_sin.data() + static_cast<size_t>(pos) * head_dim; }
};

}  // namespace nanoinfer
