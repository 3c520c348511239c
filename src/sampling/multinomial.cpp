// Multinomial selector: inverse-CDF sampling of softmax(row) with a per-request counter-based
// draw. Weights are computed once into scratch; the CDF is accumulated in double so a 128k
// vocabulary does not lose small tail tokens.
#include <algorithm>
#include <cmath>
#include <vector>

#include "sampling/counter_rng.h"
#include "sampling/selectors.h"

namespace nanoinfer::sampling {

void select_multinomial(LogitsView logits, std::span<const uint8_t> active,
                        std::span<const uint64_t> seed, std::span<const uint64_t> counter,
                        std::span<int32_t> out) {
  NI_ASSERT(active.size() == static_cast<size_t>(logits.rows));
  NI_ASSERT(seed.size() == active.size() && counter.size() == active.size());
  NI_ASSERT(out.size() == active.size());
  std::vector<float> weight(static_cast<size_t>(logits.vocab));
  for (int r = 0; r < logits.rows; ++r) {
    if (active[r] == 0) continue;
    std::span<const float> row = logits.row(r);
    const auto argmax = std::max_element(row.begin(), row.end());
    const float max = *argmax;
    double total = 0.0;
    for (size_t i = 0; i < row.size(); ++i) total += weight[i] = std::exp(row[i] - max);
    const double target = uniform(seed[r], counter[r]) * total;
    // Falls back to the argmax if rounding leaves the target just above the accumulated sum.
    int32_t pick = static_cast<int32_t>(argmax - row.begin());
    double cdf = 0.0;
    for (size_t i = 0; i < row.size(); ++i) {
      cdf += weight[i];
      if (weight[i] > 0.0F && target < cdf) {
        pick = static_cast<int32_t>(i);
        break;
      }
    }
    out[r] = pick;
  }
}

}  // namespace nanoinfer::sampling
