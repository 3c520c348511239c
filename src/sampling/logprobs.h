// A generated token's log-probability under the model, from its row of raw logits (before any
// processor edits them): log_softmax(row)[token], and the n most likely tokens with theirs.
#pragma once

#include <cstdint>
#include <span>

#include "nanoinfer/engine.h"

namespace nanoinfer::sampling {

TokenLogprobs token_logprobs(std::span<const float> row, int32_t token, int n);

}  // namespace nanoinfer::sampling
