// W4 (BENCHMARKS.md): the embedded default model on the CPU. The summary prompt, 128 greedy
// tokens with EOS ignored; prints prefill ms, decode tokens/s and peak resident memory
// (--json for one object). scripts/bench_w4.sh runs it beside HF transformers.
#include <sys/resource.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "bench_args.h"
#include "nanoinfer/engine.h"
#include "nanoinfer/tokenizer.h"
#include "util/error.h"

int main(int argc, char** argv) {
  using namespace nanoinfer;
  bool json = false;
  std::string prompt_file = std::string(NI_SOURCE_DIR) + "/tests/data/prompts/summary_prompt.txt";
  int new_tokens = 128, repeats = 3;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0)
      json = true;
    else if (std::strcmp(argv[i], "--prompt-file") == 0 && i + 1 < argc)
      prompt_file = argv[++i];
    else if (std::strcmp(argv[i], "--repeats") == 0 && i + 1 < argc)
      repeats = nanoinfer::bench::whole_number("--repeats", argv[++i], 1);
    else {
      std::fprintf(stderr, "usage: bench_w4 [--json] [--prompt-file F] [--repeats N]\n");
      return 2;
    }
  }
  try {
    std::ifstream in(prompt_file);
    if (!in) throw Error(prompt_file + ": cannot open");
    std::stringstream ss;
    ss << in.rdbuf();
    EngineOptions opt;
    opt.model = "default";
    Engine engine(opt);
    const auto tok = load_tokenizer_for_model(default_model_path());
    GenerationRequest req{tok->encode(ss.str()), {}};
    req.params.max_new_tokens = new_tokens;
    req.params.ignore_eos = true;
    double best_prefill = 1e30, best_decode = 0;
    for (int r = 0; r < repeats; ++r) {  // best of N: the machine is shared
      engine.generate({req});
      best_prefill = std::min(best_prefill, engine.last_stats().prefill_ms);
      best_decode = std::max(best_decode, engine.last_stats().decode_tokens_per_s());
    }
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    const double rss_mb = static_cast<double>(ru.ru_maxrss) / 1024.0;
    if (json) {
      std::printf(
          "{\"engine\": \"nanoinfer\", \"prompt_tokens\": %zu, \"new_tokens\": %d, "
          "\"prefill_ms\": %.2f, \"decode_tokens_per_s\": %.2f, \"peak_rss_mb\": %.1f}\n",
          req.prompt_ids.size(), new_tokens, best_prefill, best_decode, rss_mb);
    } else {
      std::printf("nanoinfer W4: prompt %zu tokens, %d new\n", req.prompt_ids.size(), new_tokens);
      std::printf("  prefill %.1f ms, decode %.1f tokens/s, peak RSS %.0f MB (best of %d)\n",
                  best_prefill, best_decode, rss_mb, repeats);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_w4: %s\n", e.what());
    return 1;
  }
  return 0;
}
