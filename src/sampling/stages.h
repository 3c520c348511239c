// The ordered lists the Sampler runs: logits-processor stages, then selector stages. A stage
// turns each row's SamplingParams into per-row parameter arrays and calls one batch operation
// (processors.h / selectors.h). Adding a method means adding its batch op and one entry to a
// list; no other stage changes.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "nanoinfer/sampling_params.h"
#include "sampling/processors.h"

namespace nanoinfer::sampling {

// What the sampler knows about the sequence behind one row of logits.
struct RowInput {
  const SamplingParams* params = nullptr;
  TokenSpan prompt;
  TokenSpan generated;
};

struct ProcessorStage {
  std::string_view name;
  bool (*enabled)(const SamplingParams& params);
  // Applies the stage to every row; rows where it is not enabled get the neutral parameter.
  void (*run)(LogitsView logits, std::span<const RowInput> rows);
};

struct SelectorStage {
  std::string_view name;
  bool (*handles)(const SamplingParams& params);
  // Writes out[r] for each row with active[r] != 0.
  void (*run)(LogitsView logits, std::span<const RowInput> rows, std::span<const uint8_t> active,
              std::span<int32_t> out);
};

// HF generate() order: repetition penalty (then our presence/frequency penalties), suppressed
// tokens (then OpenAI's logit bias), temperature, top-k, top-p, min-p.
std::span<const ProcessorStage> processor_stages();
// The first stage that handles a row selects its token.
std::span<const SelectorStage> selector_stages();
// Fails (with the id) when a suppressed or biased token is outside the vocabulary.
void check_token_ids(const SamplingParams& params, int32_t vocab);

}  // namespace nanoinfer::sampling
