// Shared by the fuzz targets (libFuzzer, `make fuzz`): a file per process for the input, and the
// rule every target checks: what a user can feed in may throw nanoinfer::Error (a clear message)
// and nothing else. Any other exception, a crash or a sanitizer report is a finding.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
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

}  // namespace nanoinfer::fuzz
