// BeamSearch against HF transformers' generate(num_beams=k, ...) (tests/data/sampling/
// beam_search.json, from tools/golden/sampling_golden.py). Both sides get their next-token logits
// from the same deterministic fake model (an integer hash of the sequence), so the whole search
// (EOS per beam, length penalty, early stopping, num_return_sequences) is compared exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "sampling/beam_search.h"
#include "test_paths.h"
#include "util/error.h"

namespace nanoinfer::sampling {
namespace {

const nlohmann::json& golden() {
  static const nlohmann::json doc = [] {
    std::ifstream in(test::data_path("sampling/beam_search.json"));
    return nlohmann::json::parse(in);
  }();
  return doc;
}

uint64_t fmix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xFF51AFD7ED558CCDULL;
  x ^= x >> 33;
  x *= 0xC4CEB9FE1A85EC53ULL;
  x ^= x >> 33;
  return x;
}

// The fake model of sampling_golden.py: logits k / 4096 - 8, exact in float.
std::vector<float> fake_logits(const std::vector<int32_t>& seq, uint64_t salt, int vocab) {
  const uint64_t last = seq.back();
  const uint64_t prev = seq.size() > 1 ? seq[seq.size() - 2] : 0;
  uint64_t base = ((last + 1) * 0x9E3779B97F4A7C15ULL) ^ ((prev + 1) * 0xC2B2AE3D27D4EB4FULL);
  base ^= (seq.size() * 0x165667B19E3779F9ULL) ^ (salt * 0x27D4EB2F165667C5ULL);
  std::vector<float> out(vocab);
  for (int v = 0; v < vocab; ++v) {
    const uint64_t h = fmix64(base + static_cast<uint64_t>(v) * 0x9E3779B97F4A7C15ULL);
    out[v] = static_cast<float>(h >> 48) / 4096.0F - 8.0F;
  }
  return out;
}

SamplingParams params_from(const nlohmann::json& c) {
  SamplingParams p;
  p.num_beams = c["num_beams"];
  p.length_penalty = c["length_penalty"];
  p.num_return_sequences = c["num_return_sequences"];
  p.max_new_tokens = c["max_new_tokens"];
  p.suppress_tokens = c["suppress"].get<std::vector<int32_t>>();
  const nlohmann::json& es = c["early_stopping"];
  p.early_stopping = es.is_string()   ? EarlyStopping::kNever
                     : es.get<bool>() ? EarlyStopping::kWhenFull
                                      : EarlyStopping::kHeuristic;
  return p;
}

// Runs the search to the end; `on_step` sees the search after every step.
template <typename F>
std::vector<BeamHypothesis> run(const nlohmann::json& c, F on_step) {
  const int vocab = golden()["vocab"];
  const auto prompt = golden()["prompt"].get<std::vector<int32_t>>();
  BeamSearch search(params_from(c), c["eos"].get<std::vector<int32_t>>());
  while (!search.done()) {
    std::vector<float> logits;
    for (const auto& generated : search.running()) {
      std::vector<int32_t> seq = prompt;
      seq.insert(seq.end(), generated.begin(), generated.end());
      const auto row = fake_logits(seq, c["salt"].get<uint64_t>(), vocab);
      logits.insert(logits.end(), row.begin(), row.end());
    }
    const auto before = search.running();
    const auto choices = search.step(logits, vocab);
    for (size_t j = 0; j < choices.size(); ++j) {
      std::vector<int32_t> expected = before[choices[j].parent];
      expected.push_back(choices[j].token);
      EXPECT_EQ(search.running()[j], expected);
    }
    on_step(search);
  }
  return search.results();
}

class BeamGolden : public testing::TestWithParam<int> {};

TEST_P(BeamGolden, SequencesAndScoresEqualHf) {
  const nlohmann::json& c = golden()["cases"][GetParam()];
  const auto results = run(c, [](const BeamSearch&) {});
  const nlohmann::json& want = c["sequences"];
  ASSERT_EQ(results.size(), want.size());
  for (size_t i = 0; i < results.size(); ++i) {
    SCOPED_TRACE("sequence " + std::to_string(i));
    EXPECT_EQ(results[i].tokens, want[i]["tokens"].get<std::vector<int32_t>>());
    if (!want[i]["score"].is_null()) {  // HF runs greedy search for num_beams 1: no score
      const float score = want[i]["score"];
      EXPECT_NEAR(results[i].score, score, 1e-5F * std::max(1.0F, std::abs(score)));
    }
  }
}

std::string case_name(const testing::TestParamInfo<int>& info) {
  const nlohmann::json& c = golden()["cases"][info.param];
  const auto lp = static_cast<int>(c["length_penalty"].get<float>() * 10);
  const nlohmann::json& es = c["early_stopping"];
  std::ostringstream name;
  name << "k" << c["num_beams"].get<int>() << "_lp" << (lp < 0 ? "m" : "") << std::abs(lp) << "_es"
       << (es.is_string() ? "never" : (es.get<bool>() ? "true" : "false")) << "_ret"
       << c["num_return_sequences"].get<int>() << "_salt" << c["salt"].get<int>()
       << (c["suppress"].empty() ? "" : "_suppress") << "_" << info.index;
  return name.str();
}

INSTANTIATE_TEST_SUITE_P(Hf, BeamGolden,
                         testing::Range(0, static_cast<int>(golden()["cases"].size())), case_name);

const nlohmann::json& find_case(int beams, float length_penalty, int salt) {
  for (const auto& c : golden()["cases"]) {
    if (c["num_beams"] == beams && c["length_penalty"] == length_penalty && c["salt"] == salt &&
        c["early_stopping"] == false && c["suppress"].empty()) {
      return c;
    }
  }
  throw std::runtime_error("case missing from beam_search.json");
}

// Salt 5, k = 4: a beam picks EOS (token 0) at step 5 and becomes a hypothesis; the running
// beams are refilled from the other candidates (none ends in EOS) and the search goes on.
TEST(BeamSearchEos, OneBeamFinishesWhileOthersContinue) {
  int first_finished_step = -1;
  int steps = 0;
  run(find_case(4, 1.0F, 5), [&](const BeamSearch& s) {
    ++steps;
    if (first_finished_step < 0 && s.num_finished() > 0) {
      first_finished_step = steps;
      EXPECT_FALSE(s.done());
      for (const auto& r : s.running()) EXPECT_NE(r.back(), 0) << "a finished beam kept running";
    }
  });
  EXPECT_EQ(first_finished_step, 5);
  EXPECT_GT(steps, 5);
}

// Same search, three length penalties: a short hypothesis (5 tokens) wins at -1 and 1, a
// 12-token one at 2, because score / len ** 2 shrinks long sums faster than they grow.
TEST(BeamSearchLengthPenalty, ChangesTheWinner) {
  const auto short_winner = run(find_case(4, 1.0F, 5), [](const BeamSearch&) {});
  const auto long_winner = run(find_case(4, 2.0F, 5), [](const BeamSearch&) {});
  EXPECT_EQ(short_winner[0].tokens.size(), 5U);
  EXPECT_EQ(long_winner[0].tokens.size(), 12U);
}

// A row's summary for beam search (what a backend may compute where the logits are): the
// maximum, log(sum exp(x - max)) and the best n tokens, best first, ties to the lower id, also
// when the ties run past n; n past the vocabulary gives every token.
TEST(BeamRowSummary, MaximumLogSumExpAndBestTokens) {
  const std::vector<float> row{0.5F, 2.0F, -1.0F, 2.0F, 1.0F, 2.0F, 2.0F, -3.0F};
  const BeamRow b = summarise_row(row, 3);
  EXPECT_EQ(b.max, 2.0F);
  double sum = 0.0;
  for (float x : row) sum += std::exp(static_cast<double>(x) - 2.0);
  EXPECT_NEAR(b.lse, std::log(sum), 1e-6);
  ASSERT_EQ(b.best.size(), 3U);
  for (size_t j = 0; j < 3; ++j) {
    EXPECT_EQ(b.best[j].logit, 2.0F);
    EXPECT_EQ(b.best[j].id, std::vector<int32_t>({1, 3, 5})[j]);  // 6 ties too, and loses
  }
  const BeamRow all = summarise_row(row, 20);
  ASSERT_EQ(all.best.size(), row.size());
  EXPECT_EQ(all.best[4].id, 4);  // 1.0 after the four 2.0s
  EXPECT_EQ(all.best.back().id, 7);
}

// A search fed summaries holding extra tokens (a backend's n is the largest any request needs)
// makes the same choices as one fed its own: it reads the best first and takes what it needs.
TEST(BeamRowSummary, LongerRowsGiveTheSameSearch) {
  SamplingParams p;
  p.num_beams = 3;
  p.max_new_tokens = 6;
  p.suppress_tokens = {4};
  BeamSearch own(p, {0}), longer(p, {0});
  std::vector<float> logits(3 * 40);
  for (int step = 0; step < 6 && !own.done(); ++step) {
    for (size_t i = 0; i < logits.size(); ++i)
      logits[i] = std::sin(static_cast<float>(i * 7 + step * 13)) * 3.0F;
    std::vector<BeamRow> rows;
    rows.reserve(3);
    for (int b = 0; b < 3; ++b)
      rows.push_back(summarise_row(std::span<const float>(logits).subspan(b * 40, 40), 25));
    const auto want = own.step(logits, 40);
    const auto got = longer.step(rows, 40);
    ASSERT_EQ(want.size(), got.size());
    for (size_t j = 0; j < want.size(); ++j) {
      EXPECT_EQ(want[j].parent, got[j].parent) << "step " << step;
      EXPECT_EQ(want[j].token, got[j].token) << "step " << step;
      EXPECT_NE(got[j].token, 4) << "a suppressed token was chosen";
    }
  }
  ASSERT_EQ(own.done(), longer.done());
}

// A step needs max(2, 1 + eos ids) candidates a beam; a vocabulary that, less its suppressed
// tokens, cannot give them is a clear error, not a read past the candidates (one token left of
// four here, at one and at two beams), and one that can still runs.
TEST(BeamSearchSmallVocabulary, TooFewUnsuppressedTokensIsAnError) {
  for (const int beams : {1, 2}) {
    SamplingParams p;
    p.num_beams = beams;
    p.max_new_tokens = 4;
    p.suppress_tokens = {0, 1, 2};
    BeamSearch s(p, {3});
    const std::vector<float> logits(static_cast<size_t>(beams) * 4, 0.5F);
    EXPECT_THROW(s.step(logits, 4), Error) << beams << " beam(s)";
  }
  SamplingParams p;
  p.num_beams = 2;
  p.max_new_tokens = 4;
  p.suppress_tokens = {0, 1};
  BeamSearch s(p, {3});
  const std::vector<float> logits{0.1F, 0.2F, 0.3F, 0.4F, 0.1F, 0.2F, 0.3F, 0.4F};
  const auto chosen = s.step(logits, 4);
  ASSERT_EQ(chosen.size(), 2U);
  for (const auto& c : chosen) EXPECT_GE(c.token, 2) << "a suppressed token was chosen";
}

TEST(BeamSearchMemory, StateGrowsWithBeamsAndLength) {
  SamplingParams p;
  p.num_beams = 4;
  p.max_new_tokens = 50;
  BeamSearch search(p, {0});
  const size_t before = search.state_bytes();
  std::vector<float> logits(4 * 32, 0.0F);
  for (int i = 0; i < 4 * 32; ++i) logits[i] = static_cast<float>(i % 32) * 0.01F;
  search.step(logits, 32);
  EXPECT_GT(search.state_bytes(), before);
}

}  // namespace
}  // namespace nanoinfer::sampling
