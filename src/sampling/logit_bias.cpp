// Logit bias: fixed amounts added to chosen tokens' logits (OpenAI's logit_bias).
#include "sampling/processors.h"

namespace nanoinfer::sampling {

void apply_logit_bias(LogitsView logits, std::span<const BiasSpan> bias) {
  NI_ASSERT(bias.size() == static_cast<size_t>(logits.rows));
  for (int r = 0; r < logits.rows; ++r) {
    std::span<float> row = logits.row(r);
    for (const auto& [t, b] : bias[r]) {
      NI_ASSERT(t >= 0 && t < logits.vocab);
      row[t] += b;
    }
  }
}

}  // namespace nanoinfer::sampling
