// A row's pick and edits for the backend, with the host processors' arithmetic (penalties.cpp,
// mask.cpp): the device applies an edit's steps in the host stages' order, so the logits it picks
// from are the host's bit for bit.
#include "sampling/backend_pick.h"

#include <algorithm>
#include <iterator>
#include <string_view>

#include "util/error.h"

namespace nanoinfer::sampling {
namespace {

// The stages a backend applies: the history processors as edits, then the filters of its pick.
constexpr std::string_view kBackendStages[] = {"repetition_penalty",
                                               "presence_frequency_penalty",
                                               "suppress_tokens",
                                               "logit_bias",
                                               "temperature",
                                               "top_k",
                                               "top_p",
                                               "min_p"};

bool backend_applies(std::string_view stage) {
  return std::find(std::begin(kBackendStages), std::end(kBackendStages), stage) !=
         std::end(kBackendStages);
}

// Every (token, mark) as the key token * 4 + mark, sorted so that a token's marks are adjacent:
// 0, in the repetition penalty's history (prompt + generated: once is enough); 1, one generated
// occurrence, counted by the presence and frequency penalties; 2, suppressed; 3, biased.
void append_edits(const RowInput& row, int32_t r, int32_t vocab, std::vector<LogitEdit>& edits) {
  const SamplingParams& p = *row.params;
  std::vector<int64_t> keys;
  auto mark = [&keys, vocab](TokenSpan tokens, int what) {
    for (const int32_t t : tokens) {
      NI_ASSERT(t >= 0 && t < vocab);
      keys.push_back(int64_t{t} * 4 + what);
    }
  };
  if (p.repetition_penalty != 1.0F) {
    mark(row.prompt, 0);
    mark(row.generated, 0);
  }
  if (p.presence_penalty != 0.0F || p.frequency_penalty != 0.0F) mark(row.generated, 1);
  mark(p.suppress_tokens, 2);
  for (const auto& [t, b] : p.logit_bias) {
    NI_ASSERT(t >= 0 && t < vocab);
    keys.push_back(int64_t{t} * 4 + 3);
  }
  std::sort(keys.begin(), keys.end());
  for (size_t i = 0; i < keys.size();) {
    LogitEdit e;
    e.row = r;
    e.token = static_cast<int32_t>(keys[i] / 4);
    int count = 0;
    for (; i < keys.size() && keys[i] / 4 == e.token; ++i) {
      const int64_t what = keys[i] % 4;
      if (what == 0) e.penalty = p.repetition_penalty;
      if (what == 1) ++count;
      if (what == 2) e.suppress = 1;
      if (what == 3)  // one bias a token (validated)
        e.add = std::find_if(p.logit_bias.begin(), p.logit_bias.end(), [&e](const auto& tb) {
                  return tb.first == e.token;
                })->second;
    }
    // apply_presence_frequency's amount, the same float expression.
    if (count > 0)
      e.subtract = p.presence_penalty + p.frequency_penalty * static_cast<float>(count);
    edits.push_back(e);
  }
}

}  // namespace

std::optional<RowPick> backend_pick(const RowInput& row, int32_t r, int32_t vocab,
                                    std::vector<LogitEdit>& edits) {
  const SamplingParams& p = *row.params;
  if (p.num_beams != 1) return std::nullopt;
  for (const ProcessorStage& s : processor_stages())
    if (s.enabled(p) && !backend_applies(s.name)) return std::nullopt;
  check_token_ids(p, vocab);
  append_edits(row, r, vocab, edits);
  if (!p.samples()) return RowPick{};  // greedy: the filters are off
  // (the engine seeds every sampled request; a sampler driven alone reads no seed as 0)
  const uint64_t seed = p.seed.value_or(0);
  return RowPick{p.temperature, p.top_k, p.top_p, p.min_p, seed, row.generated.size()};
}

}  // namespace nanoinfer::sampling
