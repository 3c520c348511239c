// memcpy split over the OpenMP threads, 1 MB a piece: a source that is a fresh file mapping
// takes its page faults on every core instead of one.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace nanoinfer {

inline void parallel_copy(void* dst, const void* src, size_t n) {
  constexpr size_t kPiece = size_t{1} << 20;
  const auto pieces = static_cast<int64_t>((n + kPiece - 1) / kPiece);
#pragma omp parallel for schedule(static) if (pieces > 1)
  for (int64_t p = 0; p < pieces; ++p) {
    const size_t off = static_cast<size_t>(p) * kPiece;
    std::memcpy(static_cast<uint8_t*>(dst) + off, static_cast<const uint8_t*>(src) + off,
                std::min(kPiece, n - off));
  }
}

}  // namespace nanoinfer
