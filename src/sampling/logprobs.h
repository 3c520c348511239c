// A generated token's log-probability under the model, from its row of raw logits (before any
// processor edits them): log_softmax(row)[token], and the n most likely tokens with theirs.
#pragma once

#include <cstdint>
#include <span>

#include "nanoinfer/engine.h"
#include "sampling/beam_search.h"

namespace nanoinfer::sampling {

TokenLogprobs token_logprobs(std::span<const float> row, int32_t token, int n);
// The same from the row's summary (at least n best tokens) and the token's logit.
TokenLogprobs token_logprobs(const BeamRow& summary, float token_logit, int n);

}  // namespace nanoinfer::sampling
