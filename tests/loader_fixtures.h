// Test fixtures for the loaders: a temporary directory, a byte-level GGUF writer, a safetensors
// writer and a tiny Llama config, so tests build exactly the (good or broken) files they need.
#pragma once

#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "loader/gguf.h"
#include "loader/model_loader.h"
#include "nanoinfer/model_config.h"
#include "random_blocks.h"
#include "util/error.h"

namespace nanoinfer::test {

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("nanoinfer-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// The message of the Error f throws, or "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <class T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

inline std::string f32_bytes(const std::vector<float>& v) {
  return {reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)};
}

// Writes GGUF files byte by byte, including malformed ones.
class GgufWriter {
 public:
  // GGUF metadata value type numbers.
  static constexpr uint32_t kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6,
                            kBool = 7, kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12;

  static void put_string(std::string& out, const std::string& s) {
    put<uint64_t>(out, s.size());
    out += s;
  }

  // key + type + already-encoded value bytes
  void kv_raw(const std::string& key, uint32_t type, const std::string& value) {
    put_string(kv_, key);
    put<uint32_t>(kv_, type);
    kv_ += value;
    ++n_kv_;
  }
  void kv_u32(const std::string& key, uint32_t v) {
    std::string b;
    put(b, v);
    kv_raw(key, kU32, b);
  }
  void kv_f32(const std::string& key, float v) {
    std::string b;
    put(b, v);
    kv_raw(key, kF32, b);
  }
  void kv_string(const std::string& key, const std::string& v) {
    std::string b;
    put_string(b, v);
    kv_raw(key, kString, b);
  }
  void kv_strings(const std::string& key, const std::vector<std::string>& v) {
    std::string b;
    put<uint32_t>(b, kString);
    put<uint64_t>(b, v.size());
    for (const auto& s : v) put_string(b, s);
    kv_raw(key, kArray, b);
  }

  void alignment(uint32_t a) {
    kv_u32("general.alignment", a);
    align_ = a;
  }

  // shape is row-major (outermost first); the file stores it innermost first.
  void tensor(const std::string& name, uint32_t type, const std::vector<int64_t>& shape,
              const std::string& data, std::optional<uint64_t> offset = std::nullopt) {
    data_.resize((data_.size() + align_ - 1) / align_ * align_, '\0');
    put_string(infos_, name);
    put<uint32_t>(infos_, static_cast<uint32_t>(shape.size()));
    for (auto it = shape.rbegin(); it != shape.rend(); ++it) put<uint64_t>(infos_, *it);
    put<uint32_t>(infos_, type);
    put<uint64_t>(infos_, offset.value_or(data_.size()));
    data_ += data;
    ++n_tensors_;
  }

  std::string bytes(uint32_t version = 3) const {
    std::string out = "GGUF";
    put<uint32_t>(out, version);
    put<uint64_t>(out, n_tensors_);
    put<uint64_t>(out, n_kv_);
    out += kv_;
    out += infos_;
    out.resize((out.size() + align_ - 1) / align_ * align_, '\0');
    return out + data_;
  }

 private:
  size_t align_ = 32;  // GGUF's default alignment
  std::string kv_;
  std::string infos_;
  std::string data_;
  uint64_t n_kv_ = 0;
  uint64_t n_tensors_ = 0;
};

struct StTensor {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", ...
  std::vector<int64_t> shape;
  std::string data;
};

// A safetensors file; `edit` may change the JSON header before it is written (broken files).
inline std::string safetensors_bytes(const std::vector<StTensor>& tensors,
                                     const std::function<void(nlohmann::json&)>& edit = {}) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.data.size()}}};
    data += t.data;
  }
  if (edit) edit(header);
  std::string h = header.dump();
  h.resize((h.size() + 7) / 8 * 8, ' ');  // keep tensor data 8-byte aligned, as writers do
  std::string out;
  put<uint64_t>(out, h.size());
  return out + h + data;
}

// The smallest Llama shape that still exercises GQA and the Q/K permutation.
inline ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 16;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.rms_norm_eps = 1e-5F;
  c.rope_theta = 10000.0F;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = false;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return c;
}

// A HF config.json of a config (tiny_config() by default).
inline nlohmann::json tiny_config_json(const ModelConfig& c = tiny_config()) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", c.vocab_size},
          {"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size},
          {"num_hidden_layers", c.num_layers},
          {"num_attention_heads", c.num_heads},
          {"num_key_value_heads", c.num_kv_heads},
          {"rms_norm_eps", c.rms_norm_eps},
          {"rope_theta", c.rope_theta},
          {"max_position_embeddings", c.max_position_embeddings},
          {"tie_word_embeddings", c.tie_word_embeddings},
          {"bos_token_id", c.bos_token_id},
          {"eos_token_id", c.eos_token_ids.front()}};
}

// The llama.* metadata of a config (tiny_config() by default).
inline void add_tiny_gguf_metadata(GgufWriter& w, const ModelConfig& c = tiny_config()) {
  w.kv_string("general.architecture", "llama");
  w.kv_u32("llama.context_length", c.max_position_embeddings);
  w.kv_u32("llama.embedding_length", c.hidden_size);
  w.kv_u32("llama.block_count", c.num_layers);
  w.kv_u32("llama.feed_forward_length", c.intermediate_size);
  w.kv_u32("llama.attention.head_count", c.num_heads);
  w.kv_u32("llama.attention.head_count_kv", c.num_kv_heads);
  w.kv_f32("llama.attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  w.kv_f32("llama.rope.freq_base", c.rope_theta);
  w.kv_u32("llama.rope.dimension_count", c.head_dim);
  w.kv_u32("llama.vocab_size", c.vocab_size);
  w.kv_u32("tokenizer.ggml.bos_token_id", c.bos_token_id);
  w.kv_u32("tokenizer.ggml.eos_token_id", c.eos_token_ids.front());
}

// Distinct, exactly representable values for every weight of a config, in HF layout.
// A tied config gets the same values minus lm_head.
inline std::map<std::string, std::vector<float>> tiny_weights(const ModelConfig& c) {
  ModelConfig untied = c;
  untied.tie_word_embeddings = false;
  std::map<std::string, std::vector<float>> w;
  int t = 0;
  for (const auto& [name, shape] : expected_weight_shapes(untied)) {
    int64_t n = 1;
    for (const int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(t * 10000 + i) * 0.5F;
    w[name] = std::move(v);
    ++t;
  }
  if (c.tie_word_embeddings) w.erase("lm_head.weight");
  return w;
}

// llama.cpp's converter order for Q/K rows: file row h*D + 2i + s holds HF row h*D + s*D/2 + i.
inline std::vector<float> permute_like_llama_cpp(const std::vector<float>& hf, int64_t rows,
                                                 int64_t cols, int64_t n_heads) {
  const int64_t d = rows / n_heads;
  std::vector<float> out(hf.size());
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t i = 0; i < d / 2; ++i) {
      for (int64_t s = 0; s < 2; ++s) {
        const int64_t from = h * d + s * (d / 2) + i;
        const int64_t to = h * d + 2 * i + s;
        std::copy_n(hf.begin() + from * cols, cols, out.begin() + to * cols);
      }
    }
  }
  return out;
}

// GGUF tensor names of a config (the inverse of hf_name_from_gguf over Llama weights).
inline std::vector<std::string> gguf_names(const ModelConfig& c) {
  std::vector<std::string> names = {"token_embd.weight", "output_norm.weight"};
  if (!c.tie_word_embeddings) names.emplace_back("output.weight");
  for (int l = 0; l < c.num_layers; ++l) {
    for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                          "ffn_down", "attn_norm", "ffn_norm"}) {
      names.push_back("blk." + std::to_string(l) + "." + n + ".weight");
    }
  }
  return names;
}

// A complete F32 GGUF of tiny_config() holding tiny_weights(), Q/K permuted as llama.cpp does.
// `skip` leaves one tensor out; `extra` adds tensors at the end.
inline GgufWriter tiny_gguf(const std::string& skip = "") {
  const ModelConfig c = tiny_config();
  const auto weights = tiny_weights(c);
  const auto shapes = expected_weight_shapes(c);
  GgufWriter w;
  add_tiny_gguf_metadata(w);
  for (const auto& g : gguf_names(c)) {
    if (g == skip) continue;
    const std::string hf = hf_name_from_gguf(g);
    const auto& shape = shapes.at(hf);
    std::vector<float> v = weights.at(hf);
    if (hf.ends_with("q_proj.weight"))
      v = permute_like_llama_cpp(v, shape[0], shape[1], c.num_heads);
    if (hf.ends_with("k_proj.weight")) {
      v = permute_like_llama_cpp(v, shape[0], shape[1], c.num_kv_heads);
    }
    w.tensor(g, 0, shape, f32_bytes(v));
  }
  return w;
}

// tiny_config() 256 wide, so that every matrix's rows hold whole blocks of the 256-value formats.
inline ModelConfig wide_config() {
  ModelConfig c = tiny_config();
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.head_dim = 64;
  return c;
}

// A GGUF of config c whose matrices are random blocks (seeds 1, 2, ... in gguf_names' order) of
// the format format_of(HF name) gives, a ggml block type, f16 scale fields from 2^exp up
// (random_blocks); the norms hold 0.5.
inline std::string random_blocks_gguf(const ModelConfig& c,
                                      const std::function<uint32_t(const std::string&)>& format_of,
                                      int exp = -16) {
  const auto shapes = expected_weight_shapes(c);
  GgufWriter w;
  add_tiny_gguf_metadata(w, c);
  unsigned seed = 1;
  for (const auto& g : gguf_names(c)) {
    const auto& shape = shapes.at(hf_name_from_gguf(g));
    if (shape.size() == 2) {
      const uint32_t type = format_of(hf_name_from_gguf(g));
      DType dt = DType::F32;
      for (const DType t : block_formats()) {
        std::string name = dtype_name(t);
        for (char& ch : name) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        if (name == ggml_type_name(type)) dt = t;
      }
      NI_ASSERT(dt != DType::F32);
      const auto b = random_blocks(dt, shape[0] * shape[1], seed++, exp);
      w.tensor(g, type, shape, std::string(b.begin(), b.end()));
    } else {
      w.tensor(g, 0, shape, f32_bytes(std::vector<float>(shape[0], 0.5F)));
    }
  }
  return w.bytes();
}

// tiny_weights() as one safetensors file.
inline std::vector<StTensor> tiny_st_tensors() {
  const ModelConfig c = tiny_config();
  const auto shapes = expected_weight_shapes(c);
  std::vector<StTensor> out;
  for (const auto& [name, v] : tiny_weights(c))
    out.push_back({name, "F32", shapes.at(name), f32_bytes(v)});
  return out;
}

}  // namespace nanoinfer::test
