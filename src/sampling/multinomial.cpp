// Multinomial selector: inverse-CDF sampling of softmax(row) with a per-request counter-based
// draw. The CDF is accumulated in double so a 128k vocabulary does not lose small tail tokens.
#include <algorithm>
#include <cmath>

#include "sampling/counter_rng.h"
#include "sampling/selectors.h"

namespace nanoinfer::sampling {

void select_multinomial(LogitsView logits, std::span<const uint8_t> active,
                        std::span<const uint64_t> seed, std::span<const uint64_t> counter,
                        std::span<int32_t> out) {
  NI_ASSERT(active.size() == static_cast<size_t>(logits.rows));
  NI_ASSERT(seed.size() == active.size() && counter.size() == active.size());
  NI_ASSERT(out.size() == active.size());
  for (int r = 0; r < logits.rows; ++r) {
    if (active[r] == 0) continue;
    std::span<const float> row = logits.row(r);
    const auto argmax = std::max_element(row.begin(), row.end());
    const float max = *argmax;
    double total = 0.0;
    for (float x : row) total += std::exp(static_cast<double>(x - max));
    const double target = uniform(seed[r], counter[r]) * total;
    // Falls back to the argmax if rounding leaves the target just above the accumulated sum.
    int32_t pick = static_cast<int32_t>(argmax - row.begin());
    double cdf = 0.0;
    for (size_t i = 0; i < row.size(); ++i) {
      const double w = std::exp(static_cast<double>(row[i] - max));
      cdf += w;
      if (w > 0.0 && target < cdf) {
        pick = static_cast<int32_t>(i);
        break;
      }
    }
    out[r] = pick;
  }
}

}  // namespace nanoinfer::sampling
