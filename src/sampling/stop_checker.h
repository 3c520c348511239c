// Stop conditions of one sequence, checked by the engine after every token: EOS ids (a model may
// list several), stop strings on the detokenised text, and max_new_tokens. Text that could be the
// beginning of a stop string is held back until the next pieces resolve it, so a stop string that
// spans several tokens is never emitted, while the text before it is.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace nanoinfer::sampling {

enum class StopReason { kNone, kEos, kStopString, kMaxTokens };

struct StopDecision {
  StopReason reason = StopReason::kNone;  // kNone: keep generating
  std::string emit;                       // text the caller may show now
  bool stop() const { return reason != StopReason::kNone; }
};

class StopChecker {
 public:
  StopChecker(std::vector<int32_t> eos_ids, std::vector<std::string> stop_strings,
              int max_new_tokens, bool ignore_eos = false);

  // `piece` is the text the detokeniser produced for `token` (may be empty while a multi-byte
  // character is incomplete). An EOS token's own text is never emitted.
  StopDecision on_token(int32_t token, std::string_view piece);

 private:
  size_t held_suffix() const;

  std::vector<int32_t> eos_ids_;
  std::vector<std::string> stop_strings_;
  int max_new_tokens_;
  int generated_ = 0;
  std::string pending_;  // text received but not yet emitted
};

}  // namespace nanoinfer::sampling
