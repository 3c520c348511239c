// Masking: banned tokens get -inf, which every later processor and selector treats as removed.
#include <limits>

#include "sampling/processors.h"

namespace nanoinfer::sampling {

void apply_mask(LogitsView logits, std::span<const TokenSpan> banned) {
  NI_ASSERT(banned.size() == static_cast<size_t>(logits.rows));
  for (int r = 0; r < logits.rows; ++r) {
    std::span<float> row = logits.row(r);
    for (int32_t t : banned[r]) {
      NI_ASSERT(t >= 0 && t < logits.vocab);
      row[t] = -std::numeric_limits<float>::infinity();
    }
  }
}

}  // namespace nanoinfer::sampling
