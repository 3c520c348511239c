// Sampler: one call per decode step for the whole batch. Runs the processor stages each row asks
// for over the [rows, vocab] logits, then each row's selector. Stateless: a row's random draw is
// indexed by its seed and the number of tokens it has generated.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "sampling/stages.h"

namespace nanoinfer::sampling {

class Sampler {
 public:
  // Rewrites logits in place with every enabled processor (rows must not use beam search).
  void process(LogitsView logits, std::span<const RowInput> rows) const;
  // process(), then one token per row.
  std::vector<int32_t> sample(LogitsView logits, std::span<const RowInput> rows) const;
};

}  // namespace nanoinfer::sampling
