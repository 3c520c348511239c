// Where tests find their data: committed vectors under tests/data, and the default model,
// fetched once into the user cache by scripts/fetch_model.sh (tests that need it skip with a
// message when it is absent; with NANOINFER_REQUIRE_MODEL set, as `make test` sets it, the test
// program fails instead).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nanoinfer::test {

std::string data_path(const std::string& relative);
// tests/data/<relative> parsed.
nlohmann::json read_json(const std::string& relative);
// The tiny checkpoints under tests/data/models that have HF references (reference.json), sorted.
std::vector<std::string> tiny_model_names();
// A model directory for random weights, made afresh as `name` under the temporary folder: the
// Llama-3 tokenizer under Llama-3.2-Instruct's chat template, and `config` (an HF config.json)
// with the Llama-3 vocabulary. The caller removes it.
std::string llama32_chat_model(const std::string& name, nlohmann::json config);
// Path of the default SmolLM2 GGUF (nanoinfer::default_model_path()), or "" when not fetched.
std::string default_model_path();

}  // namespace nanoinfer::test
