#include "test_paths.h"

#include <cstdlib>
#include <filesystem>

namespace nanoinfer::test {

std::string data_path(const std::string& relative) {
  return std::string(NI_TEST_DATA) + "/" + relative;
}

std::string default_model_path() {
  const char* env = std::getenv("NANOINFER_MODEL");
  if (env != nullptr && std::filesystem::exists(env)) return env;
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  const std::string cache =
      xdg != nullptr ? std::string(xdg) : std::string(home != nullptr ? home : "/tmp") + "/.cache";
  const std::string path = cache + "/nanoinfer/SmolLM2-135M-Instruct.Q4_1.gguf";
  return std::filesystem::exists(path) ? path : "";
}

}  // namespace nanoinfer::test
