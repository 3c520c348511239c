#include "sampling/logprobs.h"

#include <algorithm>

namespace nanoinfer::sampling {

TokenLogprobs token_logprobs(std::span<const float> row, int32_t token, int n) {
  // max, log-sum-exp, best n
  return token_logprobs(summarise_row(row, static_cast<size_t>(n)), row[static_cast<size_t>(token)],
                        n);
}

TokenLogprobs token_logprobs(const BeamRow& summary, float token_logit, int n) {
  const float log_z = summary.max + summary.lse;
  TokenLogprobs out;
  out.logprob = token_logit - log_z;
  const size_t top = std::min(summary.best.size(), static_cast<size_t>(n));
  out.top.reserve(top);
  for (size_t i = 0; i < top; ++i)
    out.top.emplace_back(summary.best[i].id, summary.best[i].logit - log_z);
  return out;
}

}  // namespace nanoinfer::sampling
