// HF config.json (+ generation_config.json) -> ModelConfig. Handles both the transformers 4.x
// spelling (rope_theta, rope_scaling) and the 5.x one (rope_parameters).
#include <algorithm>
#include <climits>
#include <nlohmann/json.hpp>

#include "loader/model_loader.h"
#include "util/error.h"
#include "util/json_file.h"

namespace nanoinfer {
namespace {

using nlohmann::json;

bool present(const json& j, const char* key) {
  return j.contains(key) && !j[key].is_null();
}

// An integer that fits an int (nlohmann's get<int> would wrap 4294967304 to 8).
int to_int(const json& v, const std::string& path, const char* key) {
  const bool fits = v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t{INT_MAX}
                                           : v.is_number_integer() && v.get<int64_t>() >= INT_MIN &&
                                                 v.get<int64_t>() <= INT_MAX;
  if (!fits) fail(path + ": '" + key + "' is not a 32-bit integer: " + v.dump());
  return static_cast<int>(v.get<int64_t>());
}

int get_int(const json& j, const std::string& path, const char* key) {
  if (!present(j, key)) fail(path + ": missing '" + key + "'");
  return to_int(j[key], path, key);
}

std::string string_or(const json& j, const char* key, const std::string& fallback) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : fallback;
}

int get_int_or(const json& j, const std::string& path, const char* key, int fallback) {
  return present(j, key) ? get_int(j, path, key) : fallback;
}

double get_number_or(const json& j, const std::string& path, const char* key, double fallback) {
  if (!present(j, key)) return fallback;
  if (!j[key].is_number()) fail(path + ": '" + key + "' is not a number");
  return j[key].get<double>();
}

// Token ids appear as a single int, a list of ints, or null.
std::vector<int> get_ids(const json& j, const std::string& path, const char* key) {
  std::vector<int> ids;
  if (!present(j, key)) return ids;
  const json& v = j[key];
  if (v.is_number_integer()) {
    ids.push_back(to_int(v, path, key));
  } else if (v.is_array()) {
    for (const json& x : v) ids.push_back(to_int(x, path, key));
  } else {
    fail(path + ": '" + key + "' is neither an integer nor a list of integers");
  }
  return ids;
}

void check_architecture(const json& j, const std::string& path) {
  bool llama = string_or(j, "model_type", "") == "llama";
  std::string named;
  if (present(j, "architectures") && j["architectures"].is_array()) {
    for (const json& a : j["architectures"]) {
      if (!a.is_string()) continue;
      named += (named.empty() ? "" : ", ") + a.get<std::string>();
      llama = llama || a.get<std::string>() == "LlamaForCausalLM";
    }
  }
  if (!llama) {
    fail(path + ": unsupported architecture '" +
         (named.empty() ? string_or(j, "model_type", "unknown") : named) +
         "' (nanoinfer runs LlamaForCausalLM)");
  }
  // Llama's variants that its config allows and this model does not compute: refused rather than
  // run as plain Llama (random weights would not notice; a checkpoint's biases are refused as
  // unexpected tensors).
  const std::string act = string_or(j, "hidden_act", "silu");
  if (act != "silu" && act != "swish")
    fail(path + ": hidden_act '" + act + "' is not served (the MLP is SiLU-gated)");
  for (const char* bias : {"attention_bias", "mlp_bias"})
    if (present(j, bias) && j[bias] != false)
      fail(path + ": " + bias + " " + j[bias].dump() + " is not served (projections have no bias)");
}

// rope_parameters (transformers 5.x) carries rope_theta and the scaling; older configs use
// rope_theta + rope_scaling.
void parse_rope(const json& j, const std::string& path, ModelConfig& c) {
  const json* params = nullptr;
  if (present(j, "rope_parameters") && j["rope_parameters"].is_object()) {
    params = &j["rope_parameters"];
  } else if (present(j, "rope_scaling")) {
    if (!j["rope_scaling"].is_object()) fail(path + ": 'rope_scaling' is not an object");
    params = &j["rope_scaling"];
  }
  c.rope_theta = static_cast<float>(get_number_or(j, path, "rope_theta", c.rope_theta));
  if (params == nullptr) return;
  const json& p = *params;
  c.rope_theta = static_cast<float>(get_number_or(p, path, "rope_theta", c.rope_theta));
  const char* type_key = present(p, "rope_type") ? "rope_type" : "type";
  std::string type = "default";
  if (present(p, type_key)) {
    if (!p[type_key].is_string()) fail(path + ": rope '" + type_key + "' is not a string");
    type = p[type_key].get<std::string>();
  }
  RopeScaling& s = c.rope_scaling;
  if (type == "default") {
    s.type = RopeScaling::Type::None;
  } else if (type == "linear") {
    s.type = RopeScaling::Type::Linear;
    s.factor = static_cast<float>(get_number_or(p, path, "factor", 1.0));
  } else if (type == "llama3") {
    s.type = RopeScaling::Type::Llama3;
    s.factor = static_cast<float>(get_number_or(p, path, "factor", s.factor));
    s.low_freq_factor =
        static_cast<float>(get_number_or(p, path, "low_freq_factor", s.low_freq_factor));
    s.high_freq_factor =
        static_cast<float>(get_number_or(p, path, "high_freq_factor", s.high_freq_factor));
    s.original_max_position =
        get_int_or(p, path, "original_max_position_embeddings", s.original_max_position);
  } else {
    fail(path + ": unsupported rope_scaling type '" + type +
         "' (supported: default, linear, llama3)");
  }
}

}  // namespace

ModelConfig parse_hf_config(const std::string& config_json_path,
                            const std::string& generation_config_path) {
  const std::string& path = config_json_path;
  const json j = read_json_file(path);
  if (!j.is_object()) fail(path + ": not a JSON object");
  check_architecture(j, path);

  ModelConfig c;
  c.hidden_size = get_int(j, path, "hidden_size");
  c.intermediate_size = get_int(j, path, "intermediate_size");
  c.num_layers = get_int(j, path, "num_hidden_layers");
  c.num_heads = get_int(j, path, "num_attention_heads");
  c.num_kv_heads = get_int_or(j, path, "num_key_value_heads", c.num_heads);
  c.vocab_size = get_int(j, path, "vocab_size");
  if (present(j, "head_dim")) {
    c.head_dim = get_int(j, path, "head_dim");
  } else if (c.num_heads > 0 && c.hidden_size % c.num_heads == 0) {
    c.head_dim = c.hidden_size / c.num_heads;
  } else {
    fail(path + ": hidden_size " + std::to_string(c.hidden_size) +
         " is not a multiple of num_attention_heads and no head_dim is given");
  }
  c.rms_norm_eps = static_cast<float>(get_number_or(j, path, "rms_norm_eps", 1e-6));
  parse_rope(j, path, c);
  c.max_position_embeddings = get_int_or(j, path, "max_position_embeddings", 2048);
  if (present(j, "tie_word_embeddings")) {
    if (!j["tie_word_embeddings"].is_boolean())
      fail(path + ": 'tie_word_embeddings' is not a bool");
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  const std::vector<int> bos = get_ids(j, path, "bos_token_id");
  c.bos_token_id = bos.empty() ? -1 : bos.front();
  c.eos_token_ids = get_ids(j, path, "eos_token_id");

  std::string source = path;
  if (!generation_config_path.empty()) {
    const json g = read_json_file(generation_config_path);
    // HF generate() stops on generation_config's ids; keep config.json's too, after them.
    std::vector<int> eos = get_ids(g, generation_config_path, "eos_token_id");
    for (const int id : c.eos_token_ids) {
      if (std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
    }
    c.eos_token_ids = std::move(eos);
    source += " / " + generation_config_path;
  }
  c.validate(source);
  return c;
}

}  // namespace nanoinfer
