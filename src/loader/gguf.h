// GGUF v3 reader: parses the header, metadata and tensor directory of a memory-mapped file and
// dequantises tensors (F32, F16, BF16; the block formats Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL,
// Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS: tensor/quant_blocks.h) to f32. Every malformed case
// (truncated file, offsets past the end, unknown types) throws Error naming the file and tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "tensor/tensor.h"
#include "util/mmap_file.h"

namespace nanoinfer {

// ggml tensor types we know by number (the GGUF spec's numbering).
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  IQ4_NL = 20,
  IQ4_XS = 23,
  BF16 = 30
};
std::string ggml_type_name(uint32_t type);

using GgufArray = std::variant<std::vector<int64_t>, std::vector<double>, std::vector<std::string>,
                               std::vector<bool>>;
using GgufValue = std::variant<int64_t, double, bool, std::string, GgufArray>;

struct GgufTensorInfo {
  std::string name;
  uint32_t type = 0;           // ggml type number
  std::vector<int64_t> shape;  // row-major, outermost first (GGUF stores innermost first)
  uint64_t offset = 0;         // from the start of the data section
  uint64_t nbytes = 0;
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);

  const std::string& path() const;
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find(const std::string& name) const;

  bool has(const std::string& key) const { return metadata_.count(key) != 0; }
  // Typed getters: throw Error naming the file and key when missing or of another type.
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  const std::vector<std::string>& get_strings(const std::string& key) const;
  const std::vector<int64_t>& get_ints(const std::string& key) const;
  const std::vector<double>& get_floats(const std::string& key) const;
  int64_t get_int_or(const std::string& key, int64_t fallback) const;
  // A count or id: throws Error when the value does not fit an int32 (a corrupt 2^32 + 2 would
  // otherwise read as 2).
  int32_t get_int32(const std::string& key) const;
  int32_t get_int32_or(const std::string& key, int32_t fallback) const;
  double get_float_or(const std::string& key, double fallback) const;
  bool get_bool_or(const std::string& key, bool fallback) const;
  // The ids that end a text, each once: the EOS token, and the end-of-turn / end-of-message
  // tokens where the file names them (a Llama-3.x instruct model ends a reply with <|eot_id|>,
  // as HF's generation_config lists it beside <|end_of_text|>).
  std::vector<int32_t> eos_ids() const;

  // The tensor dequantised to a fresh f32 host tensor.
  Tensor load_f32(const GgufTensorInfo& info) const;
  // The tensor as stored (F32, F16, BF16, or blocks of a DType of the same name), a view into the
  // mapping.
  Tensor view(const GgufTensorInfo& info) const;

 private:
  DType stored_type(const GgufTensorInfo& info) const;

  std::shared_ptr<MappedFile> file_;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  uint64_t data_offset_ = 0;
};

// Dequantise n elements of one ggml type from raw bytes (n must be a whole number of blocks).
void dequantize(uint32_t type, const uint8_t* src, int64_t n, float* dst);
// Bytes taken by n elements of the type; throws Error for types we do not support.
uint64_t ggml_nbytes(uint32_t type, int64_t n);

}  // namespace nanoinfer
