// ModelConfig checks and arithmetic: refuse numbers that cannot describe a Llama model before any
// buffer is sized from them.
#include "nanoinfer/model_config.h"

#include <cmath>
#include <string>

#include "util/error.h"

namespace nanoinfer {
namespace {

void require_positive(const std::string& source, const char* field, double value) {
  if (!(value > 0)) {
    fail(source + ": " + field + " must be positive, got " + std::to_string(value));
  }
}

}  // namespace

void ModelConfig::validate(const std::string& source) const {
  require_positive(source, "vocab_size", vocab_size);
  require_positive(source, "hidden_size", hidden_size);
  require_positive(source, "intermediate_size", intermediate_size);
  require_positive(source, "num_hidden_layers", num_layers);
  require_positive(source, "num_attention_heads", num_heads);
  require_positive(source, "num_key_value_heads", num_kv_heads);
  require_positive(source, "head_dim", head_dim);
  require_positive(source, "rms_norm_eps", rms_norm_eps);
  require_positive(source, "rope_theta", rope_theta);
  require_positive(source, "max_position_embeddings", max_position_embeddings);
  if (num_heads % num_kv_heads != 0) {
    fail(source + ": num_attention_heads (" + std::to_string(num_heads) +
         ") is not a multiple of num_key_value_heads (" + std::to_string(num_kv_heads) + ")");
  }
  if (head_dim % 2 != 0) {
    fail(source + ": head_dim " + std::to_string(head_dim) + " is odd; RoPE rotates pairs");
  }
  if (rope_scaling.type != RopeScaling::Type::None &&
      rope_scaling.type != RopeScaling::Type::FreqFactors) {
    require_positive(source, "rope_scaling.factor", rope_scaling.factor);
  }
  if (rope_scaling.type == RopeScaling::Type::FreqFactors) {
    const auto& f = rope_scaling.freq_factors;
    if (f.size() != static_cast<size_t>(head_dim / 2)) {
      fail(source + ": rope_freqs.weight has " + std::to_string(f.size()) +
           " values, expected head_dim / 2 = " + std::to_string(head_dim / 2));
    }
    for (size_t i = 0; i < f.size(); ++i) {
      if (!(f[i] > 0.0F) || !std::isfinite(f[i])) {
        fail(source + ": rope_freqs.weight[" + std::to_string(i) + "] is " + std::to_string(f[i]) +
             "; RoPE frequency factors must be positive and finite");
      }
    }
  }
  if (rope_scaling.type == RopeScaling::Type::Llama3) {
    require_positive(source, "rope_scaling.original_max_position_embeddings",
                     rope_scaling.original_max_position);
    if (!(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor)) {
      fail(source + ": rope_scaling.high_freq_factor must exceed low_freq_factor");
    }
  }
  if (bos_token_id >= vocab_size) {
    fail(source + ": bos_token_id " + std::to_string(bos_token_id) +
         " is outside the vocabulary (" + std::to_string(vocab_size) + ")");
  }
  for (const int id : eos_token_ids) {
    if (id < 0 || id >= vocab_size) {
      fail(source + ": eos_token_id " + std::to_string(id) + " is outside the vocabulary (" +
           std::to_string(vocab_size) + ")");
    }
  }
}

int64_t ModelConfig::parameter_count() const {
  const int64_t h = hidden_size;
  const int64_t q = static_cast<int64_t>(num_heads) * head_dim;
  const int64_t kv = static_cast<int64_t>(num_kv_heads) * head_dim;
  const int64_t attention = h * q + 2 * h * kv + q * h;
  const int64_t mlp = 3 * h * intermediate_size;
  const int64_t layer = attention + mlp + 2 * h;  // two RMSNorm weights
  const int64_t embedding = static_cast<int64_t>(vocab_size) * h;
  return embedding + num_layers * layer + h + (tie_word_embeddings ? 0 : embedding);
}

}  // namespace nanoinfer
