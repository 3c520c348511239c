// Model hyper-parameters of a Llama-family model, as read from HF config.json or GGUF metadata.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nanoinfer {

struct RopeScaling {
  // FreqFactors: a GGUF's rope_freqs tensor, one divisor per frequency (how llama.cpp's converter
  // stores Llama-3.1 / 3.2's llama3 scaling).
  enum class Type : uint8_t { None, Linear, Llama3, FreqFactors };
  Type type = Type::None;
  float factor = 1.0F;
  float low_freq_factor = 1.0F;      // llama3 only
  float high_freq_factor = 4.0F;     // llama3 only
  int original_max_position = 8192;  // llama3 only
  std::vector<float> freq_factors;   // FreqFactors only: inv_freq[i] /= freq_factors[i]
};

struct ModelConfig {
  std::string architecture = "llama";
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  float rms_norm_eps = 1e-5F;
  float rope_theta = 10000.0F;
  RopeScaling rope_scaling;
  int max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;  // generation_config.json may list several

  // Throws Error when the numbers cannot describe a Llama model (zero sizes, heads that do not
  // divide, ...), naming the field and where it came from.
  void validate(const std::string& source) const;
  int64_t parameter_count() const;
};

}  // namespace nanoinfer
