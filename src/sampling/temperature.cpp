// Temperature: divide (not multiply by 1/t) so the values match HF bit for bit.
#include "sampling/processors.h"

namespace nanoinfer::sampling {

void apply_temperature(LogitsView logits, std::span<const float> temperature) {
  NI_ASSERT(temperature.size() == static_cast<size_t>(logits.rows));
  for (int r = 0; r < logits.rows; ++r) {
    const float t = temperature[r];
    if (t == 1.0F) continue;
    NI_ASSERT(t > 0.0F);
    for (float& x : logits.row(r)) x /= t;
  }
}

}  // namespace nanoinfer::sampling
