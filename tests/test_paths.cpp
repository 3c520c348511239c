#include "test_paths.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "nanoinfer/engine.h"

namespace nanoinfer::test {

std::string data_path(const std::string& relative) {
  return std::string(NI_TEST_DATA) + "/" + relative;
}

nlohmann::json read_json(const std::string& relative) {
  std::ifstream in(data_path(relative));
  return nlohmann::json::parse(in);
}

std::vector<std::string> tiny_model_names() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(data_path("models")))
    if (std::filesystem::exists(e.path() / "reference.json")) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

std::string llama32_chat_model(const std::string& name, nlohmann::json config) {
  const auto dir = std::filesystem::temp_directory_path() / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(data_path("tokenizer/llama3/tokenizer.json"), dir / "tokenizer.json");
  std::ifstream in(data_path("tokenizer/llama32_chat_template.jinja"), std::ios::binary);
  std::ofstream(dir / "tokenizer_config.json") << nlohmann::json{
      {"chat_template",
       std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>())},
      {"bos_token", "<|begin_of_text|>"}}.dump();
  config["vocab_size"] = 128256;
  std::ofstream(dir / "config.json") << config.dump();
  return dir.string();
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
