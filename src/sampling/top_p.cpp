// Top-p (nucleus), HF semantics restated from the top: walk tokens from the most likely down and
// keep a token while the mass of the tokens before it is < p. HF removes ascending cumulative
// sums <= 1 - p, which is the same set; its ties come from an ascending sort, so among equal
// logits the higher id comes first here. Only the head is sorted when it already holds mass p.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "sampling/processors.h"

namespace nanoinfer::sampling {
namespace {

// Sorting only this many tokens first covers almost every real distribution at p <= 0.95.
constexpr int kHeadGuess = 1024;

// Number of leading tokens of `order` (already sorted) that top-p keeps, or -1 if the sorted part
// ends before mass p is reached.
int kept_prefix(std::span<const float> row, std::span<const int32_t> order, float max, double total,
                double p, bool complete) {
  double before = 0.0;
  for (size_t j = 0; j < order.size(); ++j) {
    if (before >= p * total) return static_cast<int>(j);
    before += std::exp(static_cast<double>(row[order[j]] - max));
  }
  return complete ? static_cast<int>(order.size()) : -1;
}

void top_p_row(std::span<float> row, double p, std::vector<int32_t>& order) {
  const float max = *std::max_element(row.begin(), row.end());
  double total = 0.0;
  for (float x : row) total += std::exp(static_cast<double>(x - max));

  const auto before = [&row](int32_t a, int32_t b) {
    return row[a] > row[b] || (row[a] == row[b] && a > b);
  };
  order.resize(row.size());
  std::iota(order.begin(), order.end(), 0);
  const int n = static_cast<int>(row.size());
  int head = std::min(kHeadGuess, n);
  std::nth_element(order.begin(), order.begin() + (head - 1), order.end(), before);
  std::sort(order.begin(), order.begin() + head, before);
  int keep = kept_prefix(row, std::span(order).first(head), max, total, p, head == n);
  if (keep < 0) {
    std::sort(order.begin(), order.end(), before);
    keep = kept_prefix(row, order, max, total, p, true);
  }
  const int32_t last = order[keep - 1];
  const float last_value = row[last];
  for (int32_t i = 0; i < n; ++i) {
    if (row[i] < last_value || (row[i] == last_value && i < last)) {
      row[i] = -std::numeric_limits<float>::infinity();
    }
  }
}

}  // namespace

void apply_top_p(LogitsView logits, std::span<const float> top_p) {
  NI_ASSERT(top_p.size() == static_cast<size_t>(logits.rows));
  std::vector<int32_t> order;
  for (int r = 0; r < logits.rows; ++r) {
    if (top_p[r] >= 1.0F) continue;
    NI_ASSERT(top_p[r] > 0.0F);
    top_p_row(logits.row(r), static_cast<double>(top_p[r]), order);
  }
}

}  // namespace nanoinfer::sampling
