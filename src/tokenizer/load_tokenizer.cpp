// load_tokenizer_for_model: picks the loader from what the path is (GGUF by its magic bytes, a HF
// directory, or a tokenizer.json), so the CLI can tokenize without loading weights.
#include <filesystem>
#include <fstream>

#include "loader/gguf.h"
#include "nanoinfer/tokenizer.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

bool has_gguf_magic(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, sizeof(magic));
  return in && std::string_view(magic, sizeof(magic)) == "GGUF";
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer_for_model(const std::string& model_path) {
  namespace fs = std::filesystem;
  const fs::path path(model_path);
  if (fs::is_directory(path)) {
    const fs::path json = path / "tokenizer.json";
    if (!fs::exists(json)) fail("no tokenizer.json in model directory " + model_path);
    return load_tokenizer_json(json.string());
  }
  if (!fs::exists(path)) fail(model_path + ": no such file or directory");
  if (has_gguf_magic(path)) return load_tokenizer_gguf(GgufFile(model_path));
  return load_tokenizer_json(model_path);
}

}  // namespace nanoinfer
