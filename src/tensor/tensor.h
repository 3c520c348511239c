// Tensor: a view (dtype, shape, data pointer, device) plus shared ownership of the bytes behind it.
// Contiguous row-major only: every op in this engine works on packed rows, so strides would
// be dead weight. Owners are type-erased (an mmap, a std::vector, a cudaMalloc block).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace nanoinfer {

// Q8_0 ... IQ4_XS are GGUF's block formats (32 or 256 elements a block, tensor/quant_blocks.h),
// kept as stored so the CPU backend can multiply without widening the weights to f32 in memory.
enum class DType : uint8_t {
  F32,
  F16,
  BF16,
  I32,
  Q8_0,
  Q4_0,
  Q4_1,
  Q5_0,
  Q5_1,
  IQ4_NL,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K,
  IQ4_XS
};
enum class Device : uint8_t { Cpu, Cuda };

namespace detail {
struct DTypeInfo {
  const char* name;
  int64_t block;  // elements a block (1: a plain type)
  size_t bytes;   // bytes an element, or a block
};
// Here, not in a .cpp, so that a kernel's loop over blocks of a known type folds the size.
constexpr DTypeInfo dtype_info(DType t) {
  switch (t) {
    case DType::F32:
      return {"f32", 1, 4};
    case DType::F16:
      return {"f16", 1, 2};
    case DType::BF16:
      return {"bf16", 1, 2};
    case DType::I32:
      return {"i32", 1, 4};
    case DType::Q8_0:
      return {"q8_0", 32, 34};
    case DType::Q4_0:
      return {"q4_0", 32, 18};
    case DType::Q4_1:
      return {"q4_1", 32, 20};
    case DType::Q5_0:
      return {"q5_0", 32, 22};
    case DType::Q5_1:
      return {"q5_1", 32, 24};
    case DType::IQ4_NL:
      return {"iq4_nl", 32, 18};
    case DType::Q2_K:
      return {"q2_k", 256, 84};
    case DType::Q3_K:
      return {"q3_k", 256, 110};
    case DType::Q4_K:
      return {"q4_k", 256, 144};
    case DType::Q5_K:
      return {"q5_k", 256, 176};
    case DType::Q6_K:
      return {"q6_k", 256, 210};
    case DType::IQ4_XS:
      return {"iq4_xs", 256, 136};
  }
  return {"?", 1, 0};
}
}  // namespace detail

// Bytes per element; for block formats, bytes per block.
constexpr size_t dtype_size(DType t) {
  return detail::dtype_info(t).bytes;
}
// Elements per block (1 for plain types).
constexpr int64_t dtype_block(DType t) {
  return detail::dtype_info(t).block;
}
constexpr size_t dtype_nbytes(DType t, int64_t numel) {
  return static_cast<size_t>(numel / dtype_block(t)) * dtype_size(t);
}
constexpr const char* dtype_name(DType t) {
  return detail::dtype_info(t).name;
}

// "[2, 3]"
std::string shape_string(const std::vector<int64_t>& shape);

class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, std::vector<int64_t> shape, void* data, std::shared_ptr<void> owner,
         Device device = Device::Cpu);

  // A fresh zero-filled host tensor.
  static Tensor zeros(DType dtype, std::vector<int64_t> shape);
  // Host tensors of one dtype and width stacked along their rows: [n1, K], [n2, K] -> [n1+n2, K].
  static Tensor stack_rows(const std::vector<Tensor>& parts);

  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_[i]; }
  size_t rank() const { return shape_.size(); }
  int64_t numel() const;
  size_t nbytes() const { return dtype_nbytes(dtype_, numel()); }
  bool empty() const { return data_ == nullptr; }
  std::string shape_str() const { return shape_string(shape_); }

  void* data() const { return data_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  // Row i of the outermost dimension (a view sharing the owner).
  Tensor row(int64_t i) const;
  // Rows [begin, end) of the outermost dimension (a view sharing the owner).
  Tensor rows(int64_t begin, int64_t end) const;
  // Columns [begin, end) of a 2-D host tensor, copied (all columns: the tensor itself); for block
  // dtypes the bounds must fall on block boundaries.
  Tensor columns(int64_t begin, int64_t end) const;
  // Same bytes, another shape with the same element count.
  Tensor reshape(std::vector<int64_t> shape) const;

 private:
  DType dtype_ = DType::F32;
  Device device_ = Device::Cpu;
  std::vector<int64_t> shape_;
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;
};

// bf16 / f16 <-> f32 conversions (round to nearest even), used by loaders and the CPU reference.
float bf16_to_f32(uint16_t v);
uint16_t f32_to_bf16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace nanoinfer
