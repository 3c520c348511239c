// Shared by the fuzz targets (libFuzzer, `make fuzz`): a file per process for the input, and the
// rule every target checks: what a user can feed in may throw nanoinfer::Error (a clear message)
// and nothing else. Any other exception, a crash or a sanitizer report is a finding.
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <typeinfo>

#include "nanoinfer/error.h"

namespace nanoinfer::fuzz {

// A directory of this process's own under the temporary directory, made once.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    auto d =
        std::filesystem::temp_directory_path() / ("nanoinfer-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::string write_input(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = (scratch_dir() / name).string();
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}

// A promise the code under test broke: stops the fuzzer saying which.
inline void check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "finding: %s\n", what);
  std::abort();
}

// Runs f; an Error is the expected refusal (returns false), success returns true, anything else
// stops the fuzzer with what was thrown.
template <class F>
bool refused_clearly(F&& f) {
  try {
    f();
    return true;
  } catch (const Error& e) {
    if (std::getenv("NI_FUZZ_PRINT") != nullptr) std::fprintf(stderr, "refused: %s\n", e.what());
    return false;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "finding: %s escaped instead of nanoinfer::Error: %s\n", typeid(e).name(),
                 e.what());
    std::abort();
  }
}

// The input's bytes read front to back as parameters, zeros once they run out (the targets' own,
// so that they build without libFuzzer's headers too: replay_main.cpp).
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}

  // An integer in [lo, hi], from as many bytes as the range needs.
  template <class T>
  T in_range(T lo, T hi) {
    const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
    uint64_t v = 0;
    for (uint64_t s = span; s != 0; s >>= 8) v = v << 8 | next();
    if (span != std::numeric_limits<uint64_t>::max()) v %= span + 1;
    return static_cast<T>(static_cast<uint64_t>(lo) + v);
  }
  template <class T>
  T integral() {
    return in_range(std::numeric_limits<T>::min(), std::numeric_limits<T>::max());
  }
  bool boolean() { return (next() & 1) != 0; }
  // Any finite float: four bytes' bits, 0 where they make an infinity or a NaN.
  float finite_float() {
    uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) bits = bits << 8 | next();
    float f = 0;
    std::memcpy(&f, &bits, sizeof(f));
    return std::isfinite(f) ? f : 0.F;
  }
  template <class T, size_t N>
  const T& pick(const T (&values)[N]) {
    return values[in_range<size_t>(0, N - 1)];
  }

 private:
  uint8_t next() { return p_ < end_ ? *p_++ : 0; }
  const uint8_t* p_;
  const uint8_t* end_;
};

}  // namespace nanoinfer::fuzz
