// safetensors reader: an 8-byte little-endian header length, a JSON header, then raw tensor bytes.
// Tensors come back as zero-copy views into the mmap (the view owns a reference to the mapping).
// A checkpoint directory holds one model.safetensors or shards listed by
// model.safetensors.index.json.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "tensor/tensor.h"
#include "util/mmap_file.h"

namespace nanoinfer {

// All tensors of one .safetensors file (F32, F16, BF16; anything else throws Error naming the
// dtype and the tensor).
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return file_->path(); }
  const std::map<std::string, Tensor>& tensors() const { return tensors_; }
  const std::shared_ptr<MappedFile>& file() const { return file_; }

 private:
  std::shared_ptr<MappedFile> file_;
  std::map<std::string, Tensor> tensors_;
};

struct SafetensorsCheckpoint {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> tensor_file;  // name -> the file it came from
  std::vector<std::shared_ptr<MappedFile>> files;  // keeps the views valid
};

// Loads dir/model.safetensors.index.json (sharded) or else dir/model.safetensors.
SafetensorsCheckpoint load_safetensors_dir(const std::string& dir);

}  // namespace nanoinfer
