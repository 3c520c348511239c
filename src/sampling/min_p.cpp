// Min-p: prob_i >= min_p * prob_max is l_i - l_max >= log(min_p), so neither a softmax nor an exp
// per token is needed.
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
    const float floor = max + std::log(min_p[r]);
    for (float& x : row) {
      if (x < floor) x = -std::numeric_limits<float>::infinity();
    }
  }
}

}  // namespace nanoinfer::sampling
