// Selectors: turn one row of processed logits into a token. Batch operations over [rows, vocab]
// with per-row inputs, like the processors; `active[r] == 0` skips row r (rows of one batch may
// use different selectors).
#pragma once

#include <cstdint>
#include <span>

#include "sampling/logits_view.h"

namespace nanoinfer::sampling {

// Argmax; among equal maxima the lowest id wins (as torch.argmax).
void select_greedy(LogitsView logits, std::span<const uint8_t> active, std::span<int32_t> out);

// Draws from softmax(row) with the counter-based generator: draw number counter[r] of the stream
// seed[r]. -inf logits have probability 0.
void select_multinomial(LogitsView logits, std::span<const uint8_t> active,
                        std::span<const uint64_t> seed, std::span<const uint64_t> counter,
                        std::span<int32_t> out);

}  // namespace nanoinfer::sampling
