// Where tests find their data: committed vectors under tests/data, and the default model,
// fetched once into the user cache by scripts/fetch_model.sh (tests that need it skip with a
// message when it is absent and NANOINFER_REQUIRE_MODEL is unset).
#pragma once

#include <string>

namespace nanoinfer::test {

std::string data_path(const std::string& relative);
// Path of the default SmolLM2 GGUF, or "" when not fetched.
std::string default_model_path();

}  // namespace nanoinfer::test
