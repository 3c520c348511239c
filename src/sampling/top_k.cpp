// Top-k: a selection (nth_element), not a sort; every token tied with the k-th value survives.
#include <algorithm>
#include <functional>
#include <limits>
#include <vector>

#include "sampling/processors.h"

namespace nanoinfer::sampling {

void apply_top_k(LogitsView logits, std::span<const int32_t> top_k) {
  NI_ASSERT(top_k.size() == static_cast<size_t>(logits.rows));
  std::vector<float> scratch;
  for (int r = 0; r < logits.rows; ++r) {
    const int k = top_k[r];
    if (k <= 0 || k >= logits.vocab) continue;
    std::span<float> row = logits.row(r);
    scratch.assign(row.begin(), row.end());
    std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(),
                     std::greater<float>());
    const float kth = scratch[k - 1];
    for (float& x : row) {
      if (x < kth) x = -std::numeric_limits<float>::infinity();
    }
  }
}

}  // namespace nanoinfer::sampling
