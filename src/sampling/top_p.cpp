// Top-p (nucleus), HF semantics restated from the top: walk tokens from the most likely down and
// keep a token while the mass of the tokens before it is < p. HF removes ascending cumulative
// sums <= 1 - p, which is the same set; its ties come from an ascending sort, so among equal
// logits the higher id comes first here. Only the tokens above a logit cut-off are sorted; the
// cut-off is lowered until the sorted head holds mass p.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "sampling/processors.h"

namespace nanoinfer::sampling {
namespace {

// The first cut-off admits tokens up to e^8 (about 3000) times less likely than the most likely
// one; each retry doubles the distance, so any finite range ends in ~130 tries (a fixed step of
// 8 never moved a cut-off of 1e30, a logit a tiny repetition penalty makes: found by fuzzing).
constexpr double kFirstCutoff = 8.0;

// Number of leading tokens of `order` (sorted) that top-p keeps, or -1 if `order` ends before
// mass p is reached and does not hold every remaining token.
int kept_prefix(std::span<const float> row, std::span<const int32_t> order, float max, double limit,
                bool complete) {
  double before = 0.0;
  for (size_t j = 0; j < order.size(); ++j) {
    if (before >= limit) return static_cast<int>(j);
    before += std::exp(row[order[j]] - max);
  }
  return complete ? static_cast<int>(order.size()) : -1;
}

void top_p_row(std::span<float> row, double p, std::vector<int32_t>& order) {
  const float max = *std::max_element(row.begin(), row.end());
  if (max == std::numeric_limits<float>::infinity()) {  // the +inf tokens hold all the mass
    for (float& x : row)
      if (x != max) x = -std::numeric_limits<float>::infinity();
    return;
  }
  double total = 0.0;
  size_t finite = 0;  // tokens not already removed; once all are sorted the walk must end
  for (float x : row) {
    total += std::exp(x - max);
    finite += x > -std::numeric_limits<float>::infinity() ? 1 : 0;
  }
  if (finite == 0) return;  // nothing to keep or cut (and no cut-off would ever hold mass p)
  const auto before = [&row](int32_t a, int32_t b) {
    return row[a] > row[b] || (row[a] == row[b] && a > b);
  };
  const auto n = static_cast<int32_t>(row.size());
  int keep = -1;
  for (double depth = kFirstCutoff; keep < 0; depth *= 2.0) {
    const double cutoff = static_cast<double>(max) - depth;
    order.clear();
    for (int32_t i = 0; i < n; ++i) {
      if (static_cast<double>(row[i]) >= cutoff) order.push_back(i);
    }
    std::sort(order.begin(), order.end(), before);
    keep = kept_prefix(row, order, max, p * total, order.size() == finite);
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
