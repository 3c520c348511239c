// StopChecker: pending text is searched for every stop string; what remains is emitted except its
// longest suffix that is a proper prefix of some stop string.
#include "sampling/stop_checker.h"

#include <algorithm>

#include "util/error.h"

namespace nanoinfer::sampling {

StopChecker::StopChecker(std::vector<int32_t> eos_ids, std::vector<std::string> stop_strings,
                         int max_new_tokens, bool ignore_eos)
    : eos_ids_(ignore_eos ? std::vector<int32_t>{} : std::move(eos_ids)),
      stop_strings_(std::move(stop_strings)),
      max_new_tokens_(max_new_tokens) {
  if (max_new_tokens_ < 1) fail("max_new_tokens must be >= 1");
  for (const std::string& s : stop_strings_) {
    if (s.empty()) fail("stop strings must not be empty");
  }
}

size_t StopChecker::held_suffix() const {
  size_t held = 0;
  for (const std::string& s : stop_strings_) {
    const size_t longest = std::min(s.size() - 1, pending_.size());
    for (size_t n = longest; n > held; --n) {
      if (std::string_view(pending_).substr(pending_.size() - n) ==
          std::string_view(s).substr(0, n)) {
        held = n;
        break;
      }
    }
  }
  return held;
}

StopDecision StopChecker::on_token(int32_t token, std::string_view piece) {
  NI_ASSERT(generated_ < max_new_tokens_);
  ++generated_;
  StopDecision out;
  if (std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end()) {
    out.reason = StopReason::kEos;
    out.emit = std::move(pending_);
    pending_.clear();
    return out;
  }
  pending_ += piece;
  size_t first = std::string::npos;
  for (const std::string& s : stop_strings_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    out.reason = StopReason::kStopString;
    out.emit = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  if (generated_ == max_new_tokens_) {
    out.reason = StopReason::kMaxTokens;
    out.emit = std::move(pending_);
    pending_.clear();
    return out;
  }
  const size_t held = held_suffix();
  out.emit = pending_.substr(0, pending_.size() - held);
  pending_.erase(0, pending_.size() - held);
  return out;
}

}  // namespace nanoinfer::sampling
