// load_model: picks the format from the path, reads the config, checks that the tensors are
// exactly the ones the config needs (names and shapes) before touching their data, then hands
// back weights under HF names in HF layout.
#include "loader/model_loader.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <filesystem>
#include <iterator>
#include <set>
#include <utility>
#include <vector>

#include "loader/safetensors.h"
#include "util/error.h"
#include "util/str_cat.h"

namespace nanoinfer {
namespace {

constexpr const char* kRopeFreqs = "rope_freqs.weight";  // GGUF: per-frequency RoPE divisors

namespace fs = std::filesystem;

// Present in some old HF checkpoints; recomputed from the config, never read.
constexpr std::string_view kRotaryInvFreq = ".self_attn.rotary_emb.inv_freq";

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

struct FoundTensor {
  std::vector<int64_t> shape;
  std::string file;       // where it lives, for messages
  std::string disk_name;  // its name in that file, when it differs from the HF name
};

// Every expected tensor present with its shape, nothing else.
void check_tensors(const std::map<std::string, FoundTensor>& found, const ModelConfig& config,
                   const std::string& source) {
  // A layer count far beyond the tensors the file holds is refused before the names are listed
  // (a corrupt count of 327,681 layers took 2 s and 770 MB to end in "missing tensor"); up to a
  // layer short, the first missing tensor is named below.
  const int64_t needed = int64_t{config.num_layers} * 9 + (config.tie_word_embeddings ? 2 : 3);
  if (needed > static_cast<int64_t>(found.size()) + 9)
    fail(str_cat(source, ": the config's ", config.num_layers, " layers need ", needed,
                 " tensors; the checkpoint holds ", found.size()));
  const auto expected = expected_weight_shapes(config);
  for (const auto& [name, shape] : expected) {
    const auto it = found.find(name);
    if (it == found.end()) fail(str_cat(source, ": missing tensor '", name, "'"));
    if (it->second.shape != shape) {
      const FoundTensor& t = it->second;
      const std::string alias =
          t.disk_name.empty() ? "" : str_cat(" ('", t.disk_name, "' in the file)");
      fail(str_cat(t.file, ": tensor '", name, "'", alias, " has shape ", shape_string(t.shape),
                   ", expected ", shape_string(shape)));
    }
  }
  for (const auto& [name, t] : found) {
    if (expected.count(name) == 0) {
      fail(str_cat(t.file, ": unexpected tensor '", t.disk_name.empty() ? name : t.disk_name, "'"));
    }
  }
}

std::string optional_file(const fs::path& p) {
  return fs::exists(p) ? p.string() : "";
}

ModelConfig hf_dir_config(const std::string& dir) {
  const fs::path root(dir);
  if (!fs::exists(root / "config.json")) fail(dir + ": no config.json (not a HF checkpoint)");
  return parse_hf_config((root / "config.json").string(),
                         optional_file(root / "generation_config.json"));
}

LoadedModel load_hf_dir(const std::string& dir) {
  const fs::path root(dir);
  LoadedModel m;
  m.source = dir;
  m.config = hf_dir_config(dir);
  m.tokenizer_json = optional_file(root / "tokenizer.json");
  m.tokenizer_config_json = optional_file(root / "tokenizer_config.json");

  SafetensorsCheckpoint ck = load_safetensors_dir(dir);
  std::map<std::string, FoundTensor> found;
  std::set<std::string> dtypes;
  for (auto& [name, tensor] : ck.tensors) {
    if (name.ends_with(kRotaryInvFreq)) continue;
    // save_pretrained drops a tied head, but some checkpoints keep a copy; HF ignores it.
    if (m.config.tie_word_embeddings && name == "lm_head.weight") continue;
    found[name] = {tensor.shape(), ck.tensor_file.at(name), ""};
    dtypes.insert(dtype_name(tensor.dtype()));
    m.file_bytes += static_cast<int64_t>(tensor.nbytes());
    m.weights.emplace(name, tensor);
  }
  check_tensors(found, m.config, dir);
  m.weight_format = "safetensors";
  for (const auto& d : dtypes) {
    m.weight_format += d == *dtypes.begin() ? ' ' : '+';
    m.weight_format += d;
  }
  m.keep_alive = std::make_shared<std::vector<std::shared_ptr<MappedFile>>>(std::move(ck.files));
  return m;
}

// "gguf Q4_1+Q8_0+F32 (dequantised to f32)", types ordered by how many values they hold.
std::string gguf_format(const GgufFile& g, bool dequantized) {
  std::map<uint32_t, int64_t> values;
  for (const auto& t : g.tensors()) {
    int64_t n = 1;
    for (const int64_t d : t.shape) n *= d;
    values[t.type] += n;
  }
  std::vector<std::pair<int64_t, uint32_t>> order;
  order.reserve(values.size());
  for (const auto& [type, n] : values) order.emplace_back(-n, type);
  std::sort(order.begin(), order.end());
  std::string s = "gguf";
  for (size_t i = 0; i < order.size(); ++i) {
    s += i == 0 ? ' ' : '+';
    s += ggml_type_name(order[i].second);
  }
  return s + (dequantized ? " (dequantised to f32)" : " (as stored)");
}

// One GGUF tensor in HF layout: dequantised to f32, or (options.dequantize off) as stored.
Tensor load_gguf_tensor(const GgufFile& gguf, const GgufTensorInfo& t, const ModelConfig& config,
                        const LoadOptions& options) {
  const std::string hf = hf_name_from_gguf(t.name);
  const bool q = hf.ends_with("self_attn.q_proj.weight");
  const bool k = hf.ends_with("self_attn.k_proj.weight");
  Tensor w;
  if (!options.dequantize) {
    w = gguf.view(t);
    if (q || k) {  // the rows move: take a private copy of the mapped bytes
      Tensor copy = Tensor::zeros(w.dtype(), w.shape());
      std::memcpy(copy.data(), w.data(), w.nbytes());
      w = copy;
    }
  } else {
    w = gguf.load_f32(t);
  }
  if (q) unpermute_qk_rows(w, config.num_heads);
  if (k) unpermute_qk_rows(w, config.num_kv_heads);
  return w;
}

LoadedModel load_gguf(const std::string& path, const LoadOptions& options) {
  auto gguf = std::make_shared<const GgufFile>(path);
  LoadedModel m;
  m.source = path;
  m.config = config_from_gguf(*gguf);

  std::vector<GgufTensorInfo> infos;  // the weights: rope_freqs went into the config
  std::copy_if(gguf->tensors().begin(), gguf->tensors().end(), std::back_inserter(infos),
               [](const GgufTensorInfo& t) { return t.name != kRopeFreqs; });
  std::map<std::string, FoundTensor> found;
  for (const auto& t : infos) {
    const std::string hf = hf_name_from_gguf(t.name);
    if (!found.emplace(hf, FoundTensor{t.shape, path, t.name}).second) {
      fail(path + ": tensor '" + t.name + "' appears twice");
    }
  }
  check_tensors(found, m.config, path);

  std::vector<Tensor> loaded(infos.size());
  std::exception_ptr error;
  // One parallel region over all tensors, each converted on one thread: a fork/join per tensor
  // costs more than the conversion when the cores are shared (seen 6x slower on a busy 2-core
  // machine).
#pragma omp parallel for schedule(dynamic)
  for (size_t i = 0; i < infos.size(); ++i) {
    try {
      loaded[i] = load_gguf_tensor(*gguf, infos[i], m.config, options);
    } catch (...) {
#pragma omp critical(nanoinfer_load_gguf_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  for (size_t i = 0; i < infos.size(); ++i) {
    m.weights.emplace(hf_name_from_gguf(infos[i].name), std::move(loaded[i]));
    m.file_bytes += static_cast<int64_t>(infos[i].nbytes);
  }
  m.weight_format = gguf_format(*gguf, options.dequantize);
  m.gguf = gguf;
  return m;
}

}  // namespace

std::string hf_name_from_gguf(const std::string& gguf_name) {
  static const std::map<std::string, std::string> kTop = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
  };
  static const std::map<std::string, std::string> kLayer = {
      {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_output.weight", "self_attn.o_proj.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},
      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},
      {"attn_norm.weight", "input_layernorm.weight"},
      {"ffn_norm.weight", "post_attention_layernorm.weight"},
  };
  if (const auto it = kTop.find(gguf_name); it != kTop.end()) return it->second;
  constexpr std::string_view kBlk = "blk.";
  if (!gguf_name.starts_with(kBlk)) return gguf_name;
  const size_t dot = gguf_name.find('.', kBlk.size());
  if (dot == std::string::npos || dot == kBlk.size()) return gguf_name;
  const std::string layer = gguf_name.substr(kBlk.size(), dot - kBlk.size());
  if (!std::all_of(layer.begin(), layer.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
    return gguf_name;
  }
  const auto it = kLayer.find(gguf_name.substr(dot + 1));
  if (it == kLayer.end()) return gguf_name;
  return "model.layers." + layer + "." + it->second;
}

void unpermute_qk_rows(Tensor& w, int n_heads) {
  NI_ASSERT(w.rank() == 2 && n_heads > 0);
  const int64_t rows = w.dim(0);
  NI_ASSERT(rows % (2 * n_heads) == 0);
  const int64_t head_dim = rows / n_heads;
  const int64_t half = head_dim / 2;
  const size_t row_bytes = w.nbytes() / static_cast<size_t>(rows);
  std::vector<uint8_t> head(static_cast<size_t>(head_dim) * row_bytes);
  for (int64_t h = 0; h < n_heads; ++h) {
    uint8_t* base = static_cast<uint8_t*>(w.data()) + static_cast<size_t>(h * head_dim) * row_bytes;
    std::memcpy(head.data(), base, head.size());
    // file row 2i + s holds HF row s * half + i
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t s = 0; s < 2; ++s) {
        std::memcpy(base + static_cast<size_t>(s * half + i) * row_bytes,
                    head.data() + static_cast<size_t>(2 * i + s) * row_bytes, row_bytes);
      }
    }
  }
}

std::map<std::string, std::vector<int64_t>> expected_weight_shapes(const ModelConfig& c) {
  const int64_t h = c.hidden_size;
  const int64_t q = static_cast<int64_t>(c.num_heads) * c.head_dim;
  const int64_t kv = static_cast<int64_t>(c.num_kv_heads) * c.head_dim;
  const int64_t ffn = c.intermediate_size;
  std::map<std::string, std::vector<int64_t>> s;
  s["model.embed_tokens.weight"] = {c.vocab_size, h};
  s["model.norm.weight"] = {h};
  if (!c.tie_word_embeddings) s["lm_head.weight"] = {c.vocab_size, h};
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    s[p + "input_layernorm.weight"] = {h};
    s[p + "post_attention_layernorm.weight"] = {h};
    s[p + "self_attn.q_proj.weight"] = {q, h};
    s[p + "self_attn.k_proj.weight"] = {kv, h};
    s[p + "self_attn.v_proj.weight"] = {kv, h};
    s[p + "self_attn.o_proj.weight"] = {h, q};
    s[p + "mlp.gate_proj.weight"] = {ffn, h};
    s[p + "mlp.up_proj.weight"] = {ffn, h};
    s[p + "mlp.down_proj.weight"] = {h, ffn};
  }
  return s;
}

ModelConfig config_from_gguf(const GgufFile& g) {
  const std::string& path = g.path();
  const std::string arch =
      g.has("general.architecture") ? g.get_string("general.architecture") : "";
  if (arch != "llama") {
    fail(path + ": unsupported architecture '" + arch + "' (nanoinfer runs llama)");
  }
  ModelConfig c;
  c.max_position_embeddings = g.get_int32("llama.context_length");
  c.hidden_size = g.get_int32("llama.embedding_length");
  c.num_layers = g.get_int32("llama.block_count");
  c.intermediate_size = g.get_int32("llama.feed_forward_length");
  c.num_heads = g.get_int32("llama.attention.head_count");
  c.num_kv_heads = g.get_int32_or("llama.attention.head_count_kv", c.num_heads);
  c.rms_norm_eps = static_cast<float>(g.get_float("llama.attention.layer_norm_rms_epsilon"));
  c.rope_theta = static_cast<float>(g.get_float_or("llama.rope.freq_base", c.rope_theta));
  const int per_head = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  c.head_dim = g.get_int32_or("llama.attention.key_length",
                              g.get_int32_or("llama.rope.dimension_count", per_head));

  const std::string scaling =
      g.has("llama.rope.scaling.type") ? g.get_string("llama.rope.scaling.type") : "none";
  if (scaling == "linear") {
    c.rope_scaling.type = RopeScaling::Type::Linear;
    c.rope_scaling.factor = static_cast<float>(g.get_float("llama.rope.scaling.factor"));
  } else if (scaling != "none") {
    fail(path + ": unsupported llama.rope.scaling.type '" + scaling +
         "' (supported: none, linear)");
  }
  // Llama-3.1 / 3.2 GGUFs carry their llama3 scaling as one divisor per frequency.
  if (const GgufTensorInfo* t = g.find(kRopeFreqs)) {
    if (c.rope_scaling.type != RopeScaling::Type::None) {
      fail(path + ": both llama.rope.scaling.type '" + scaling + "' and tensor '" + kRopeFreqs +
           "'; expected one of them");
    }
    const Tensor f = g.load_f32(*t);
    c.rope_scaling.type = RopeScaling::Type::FreqFactors;
    c.rope_scaling.freq_factors.assign(f.as<float>(), f.as<float>() + f.numel());
  }

  c.vocab_size = g.has("tokenizer.ggml.tokens")
                     ? static_cast<int>(g.get_strings("tokenizer.ggml.tokens").size())
                     : g.get_int32("llama.vocab_size");
  c.bos_token_id = g.get_int32_or("tokenizer.ggml.bos_token_id", -1);
  const std::vector<int32_t> eos = g.eos_ids();  // end of generation
  c.eos_token_ids.assign(eos.begin(), eos.end());
  c.tie_word_embeddings = g.find("output.weight") == nullptr;
  c.validate(path);
  return c;
}

namespace {
[[noreturn]] void not_a_model(const std::string& path) {
  if (!fs::exists(path)) fail(path + ": no such file or directory");
  fail(path + ": not a HF checkpoint directory or a .gguf file");
}
}  // namespace

LoadedModel load_model(const std::string& path, const LoadOptions& options) {
  if (fs::is_directory(path)) return load_hf_dir(path);
  if (path.ends_with(".gguf")) return load_gguf(path, options);
  not_a_model(path);
}

ModelConfig load_model_config(const std::string& path) {
  if (fs::is_directory(path)) return hf_dir_config(path);
  if (path.ends_with(".gguf")) return config_from_gguf(GgufFile(path));
  not_a_model(path);
}

}  // namespace nanoinfer
