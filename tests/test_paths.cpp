#include "test_paths.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "nanoinfer/engine.h"

namespace nanoinfer::test {

std::string data_path(const std::string& relative) {
  return std::string(NI_TEST_DATA) + "/" + relative;
}

std::string default_model_path() {
  std::string path = nanoinfer::default_model_path();
  if (std::filesystem::exists(path)) return path;
  if (std::getenv("NANOINFER_REQUIRE_MODEL") != nullptr) {
    // make test fetches the model first: its absence there is a failure, not a skip.
    std::fprintf(stderr, "NANOINFER_REQUIRE_MODEL is set but the default model is missing: %s\n",
                 path.c_str());
    std::exit(1);
  }
  return "";
}

}  // namespace nanoinfer::test
