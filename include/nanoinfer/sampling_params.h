// Per-request sampling parameters. validate() rejects values and combinations that make no sense
// before generation starts, with one clear message.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace nanoinfer {

// When beam search may stop, with HF's three settings of `early_stopping`.
enum class EarlyStopping {
  kHeuristic,  // HF False: stop once the best running beam, scored at its current length, cannot
               // beat the worst kept hypothesis
  kWhenFull,   // HF True: stop as soon as num_beams hypotheses are finished
  kNever,      // HF "never": like kHeuristic, but with a positive length_penalty the running beam
               // is scored at max_new_tokens (the canonical beam search bound)
};

// Temperatures below this pick the most likely token, as 0 does (vLLM draws the line at the same
// value): logits divided by less overflow floats or differ by more than the filters resolve.
inline constexpr float kMinSamplingTemperature = 1e-5F;

struct SamplingParams {
  float temperature = 0.0F;  // 0 (or below kMinSamplingTemperature) = greedy
  int top_k = 0;             // 0 = off
  float top_p = 1.0F;        // 1 = off
  float min_p = 0.0F;        // 0 = off
  float repetition_penalty = 1.0F;
  float presence_penalty = 0.0F;
  float frequency_penalty = 0.0F;
  // The same seed, the same tokens. Unset, a sampled request draws its own when it is queued
  // (generate, submit), so calls sample afresh and equal prompts of one batch sample apart;
  // GenerationOutput::seed gives the one drawn, to sample the same tokens again.
  std::optional<uint64_t> seed;
  int num_beams = 1;
  float length_penalty = 1.0F;
  EarlyStopping early_stopping = EarlyStopping::kHeuristic;
  int num_return_sequences = 1;
  int max_new_tokens = 128;
  bool ignore_eos = false;
  std::vector<int32_t> eos_token_ids;  // empty: the model's (generation_config.json)
  std::vector<std::string> stop;
  std::vector<int32_t> suppress_tokens;  // never generated (HF suppress_tokens)
  // (token, b): b in [-100, 100] added to the token's logit before temperature and the filters
  // (OpenAI's logit_bias: -100 all but bans it, 100 all but forces it), each token once. Not
  // with beam search.
  std::vector<std::pair<int32_t, float>> logit_bias;
  // >= 0: return each generated token's log-probability under the model (the log-softmax of its
  // logits as the model gives them, before penalties, temperature or filters) and that of the
  // `logprobs` most likely tokens (at most 20); -1: off. Not with beam search. Such a request's
  // row of logits is copied to the host every step it runs.
  int logprobs = -1;
  // >= 0: also each prompt token's log-probability given the tokens before it (all but the
  // first), with the `prompt_logprobs` most likely tokens at its position (at most 20); -1: off.
  // Scoring a text (perplexity, OpenAI's echo): the prompt is computed whole, never taken from
  // the cache (prefix reuse); the scored prompts of a step take 2,048 tokens at most together,
  // each token's row of logits summarised (on the GPU) or copied to the host. Not with beam
  // search.
  int prompt_logprobs = -1;

  void validate() const;
  // A row drawn from its distribution (temperature and filters on); else its most likely token.
  bool samples() const { return temperature >= kMinSamplingTemperature; }
};

}  // namespace nanoinfer
