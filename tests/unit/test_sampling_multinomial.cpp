// Multinomial sampling: 100k seeded draws after each processor combination follow the processed
// distribution (chi-square against a fixed threshold), and a row's draws depend only on its own
// seed and step, not on the rest of the batch.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "sampling/counter_rng.h"
#include "sampling/sampler.h"
#include "sampling/selectors.h"

namespace nanoinfer::sampling {
namespace {

constexpr int kVocab = 64;
constexpr int kDraws = 100000;

std::vector<float> test_logits(uint64_t salt) {
  std::vector<float> row(kVocab);
  for (int v = 0; v < kVocab; ++v) {
    row[v] = static_cast<float>(uniform(salt, v) * 6.0 - 3.0);
  }
  return row;
}

// Upper critical value of chi-square with df degrees of freedom at p = 1e-5 (Wilson-Hilferty).
double chi_square_limit(int df) {
  const double z = 4.265;
  const double a = 2.0 / (9.0 * df);
  return df * std::pow(1.0 - a + z * std::sqrt(a), 3.0);
}

struct Combo {
  std::string name;
  SamplingParams params;
};

SamplingParams make(float t, int k, float p, float min_p, float rep, float pres) {
  SamplingParams s;
  s.temperature = t;
  s.top_k = k;
  s.top_p = p;
  s.min_p = min_p;
  s.repetition_penalty = rep;
  s.presence_penalty = pres;
  s.seed = 20261125;
  s.validate();
  return s;
}

class Frequencies : public testing::TestWithParam<Combo> {};

TEST_P(Frequencies, MatchProcessedDistribution) {
  const SamplingParams& params = GetParam().params;
  std::vector<float> logits = test_logits(7);
  const std::vector<int32_t> prompt = {1, 2, 3, 40};
  const std::vector<int32_t> generated = {5, 5, 17};
  const RowInput row{&params, prompt, generated};
  const LogitsView view(logits, 1, kVocab);
  Sampler().process(view, std::span(&row, 1));

  double max = -INFINITY;
  for (float x : logits) max = std::max(max, static_cast<double>(x));
  std::vector<double> prob(kVocab);
  double total = 0.0;
  for (int v = 0; v < kVocab; ++v) total += prob[v] = std::exp(logits[v] - max);
  for (double& p : prob) p /= total;

  std::vector<int> count(kVocab, 0);
  std::vector<int32_t> out(1);
  const std::vector<uint8_t> active = {1};
  const std::vector<uint64_t> seed = {params.seed.value()};
  for (uint64_t i = 0; i < kDraws; ++i) {
    const std::vector<uint64_t> counter = {i};
    select_multinomial(view, active, seed, counter, out);
    ++count[out[0]];
  }
  double chi2 = 0.0;
  int bins = 0;
  double pooled_expected = 0.0;
  double pooled_observed = 0.0;
  for (int v = 0; v < kVocab; ++v) {
    if (prob[v] == 0.0) {
      EXPECT_EQ(count[v], 0) << "removed token " << v << " was drawn";
      continue;
    }
    const double expected = prob[v] * kDraws;
    if (expected < 5.0) {  // small bins are pooled so the chi-square approximation holds
      pooled_expected += expected;
      pooled_observed += count[v];
      continue;
    }
    chi2 += (count[v] - expected) * (count[v] - expected) / expected;
    ++bins;
  }
  if (pooled_expected >= 5.0) {
    chi2 +=
        (pooled_observed - pooled_expected) * (pooled_observed - pooled_expected) / pooled_expected;
    ++bins;
  }
  ASSERT_GE(bins, 2);
  EXPECT_LT(chi2, chi_square_limit(bins - 1)) << bins << " bins";
}

const Combo kCombos[] = {
    {"Plain", make(1.0F, 0, 1.0F, 0.0F, 1.0F, 0.0F)},
    {"Temperature", make(0.6F, 0, 1.0F, 0.0F, 1.0F, 0.0F)},
    {"HotTemperature", make(1.8F, 0, 1.0F, 0.0F, 1.0F, 0.0F)},
    {"TopK", make(1.0F, 8, 1.0F, 0.0F, 1.0F, 0.0F)},
    {"TopP", make(1.0F, 0, 0.7F, 0.0F, 1.0F, 0.0F)},
    {"MinP", make(1.0F, 0, 1.0F, 0.2F, 1.0F, 0.0F)},
    {"Penalties", make(1.0F, 0, 1.0F, 0.0F, 1.5F, 1.0F)},
    {"AllTogether", make(0.8F, 20, 0.9F, 0.05F, 1.3F, 0.5F)},
};

INSTANTIATE_TEST_SUITE_P(Combos, Frequencies, testing::ValuesIn(kCombos),
                         [](const testing::TestParamInfo<Combo>& info) { return info.param.name; });

// Three requests decoded for a few steps, alone and inside batches of different order.
std::vector<int32_t> decode(const std::vector<SamplingParams>& params, int steps, size_t watch) {
  std::vector<std::vector<int32_t>> generated(params.size());
  const std::vector<int32_t> prompt = {3, 4};
  for (int s = 0; s < steps; ++s) {
    std::vector<float> logits;
    std::vector<RowInput> rows;
    for (size_t r = 0; r < params.size(); ++r) {
      const std::vector<float> row = test_logits(100 + generated[r].size());
      logits.insert(logits.end(), row.begin(), row.end());
      rows.push_back({&params[r], prompt, generated[r]});
    }
    const auto tokens =
        Sampler().sample(LogitsView(logits, static_cast<int>(rows.size()), kVocab), rows);
    for (size_t r = 0; r < params.size(); ++r) generated[r].push_back(tokens[r]);
  }
  return generated[watch];
}

TEST(Reproducible, SameSeedSameTokensWhateverTheBatch) {
  const SamplingParams a = make(0.9F, 30, 0.95F, 0.0F, 1.2F, 0.0F);
  SamplingParams b = make(1.0F, 0, 1.0F, 0.0F, 1.0F, 0.0F);
  b.seed = 1;
  const SamplingParams greedy;
  const auto alone = decode({a}, 24, 0);
  EXPECT_EQ(alone, decode({a}, 24, 0));
  EXPECT_EQ(alone, decode({b, a, greedy}, 24, 1));
  EXPECT_EQ(alone, decode({greedy, b, b, a}, 24, 3));
  SamplingParams other_seed = a;
  other_seed.seed = *a.seed + 1;
  EXPECT_NE(alone, decode({other_seed}, 24, 0));
}

}  // namespace
}  // namespace nanoinfer::sampling
