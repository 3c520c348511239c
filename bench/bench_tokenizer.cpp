// Tokenizer encode throughput: MB/s on a 10 MB English text (the summary prompt repeated), single
// thread, for each tokenizer under tests/data/tokenizer: once as one 10 MB string, once as
// separate documents (one encode call per copy of the prompt, so nothing is cached across calls).
// tools/golden/bench_hf_tokenizer.py measures HF tokenizers the same two ways.
//
// Usage (from the repository root): bench_tokenizer [data_dir=tests/data/tokenizer] [megabytes=10]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "bench_args.h"
#include "nanoinfer/tokenizer.h"
#include "util/error.h"

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) nanoinfer::fail("cannot open " + path + " (run from the repository root)");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 3) {
    std::fprintf(stderr, "usage: bench_tokenizer [data_dir] [megabytes]\n");
    return 2;
  }
  const std::string dir = argc > 1 ? argv[1] : "tests/data/tokenizer";
  const double megabytes =
      argc > 2 ? nanoinfer::bench::number("megabytes", argv[2], 0.001, 1e4) : 10.0;
  try {
    const std::string prompt = read_file(dir + "/summary_prompt.txt");
    std::string text;
    const auto target = static_cast<size_t>(megabytes * 1e6);
    while (text.size() < target) text += prompt;
    text.resize(target);
    std::printf("text: %.1f MB (summary_prompt.txt repeated), 1 thread\n", text.size() / 1e6);
    for (const char* name : {"llama3", "smollm2", "llama2"}) {
      const auto t_load = std::chrono::steady_clock::now();
      const auto tok = nanoinfer::load_tokenizer_json(dir + "/" + name + "/tokenizer.json");
      const double load_s = seconds_since(t_load);
      const auto t0 = std::chrono::steady_clock::now();
      const std::vector<int32_t> ids = tok->encode(text, false);
      const double s = seconds_since(t0);
      const auto t1 = std::chrono::steady_clock::now();
      const std::string back = tok->decode(ids);
      const double ds = seconds_since(t1);
      const auto t2 = std::chrono::steady_clock::now();
      size_t doc_tokens = 0;
      const size_t docs = text.size() / prompt.size();
      for (size_t i = 0; i < docs; ++i) doc_tokens += tok->encode(prompt, false).size();
      const double doc_s = seconds_since(t2);
      std::printf(
          "%-8s encode %7.2f MB/s (%zu tokens)  per-document encode %7.2f MB/s (%zu docs, %zu "
          "tokens)  decode %7.2f MB/s  load %.2f s%s\n",
          name, text.size() / 1e6 / s, ids.size(), docs * prompt.size() / 1e6 / doc_s, docs,
          doc_tokens, text.size() / 1e6 / ds, load_s, back == text ? "" : "  ROUND TRIP MISMATCH");
    }
  } catch (const nanoinfer::Error& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
