// Top-k: the k-th largest value comes from a min-heap of the k best seen so far (most tokens are
// rejected by one comparison); every token tied with it survives.
#include <algorithm>
#include <functional>
#include <limits>
#include <vector>

#include "sampling/processors.h"

namespace nanoinfer::sampling {

void apply_top_k(LogitsView logits, std::span<const int32_t> top_k) {
  NI_ASSERT(top_k.size() == static_cast<size_t>(logits.rows));
  std::vector<float> heap;
  for (int r = 0; r < logits.rows; ++r) {
    const int k = top_k[r];
    if (k <= 0 || k >= logits.vocab) continue;
    std::span<float> row = logits.row(r);
    heap.assign(row.begin(), row.begin() + k);
    std::make_heap(heap.begin(), heap.end(), std::greater<float>());
    for (size_t i = static_cast<size_t>(k); i < row.size(); ++i) {
      if (!(row[i] > heap.front())) continue;
      std::pop_heap(heap.begin(), heap.end(), std::greater<float>());
      heap.back() = row[i];
      std::push_heap(heap.begin(), heap.end(), std::greater<float>());
    }
    const float kth = heap.front();
    for (float& x : row) {
      if (x < kth) x = -std::numeric_limits<float>::infinity();
    }
  }
}

}  // namespace nanoinfer::sampling
