// PreRope vs PostRope on the default model: prefill time of the summary prompt and decode
// tokens/s over 128 greedy tokens, both policies alternated in one run (best of N each).
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "bench_args.h"
#include "nanoinfer/engine.h"
#include "nanoinfer/tokenizer.h"

int main(int argc, char** argv) {
  using namespace nanoinfer;
  int repeats = 3;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--repeats") != 0 || i + 1 == argc) {
      std::fprintf(stderr, "usage: bench_rope_cache [--repeats N]\n");
      return 2;
    }
    repeats = nanoinfer::bench::whole_number("--repeats", argv[++i], 1);
  }
  try {
    const std::string text = std::string(NI_SOURCE_DIR) + "/tests/data/prompts/summary_prompt.txt";
    std::ifstream in(text);
    if (!in) throw std::runtime_error("cannot read " + text);
    std::stringstream ss;
    ss << in.rdbuf();
    const char* policies[] = {"post", "pre"};
    double prefill[2] = {1e30, 1e30}, decode[2] = {0, 0};
    size_t prompt_tokens = 0;
    for (int p = 0; p < 2; ++p) {
      EngineOptions opt;
      opt.model = "default";
      opt.rope_cache = policies[p];
      Engine engine(opt);
      GenerationRequest req{engine.tokenizer()->encode(ss.str()), {}};
      prompt_tokens = req.prompt_ids.size();
      req.params.max_new_tokens = 128;
      req.params.ignore_eos = true;
      for (int r = 0; r < repeats; ++r) {
        engine.generate({req});
        prefill[p] = std::min(prefill[p], engine.last_stats().prefill_ms);
        decode[p] = std::max(decode[p], engine.last_stats().decode_tokens_per_s());
      }
    }
    std::printf("RoPE cache policy on the default model (prompt %zu tokens, 128 new, best of %d)\n",
                prompt_tokens, repeats);
    std::printf("%-10s %12s %16s %14s\n", "policy", "prefill ms", "decode tok/s", "decode ms/tok");
    for (int p = 0; p < 2; ++p)
      std::printf("%-10s %12.1f %16.2f %14.2f\n", policies[p], prefill[p], decode[p],
                  1000.0 / decode[p]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_rope_cache: %s\n", e.what());
    return 1;
  }
  return 0;
}
