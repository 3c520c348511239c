// Seeded random GGUF blocks of one format: random bytes (quants, sub-block scales and mins, high
// bits) with finite f16 scale fields of both signs, so the widened values are finite and every
// bit of the layout is exercised.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "tensor/tensor.h"

namespace nanoinfer::test {

// Every block format we read.
inline const std::vector<DType>& block_formats() {
  static const std::vector<DType> all = {DType::Q8_0, DType::Q4_0,   DType::Q4_1, DType::Q5_0,
                                         DType::Q5_1, DType::IQ4_NL, DType::Q2_K, DType::Q3_K,
                                         DType::Q4_K, DType::Q5_K,   DType::Q6_K, DType::IQ4_XS};
  return all;
}

// Byte offsets of a block's f16 fields (the scale d, and dmin or m where the format has one).
inline std::vector<size_t> f16_fields(DType t) {
  switch (t) {
    case DType::Q4_1:
    case DType::Q5_1:
    case DType::Q4_K:
    case DType::Q5_K:
      return {0, 2};
    case DType::Q2_K:
      return {80, 82};
    case DType::Q3_K:
      return {108};
    case DType::Q6_K:
      return {208};
    default:
      return {0};
  }
}

// `values` values (a whole number of blocks) of format t; f16 fields of magnitude 2^exp to
// 1000 x 2^exp (default 2^-16 to ~2^-6).
inline std::vector<uint8_t> random_blocks(DType t, int64_t values, unsigned seed, int exp = -16) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> out(dtype_nbytes(t, values));
  for (uint8_t& b : out) b = static_cast<uint8_t>(rng());
  for (size_t at = 0; at < out.size(); at += dtype_size(t)) {
    for (const size_t f : f16_fields(t)) {
      const float v =
          std::ldexp(static_cast<float>(rng() % 1000 + 1), exp) * (rng() % 2 != 0U ? 1.0F : -1.0F);
      const uint16_t h = f32_to_f16(v);
      std::memcpy(out.data() + at + f, &h, sizeof(h));
    }
  }
  return out;
}

}  // namespace nanoinfer::test
