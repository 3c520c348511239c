// A fuzz target without libFuzzer (the ordinary build, `make test`): every file named on the
// command line (a directory: every file under it) and then 200 inputs of seeded random bytes go
// once through the target's LLVMFuzzerTestOneInput. A finding aborts as it does under the fuzzer
// (fuzz_util.h), so the targets keep building and their seeds keep passing where `make fuzz`
// (clang, libFuzzer) does not run.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

void replay(const std::filesystem::path& file) {
  std::ifstream f(file, std::ios::binary);
  const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(f),
                                   std::istreambuf_iterator<char>()};
  LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
}

}  // namespace

int main(int argc, char** argv) {
  int files = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path path = argv[i];
    if (!std::filesystem::exists(path)) {
      std::fprintf(stderr, "%s: no such file or directory\n", argv[i]);
      return 1;
    }
    if (!std::filesystem::is_directory(path)) {
      replay(path);
      ++files;
      continue;
    }
    for (const auto& entry : std::filesystem::recursive_directory_iterator(path))
      if (entry.is_regular_file()) {
        replay(entry.path());
        ++files;
      }
  }
  if (argc > 1 && files == 0) {
    std::fprintf(stderr, "no input file under the paths given\n");
    return 1;
  }
  std::mt19937 rng(1);
  constexpr int kRandom = 200;
  for (int i = 0; i < kRandom; ++i) {
    std::vector<uint8_t> bytes(rng() % 257);
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  }
  std::filesystem::remove_all(nanoinfer::fuzz::scratch_dir());
  std::printf("%d files and %d random inputs: no finding\n", files, kRandom);
  return 0;
}
