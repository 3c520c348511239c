// Logits processors against HF transformers (tests/data/sampling/processors.json, written by
// tools/golden/sampling_golden.py): for each case every row carries its own parameters and the
// whole batch goes through one Sampler::process call; the tokens left and their values must
// equal HF's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "sampling/backend_pick.h"
#include "sampling/processors.h"
#include "sampling/sampler.h"
#include "sampling/selectors.h"
#include "test_paths.h"
#include "util/error.h"

namespace nanoinfer::sampling {
namespace {

const nlohmann::json& golden() {
  static const nlohmann::json doc = [] {
    std::ifstream in(test::data_path("sampling/processors.json"));
    return nlohmann::json::parse(in);
  }();
  return doc;
}

SamplingParams params_from(const nlohmann::json& j) {
  SamplingParams p;
  p.temperature = j.value("temperature", 1.0F);  // HF applies warpers only when sampling
  p.top_k = j.value("top_k", 0);
  p.top_p = j.value("top_p", 1.0F);
  p.min_p = j.value("min_p", 0.0F);
  p.repetition_penalty = j.value("repetition_penalty", 1.0F);
  p.presence_penalty = j.value("presence_penalty", 0.0F);
  p.frequency_penalty = j.value("frequency_penalty", 0.0F);
  p.suppress_tokens = j.value("suppress_tokens", std::vector<int32_t>{});
  p.validate();
  return p;
}

struct Batch {
  std::vector<float> logits;
  std::vector<std::vector<int32_t>> ids;
  std::vector<SamplingParams> params;
  std::vector<RowInput> rows;
};

Batch batch_for(const nlohmann::json& c) {
  const nlohmann::json& doc = golden();
  Batch b;
  for (const auto& row : doc["logits"]) {
    for (float v : row) b.logits.push_back(v);
  }
  const auto generated = doc["generated_count"].get<size_t>();
  for (const auto& row : c["rows"]) b.params.push_back(params_from(row["params"]));
  for (const auto& ids : doc["token_ids"]) b.ids.push_back(ids.get<std::vector<int32_t>>());
  for (size_t r = 0; r < b.params.size(); ++r) {
    const TokenSpan all = b.ids[r];
    b.rows.push_back({&b.params[r], all.first(all.size() - generated), all.last(generated)});
  }
  return b;
}

class ProcessorGolden : public testing::TestWithParam<int> {};

TEST_P(ProcessorGolden, KeptTokensAndValuesEqualHf) {
  const nlohmann::json& c = golden()["cases"][GetParam()];
  Batch b = batch_for(c);
  const int vocab = golden()["vocab"];
  const LogitsView view(b.logits, static_cast<int>(b.rows.size()), vocab);
  Sampler().process(view, b.rows);
  for (int r = 0; r < view.rows; ++r) {
    SCOPED_TRACE("row " + std::to_string(r));
    const nlohmann::json& want = c["rows"][r];
    std::vector<int32_t> kept;
    std::span<const float> row = view.row(r);
    for (int v = 0; v < vocab; ++v) {
      if (std::isfinite(row[v])) kept.push_back(v);
    }
    ASSERT_EQ(kept, want["kept_stable"].get<std::vector<int32_t>>());
    for (size_t i = 0; i < kept.size(); ++i) {
      const float expected = want["values"][i];
      EXPECT_NEAR(row[kept[i]], expected, 1e-6F * std::max(1.0F, std::abs(expected)));
    }
  }
}

// HF's own top-p orders equal logits with torch's unstable sort, so where a tie straddles the
// boundary it may keep other ids of the tie than we do; it must keep as many, of equal logits.
TEST_P(ProcessorGolden, UnstableHfKeepsTheSameLogitValues) {
  const nlohmann::json& c = golden()["cases"][GetParam()];
  const nlohmann::json& doc = golden();
  for (size_t r = 0; r < c["rows"].size(); ++r) {
    const auto& logits = doc["logits"][r];
    const auto values_of = [&logits](const nlohmann::json& ids) {
      std::vector<float> v;
      for (int id : ids) v.push_back(logits[id]);
      std::sort(v.begin(), v.end());
      return v;
    };
    EXPECT_EQ(values_of(c["rows"][r]["kept"]), values_of(c["rows"][r]["kept_stable"]))
        << "row " << r;
  }
}

std::string case_name(const testing::TestParamInfo<int>& info) {
  return golden()["cases"][info.param]["name"].get<std::string>();
}

INSTANTIATE_TEST_SUITE_P(Hf, ProcessorGolden,
                         testing::Range(0, static_cast<int>(golden()["cases"].size())), case_name);

TEST(ProcessorGoldenData, HasTiesThatStraddleTheTopPBoundary) {
  int straddling = 0;
  for (const auto& c : golden()["cases"]) {
    for (const auto& row : c["rows"]) straddling += row["kept"] != row["kept_stable"] ? 1 : 0;
  }
  EXPECT_GT(straddling, 0);
}

TEST(Greedy, TiesGoToTheLowestId) {
  std::vector<float> logits = {1.0F,
                               3.0F,
                               3.0F,
                               2.0F,
                               3.0F,  // row 0: max at 1, 2, 4
                               -std::numeric_limits<float>::infinity(),
                               0.0F,
                               0.0F,
                               -1.0F,
                               0.0F};
  std::vector<int32_t> out(2, -1);
  const std::vector<uint8_t> active = {1, 1};
  select_greedy(LogitsView(logits, 2, 5), active, out);
  EXPECT_EQ(out, (std::vector<int32_t>{1, 1}));
}

// One token at +9 and 10000 at 0, p = 0.9: the head above the first cut-off (max - 8) holds only
// 45% of the mass, so the search widens; 8190 zeros are needed (e^9 + 8189 < 0.9 * (e^9 + 10000)
// <= e^9 + 8190) and, as with HF's ascending sort, the zeros with the highest ids are kept.
TEST(TopP, WidensPastTheFirstCutoffAndKeepsHighIdsOfATie) {
  constexpr int kZeros = 10000;
  std::vector<float> logits(kZeros + 1, 0.0F);
  logits[0] = 9.0F;
  const std::vector<float> p = {0.9F};
  apply_top_p(LogitsView(logits, 1, kZeros + 1), p);
  EXPECT_EQ(logits[0], 9.0F);
  const auto first_kept = std::find(logits.begin() + 1, logits.end(), 0.0F) - logits.begin();
  EXPECT_EQ(first_kept, kZeros + 1 - 8190);
  EXPECT_EQ(std::count(logits.begin(), logits.end(), 0.0F), 8190);
}

// A row without a finite logit (every token suppressed, say): top-p has nothing to keep or cut and
// leaves it alone (it used to lower its cut-off forever), and the draw falls back to the first
// index, as the argmax of such a row.
TEST(TopP, RowWithoutFiniteLogitsIsLeftAlone) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> logits(5, -inf);
  apply_top_p(LogitsView(logits, 1, 5), std::vector<float>{0.9F});
  EXPECT_EQ(std::count(logits.begin(), logits.end(), -inf), 5);
  SamplingParams p;
  p.temperature = 0.7F;
  p.top_p = 0.9F;
  p.seed = 3;
  const std::vector<int32_t> none;
  const RowInput row{&p, none, none};
  EXPECT_EQ(Sampler().sample(LogitsView(logits, 1, 5), std::span<const RowInput>(&row, 1)),
            std::vector<int32_t>{0});
}

// Logits far past any model's (a repetition penalty of 1e-30 divides them so; penalties of -1e38
// reach +inf): top-p ends its search (a fixed step of 8 never moved a cut-off of 1e30, and the
// run hung: found by fuzzing) and keeps the same tokens any other cut-off would.
TEST(TopP, HugeAndInfiniteLogitsEndTheSearch) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> huge = {1e29F, 1e30F, 0.0F, -1e30F, 1e30F};
  apply_top_p(LogitsView(huge, 1, 5), std::vector<float>{0.5F});
  EXPECT_EQ(huge, (std::vector<float>{-inf, -inf, -inf, -inf, 1e30F}));  // a tie: the higher id
  std::vector<float> infinite = {inf, 1.0F, inf, 2.0F};
  apply_top_p(LogitsView(infinite, 1, 4), std::vector<float>{0.5F});
  EXPECT_EQ(infinite, (std::vector<float>{inf, -inf, inf, -inf}));
}

// A repetition penalty keeps logits finite: 1e38 x -5 is the lowest float, not -inf (a row whose
// every token was so penalised had nothing left to pick).
TEST(Penalties, RepetitionKeepsLogitsFinite) {
  std::vector<float> row = {-5.0F, 3.0F, 1.0F};
  const std::vector<int32_t> seen = {0, 1};
  const std::vector<TokenSpan> history = {seen};
  apply_repetition_penalty(LogitsView(row, 1, 3), std::vector<float>{1e38F}, history);
  EXPECT_EQ(row, (std::vector<float>{std::numeric_limits<float>::lowest(), 3.0F / 1e38F, 1.0F}));
}

// Below kMinSamplingTemperature a row is greedy: no temperature or filter stage runs, the pick is
// the argmax and the backend is asked for a greedy pick (1e-30 made every logit huge).
TEST(Stages, TemperaturesBelowTheMinimumAreGreedy) {
  SamplingParams p;
  p.temperature = 1e-6F;
  p.top_p = 0.9F;
  for (const ProcessorStage& s : processor_stages()) EXPECT_FALSE(s.enabled(p)) << s.name;
  std::vector<float> logits = {1.0F, 3.0F, 2.0F, 3.0F};
  const RowInput row{&p, {}, {}};
  EXPECT_EQ(Sampler().sample(LogitsView(logits, 1, 4), std::span(&row, 1)),
            std::vector<int32_t>{1});
  std::vector<LogitEdit> edits;
  const auto pick = backend_pick(row, 0, 4, edits);
  ASSERT_TRUE(pick.has_value());
  EXPECT_EQ(pick->temperature, 0.0F);
  p.temperature = kMinSamplingTemperature;
  EXPECT_TRUE(p.samples());
}

TEST(Stages, FollowHfGenerateOrder) {
  std::vector<std::string_view> names;
  for (const ProcessorStage& s : processor_stages()) names.push_back(s.name);
  EXPECT_EQ(names, (std::vector<std::string_view>{
                       "repetition_penalty", "presence_frequency_penalty", "suppress_tokens",
                       "logit_bias", "temperature", "top_k", "top_p", "min_p"}));
}

TEST(Stages, SuppressedIdOutsideTheVocabularyIsAnError) {
  SamplingParams p;
  p.suppress_tokens = {4, 5};
  std::vector<float> logits(5, 0.0F);
  const RowInput row{&p, {}, {}};
  try {
    Sampler().sample(LogitsView(logits, 1, 5), std::span(&row, 1));
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "suppress_tokens: id 5 is outside the vocabulary of 5");
  }
}

// logit_bias adds its amounts before temperature: a greedy row's pick follows the biased
// logits, a sampled row divides the biased logits by its temperature, and the other tokens and
// rows are left alone; the backend gets one edit a biased token; an id outside the vocabulary
// is an error.
TEST(Stages, LogitBiasAddsBeforeTemperature) {
  SamplingParams biased, sampled, plain;
  biased.logit_bias = {{1, 2.5F}, {3, -100.0F}};
  sampled.logit_bias = {{0, 1.0F}};
  sampled.temperature = 0.5F;
  std::vector<float> logits = {1.0F, 0.0F, 0.5F, 3.0F, 1.0F, 0.0F,
                               0.5F, 3.0F, 1.0F, 0.0F, 0.5F, 3.0F};
  const std::vector<RowInput> rows = {{&biased, {}, {}}, {&sampled, {}, {}}, {&plain, {}, {}}};
  Sampler().process(LogitsView(logits, 3, 4), rows);
  EXPECT_EQ(logits, (std::vector<float>{1.0F, 2.5F, 0.5F, -97.0F, 4.0F, 0.0F, 1.0F, 6.0F, 1.0F,
                                        0.0F, 0.5F, 3.0F}));
  std::vector<float> fresh = {1.0F, 0.0F, 0.5F, 3.0F};
  EXPECT_EQ(Sampler().sample(LogitsView(fresh, 1, 4), std::span(&rows[0], 1)),
            std::vector<int32_t>{1});
  std::vector<LogitEdit> edits;
  ASSERT_TRUE(backend_pick(rows[0], 0, 4, edits).has_value());
  ASSERT_EQ(edits.size(), 2U);
  EXPECT_EQ(edits[0].token, 1);
  EXPECT_EQ(edits[0].add, 2.5F);
  EXPECT_EQ(edits[1].token, 3);
  EXPECT_EQ(edits[1].add, -100.0F);
  biased.logit_bias = {{4, 1.0F}};
  try {
    Sampler().sample(LogitsView(fresh, 1, 4), std::span(&rows[0], 1));
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "logit_bias: id 4 is outside the vocabulary of 4");
  }
}

TEST(Stages, GreedyRowsIgnoreWarpersButKeepPenalties) {
  SamplingParams greedy;
  greedy.repetition_penalty = 1.5F;
  std::vector<std::string_view> enabled;
  for (const ProcessorStage& s : processor_stages()) {
    if (s.enabled(greedy)) enabled.push_back(s.name);
  }
  EXPECT_EQ(enabled, (std::vector<std::string_view>{"repetition_penalty"}));
}

// A row may be picked by the backend (Backend::pick_to_host) unless it uses beams; the pick
// carries the row's filters, its seed and its draw index (the tokens it has generated). Filters
// set on a greedy row do not count (they are off without sampling). Rows without penalties or
// suppressed tokens add no edit.
TEST(BackendPick, CarriesTheFiltersSeedAndDrawIndex) {
  const std::vector<int32_t> prompt{1, 2, 3}, generated{4, 5};
  std::vector<LogitEdit> edits;
  const auto pick = [&](auto edit) {
    SamplingParams q;
    edit(q);
    return backend_pick(RowInput{&q, prompt, generated}, 0, 100, edits);
  };
  const auto greedy = pick([](SamplingParams& q) {
    q.top_k = 5;
    q.top_p = 0.5F;
  });
  ASSERT_TRUE(greedy.has_value());
  EXPECT_EQ(greedy->temperature, 0.0F);
  const auto sampled = pick([](SamplingParams& q) {
    q.temperature = 0.7F;
    q.top_k = 40;
    q.top_p = 0.9F;
    q.min_p = 0.05F;
    q.seed = 77;
  });
  ASSERT_TRUE(sampled.has_value());
  EXPECT_EQ(sampled->temperature, 0.7F);
  EXPECT_EQ(sampled->top_k, 40);
  EXPECT_EQ(sampled->top_p, 0.9F);
  EXPECT_EQ(sampled->min_p, 0.05F);
  EXPECT_EQ(sampled->seed, 77U);
  EXPECT_EQ(sampled->counter, generated.size());  // the host sampler's draw index
  EXPECT_FALSE(pick([](SamplingParams& q) {
    q.num_beams = 2;
    q.repetition_penalty = 1.2F;
  }));
  EXPECT_TRUE(edits.empty());
  EXPECT_TRUE(pick([](SamplingParams& q) { q.repetition_penalty = 1.2F; }).has_value());
  EXPECT_EQ(edits.size(), 5U);  // each distinct token of prompt + generated
}

// The history processors as edits: one per touched token, in token order, with the repetition
// penalty for each distinct token of prompt + generated, presence + frequency x count for the
// generated ones, and suppression; ids outside the vocabulary fail as the host stage fails.
TEST(BackendPick, EditsOfThePenaltiesAndSuppressedTokens) {
  const std::vector<int32_t> prompt{7, 3, 7}, generated{3, 9, 9, 9};
  SamplingParams q;
  q.temperature = 0.8F;
  q.repetition_penalty = 1.2F;
  q.presence_penalty = 0.5F;
  q.frequency_penalty = 0.25F;
  q.suppress_tokens = {11, 9, 11};
  std::vector<LogitEdit> edits{{0, 1, 2.0F, 0.0F, 0}};  // appended after what is there
  ASSERT_TRUE(backend_pick(RowInput{&q, prompt, generated}, 4, 12, edits).has_value());
  struct Want {
    int32_t token;
    float penalty, subtract;
    int32_t suppress;
  };
  const std::vector<Want> want{
      {3, 1.2F, 0.75F, 0}, {7, 1.2F, 0.0F, 0}, {9, 1.2F, 1.25F, 1}, {11, 1.0F, 0.0F, 1}};
  ASSERT_EQ(edits.size(), want.size() + 1);
  for (size_t i = 0; i < want.size(); ++i) {
    const LogitEdit& e = edits[i + 1];
    EXPECT_EQ(e.row, 4) << i;
    EXPECT_EQ(e.token, want[i].token) << i;
    EXPECT_EQ(e.penalty, want[i].penalty) << i;
    EXPECT_EQ(e.subtract, want[i].subtract) << i;
    EXPECT_EQ(e.suppress, want[i].suppress) << i;
  }
  q.suppress_tokens = {12};
  EXPECT_THROW(backend_pick(RowInput{&q, prompt, generated}, 0, 12, edits), Error);
}

// The edits applied as the backends apply them (x < 0 ? x * p : x / p, then - subtract, then
// -inf; the CUDA kernel's steps) give the host processors' logits bit for bit, on random rows
// with every combination of the three stages.
TEST(BackendPick, EditsReproduceTheHostProcessors) {
  std::mt19937 rng(17);
  const int V = 300, R = 24;
  std::normal_distribution<float> nd(0.0F, 3.0F);
  std::vector<float> logits(static_cast<size_t>(R) * V);
  for (float& x : logits) x = nd(rng);
  std::vector<SamplingParams> params(R);
  std::vector<std::vector<int32_t>> prompt(R), generated(R);
  std::vector<RowInput> rows(R);
  std::vector<LogitEdit> edits;
  for (int r = 0; r < R; ++r) {
    SamplingParams& p = params[r];
    if (r % 2 == 0) p.repetition_penalty = r % 4 == 0 ? 1.37F : 0.61F;
    if (r % 3 != 0) p.presence_penalty = 0.3F * static_cast<float>(r % 5) - 0.4F;
    if (r % 4 == 1) p.frequency_penalty = 0.173F;
    if (r % 5 == 2) p.suppress_tokens = {static_cast<int32_t>(rng() % V), 0};
    if (r % 3 == 1) p.logit_bias = {{0, 2.25F}, {static_cast<int32_t>(rng() % 40), -1.7F}};
    if (r % 5 == 2 && r % 3 == 1) p.logit_bias[0].second = 100.0F;  // suppressed, then biased
    for (int i = 0; i < 60; ++i) prompt[r].push_back(static_cast<int32_t>(rng() % 40));
    for (int i = 0; i < 60; ++i) generated[r].push_back(static_cast<int32_t>(rng() % 60));
    rows[r] = {&p, prompt[r], generated[r]};
    ASSERT_TRUE(backend_pick(rows[r], r, V, edits).has_value());
  }
  std::vector<float> got = logits;
  for (const LogitEdit& e : edits) {
    float& x = got[static_cast<size_t>(e.row) * V + e.token];
    if (e.penalty != 1.0F) x = x < 0.0F ? x * e.penalty : x / e.penalty;
    if (e.subtract != 0.0F) x = x - e.subtract;
    if (e.suppress != 0) x = -std::numeric_limits<float>::infinity();
    if (e.add != 0.0F) x = x + e.add;
  }
  Sampler().process(LogitsView(std::span<float>(logits), R, V), rows);
  int changed = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    ASSERT_EQ(got[i], logits[i]) << "row " << i / V << ", token " << i % V;
  }
  for (const LogitEdit& e : edits) changed += e.penalty != 1.0F || e.subtract != 0.0F;
  EXPECT_GT(changed, R * 20);
}

}  // namespace
}  // namespace nanoinfer::sampling
