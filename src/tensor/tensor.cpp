#include "tensor/tensor.h"

#include <sys/mman.h>
#include <sys/resource.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "util/error.h"
#include "util/host_memory.h"
#include "util/parallel_copy.h"

namespace nanoinfer {

Tensor::Tensor(DType dtype, std::vector<int64_t> shape, void* data, std::shared_ptr<void> owner,
               Device device)
    : dtype_(dtype),
      device_(device),
      shape_(std::move(shape)),
      data_(data),
      owner_(std::move(owner)) {}

namespace {

// Zeroed bytes; from 2 MB on, fresh pages from the kernel in 2 MB pages where it has them
// (transparent huge pages, asked for by madvise): the KV cache is read in stretches over many
// 4 KB pages, and on the dev box a plain read ran 10-30 % faster in 2 MB pages (fewer TLB
// misses), the CPU's decode attention 5-23 %.
// nullptr where the system has no room for them.
std::shared_ptr<uint8_t> zeroed_bytes(size_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20;
  if (bytes < kHuge) {
    std::shared_ptr<uint8_t> buf(new (std::nothrow) uint8_t[bytes](),
                                 std::default_delete<uint8_t[]>());
    return buf;
  }
  const size_t len = (bytes + 2 * kHuge - 1) / kHuge * kHuge;  // room to align to 2 MB
  void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  auto* base = static_cast<uint8_t*>(m);
  uint8_t* aligned = base + (kHuge - reinterpret_cast<uintptr_t>(base) % kHuge) % kHuge;
  madvise(aligned, bytes, MADV_HUGEPAGE);  // (only a hint: 4 KB pages if it fails)
  return {aligned, [base, len](uint8_t*) { munmap(base, len); }};
}

}  // namespace

Tensor Tensor::zeros(DType dtype, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const size_t bytes = dtype_nbytes(dtype, n);
  std::shared_ptr<uint8_t> buf = zeroed_bytes(bytes);
  if (!buf) {  // (as the CUDA backend says it: the bytes asked and those to be had)
    constexpr double kMiB = 1 << 20;
    std::array<char, 320> msg{};
    std::snprintf(msg.data(), msg.size(),
                  "out of memory: a %s tensor %s asked for %zu bytes (%.1f MiB); the host has "
                  "%.1f MiB available",
                  dtype_name(dtype), shape_string(shape).c_str(), bytes,
                  static_cast<double>(bytes) / kMiB,
                  static_cast<double>(host_available_bytes()) / kMiB);
    std::string what = msg.data();
    rlimit as{};
    if (getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY)
      what += ", and this process's address space is limited to " +
              std::to_string(as.rlim_cur >> 20U) + " MiB (ulimit -v)";
    fail(what);
  }
  return {dtype, std::move(shape), buf.get(), buf};
}

Tensor Tensor::stack_rows(const std::vector<Tensor>& parts) {
  NI_ASSERT(!parts.empty());
  int64_t rows = 0;
  for (const Tensor& p : parts) {
    NI_ASSERT(p.rank() == 2 && p.dtype() == parts[0].dtype() && p.dim(1) == parts[0].dim(1));
    rows += p.dim(0);
  }
  // Not zero-filled: every byte is copied below, by all threads (a file mapping's page faults).
  const size_t bytes = dtype_nbytes(parts[0].dtype(), rows * parts[0].dim(1));
  std::shared_ptr<uint8_t[]> buf = std::make_unique_for_overwrite<uint8_t[]>(bytes);
  uint8_t* dst = buf.get();
  for (const Tensor& p : parts) {
    parallel_copy(dst, p.data(), p.nbytes());
    dst += p.nbytes();
  }
  return {parts[0].dtype(), {rows, parts[0].dim(1)}, buf.get(), buf};
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Tensor Tensor::row(int64_t i) const {
  NI_ASSERT(!shape_.empty() && i >= 0 && i < shape_[0]);
  std::vector<int64_t> sub(shape_.begin() + 1, shape_.end());
  const size_t stride = nbytes() / static_cast<size_t>(shape_[0]);  // whole blocks per row
  return {dtype_, std::move(sub), static_cast<uint8_t*>(data_) + stride * static_cast<size_t>(i),
          owner_, device_};
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  NI_ASSERT(!shape_.empty() && 0 <= begin && begin <= end && end <= shape_[0]);
  std::vector<int64_t> shape = shape_;
  shape[0] = end - begin;
  const size_t stride = shape_[0] > 0 ? nbytes() / static_cast<size_t>(shape_[0]) : 0;
  return {dtype_, std::move(shape),
          static_cast<uint8_t*>(data_) + stride * static_cast<size_t>(begin), owner_, device_};
}

Tensor Tensor::columns(int64_t begin, int64_t end) const {
  NI_ASSERT(rank() == 2 && device_ == Device::Cpu && 0 <= begin && begin <= end &&
            end <= shape_[1]);
  if (begin == 0 && end == shape_[1]) return *this;
  const int64_t block = dtype_block(dtype_);
  if (begin % block != 0 || end % block != 0)
    fail(std::string("columns [") + std::to_string(begin) + ", " + std::to_string(end) + ") of a " +
         dtype_name(dtype_) + " tensor do not fall on its " + std::to_string(block) +
         "-element blocks");
  Tensor out = zeros(dtype_, {shape_[0], end - begin});
  const size_t src_stride = dtype_nbytes(dtype_, shape_[1]);
  const size_t dst_stride = dtype_nbytes(dtype_, end - begin);
  const size_t offset = dtype_nbytes(dtype_, begin);
  for (int64_t r = 0; r < shape_[0]; ++r)
    std::memcpy(static_cast<uint8_t*>(out.data()) + dst_stride * static_cast<size_t>(r),
                static_cast<const uint8_t*>(data_) + src_stride * static_cast<size_t>(r) + offset,
                dst_stride);
  return out;
}

Tensor Tensor::reshape(std::vector<int64_t> shape) const {
  Tensor t(dtype_, std::move(shape), data_, owner_, device_);
  NI_ASSERT(t.numel() == numel());
  return t;
}

float bf16_to_f32(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffU) > 0x7f800000U) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fffU + ((bits >> 16) & 1U);
  return static_cast<uint16_t>(bits >> 16);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000U) << 16;
  uint32_t exp = (h >> 10) & 0x1fU;
  uint32_t mant = h & 0x3ffU;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000U | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while ((mant & 0x400U) == 0) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3ffU) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000U;
  const uint32_t absx = x & 0x7fffffffU;
  if (absx >= 0x7f800000U)
    return static_cast<uint16_t>(sign | 0x7c00U | (absx > 0x7f800000U ? 0x200U : 0U));
  if (absx >= 0x477ff000U) return static_cast<uint16_t>(sign | 0x7c00U);  // overflow -> inf
  if (absx < 0x38800000U) {                                               // subnormal or zero
    if (absx < 0x33000000U) return static_cast<uint16_t>(sign);
    const uint32_t e = absx >> 23;
    const uint32_t m = (absx & 0x7fffffU) | 0x800000U;
    const uint32_t shift = 126 - e;
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1U << shift) - 1);
    const uint32_t half = 1U << (shift - 1);
    if (rem > half || (rem == half && (r & 1U))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t r = ((absx >> 13) - (112U << 10));
  const uint32_t rem = absx & 0x1fffU;
  if (rem > 0x1000U || (rem == 0x1000U && (r & 1U))) ++r;
  return static_cast<uint16_t>(sign | r);
}

}  // namespace nanoinfer
