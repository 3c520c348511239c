// Min-p: prob_i >= min_p * prob_max is exp(l_i - l_max) >= min_p, so no softmax is needed.
#include <algorithm>
#include <cmath>
#include <limits>

#include "sampling/processors.h"

namespace nanoinfer::sampling {

void apply_min_p(LogitsView logits, std::span<const float> min_p) {
  NI_ASSERT(min_p.size() == static_cast<size_t>(logits.rows));
  for (int r = 0; r < logits.rows; ++r) {
    if (min_p[r] <= 0.0F) continue;
    std::span<float> row = logits.row(r);
    const float max = *std::max_element(row.begin(), row.end());
    for (float& x : row) {
      if (std::exp(x - max) < min_p[r]) x = -std::numeric_limits<float>::infinity();
    }
  }
}

}  // namespace nanoinfer::sampling
