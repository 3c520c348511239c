#include "sampling/logprobs.h"

#include "sampling/beam_search.h"

namespace nanoinfer::sampling {

TokenLogprobs token_logprobs(std::span<const float> row, int32_t token, int n) {
  const BeamRow s = summarise_row(row, static_cast<size_t>(n));  // max, log-sum-exp, best n
  const float log_z = s.max + s.lse;
  TokenLogprobs out;
  out.logprob = row[static_cast<size_t>(token)] - log_z;
  out.top.reserve(s.best.size());
  for (const BeamRow::Token& t : s.best) out.top.emplace_back(t.id, t.logit - log_z);
  return out;
}

}  // namespace nanoinfer::sampling
