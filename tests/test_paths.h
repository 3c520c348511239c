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
// Path of the default SmolLM2 GGUF (nanoinfer::default_model_path()), or "" when not fetched.
std::string default_model_path();

}  // namespace nanoinfer::test
