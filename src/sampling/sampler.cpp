// Sampler: walks the stage lists; a stage no row enables is skipped without touching the logits.
#include "sampling/sampler.h"

#include <algorithm>

namespace nanoinfer::sampling {

void Sampler::process(LogitsView logits, std::span<const RowInput> rows) const {
  NI_ASSERT(rows.size() == static_cast<size_t>(logits.rows));
  for (const RowInput& row : rows) NI_ASSERT(row.params != nullptr && row.params->num_beams == 1);
  for (const ProcessorStage& stage : processor_stages()) {
    const bool any = std::any_of(rows.begin(), rows.end(), [&stage](const RowInput& row) {
      return stage.enabled(*row.params);
    });
    if (any) stage.run(logits, rows);
  }
}

std::vector<int32_t> Sampler::sample(LogitsView logits, std::span<const RowInput> rows) const {
  process(logits, rows);
  std::vector<int32_t> out(rows.size(), -1);
  std::vector<uint8_t> active(rows.size());
  for (const SelectorStage& stage : selector_stages()) {
    bool any = false;
    for (size_t r = 0; r < rows.size(); ++r) {
      active[r] = out[r] < 0 && stage.handles(*rows[r].params) ? 1 : 0;
      any = any || active[r] != 0;
    }
    if (any) stage.run(logits, rows, active, out);
  }
  for (int32_t t : out) NI_ASSERT(t >= 0);
  return out;
}

}  // namespace nanoinfer::sampling
