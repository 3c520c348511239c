#include "util/json_file.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace nanoinfer {

std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in || std::filesystem::is_directory(path))
    fail(path + ": cannot open" + (in ? " (a directory)" : ""));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json read_json_file(const std::string& path) {
  const std::string bytes = read_file_bytes(path);
  try {
    return nlohmann::json::parse(bytes);
  } catch (const nlohmann::json::exception& e) {
    fail(path + ": invalid JSON: " + e.what());
  }
}

}  // namespace nanoinfer
