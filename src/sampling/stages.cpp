// The processor and selector lists, in order, with the adapters from SamplingParams to the
// per-row arrays of each batch operation.
#include "sampling/stages.h"

#include <string>
#include <vector>

#include "util/error.h"

#include "sampling/selectors.h"

namespace nanoinfer::sampling {
namespace {

template <typename T, typename F>
std::vector<T> per_row(std::span<const RowInput> rows, F value) {
  std::vector<T> out;
  out.reserve(rows.size());
  for (const RowInput& row : rows) out.push_back(value(*row.params));
  return out;
}

bool sampling(const SamplingParams& p) {
  return p.samples();
}

void run_repetition(LogitsView logits, std::span<const RowInput> rows) {
  const auto penalty =
      per_row<float>(rows, [](const SamplingParams& p) { return p.repetition_penalty; });
  std::vector<std::vector<int32_t>> joined(rows.size());
  std::vector<TokenSpan> history(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    if (penalty[r] == 1.0F) continue;
    joined[r].assign(rows[r].prompt.begin(), rows[r].prompt.end());
    joined[r].insert(joined[r].end(), rows[r].generated.begin(), rows[r].generated.end());
    history[r] = joined[r];
  }
  apply_repetition_penalty(logits, penalty, history);
}

void run_presence_frequency(LogitsView logits, std::span<const RowInput> rows) {
  const auto presence =
      per_row<float>(rows, [](const SamplingParams& p) { return p.presence_penalty; });
  const auto frequency =
      per_row<float>(rows, [](const SamplingParams& p) { return p.frequency_penalty; });
  std::vector<TokenSpan> generated;
  generated.reserve(rows.size());
  for (const RowInput& row : rows) generated.push_back(row.generated);
  apply_presence_frequency(logits, presence, frequency, generated);
}

void run_suppress(LogitsView logits, std::span<const RowInput> rows) {
  std::vector<TokenSpan> banned;
  banned.reserve(rows.size());
  for (const RowInput& row : rows) {
    check_token_ids(*row.params, logits.vocab);
    banned.emplace_back(row.params->suppress_tokens);
  }
  apply_mask(logits, banned);
}

void run_logit_bias(LogitsView logits, std::span<const RowInput> rows) {
  std::vector<BiasSpan> bias;
  bias.reserve(rows.size());
  for (const RowInput& row : rows) {
    check_token_ids(*row.params, logits.vocab);
    bias.emplace_back(row.params->logit_bias);
  }
  apply_logit_bias(logits, bias);
}

void run_temperature(LogitsView logits, std::span<const RowInput> rows) {
  apply_temperature(logits, per_row<float>(rows, [](const SamplingParams& p) {
                      return sampling(p) ? p.temperature : 1.0F;
                    }));
}

void run_top_k(LogitsView logits, std::span<const RowInput> rows) {
  apply_top_k(logits, per_row<int32_t>(
                          rows, [](const SamplingParams& p) { return sampling(p) ? p.top_k : 0; }));
}

void run_top_p(LogitsView logits, std::span<const RowInput> rows) {
  apply_top_p(logits, per_row<float>(rows, [](const SamplingParams& p) {
                return sampling(p) ? p.top_p : 1.0F;
              }));
}

void run_min_p(LogitsView logits, std::span<const RowInput> rows) {
  apply_min_p(logits, per_row<float>(rows, [](const SamplingParams& p) {
                return sampling(p) ? p.min_p : 0.0F;
              }));
}

void run_greedy(LogitsView logits, std::span<const RowInput>, std::span<const uint8_t> active,
                std::span<int32_t> out) {
  select_greedy(logits, active, out);
}

void run_multinomial(LogitsView logits, std::span<const RowInput> rows,
                     std::span<const uint8_t> active, std::span<int32_t> out) {
  const auto seed = per_row<uint64_t>(rows, [](const SamplingParams& p) {
    return p.seed.value_or(0);  // (the engine seeds every sampled request)
  });
  std::vector<uint64_t> counter;
  counter.reserve(rows.size());
  // The draw index is the sequence's own step, so it needs no state outside the request.
  for (const RowInput& row : rows) counter.push_back(row.generated.size());
  select_multinomial(logits, active, seed, counter, out);
}

constexpr ProcessorStage kProcessors[] = {
    {"repetition_penalty", [](const SamplingParams& p) { return p.repetition_penalty != 1.0F; },
     run_repetition},
    {"presence_frequency_penalty",
     [](const SamplingParams& p) {
       return p.presence_penalty != 0.0F || p.frequency_penalty != 0.0F;
     },
     run_presence_frequency},
    {"suppress_tokens", [](const SamplingParams& p) { return !p.suppress_tokens.empty(); },
     run_suppress},
    {"logit_bias", [](const SamplingParams& p) { return !p.logit_bias.empty(); }, run_logit_bias},
    {"temperature", [](const SamplingParams& p) { return sampling(p) && p.temperature != 1.0F; },
     run_temperature},
    {"top_k", [](const SamplingParams& p) { return sampling(p) && p.top_k > 0; }, run_top_k},
    {"top_p", [](const SamplingParams& p) { return sampling(p) && p.top_p < 1.0F; }, run_top_p},
    {"min_p", [](const SamplingParams& p) { return sampling(p) && p.min_p > 0.0F; }, run_min_p},
};

constexpr SelectorStage kSelectors[] = {
    {"greedy", [](const SamplingParams& p) { return !sampling(p); }, run_greedy},
    {"multinomial", sampling, run_multinomial},
};

}  // namespace

void check_token_ids(const SamplingParams& params, int32_t vocab) {
  auto check = [vocab](const char* field, int32_t t) {
    if (t >= vocab)
      fail(std::string(field) + ": id " + std::to_string(t) + " is outside the vocabulary of " +
           std::to_string(vocab));
  };
  for (int32_t t : params.suppress_tokens) check("suppress_tokens", t);
  for (const auto& [t, b] : params.logit_bias) check("logit_bias", t);
}

std::span<const ProcessorStage> processor_stages() {
  return kProcessors;
}
std::span<const SelectorStage> selector_stages() {
  return kSelectors;
}

}  // namespace nanoinfer::sampling
