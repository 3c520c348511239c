// Greedy selector: the first maximum, so ties resolve to the lowest token id like torch.argmax.
#include <algorithm>

#include "sampling/selectors.h"

namespace nanoinfer::sampling {

void select_greedy(LogitsView logits, std::span<const uint8_t> active, std::span<int32_t> out) {
  NI_ASSERT(active.size() == static_cast<size_t>(logits.rows));
  NI_ASSERT(out.size() == static_cast<size_t>(logits.rows));
  for (int r = 0; r < logits.rows; ++r) {
    if (active[r] == 0) continue;
    std::span<const float> row = logits.row(r);
    out[r] = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
  }
}

}  // namespace nanoinfer::sampling
