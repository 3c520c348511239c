// StopChecker: EOS ids, stop strings split across tokens (held back, never emitted), max tokens.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "sampling/stop_checker.h"

namespace nanoinfer::sampling {
namespace {

struct Piece {
  int32_t token;
  std::string text;
};

struct Case {
  std::string name;
  std::vector<std::string> stop;
  int max_new_tokens;
  std::vector<Piece> pieces;
  std::vector<std::string> emitted;  // what each call emits, one per piece consumed
  StopReason reason;
};

constexpr int32_t kEos = 2;
constexpr int32_t kEot = 9;

class Stops : public testing::TestWithParam<Case> {};

TEST_P(Stops, EmitsTextBeforeTheStop) {
  const Case& c = GetParam();
  StopChecker checker({kEos, kEot}, c.stop, c.max_new_tokens);
  std::vector<std::string> emitted;
  StopReason reason = StopReason::kNone;
  for (const Piece& p : c.pieces) {
    const StopDecision d = checker.on_token(p.token, p.text);
    emitted.push_back(d.emit);
    reason = d.reason;
    if (d.stop()) break;
  }
  EXPECT_EQ(emitted, c.emitted);
  EXPECT_EQ(reason, c.reason);
}

const Case kCases[] = {
    {"FirstEosId",
     {},
     10,
     {{5, "Hi"}, {6, " there"}, {kEos, "</s>"}},
     {"Hi", " there", ""},
     StopReason::kEos},
    {"SecondEosId", {}, 10, {{5, "Hi"}, {kEot, "<|eot|>"}}, {"Hi", ""}, StopReason::kEos},
    {"MaxTokens", {}, 2, {{5, "a"}, {6, "b"}, {7, "c"}}, {"a", "b"}, StopReason::kMaxTokens},
    {"StopInsideOnePiece",
     {"END"},
     10,
     {{5, "ab"}, {6, "cENDx"}},
     {"ab", "c"},
     StopReason::kStopString},
    {"StopAcrossThreePieces",
     {"</answer>"},
     10,
     {{5, "42 </"}, {6, "ans"}, {7, "wer> more"}},
     {"42 ", "", ""},
     StopReason::kStopString},
    {"FalseStartIsReleased",
     {"</answer>"},
     10,
     {{5, "a </"}, {6, "b>"}, {7, "c"}},
     {"a ", "</b>", "c"},
     StopReason::kNone},
    {"HeldTextFlushedAtEos", {"STOP"}, 10, {{5, "xST"}, {kEos, ""}}, {"x", "ST"}, StopReason::kEos},
    {"HeldTextFlushedAtMaxTokens",
     {"STOP"},
     2,
     {{5, "x"}, {6, "STO"}},
     {"x", "STO"},
     StopReason::kMaxTokens},
    {"EarliestOfSeveralStops",
     {"bb", "ab"},
     10,
     {{5, "xa"}, {6, "bb"}},
     {"x", ""},
     StopReason::kStopString},
    {"StopStringBeatsMaxTokens", {"!"}, 1, {{5, "hey!"}}, {"hey"}, StopReason::kStopString},
};

INSTANTIATE_TEST_SUITE_P(Sequences, Stops, testing::ValuesIn(kCases),
                         [](const testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(StopChecker, IgnoreEosKeepsGoing) {
  StopChecker checker({kEos}, {}, 5, /*ignore_eos=*/true);
  const StopDecision d = checker.on_token(kEos, "</s>");
  EXPECT_FALSE(d.stop());
  EXPECT_EQ(d.emit, "</s>");
}

}  // namespace
}  // namespace nanoinfer::sampling
