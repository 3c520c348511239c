// Shared by the tokenizer tests: the tokenizers under test, loaded once per process, and the
// golden vectors written by tools/golden/tokenizer_golden.py.
#pragma once

#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "loader/gguf.h"
#include "nanoinfer/tokenizer.h"
#include "test_paths.h"
#include "util/error.h"

namespace nanoinfer::test {

// "llama3", "llama2", "smollm2" (tokenizer.json exported by transformers from the GGUF) and
// "smollm2_gguf" (the default GGUF itself; nullptr when it is not fetched).
inline const Tokenizer* tokenizer_for(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second.get();
  std::unique_ptr<Tokenizer> tok;
  if (name == "smollm2_gguf") {
    const std::string path = default_model_path();
    if (!path.empty()) tok = load_tokenizer_gguf(GgufFile(path));
  } else {
    tok = load_tokenizer_json(data_path("tokenizer/" + name + "/tokenizer.json"));
  }
  return cache.emplace(name, std::move(tok)).first->second.get();
}

// The golden file a tokenizer is checked against.
inline std::string golden_name(const std::string& name) {
  return name == "smollm2_gguf" ? "smollm2" : name;
}

}  // namespace nanoinfer::test
