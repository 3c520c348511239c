// Penalties that depend on the tokens a sequence has already seen: HF's multiplicative repetition
// penalty (prompt + generated, each distinct token once) and OpenAI's additive presence and
// frequency penalties (generated tokens only, frequency scaled by the count).
#include <algorithm>
#include <limits>
#include <vector>

#include "sampling/processors.h"

namespace nanoinfer::sampling {
namespace {
constexpr float kLowestLogit = std::numeric_limits<float>::lowest();
}  // namespace

void apply_repetition_penalty(LogitsView logits, std::span<const float> penalty,
                              std::span<const TokenSpan> history) {
  NI_ASSERT(penalty.size() == static_cast<size_t>(logits.rows));
  NI_ASSERT(history.size() == static_cast<size_t>(logits.rows));
  std::vector<uint8_t> seen;
  for (int r = 0; r < logits.rows; ++r) {
    const float p = penalty[r];
    if (p == 1.0F) continue;
    std::span<float> row = logits.row(r);
    seen.assign(row.size(), 0);
    for (int32_t t : history[r]) {
      NI_ASSERT(t >= 0 && t < logits.vocab);
      if (seen[t] != 0) continue;
      seen[t] = 1;
      // Kept finite: a penalty penalises, it never takes a token out (1e38 x a logit of -5 was
      // -inf, and a row could be left without a token to pick).
      row[t] = std::max(row[t] < 0.0F ? row[t] * p : row[t] / p, kLowestLogit);
    }
  }
}

void apply_presence_frequency(LogitsView logits, std::span<const float> presence,
                              std::span<const float> frequency,
                              std::span<const TokenSpan> generated) {
  NI_ASSERT(presence.size() == static_cast<size_t>(logits.rows));
  NI_ASSERT(frequency.size() == static_cast<size_t>(logits.rows));
  NI_ASSERT(generated.size() == static_cast<size_t>(logits.rows));
  std::vector<int32_t> ids;
  for (int r = 0; r < logits.rows; ++r) {
    if (presence[r] == 0.0F && frequency[r] == 0.0F) continue;
    ids.assign(generated[r].begin(), generated[r].end());
    std::sort(ids.begin(), ids.end());
    std::span<float> row = logits.row(r);
    for (size_t i = 0; i < ids.size();) {
      size_t j = i;
      while (j < ids.size() && ids[j] == ids[i]) ++j;
      NI_ASSERT(ids[i] >= 0 && ids[i] < logits.vocab);
      row[ids[i]] -= presence[r] + frequency[r] * static_cast<float>(j - i);
      i = j;
    }
  }
}

}  // namespace nanoinfer::sampling
