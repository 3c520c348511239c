// Sampling benchmark (not a test): time per call of each logits processor, each selector, the
// whole Sampler and one beam-search step, on [batch, 128256] host logits for batch 1/32/256, and
// the memory beam state holds. Logits are normal(0, 4): the nucleus at top-p 0.9 is a few hundred
// tokens, as with real models (flat logits would make top-p sort the whole vocabulary).
//
// Usage: bench_sampling [vocab]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "bench_args.h"
#include "sampling/beam_search.h"
#include "sampling/processors.h"
#include "sampling/sampler.h"
#include "sampling/selectors.h"

namespace ns = nanoinfer::sampling;
using nanoinfer::SamplingParams;

namespace {

constexpr double kMinSeconds = 0.3;

// Mean time of `op` over enough calls to fill kMinSeconds; `reset` runs untimed before each.
double time_ms(const std::function<void()>& reset, const std::function<void()>& op) {
  double total = 0.0;
  int calls = 0;
  while (total < kMinSeconds * 1000.0 || calls < 3) {
    reset();
    const auto t0 = std::chrono::steady_clock::now();
    op();
    const auto t1 = std::chrono::steady_clock::now();
    total += std::chrono::duration<double, std::milli>(t1 - t0).count();
    ++calls;
  }
  return total / calls;
}

struct Row {
  SamplingParams params;
  std::vector<int32_t> prompt;
  std::vector<int32_t> generated;
};

void bench_batch(int batch, int vocab, const std::vector<float>& source) {
  std::vector<float> logits(static_cast<size_t>(batch) * vocab);
  const auto reset = [&] { std::memcpy(logits.data(), source.data(), logits.size() * 4); };
  const ns::LogitsView view(logits, batch, vocab);

  std::mt19937 gen(7);
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  std::vector<Row> rows(static_cast<size_t>(batch));
  for (Row& r : rows) {
    for (int i = 0; i < 512; ++i) r.prompt.push_back(token(gen));
    for (int i = 0; i < 256; ++i) r.generated.push_back(token(gen));
    r.params.temperature = 0.7F;
    r.params.top_k = 50;
    r.params.top_p = 0.9F;
    r.params.min_p = 0.05F;
    r.params.repetition_penalty = 1.1F;
    r.params.presence_penalty = 0.5F;
    r.params.frequency_penalty = 0.25F;
  }
  std::vector<ns::RowInput> inputs;
  std::vector<std::vector<int32_t>> history(rows.size());
  std::vector<ns::TokenSpan> history_spans;
  std::vector<ns::TokenSpan> generated_spans;
  for (size_t i = 0; i < rows.size(); ++i) {
    inputs.push_back({&rows[i].params, rows[i].prompt, rows[i].generated});
    history[i] = rows[i].prompt;
    history[i].insert(history[i].end(), rows[i].generated.begin(), rows[i].generated.end());
    history_spans.emplace_back(history[i]);
    generated_spans.emplace_back(rows[i].generated);
  }
  const auto per_row = [batch](auto v) { return std::vector<decltype(v)>(batch, v); };
  const std::vector<uint8_t> active(batch, 1);
  std::vector<int32_t> out(batch);

  const auto report = [batch](const char* name, double ms) {
    std::printf("%-34s batch %3d  %10.3f ms/call  %8.3f us/row\n", name, batch, ms,
                1000.0 * ms / batch);
  };
  report("temperature", time_ms(reset, [&] { ns::apply_temperature(view, per_row(0.7F)); }));
  report("repetition_penalty (768 ids)",
         time_ms(reset, [&] { ns::apply_repetition_penalty(view, per_row(1.1F), history_spans); }));
  report("presence+frequency (256 ids)", time_ms(reset, [&] {
           ns::apply_presence_frequency(view, per_row(0.5F), per_row(0.25F), generated_spans);
         }));
  report("top_k 50", time_ms(reset, [&] { ns::apply_top_k(view, per_row(int32_t{50})); }));
  report("top_p 0.9", time_ms(reset, [&] { ns::apply_top_p(view, per_row(0.9F)); }));
  report("min_p 0.05", time_ms(reset, [&] { ns::apply_min_p(view, per_row(0.05F)); }));
  report("greedy (argmax)", time_ms(reset, [&] { ns::select_greedy(view, active, out); }));
  const std::vector<uint64_t> seeds(batch, 1);
  const std::vector<uint64_t> counters(batch, 3);
  report("multinomial",
         time_ms(reset, [&] { ns::select_multinomial(view, active, seeds, counters, out); }));
  report("Sampler: all of the above + draw",
         time_ms(reset, [&] { ns::Sampler().sample(view, inputs); }));

  // One beam-search request with num_beams = batch, steady state after 16 steps.
  SamplingParams beam;
  beam.num_beams = batch;
  beam.max_new_tokens = 1 << 20;
  const std::span<const float> beam_logits = std::span(source).first(logits.size());
  // EOS = the least likely token, so no beam finishes and every step does full work.
  const auto eos = static_cast<int32_t>(std::min_element(source.begin(), source.begin() + vocab) -
                                        source.begin());
  ns::BeamSearch search(beam, {eos});
  for (int s = 0; s < 16; ++s) search.step(beam_logits, vocab);
  report("beam search step", time_ms([] {}, [&] { search.step(beam_logits, vocab); }));
  std::printf("%-34s beams %3d  %10.1f KiB after %zu generated tokens per beam\n",
              "beam state held", batch, search.state_bytes() / 1024.0, search.running()[0].size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2) {
    std::fprintf(stderr, "usage: bench_sampling [vocab]\n");
    return 2;
  }
  const int vocab = argc > 1 ? nanoinfer::bench::whole_number("vocab", argv[1], 2) : 128256;
  std::vector<float> source(static_cast<size_t>(256) * vocab);
  std::mt19937 gen(1234);
  std::normal_distribution<float> normal(0.0F, 4.0F);
  for (float& x : source) x = normal(gen);
  std::printf("vocab %d, host logits normal(0, 4), one thread\n", vocab);
  for (int batch : {1, 32, 256}) bench_batch(batch, vocab, source);
  return 0;
}
