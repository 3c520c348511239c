// Logits processors as batch operations: each takes the whole [rows, vocab] logits buffer and one
// parameter per row, and rewrites the logits in place. A row whose parameter is the neutral value
// (temperature 1, penalty 1 / 0, top_k 0, top_p 1, min_p 0) is left untouched, so rows with
// different settings share one call. Semantics follow HF transformers' processors; removed tokens
// become -inf.
#pragma once

#include <cstdint>
#include <span>
#include <utility>

#include "sampling/logits_view.h"

namespace nanoinfer::sampling {

using TokenSpan = std::span<const int32_t>;
using BiasSpan = std::span<const std::pair<int32_t, float>>;

// logit / t (HF TemperatureLogitsWarper).
void apply_temperature(LogitsView logits, std::span<const float> temperature);

// For each distinct token in history[r]: logit < 0 ? logit * p : logit / p
// (HF RepetitionPenaltyLogitsProcessor; history = prompt + generated).
void apply_repetition_penalty(LogitsView logits, std::span<const float> penalty,
                              std::span<const TokenSpan> history);

// logit -= presence * [count > 0] + frequency * count, count over generated[r] (OpenAI).
void apply_presence_frequency(LogitsView logits, std::span<const float> presence,
                              std::span<const float> frequency,
                              std::span<const TokenSpan> generated);

// Keeps every token whose logit >= the k-th largest logit, ties included (HF TopKLogitsWarper).
void apply_top_k(LogitsView logits, std::span<const int32_t> top_k);

// Keeps the smallest head of the distribution whose mass reaches p (HF TopPLogitsWarper with
// min_tokens_to_keep 1). Equal logits are ordered as a stable ascending sort orders them: at the
// boundary the token with the higher id is kept first.
void apply_top_p(LogitsView logits, std::span<const float> top_p);

// Keeps tokens with prob >= min_p * max prob (HF MinPLogitsWarper).
void apply_min_p(LogitsView logits, std::span<const float> min_p);

// Sets the listed tokens of each row to -inf (banned ids, grammar masks).
void apply_mask(LogitsView logits, std::span<const TokenSpan> banned);

// logit[t] += b for each (t, b) of bias[r] (OpenAI's logit_bias).
void apply_logit_bias(LogitsView logits, std::span<const BiasSpan> bias);

}  // namespace nanoinfer::sampling
