// Requests of arbitrary parameters on the micro model (fuzz_models.h's GGUF, its tokenizer for
// stop strings) through engines of four cache set-ups (the first byte picks one): the default,
// continuous batching over a small cache with chunked prefill, a StreamingLLM sink cache, and
// one-slot blocks without prefix reuse. Each call is one to three requests in one generate(), or
// submitted at steps of an online run (the server's); each is refused with nanoinfer::Error or
// ends with an output that keeps its parameters' promises.
#include <algorithm>
#include <array>
#include <cstdlib>
#include <map>
#include <memory>

#include "fuzz_models.h"
#include "fuzz_util.h"
#include "nanoinfer/engine.h"

using namespace nanoinfer;

namespace {

Engine& engine(int which) {
  static std::array<std::unique_ptr<Engine>, 4> engines;
  if (!engines[which]) {
    const std::string bytes = fuzz::micro_gguf(false);
    EngineOptions o;
    o.model = fuzz::write_input("micro.gguf", reinterpret_cast<const uint8_t*>(bytes.data()),
                                bytes.size());
    o.max_context = 32;
    if (which == 1) {
      o.cache_tokens = 24;
      o.block_size = 4;
      o.max_step_tokens = 5;
    } else if (which == 2) {
      o.rope_cache = "pre";
      o.sink_tokens = 2;
      o.window = 8;
    } else if (which == 3) {
      o.block_size = 1;
      o.prefix_reuse = false;
      o.max_step_tokens = 3;
    }
    engines[which] = std::make_unique<Engine>(o);
  }
  return *engines[which];
}

float some_float(fuzz::Bytes& in, std::initializer_list<float> usual) {
  const size_t i = in.in_range<size_t>(0, usual.size());
  return i < usual.size() ? usual.begin()[i] : in.finite_float();
}

const std::string kStops[] = {"a", "b", "ab", " a", "\xc4", ""};

SamplingParams some_params(fuzz::Bytes& in) {
  SamplingParams p;
  p.temperature = some_float(in, {0.F, 0.7F, 1.F, 1e-30F, 1e30F});
  if (p.temperature != 0) {
    p.top_k = in.in_range(-1, 10);
    p.top_p = some_float(in, {1.F, 0.5F, 0.95F});
    p.min_p = some_float(in, {0.F, 0.1F, 1.F});
  }
  p.repetition_penalty = some_float(in, {1.F, 1.3F, 0.5F});
  p.presence_penalty = some_float(in, {0.F, 1.F, -2.F});
  p.frequency_penalty = some_float(in, {0.F, 1.F, 1e30F});
  p.seed = in.integral<uint64_t>();
  p.num_beams = in.in_range(1, 4);
  p.num_return_sequences = in.in_range(1, p.num_beams);
  if (p.num_beams > 1) {
    p.length_penalty = some_float(in, {1.F, 0.F, -1.F, 2.F});
    p.early_stopping = static_cast<EarlyStopping>(in.in_range(0, 2));
  }
  p.max_new_tokens = in.in_range(0, 40);  // (past the sink cache's context too)
  p.ignore_eos = in.boolean();
  for (int i = in.in_range(0, 2); i > 0; --i) p.eos_token_ids.push_back(in.in_range(0, 8));
  for (int i = in.in_range(0, 2); i > 0; --i) p.stop.push_back(in.pick(kStops));
  for (int i = in.in_range(0, 3); i > 0; --i) p.suppress_tokens.push_back(in.in_range(0, 9));
  for (int i = in.in_range(0, 3); i > 0; --i)
    p.logit_bias.emplace_back(in.in_range(0, 9), some_float(in, {-100.F, 5.F, 100.F}));
  p.logprobs = in.in_range(-1, 9);
  p.prompt_logprobs = in.in_range(-1, 9);
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Bytes in(data, size);
  const int which = in.in_range(0, 3);
  Engine& e = engine(which);
  if (std::getenv("NI_FUZZ_PRINT") != nullptr) std::fprintf(stderr, "engine %d\n", which);
  const int vocab = e.config().vocab_size;
  std::vector<GenerationRequest> requests(in.in_range(1, 3));
  for (GenerationRequest& r : requests) {
    for (int i = in.in_range(1, 12); i > 0; --i)
      r.prompt_ids.push_back(in.in_range(0, vocab));  // vocab: outside, refused
    r.params = some_params(in);
  }
  const int stop_after = in.in_range(0, 30);  // tokens before on_token says stop
  // Online, as the server runs (request i submitted before step joins[i]), or one generate().
  const bool online = in.boolean();
  std::vector<int> joins;
  for (size_t i = 0; online && i < requests.size(); ++i) joins.push_back(in.in_range(0, 6));
  if (std::getenv("NI_FUZZ_PRINT") != nullptr) {  // what a finding ran, to reproduce it
    for (const GenerationRequest& r : requests) {
      const SamplingParams& p = r.params;
      std::fprintf(stderr, "request: %zu prompt ids (", r.prompt_ids.size());
      for (int32_t id : r.prompt_ids) std::fprintf(stderr, " %d", id);
      std::fprintf(stderr,
                   " ) T %g top_k %d top_p %g min_p %g penalties %g %g %g beams %d/%d lp %g "
                   "max_new %d ignore_eos %d eos %zu stop %zu suppress %zu bias %zu logprobs %d "
                   "%d\n",
                   p.temperature, p.top_k, p.top_p, p.min_p, p.repetition_penalty,
                   p.presence_penalty, p.frequency_penalty, p.num_beams, p.num_return_sequences,
                   p.length_penalty, p.max_new_tokens, p.ignore_eos, p.eos_token_ids.size(),
                   p.stop.size(), p.suppress_tokens.size(), p.logit_bias.size(), p.logprobs,
                   p.prompt_logprobs);
    }
    std::fprintf(stderr, "on_token stops after %d tokens; %s\n", stop_after,
                 online ? "online" : "generate()");
  }
  int announced = 0;
  const auto on_token = [&](size_t, int32_t, const std::string&) {
    return ++announced != stop_after;
  };
  std::vector<GenerationOutput> outs;
  if (!online) {
    fuzz::refused_clearly([&] { outs = e.generate(requests, on_token); });
  } else {
    std::vector<GenerationRequest> taken;
    std::vector<size_t> ids;
    std::map<size_t, GenerationOutput> done;
    const auto on_done = [&](size_t id, GenerationOutput&& o) { done[id] = std::move(o); };
    for (int t = 0; t < 200 && (e.active() > 0 || t <= 6); ++t) {
      for (size_t i = 0; i < requests.size(); ++i)
        if (joins[i] == t &&
            fuzz::refused_clearly([&] { ids.push_back(e.submit(requests[i], on_token, on_done)); }))
          taken.push_back(requests[i]);
      e.step();
    }
    fuzz::check(e.active() == 0, "submitted requests still running after 200 steps");
    for (size_t id : ids) {
      fuzz::check(done.count(id) == 1, "a submitted request never finished");
      outs.push_back(done[id]);
    }
    requests = taken;
  }
  for (size_t i = 0; i < outs.size(); ++i) {
    const SamplingParams& p = requests[i].params;
    const GenerationOutput& o = outs[i];
    fuzz::check(
        o.finish_reason == "eos" || o.finish_reason == "length" || o.finish_reason == "stop",
        "finish_reason");
    fuzz::check(o.token_ids.size() <= static_cast<size_t>(p.max_new_tokens),
                "more than max_new_tokens");
    for (int32_t t : o.token_ids) {
      fuzz::check(t >= 0 && t < vocab, "a token outside the vocabulary");
      fuzz::check(std::find(p.suppress_tokens.begin(), p.suppress_tokens.end(), t) ==
                      p.suppress_tokens.end(),
                  "a suppressed token was generated");
    }
    if (p.num_beams > 1) {
      fuzz::check(o.sequences.size() == static_cast<size_t>(p.num_return_sequences) &&
                      o.scores.size() == o.sequences.size(),
                  "beam search returned another number of sequences");
    }
    if (p.logprobs >= 0) fuzz::check(o.logprobs.size() == o.token_ids.size(), "logprobs per token");
    if (p.prompt_logprobs >= 0)
      fuzz::check(o.prompt_logprobs.size() == requests[i].prompt_ids.size() - 1, "prompt logprobs");
  }
  return 0;
}
