// StreamingLLM on the default model: perplexity of a long text fed one token at a time under a
// full cache, a window-only cache and a sink + window cache of the same size (pre-RoPE).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "bench_args.h"
#include "engine/batch_builder.h"
#include "model/llama.h"
#include "nanoinfer/engine.h"
#include "nanoinfer/tokenizer.h"

namespace {

using namespace nanoinfer;

// Mean negative log-likelihood of ids[1..] given everything before, one token per step.
double mean_nll(LlamaModel& model, KvCache& cache, const std::vector<int32_t>& ids) {
  SeqState s(0, cache.create_sequence(), {ids[0]});
  const int V = model.config().vocab_size;
  std::vector<float> l;
  double nll = 0;
  for (size_t t = 1; t < ids.size(); ++t) {
    model.backend().to_host_f32(model.forward(build_batch({&s}, cache), cache), l);
    const float mx = *std::max_element(l.begin(), l.begin() + V);
    double z = 0;
    for (int v = 0; v < V; ++v) z += std::exp(static_cast<double>(l[v] - mx));
    nll += std::log(z) - static_cast<double>(l[ids[t]] - mx);
    s.pending = {ids[t]};
  }
  cache.release(s.cache_id);
  return nll / static_cast<double>(ids.size() - 1);
}

}  // namespace

int main(int argc, char** argv) {
  int window = 64, sink = 4, max_tokens = 1024;
  std::string text_file = std::string(NI_SOURCE_DIR) + "/tests/data/prompts/summary_prompt.txt";
  for (int i = 1; i < argc; i += 2) {
    const std::string k = argv[i];
    if (i + 1 == argc) {
      std::fprintf(stderr,
                   "option %s needs a value (options: --window N --sink N --tokens N --text "
                   "FILE)\n",
                   k.c_str());
      return 2;
    }
    const char* v = argv[i + 1];
    if (k == "--window")
      window = nanoinfer::bench::whole_number("--window", v, 1);
    else if (k == "--sink")
      sink = nanoinfer::bench::whole_number("--sink", v, 0);
    else if (k == "--tokens")
      max_tokens = nanoinfer::bench::whole_number("--tokens", v, 2);
    else if (k == "--text")
      text_file = v;
    else {
      std::fprintf(stderr,
                   "unknown option %s (options: --window N --sink N --tokens N --text FILE)\n",
                   k.c_str());
      return 2;
    }
  }
  try {
    std::ifstream in(text_file);
    if (!in) throw std::runtime_error("cannot read " + text_file);
    std::stringstream ss;
    ss << in.rdbuf();
    LoadOptions lo;
    lo.dequantize = false;
    const LoadedModel loaded = load_model(default_model_path(), lo);
    auto tok = load_tokenizer_for_model(default_model_path());
    std::vector<int32_t> ids = tok->encode(ss.str());
    if (static_cast<int>(ids.size()) > max_tokens) ids.resize(static_cast<size_t>(max_tokens));
    auto be = make_cpu_backend();
    LlamaModel model(loaded, *be, 4096);
    const int blocks = static_cast<int>(ids.size()) + 16;
    struct Setup {
      const char* name;
      int sink, window;
    } setups[] = {
        {"full cache", -1, 0}, {"window only", 0, window + sink}, {"sink + window", sink, window}};
    std::printf("perplexity of %zu tokens of %s, one token per step\n", ids.size(),
                text_file.c_str());
    for (const Setup& st : setups) {
      KvCacheOptions o{1, blocks, "pre"};
      o.sink_tokens = st.sink;
      o.window = st.window;
      KvCache cache(*be, loaded.config, o);
      const double nll = mean_nll(model, cache, ids);
      std::printf("  %-14s (%s): mean NLL %.4f, perplexity %.2f\n", st.name,
                  cache.policy().name().c_str(), nll, std::exp(nll));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_streaming_ppl: %s\n", e.what());
    return 1;
  }
  return 0;
}
