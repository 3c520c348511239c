// What a backend needs to pick a row's token where the logits are (Backend::pick_to_host) as the
// host Sampler would: the filters as a RowPick, and what the processors that depend on the row's
// history (repetition / presence / frequency penalties, suppressed tokens) do to it as LogitEdits
// of the tokens they touch.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "backend/row_pick.h"
#include "sampling/stages.h"

namespace nanoinfer::sampling {

// Row r's pick; its edits are appended to `edits`, one per touched token in token order (`vocab`
// checks the suppressed ids, as the host's stage does). Empty, with nothing appended, for a row
// the backend cannot pick: beam search, or a processor stage other than the penalties,
// suppression and the four filters.
std::optional<RowPick> backend_pick(const RowInput& row, int32_t r, int32_t vocab,
                                    std::vector<LogitEdit>& edits);

}  // namespace nanoinfer::sampling
