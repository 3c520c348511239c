// safetensors parsing and validation: every offset in the JSON header is checked against the
// file size and the tensor's shape before a view is handed out.
#include "loader/safetensors.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "util/error.h"
#include "util/json_file.h"
#include "util/str_cat.h"

namespace nanoinfer {
namespace {

using nlohmann::json;

// The format's own cap on the JSON header (100 MB); larger lengths mean a corrupt file.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

bool parse_dtype(const std::string& s, DType* out) {
  if (s == "F32") {
    *out = DType::F32;
  } else if (s == "F16") {
    *out = DType::F16;
  } else if (s == "BF16") {
    *out = DType::BF16;
  } else {
    return false;
  }
  return true;
}

uint64_t get_u64(const json& j, const std::string& path, const std::string& name,
                 const char* field) {
  if (!j.is_number_unsigned() && !(j.is_number_integer() && j.get<int64_t>() >= 0)) {
    fail(path + ": tensor '" + name + "' has a bad " + field + " entry " + j.dump());
  }
  return j.get<uint64_t>();
}

Tensor make_view(const std::shared_ptr<MappedFile>& file, const std::string& name,
                 const json& entry, uint64_t data_start) {
  const std::string& path = file->path();
  if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
      !entry.contains("data_offsets")) {
    fail(path + ": tensor '" + name + "' header entry lacks dtype, shape or data_offsets");
  }
  const json& dt = entry["dtype"];
  DType dtype{};
  if (!dt.is_string() || !parse_dtype(dt.get<std::string>(), &dtype)) {
    fail(path + ": tensor '" + name + "' has unsupported dtype " +
         (dt.is_string() ? dt.get<std::string>() : dt.dump()) + " (supported: F32, F16, BF16)");
  }
  const json& sh = entry["shape"];
  if (!sh.is_array()) fail(path + ": tensor '" + name + "' shape is not a list");
  std::vector<int64_t> shape;
  uint64_t numel = 1;
  for (const json& d : sh) {
    const uint64_t v = get_u64(d, path, name, "shape");
    if (v != 0 && numel > (uint64_t{1} << 48) / v) {
      fail(str_cat(path, ": tensor '", name, "' shape ", sh.dump(), " is too large"));
    }
    numel *= v;
    shape.push_back(static_cast<int64_t>(v));
  }
  const json& off = entry["data_offsets"];
  if (!off.is_array() || off.size() != 2) {
    fail(path + ": tensor '" + name + "' data_offsets is not a [begin, end] pair");
  }
  const uint64_t begin = get_u64(off[0], path, name, "data_offsets");
  const uint64_t end = get_u64(off[1], path, name, "data_offsets");
  const uint64_t data_bytes = file->size() - data_start;
  if (begin > end || end > data_bytes) {
    fail(path + ": tensor '" + name + "' data_offsets [" + std::to_string(begin) + ", " +
         std::to_string(end) + "] run past the end of the data (" + std::to_string(data_bytes) +
         " bytes)");
  }
  const uint64_t want = numel * dtype_size(dtype);
  if (end - begin != want) {
    fail(path + ": tensor '" + name + "' has " + std::to_string(end - begin) + " bytes but shape " +
         sh.dump() + " of " + dtype_name(dtype) + " needs " + std::to_string(want));
  }
  const uint8_t* p = file->bytes().data() + data_start + begin;
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(dtype) == 0) {
    return {dtype, std::move(shape), const_cast<uint8_t*>(p), file};
  }
  // A misaligned start cannot be read as f32/f16 in place; copy those few tensors.
  Tensor copy = Tensor::zeros(dtype, std::move(shape));
  std::memcpy(copy.data(), p, want);
  return copy;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path)
    : file_(std::make_shared<MappedFile>(path)) {
  const auto bytes = file_->bytes();
  if (bytes.size() < 8) {
    fail(path + ": truncated safetensors file: " + std::to_string(bytes.size()) +
         " bytes, fewer than the 8-byte header length");
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > kMaxHeaderBytes || header_len > bytes.size() - 8) {
    fail(path + ": truncated safetensors file: header length " + std::to_string(header_len) +
         " runs past the end of the file (" + std::to_string(bytes.size()) + " bytes)");
  }
  json header;
  try {
    header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<int64_t>(header_len));
  } catch (const json::exception& e) {
    fail(path + ": invalid safetensors JSON header: " + e.what());
  }
  if (!header.is_object()) fail(path + ": safetensors header is not a JSON object");
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    tensors_.emplace(name, make_view(file_, name, entry, 8 + header_len));
  }
}

SafetensorsCheckpoint load_safetensors_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  SafetensorsCheckpoint ck;
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single_path = fs::path(dir) / "model.safetensors";

  // file name -> names the index assigns to it (empty for the single-file case)
  std::map<std::string, std::set<std::string>> shards;
  if (fs::exists(index_path)) {
    const json index = read_json_file(index_path.string());
    if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
      fail(index_path.string() + ": no weight_map object");
    }
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos) {
        fail(index_path.string() + ": tensor '" + name + "' maps to a bad shard name " +
             file.dump());
      }
      shards[file.get<std::string>()].insert(name);
    }
  } else if (fs::exists(single_path)) {
    shards["model.safetensors"];
  } else {
    fail(dir + ": no model.safetensors or model.safetensors.index.json");
  }

  for (const auto& [file_name, listed] : shards) {
    const std::string shard_path = (fs::path(dir) / file_name).string();
    const SafetensorsFile shard(shard_path);
    for (const auto& name : listed) {
      if (shard.tensors().count(name) == 0) {
        fail(str_cat(shard_path, ": missing tensor '", name, "' (listed in ",
                     index_path.filename().string(), ")"));
      }
    }
    for (const auto& [name, tensor] : shard.tensors()) {
      const auto [it, fresh] = ck.tensor_file.emplace(name, shard_path);
      if (!fresh) fail(str_cat(shard_path, ": tensor '", name, "' also appears in ", it->second));
      ck.tensors.emplace(name, tensor);
    }
    ck.files.push_back(shard.file());
  }
  return ck;
}

}  // namespace nanoinfer
