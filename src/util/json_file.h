// JSON files the loaders read (config.json, generation_config.json, tokenizer.json,
// tokenizer_config.json, a sharded checkpoint's index), with errors that name the file.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace nanoinfer {

// The file's bytes; throws Error "PATH: cannot open" (missing, unreadable, a directory).
std::string read_file_bytes(const std::string& path);

// The file parsed; throws Error "PATH: cannot open" or "PATH: invalid JSON: ...".
nlohmann::json read_json_file(const std::string& path);

}  // namespace nanoinfer
