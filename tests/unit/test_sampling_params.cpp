// SamplingParams::validate(): each bad value or combination is rejected with a message naming
// the parameter; sensible combinations pass.
#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <string>

#include "nanoinfer/sampling_params.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

struct Case {
  std::string name;
  std::function<void(SamplingParams&)> set;
  std::string message;  // empty: must validate
};

class Validate : public testing::TestWithParam<Case> {};

TEST_P(Validate, AcceptsOrRejectsWithMessage) {
  SamplingParams p;
  GetParam().set(p);
  if (GetParam().message.empty()) {
    EXPECT_NO_THROW(p.validate());
    return;
  }
  try {
    p.validate();
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(GetParam().message), std::string::npos) << e.what();
  }
}

const Case kCases[] = {
    {"Default", [](SamplingParams&) {}, ""},
    {"SamplingCombo",
     [](SamplingParams& p) {
       p.temperature = 0.7F;
       p.top_k = 40;
       p.top_p = 0.9F;
       p.min_p = 0.05F;
       p.repetition_penalty = 1.1F;
       p.presence_penalty = 0.5F;
     },
     ""},
    {"GreedyWithPenalties",
     [](SamplingParams& p) {
       p.repetition_penalty = 1.2F;
       p.frequency_penalty = 0.3F;
     },
     ""},
    {"BeamSearch",
     [](SamplingParams& p) {
       p.num_beams = 4;
       p.num_return_sequences = 4;
       p.length_penalty = -1.0F;
       p.early_stopping = EarlyStopping::kNever;
     },
     ""},
    {"NegativeTemperature", [](SamplingParams& p) { p.temperature = -0.5F; },
     "temperature must be a finite number >= 0"},
    {"InfiniteTemperature",
     [](SamplingParams& p) { p.temperature = std::numeric_limits<float>::infinity(); },
     "temperature must be a finite number >= 0 (0 = greedy), got inf"},
    {"TopPZero",
     [](SamplingParams& p) {
       p.temperature = 1.0F;
       p.top_p = 0.0F;
     },
     "top_p must be in (0, 1]"},
    {"TopPAboveOne",
     [](SamplingParams& p) {
       p.temperature = 1.0F;
       p.top_p = 1.5F;
     },
     "top_p must be in (0, 1]"},
    {"NegativeTopK", [](SamplingParams& p) { p.top_k = -1; }, "top_k must be >= 0"},
    {"MinPAboveOne", [](SamplingParams& p) { p.min_p = 1.01F; }, "min_p must be in [0, 1]"},
    {"NegativeMinP", [](SamplingParams& p) { p.min_p = -0.1F; }, "min_p must be in [0, 1]"},
    {"ZeroBeams", [](SamplingParams& p) { p.num_beams = 0; }, "num_beams must be >= 1"},
    {"MoreReturnsThanBeams",
     [](SamplingParams& p) {
       p.num_beams = 2;
       p.num_return_sequences = 3;
     },
     "num_return_sequences (3) must be <= num_beams (2)"},
    {"PresencePenaltyPastTwo", [](SamplingParams& p) { p.presence_penalty = 2.5F; },
     "presence_penalty must be in [-2, 2] (0 = off), got 2.5"},
    {"FrequencyPenaltyHuge", [](SamplingParams& p) { p.frequency_penalty = 3e38F; },
     "frequency_penalty must be in [-2, 2] (0 = off), got "},
    {"PenaltiesAtTheirEnds",
     [](SamplingParams& p) {
       p.presence_penalty = -2.0F;
       p.frequency_penalty = 2.0F;
     },
     ""},
    {"ZeroRepetitionPenalty", [](SamplingParams& p) { p.repetition_penalty = 0.0F; },
     "repetition_penalty must be a finite number > 0"},
    {"GreedyWithTopP", [](SamplingParams& p) { p.top_p = 0.9F; }, "need sampling"},
    {"GreedyWithTopK", [](SamplingParams& p) { p.top_k = 5; }, "need sampling"},
    {"NearlyZeroTemperatureWithTopK",  // (greedy too, as README says)
     [](SamplingParams& p) {
       p.temperature = 1e-6F;
       p.top_k = 5;
     },
     "need sampling (temperature >= 1e-5)"},
    {"BeamsWithTemperature",
     [](SamplingParams& p) {
       p.num_beams = 2;
       p.temperature = 0.8F;
     },
     "beam search (num_beams > 1) is deterministic"},
    {"BeamsWithPresencePenalty",
     [](SamplingParams& p) {
       p.num_beams = 2;
       p.presence_penalty = 0.5F;
     },
     "does not support repetition, presence or frequency"},
    {"BeamsWithStopStrings",
     [](SamplingParams& p) {
       p.num_beams = 2;
       p.stop = {"."};
     },
     "stop strings are not supported"},
    {"LengthPenaltyWithoutBeams", [](SamplingParams& p) { p.length_penalty = 2.0F; },
     "apply to beam search only"},
    {"EmptyStopString",
     [](SamplingParams& p) {
       p.stop = {"ok", ""};
     },
     "stop strings must not be empty"},
    {"NegativeSuppressedToken",
     [](SamplingParams& p) {
       p.suppress_tokens = {3, -1};
     },
     "suppress_tokens must be token ids >= 0, got -1"},
    {"NegativeEosToken",
     [](SamplingParams& p) {
       p.eos_token_ids = {2, -3};
     },
     "eos_token_ids must be token ids >= 0, got -3"},
    {"ZeroMaxNewTokens", [](SamplingParams& p) { p.max_new_tokens = 0; },
     "max_new_tokens must be >= 1"},
    {"LogprobsAndPromptLogprobs",
     [](SamplingParams& p) {
       p.logprobs = 20;
       p.prompt_logprobs = 0;
     },
     ""},
    {"TooManyPromptAlternatives", [](SamplingParams& p) { p.prompt_logprobs = 21; },
     "prompt_logprobs must be in [0, 20]"},
    {"PromptLogprobsBelowOff", [](SamplingParams& p) { p.prompt_logprobs = -2; },
     "prompt_logprobs must be in [0, 20]"},
    {"LogitBias",
     [](SamplingParams& p) {
       p.logit_bias = {{5, -100.0F}, {7, 100.0F}};
     },
     ""},
    {"LogitBiasBeyondOneHundred",
     [](SamplingParams& p) {
       p.logit_bias = {{5, 150.0F}};
     },
     "a bias is in [-100, 100], got 150.0 for token 5"},
    {"LogitBiasTokenTwice",
     [](SamplingParams& p) {
       p.logit_bias = {{5, 1.0F}, {5, 2.0F}};
     },
     "logit_bias: token 5 is given twice"},
    {"LogitBiasNegativeId",
     [](SamplingParams& p) {
       p.logit_bias = {{-1, 1.0F}};
     },
     "logit_bias: token ids are >= 0"},
    {"BeamsWithLogitBias",
     [](SamplingParams& p) {
       p.num_beams = 2;
       p.logit_bias = {{5, 1.0F}};
     },
     "does not support logit_bias"},
    {"BeamsWithPromptLogprobs",
     [](SamplingParams& p) {
       p.num_beams = 2;
       p.prompt_logprobs = 1;
     },
     "returns no logprobs"},
};

INSTANTIATE_TEST_SUITE_P(Params, Validate, testing::ValuesIn(kCases),
                         [](const testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace nanoinfer
