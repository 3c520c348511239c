// Where tests find their data: committed vectors under tests/data, and the default model,
// fetched once into the user cache by scripts/fetch_model.sh (tests that need it skip with a
// message when it is absent; with NANOINFER_REQUIRE_MODEL set, as `make test` sets it, the test
// program fails instead).
#pragma once

#include <string>

namespace nanoinfer::test {

std::string data_path(const std::string& relative);
// Path of the default SmolLM2 GGUF (nanoinfer::default_model_path()), or "" when not fetched.
std::string default_model_path();

}  // namespace nanoinfer::test
