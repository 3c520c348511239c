// SamplingParams::validate(): every value and combination a request can get wrong, rejected
// before generation starts with a message that names the parameter.
#include "nanoinfer/sampling_params.h"

#include <cmath>
#include <string>

#include "util/error.h"

namespace nanoinfer {
namespace {

std::string num(float v) {
  std::string s = std::to_string(v);
  while (s.size() > 1 && s.back() == '0' && s[s.size() - 2] != '.') s.pop_back();
  return s;
}

void check_values(const SamplingParams& p) {
  if (!(p.temperature >= 0.0F) || !std::isfinite(p.temperature)) {
    fail("temperature must be a finite number >= 0 (0 = greedy), got " + num(p.temperature));
  }
  if (!(p.top_p > 0.0F && p.top_p <= 1.0F)) {
    fail("top_p must be in (0, 1] (1 = off), got " + num(p.top_p));
  }
  if (p.top_k < 0) fail("top_k must be >= 0 (0 = off), got " + std::to_string(p.top_k));
  if (!(p.min_p >= 0.0F && p.min_p <= 1.0F)) {
    fail("min_p must be in [0, 1] (0 = off), got " + num(p.min_p));
  }
  if (!(p.repetition_penalty > 0.0F) || !std::isfinite(p.repetition_penalty)) {
    fail("repetition_penalty must be a finite number > 0 (1 = off), got " +
         num(p.repetition_penalty));
  }
  // OpenAI's range (vLLM's too): within it no count of repeats takes a logit to -inf, which
  // could leave a row no token to pick (3e38 did: found by fuzzing).
  if (!(std::abs(p.presence_penalty) <= 2.0F)) {
    fail("presence_penalty must be in [-2, 2] (0 = off), got " + num(p.presence_penalty));
  }
  if (!(std::abs(p.frequency_penalty) <= 2.0F)) {
    fail("frequency_penalty must be in [-2, 2] (0 = off), got " + num(p.frequency_penalty));
  }
  if (p.num_beams < 1) fail("num_beams must be >= 1, got " + std::to_string(p.num_beams));
  if (p.num_return_sequences < 1) {
    fail("num_return_sequences must be >= 1, got " + std::to_string(p.num_return_sequences));
  }
  if (p.num_return_sequences > p.num_beams) {
    fail("num_return_sequences (" + std::to_string(p.num_return_sequences) +
         ") must be <= num_beams (" + std::to_string(p.num_beams) +
         "); sampling returns one sequence per request");
  }
  if (!std::isfinite(p.length_penalty)) fail("length_penalty must be a finite number");
  if (p.max_new_tokens < 1) {
    fail("max_new_tokens must be >= 1, got " + std::to_string(p.max_new_tokens));
  }
  for (const std::string& s : p.stop) {
    if (s.empty()) fail("stop strings must not be empty");
  }
  if (p.logprobs < -1 || p.logprobs > 20) {
    fail("logprobs must be in [0, 20] (the alternatives returned per token; -1 = off), got " +
         std::to_string(p.logprobs));
  }
  if (p.prompt_logprobs < -1 || p.prompt_logprobs > 20) {
    fail(
        "prompt_logprobs must be in [0, 20] (the alternatives returned per prompt token; -1 = "
        "off), got " +
        std::to_string(p.prompt_logprobs));
  }
  for (int32_t t : p.suppress_tokens) {
    if (t < 0) fail("suppress_tokens must be token ids >= 0, got " + std::to_string(t));
  }
  for (int32_t t : p.eos_token_ids) {
    if (t < 0) fail("eos_token_ids must be token ids >= 0, got " + std::to_string(t));
  }
  for (size_t i = 0; i < p.logit_bias.size(); ++i) {
    const auto [t, b] = p.logit_bias[i];
    if (t < 0) fail("logit_bias: token ids are >= 0, got " + std::to_string(t));
    for (size_t j = 0; j < i; ++j)
      if (p.logit_bias[j].first == t)
        fail("logit_bias: token " + std::to_string(t) + " is given twice");
    if (!(b >= -100.0F && b <= 100.0F))
      fail("logit_bias: a bias is in [-100, 100], got " + num(b) + " for token " +
           std::to_string(t));
  }
}

void check_combinations(const SamplingParams& p) {
  const bool filters = p.top_k != 0 || p.top_p != 1.0F || p.min_p != 0.0F;
  if (p.num_beams > 1) {
    if (p.temperature != 0.0F || filters) {
      fail(
          "beam search (num_beams > 1) is deterministic: temperature, top_k, top_p and min_p "
          "must be left off");
    }
    if (p.repetition_penalty != 1.0F || p.presence_penalty != 0.0F || p.frequency_penalty != 0.0F) {
      fail(
          "beam search (num_beams > 1) does not support repetition, presence or frequency "
          "penalties");
    }
    if (!p.stop.empty()) {
      fail(
          "beam search (num_beams > 1) ends hypotheses at EOS or max_new_tokens only: stop "
          "strings are not supported");
    }
    if (p.logprobs >= 0 || p.prompt_logprobs >= 0)
      fail("beam search (num_beams > 1) returns no logprobs (scores instead)");
    if (!p.logit_bias.empty()) fail("beam search (num_beams > 1) does not support logit_bias");
    return;
  }
  if (!p.samples() && filters) {
    fail(
        "top_k, top_p and min_p need sampling (temperature >= 1e-5); below that, 0 included, "
        "is greedy");
  }
  if (p.length_penalty != 1.0F || p.early_stopping != EarlyStopping::kHeuristic) {
    fail("length_penalty and early_stopping apply to beam search only (num_beams > 1)");
  }
}

}  // namespace

void SamplingParams::validate() const {
  check_values(*this);
  check_combinations(*this);
}

}  // namespace nanoinfer
