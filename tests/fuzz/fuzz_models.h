// The micro model the fuzz targets and their seeds share: tiny_config() shrunk to one layer of 8
// values (a few hundred weights), as a GGUF with a tokenizer in its metadata and as a HF
// directory's config.json + model.safetensors.
#pragma once

#include "fuzz_util.h"
#include "loader_fixtures.h"
#include "nanoinfer/engine.h"

namespace nanoinfer::fuzz {

inline ModelConfig micro_config() {
  ModelConfig c = test::tiny_config();
  c.vocab_size = 8;
  c.hidden_size = 8;
  c.intermediate_size = 8;
  c.num_layers = 1;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 4;
  return c;
}

// sentencepiece: a "llama" tokenizer (scores, its 256 byte-fallback tokens; embeddings tied to
// keep the file small) instead of a "gpt2" one (merges).
inline std::string micro_gguf(bool sentencepiece) {
  std::vector<std::string> tokens = {"a",
                                     "<s>",
                                     "</s>",
                                     "\xc4\xa0",
                                     "b",
                                     "ab",
                                     "\xc4\xa0"
                                     "a",
                                     "<|x|>"};
  std::vector<int32_t> types = {1, 3, 3, 1, 1, 1, 1, 4};  // normal, control, user-defined
  std::vector<float> scores;
  if (sentencepiece) {
    tokens = {"<unk>", "<s>", "</s>"};
    types = {2, 3, 3};
    for (int b = 0; b < 256; ++b) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "<0x%02X>", b);
      tokens.emplace_back(hex);
      types.push_back(6);  // byte
    }
    for (const char* p : {"\xe2\x96\x81", "a", "b",
                          "\xe2\x96\x81"
                          "a",
                          "ab"}) {
      tokens.emplace_back(p);
      types.push_back(1);
    }
    for (size_t i = 0; i < tokens.size(); ++i) scores.push_back(i < 259 ? 0.F : -float(i));
  }
  ModelConfig c = micro_config();
  c.vocab_size = static_cast<int>(tokens.size());
  c.tie_word_embeddings = sentencepiece;
  test::GgufWriter w;
  test::add_tiny_gguf_metadata(w, c);
  w.kv_string("tokenizer.ggml.model", sentencepiece ? "llama" : "gpt2");
  w.kv_strings("tokenizer.ggml.tokens", tokens);
  std::string t;
  test::put<uint32_t>(t, test::GgufWriter::kI32);
  test::put<uint64_t>(t, types.size());
  for (int32_t v : types) test::put<int32_t>(t, v);
  w.kv_raw("tokenizer.ggml.token_type", test::GgufWriter::kArray, t);
  if (sentencepiece) {
    std::string f;
    test::put<uint32_t>(f, test::GgufWriter::kF32);
    test::put<uint64_t>(f, scores.size());
    for (float v : scores) test::put<float>(f, v);
    w.kv_raw("tokenizer.ggml.scores", test::GgufWriter::kArray, f);
  } else {
    w.kv_strings("tokenizer.ggml.merges", {"a b", "\xc4\xa0 a"});
  }
  w.kv_string("tokenizer.chat_template", "{{ bos_token }}");
  const auto weights = test::tiny_weights(c);
  const auto shapes = expected_weight_shapes(c);
  for (const auto& g : test::gguf_names(c)) {
    const std::string hf = hf_name_from_gguf(g);
    w.tensor(g, 0, shapes.at(hf), test::f32_bytes(weights.at(hf)));
  }
  return w.bytes();
}

inline std::string micro_config_json() {
  return test::tiny_config_json(micro_config()).dump(1);
}

inline std::string micro_safetensors() {
  const ModelConfig c = micro_config();
  const auto shapes = expected_weight_shapes(c);
  std::vector<test::StTensor> tensors;
  for (const auto& [name, v] : test::tiny_weights(c))
    tensors.push_back({name, "F32", shapes.at(name), test::f32_bytes(v)});
  return test::safetensors_bytes(tensors);
}

// The model at `path` loads (else false) and an engine over it generates two tokens, each step
// either working or refused with an Error.
inline bool load_and_generate(const std::string& path) {
  if (!refused_clearly([&] { load_model(path); })) return false;
  refused_clearly([&] {
    EngineOptions o;
    o.model = path;
    o.max_context = 32;
    Engine engine(o);
    GenerationRequest r;
    r.prompt_ids = {0, 1};
    r.params.max_new_tokens = 2;
    engine.generate({r});
  });
  return true;
}

// A HF directory of the micro model whose config.json or model.safetensors (`fuzzed`) is the
// input, loaded and run.
inline void hf_dir_with(const std::string& fuzzed, const uint8_t* data, size_t size) {
  static const bool written = [&] {  // the other file, once
    const bool config = fuzzed == "config.json";
    const std::string bytes = config ? micro_safetensors() : micro_config_json();
    write_input(config ? "model.safetensors" : "config.json",
                reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    return true;
  }();
  (void)written;
  write_input(fuzzed, data, size);
  load_and_generate(scratch_dir().string());
}

}  // namespace nanoinfer::fuzz
