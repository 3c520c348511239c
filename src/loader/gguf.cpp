// GGUF reader: a bounds-checked cursor over the mmap parses header, metadata and the tensor
// directory; dequantisation turns the ggml block formats into f32.
#include "loader/gguf.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <string_view>
#include <type_traits>
#include <utility>

#include "tensor/quant_blocks.h"
#include "util/error.h"
#include "util/str_cat.h"

namespace nanoinfer {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;             // ggml tensors have at most four dimensions
constexpr int64_t kParallelValues = 131072;  // below this, threads cost more than they save

// Metadata value types, numbered as in the GGUF spec.
enum class ValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

// The ggml types we read, and the DType each is kept as.
constexpr std::pair<GgmlType, DType> kReadable[] = {
    {GgmlType::F32, DType::F32},       {GgmlType::F16, DType::F16},
    {GgmlType::BF16, DType::BF16},     {GgmlType::Q8_0, DType::Q8_0},
    {GgmlType::Q4_0, DType::Q4_0},     {GgmlType::Q4_1, DType::Q4_1},
    {GgmlType::Q5_0, DType::Q5_0},     {GgmlType::Q5_1, DType::Q5_1},
    {GgmlType::IQ4_NL, DType::IQ4_NL}, {GgmlType::Q2_K, DType::Q2_K},
    {GgmlType::Q3_K, DType::Q3_K},     {GgmlType::Q4_K, DType::Q4_K},
    {GgmlType::Q5_K, DType::Q5_K},     {GgmlType::Q6_K, DType::Q6_K},
    {GgmlType::IQ4_XS, DType::IQ4_XS}};

// The DType of a ggml type we read, or nullptr.
const DType* readable(uint32_t type) {
  for (const auto& [g, dt] : kReadable)
    if (static_cast<uint32_t>(g) == type) return &dt;
  return nullptr;
}

std::string readable_names() {
  std::string s;
  for (const auto& [g, dt] : kReadable)
    s += (s.empty() ? "" : ", ") + ggml_type_name(static_cast<uint32_t>(g));
  return s;
}

// Cursor over the header bytes; every read checks that the bytes exist.
class Cursor {
 public:
  Cursor(std::span<const uint8_t> bytes, const std::string& path) : bytes_(bytes), path_(path) {}

  uint64_t pos() const { return pos_; }

  template <class T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(std::string_view what) {
    const auto len = read<uint64_t>(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), len);
    pos_ += len;
    return s;
  }

  // Checks that n more bytes exist without reading them (arrays announce their length first).
  void need(uint64_t n, std::string_view what) const {
    if (n > bytes_.size() - pos_) {
      fail(path_ + ": truncated GGUF file: " + std::string(what) + " needs " + std::to_string(n) +
           " bytes at offset " + std::to_string(pos_) + " but the file has " +
           std::to_string(bytes_.size()) + " bytes");
    }
  }

 private:
  std::span<const uint8_t> bytes_;
  const std::string& path_;
  uint64_t pos_ = 0;
};

int64_t read_int(Cursor& c, ValueType t, std::string_view what) {
  switch (t) {
    case ValueType::U8:
      return c.read<uint8_t>(what);
    case ValueType::I8:
      return c.read<int8_t>(what);
    case ValueType::U16:
      return c.read<uint16_t>(what);
    case ValueType::I16:
      return c.read<int16_t>(what);
    case ValueType::U32:
      return c.read<uint32_t>(what);
    case ValueType::I32:
      return c.read<int32_t>(what);
    case ValueType::U64:
      return static_cast<int64_t>(c.read<uint64_t>(what));
    case ValueType::I64:
      return c.read<int64_t>(what);
    default:
      NI_ASSERT(false);
  }
  return 0;
}

bool is_int(ValueType t) {
  switch (t) {
    case ValueType::U8:
    case ValueType::I8:
    case ValueType::U16:
    case ValueType::I16:
    case ValueType::U32:
    case ValueType::I32:
    case ValueType::U64:
    case ValueType::I64:
      return true;
    default:
      return false;
  }
}

// Smallest encoded size of one element, to reject array lengths the file cannot hold before
// reserving memory for them.
uint64_t min_element_bytes(ValueType t) {
  switch (t) {
    case ValueType::U8:
    case ValueType::I8:
    case ValueType::Bool:
      return 1;
    case ValueType::U16:
    case ValueType::I16:
      return 2;
    case ValueType::U32:
    case ValueType::I32:
    case ValueType::F32:
      return 4;
    case ValueType::String:  // the length prefix
    case ValueType::U64:
    case ValueType::I64:
    case ValueType::F64:
      return 8;
    case ValueType::Array:  // element type + count
      return 12;
  }
  return 1;
}

ValueType read_value_type(Cursor& c, const std::string& path, const std::string& key) {
  const auto raw = c.read<uint32_t>("metadata value type of '" + key + "'");
  if (raw > static_cast<uint32_t>(ValueType::F64)) {
    fail(path + ": metadata key '" + key + "' has unknown value type " + std::to_string(raw));
  }
  return static_cast<ValueType>(raw);
}

GgufArray read_array(Cursor& c, const std::string& path, const std::string& key, int depth);

GgufValue read_value(Cursor& c, ValueType t, const std::string& path, const std::string& key,
                     int depth) {
  const std::string what = "value of metadata key '" + key + "'";
  if (is_int(t)) return read_int(c, t, what);
  switch (t) {
    case ValueType::F32:
      return static_cast<double>(c.read<float>(what));
    case ValueType::F64:
      return c.read<double>(what);
    case ValueType::Bool:
      return c.read<uint8_t>(what) != 0;
    case ValueType::String:
      return c.read_string(what);
    case ValueType::Array:
      return read_array(c, path, key, depth + 1);
    default:
      NI_ASSERT(false);
  }
  return int64_t{0};
}

// Nested arrays (arrays of arrays) are legal GGUF; no Llama key uses them, so they are parsed
// for bounds and kept as an empty list.
GgufArray read_array(Cursor& c, const std::string& path, const std::string& key, int depth) {
  const ValueType et = read_value_type(c, path, key);
  const auto n = c.read<uint64_t>("array length of '" + key + "'");
  const std::string what = "array '" + key + "'";
  if (n > std::numeric_limits<uint64_t>::max() / min_element_bytes(et)) {
    fail(path + ": truncated GGUF file: array '" + key + "' claims " + std::to_string(n) +
         " elements");
  }
  c.need(n * min_element_bytes(et), what);
  if (is_int(et)) {
    std::vector<int64_t> v(n);
    for (auto& x : v) x = read_int(c, et, what);
    return v;
  }
  switch (et) {
    case ValueType::F32:
    case ValueType::F64: {
      std::vector<double> v(n);
      for (auto& x : v) x = et == ValueType::F32 ? c.read<float>(what) : c.read<double>(what);
      return v;
    }
    case ValueType::Bool: {
      std::vector<bool> v(n);
      for (uint64_t i = 0; i < n; ++i) v[i] = c.read<uint8_t>(what) != 0;
      return v;
    }
    case ValueType::String: {
      std::vector<std::string> v(n);
      for (auto& x : v) x = c.read_string(what);
      return v;
    }
    case ValueType::Array:
      if (depth > 8) fail(path + ": metadata key '" + key + "' nests arrays too deeply");
      for (uint64_t i = 0; i < n; ++i) read_array(c, path, key, depth + 1);
      return std::vector<int64_t>{};
    default:
      NI_ASSERT(false);
  }
  return std::vector<int64_t>{};
}

// f(i) for i < count, on all threads when `values` is large enough to pay for them.
template <class F>
void parallel_for(int64_t count, int64_t values, F&& f) {
#pragma omp parallel for schedule(static) if (values >= kParallelValues)
  for (int64_t i = 0; i < count; ++i) f(i);
}

// The ggml numbering; 4 and 5 were retired formats and stay unnamed. nullptr when unknown.
const char* known_type_name(uint32_t type) {
  static constexpr std::array<const char*, 40> kNames = {
      "F32",     "F16",    "Q4_0",    "Q4_1",  "",       "",      "Q5_0",  "Q5_1",
      "Q8_0",    "Q8_1",   "Q2_K",    "Q3_K",  "Q4_K",   "Q5_K",  "Q6_K",  "Q8_K",
      "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS",
      "I8",      "I16",    "I32",     "I64",   "F64",    "IQ1_M", "BF16",  "",
      "",        "",       "TQ1_0",   "TQ2_0", "",       "",      "",      "MXFP4"};
  if (type < kNames.size() && kNames[type][0] != '\0') return kNames[type];
  return nullptr;
}

}  // namespace

std::string ggml_type_name(uint32_t type) {
  const char* name = known_type_name(type);
  return name != nullptr ? name : "unknown type " + std::to_string(type);
}

uint64_t ggml_nbytes(uint32_t type, int64_t n) {
  const DType* dt = readable(type);
  if (dt == nullptr) {
    fail("ggml type " + ggml_type_name(type) + " is not supported (supported: " + readable_names() +
         ")");
  }
  const int64_t block = dtype_block(*dt);
  if (n < 0 || n % block != 0) {
    fail(std::to_string(n) + " elements are not a whole number of " + ggml_type_name(type) +
         " blocks of " + std::to_string(block));
  }
  return dtype_nbytes(*dt, n);
}

void dequantize(uint32_t type, const uint8_t* src, int64_t n, float* dst) {
  ggml_nbytes(type, n);  // validates the type and the block count
  const DType dt = *readable(type);
  switch (dt) {
    case DType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::F16:
    case DType::BF16:
      parallel_for(n, n, [&](int64_t i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = dt == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      });
      return;
    default: {  // block formats, a run of blocks per task
      constexpr int64_t kRun = 64;
      const int64_t blocks = n / dtype_block(dt), runs = (blocks + kRun - 1) / kRun;
      parallel_for(runs, n, [&](int64_t r) {
        const int64_t i = r * kRun;
        dequantize_blocks(dt, src + static_cast<size_t>(i) * dtype_size(dt),
                          std::min(kRun, blocks - i), dst + i * dtype_block(dt));
      });
    }
  }
}

GgufFile::GgufFile(const std::string& path) : file_(std::make_shared<MappedFile>(path)) {
  Cursor c(file_->bytes(), file_->path());
  if (file_->size() < 4 || c.read<uint32_t>("magic") != kGgufMagic) {
    fail(path + ": not a GGUF file (bad magic; expected \"GGUF\")");
  }
  const auto version = c.read<uint32_t>("version");
  if (version != 2 && version != 3) {
    fail(path + ": unsupported GGUF version " + std::to_string(version) + " (supported: 2, 3)");
  }
  const auto n_tensors = c.read<uint64_t>("tensor count");
  const auto n_kv = c.read<uint64_t>("metadata count");
  // Each entry takes at least a byte, so absurd counts fail here before any allocation.
  if (n_kv > file_->size() || n_tensors > file_->size()) {
    fail(path + ": truncated GGUF file: the header claims " + std::to_string(n_tensors) +
         " tensors and " + std::to_string(n_kv) + " metadata entries in " +
         std::to_string(file_->size()) + " bytes");
  }

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.read_string("metadata key #" + std::to_string(i));
    const ValueType t = read_value_type(c, path, key);
    GgufValue v = read_value(c, t, path, key, 0);
    // Which of two values would count is anyone's guess (one file, two readers, two models).
    if (metadata_.count(key) != 0) fail(str_cat(path, ": metadata key '", key, "' appears twice"));
    metadata_.emplace(std::move(key), std::move(v));
  }

  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo info;
    info.name = c.read_string("tensor name #" + std::to_string(i));
    const std::string what = "tensor '" + info.name + "'";
    const auto n_dims = c.read<uint32_t>(what + " rank");
    if (n_dims == 0 || n_dims > kMaxDims) {
      fail(
          str_cat(path, ": ", what, " has ", n_dims, " dimensions (expected 1 to ", kMaxDims, ")"));
    }
    info.shape.resize(n_dims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto dim = c.read<uint64_t>(what + " dimensions");
      if (dim == 0 || dim > (uint64_t{1} << 40) || numel > (uint64_t{1} << 40) / dim) {
        fail(str_cat(path, ": ", what, " has a bad dimension ", dim));
      }
      numel *= dim;
      info.shape[n_dims - 1 - d] = static_cast<int64_t>(dim);  // GGUF lists innermost first
    }
    info.type = c.read<uint32_t>(what + " type");
    if (known_type_name(info.type) == nullptr) {
      fail(str_cat(path, ": ", what, " has unknown ggml type ", info.type));
    }
    info.offset = c.read<uint64_t>(what + " offset");
    if (const DType* dt = readable(info.type)) {
      if (info.shape.back() % dtype_block(*dt) != 0) {
        fail(str_cat(path, ": ", what, " of type ", ggml_type_name(info.type), " has rows of ",
                     info.shape.back(), " values, not a multiple of the block size ",
                     dtype_block(*dt)));
      }
      info.nbytes = ggml_nbytes(info.type, static_cast<int64_t>(numel));
    }
    tensors_.push_back(std::move(info));
  }

  uint64_t alignment = kDefaultAlignment;
  if (has("general.alignment")) {
    const int64_t a = get_int("general.alignment");
    if (a <= 0 || !std::has_single_bit(static_cast<uint64_t>(a))) {
      fail(path + ": general.alignment " + std::to_string(a) + " is not a power of two");
    }
    alignment = static_cast<uint64_t>(a);
  }
  data_offset_ = (c.pos() + alignment - 1) / alignment * alignment;
  const uint64_t size = file_->size();
  for (const auto& t : tensors_) {
    if (t.offset % alignment != 0) {
      fail(path + ": tensor '" + t.name + "' data offset " + std::to_string(t.offset) +
           " is not aligned to " + std::to_string(alignment));
    }
    if (data_offset_ > size || t.offset > size - data_offset_ ||
        t.nbytes > size - data_offset_ - t.offset) {
      fail(path + ": tensor '" + t.name + "' data (offset " + std::to_string(t.offset) + ", " +
           std::to_string(t.nbytes) + " bytes after the data section at " +
           std::to_string(data_offset_) + ") runs past the end of the file (" +
           std::to_string(size) + " bytes)");
    }
  }
}

const std::string& GgufFile::path() const {
  return file_->path();
}

const GgufTensorInfo* GgufFile::find(const std::string& name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

namespace {

template <class T>
const T& typed(const std::map<std::string, GgufValue>& md, const std::string& path,
               const std::string& key, const char* kind) {
  const auto it = md.find(key);
  if (it == md.end()) fail(path + ": missing GGUF metadata key '" + key + "'");
  const T* v = nullptr;
  if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, double> ||
                std::is_same_v<T, std::string> || std::is_same_v<T, bool>) {
    v = std::get_if<T>(&it->second);
  } else {
    if (const auto* arr = std::get_if<GgufArray>(&it->second)) v = std::get_if<T>(arr);
  }
  if (v == nullptr) fail(path + ": GGUF metadata key '" + key + "' is not " + kind);
  return *v;
}

}  // namespace

int64_t GgufFile::get_int(const std::string& key) const {
  return typed<int64_t>(metadata_, path(), key, "an integer");
}

double GgufFile::get_float(const std::string& key) const {
  const auto it = metadata_.find(key);
  // Writers differ on whether a value like 10000 is stored as float or integer; accept both.
  if (it != metadata_.end() && std::holds_alternative<int64_t>(it->second)) {
    return static_cast<double>(std::get<int64_t>(it->second));
  }
  return typed<double>(metadata_, path(), key, "a number");
}

std::string GgufFile::get_string(const std::string& key) const {
  return typed<std::string>(metadata_, path(), key, "a string");
}

const std::vector<std::string>& GgufFile::get_strings(const std::string& key) const {
  return typed<std::vector<std::string>>(metadata_, path(), key, "a string array");
}

const std::vector<int64_t>& GgufFile::get_ints(const std::string& key) const {
  return typed<std::vector<int64_t>>(metadata_, path(), key, "an integer array");
}

const std::vector<double>& GgufFile::get_floats(const std::string& key) const {
  return typed<std::vector<double>>(metadata_, path(), key, "a float array");
}

int64_t GgufFile::get_int_or(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

int32_t GgufFile::get_int32(const std::string& key) const {
  const int64_t v = get_int(key);
  if (v < INT32_MIN || v > INT32_MAX)
    fail(path() + ": metadata " + key + " = " + std::to_string(v) + " does not fit an int32");
  return static_cast<int32_t>(v);
}

int32_t GgufFile::get_int32_or(const std::string& key, int32_t fallback) const {
  return has(key) ? get_int32(key) : fallback;
}

std::vector<int32_t> GgufFile::eos_ids() const {
  std::vector<int32_t> ids;
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                          "tokenizer.ggml.eom_token_id"})
    if (const int32_t id = get_int32_or(key, -1);
        id >= 0 && std::find(ids.begin(), ids.end(), id) == ids.end())
      ids.push_back(id);
  return ids;
}

bool GgufFile::get_bool_or(const std::string& key, bool fallback) const {
  return has(key) ? typed<bool>(metadata_, path(), key, "a bool") : fallback;
}

double GgufFile::get_float_or(const std::string& key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}

// Names the file and tensor when nanoinfer cannot read its type.
DType GgufFile::stored_type(const GgufTensorInfo& info) const {
  if (const DType* dt = readable(info.type)) return *dt;
  fail(path() + ": tensor '" + info.name + "' has ggml type " + ggml_type_name(info.type) +
       ", which nanoinfer cannot read (supported: " + readable_names() + ")");
}

Tensor GgufFile::load_f32(const GgufTensorInfo& info) const {
  stored_type(info);
  int64_t n = 1;
  for (const int64_t d : info.shape) n *= d;
  // Not zero-filled: every value is written below, and the untouched pages then fault in on the
  // dequantising threads instead of in one serial memset.
  std::shared_ptr<float[]> values = std::make_unique_for_overwrite<float[]>(static_cast<size_t>(n));
  dequantize(info.type, file_->bytes().data() + data_offset_ + info.offset, n, values.get());
  return {DType::F32, info.shape, values.get(), values};
}

Tensor GgufFile::view(const GgufTensorInfo& info) const {
  auto* data = const_cast<uint8_t*>(file_->bytes().data() + data_offset_ + info.offset);
  return {stored_type(info), info.shape, data, file_};
}

}  // namespace nanoinfer
