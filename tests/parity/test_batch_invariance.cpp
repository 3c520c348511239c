// A batch of prompts of different lengths gives, token for token, the greedy output of each
// prompt run alone: batch sizes 1-16, prompt lengths 1-600, mixed in one batch (fp32 CPU).
#include <gtest/gtest.h>

#include <random>

#include "nanoinfer/engine.h"
#include "test_paths.h"

namespace nanoinfer {
namespace {

struct BatchCase {
  int batch;
  int max_len;
  std::string rope;
};

class BatchInvariance : public ::testing::TestWithParam<BatchCase> {};

TEST_P(BatchInvariance, BatchedGreedyEqualsAlone) {
  const BatchCase bc = GetParam();
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_context = 640;
  opt.rope_cache = bc.rope;
  opt.max_step_tokens = 0;  // the static batch: every prompt in the first step
  Engine engine(opt);
  std::mt19937 rng(static_cast<uint32_t>(bc.batch * 1000 + bc.max_len));
  std::uniform_int_distribution<int> len(1, bc.max_len), id(0, engine.config().vocab_size - 1);
  std::vector<GenerationRequest> reqs(static_cast<size_t>(bc.batch));
  for (size_t i = 0; i < reqs.size(); ++i) {
    // The first prompt has the longest length, the second a single token: both extremes mixed.
    const int n = i == 0 ? bc.max_len : i == 1 ? 1 : len(rng);
    for (int t = 0; t < n; ++t) reqs[i].prompt_ids.push_back(id(rng));
    reqs[i].params.max_new_tokens =
        6 + static_cast<int>(i % 5);  // sequences finish at different steps
    reqs[i].params.ignore_eos = true;
  }
  const std::vector<GenerationOutput> batched = engine.generate(reqs);
  const GenerationStats stats = engine.last_stats();
  for (size_t i = 0; i < reqs.size(); ++i)
    EXPECT_EQ(batched[i].token_ids, engine.generate({reqs[i]})[0].token_ids) << "prompt " << i;
  // One forward per step: the prefill packs every prompt, then one row per live sequence.
  int64_t prompt_tokens = 0;
  for (const auto& r : reqs) prompt_tokens += static_cast<int64_t>(r.prompt_ids.size());
  EXPECT_EQ(stats.steps.front().tokens, prompt_tokens);
  EXPECT_EQ(static_cast<int>(stats.steps.size()), 6 + std::min(bc.batch, 5) - 1);
}

// The KV cache kept between calls: the largest call's, reused by a smaller one, given back by
// release_cache(); the calls after it allocate again and give the same tokens.
TEST(KeptCache, ReusedBySmallerCallsAndGivenBack) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_context = 256;
  Engine engine(opt);
  auto request = [](int len, int seed) {
    GenerationRequest r;
    for (int t = 0; t < len; ++t) r.prompt_ids.push_back((seed * 31 + t * 7) % 200);
    r.params.max_new_tokens = 8;
    r.params.ignore_eos = true;
    return r;
  };
  const std::vector<GenerationRequest> big = {request(120, 1), request(90, 2), request(60, 3)};
  const std::vector<GenerationRequest> small = {request(10, 4)};
  const auto ids = [&](const std::vector<GenerationRequest>& reqs) {
    std::vector<std::vector<int32_t>> out;
    for (const GenerationOutput& o : engine.generate(reqs)) out.push_back(o.token_ids);
    return out;
  };
  EXPECT_EQ(engine.cache_bytes(), 0);
  const auto big_ids = ids(big);
  const int64_t kept = engine.cache_bytes();
  EXPECT_GT(kept, 0);
  const auto small_ids = ids(small);
  EXPECT_EQ(engine.cache_bytes(), kept);  // the larger cache holds the smaller call
  engine.release_cache();
  EXPECT_EQ(engine.cache_bytes(), 0);
  EXPECT_EQ(ids(small), small_ids);
  EXPECT_GT(engine.cache_bytes(), 0);
  EXPECT_LT(engine.cache_bytes(), kept);  // sized for this call alone
  EXPECT_EQ(ids(big), big_ids);
  EXPECT_EQ(engine.cache_bytes(), kept);
}

INSTANTIATE_TEST_SUITE_P(Shapes, BatchInvariance,
                         ::testing::Values(BatchCase{1, 600, "post"}, BatchCase{2, 37, "post"},
                                           BatchCase{5, 600, "post"}, BatchCase{16, 300, "post"},
                                           BatchCase{16, 600, "pre"}, BatchCase{7, 64, "pre"}),
                         [](const auto& info) {
                           return "b" + std::to_string(info.param.batch) + "_len" +
                                  std::to_string(info.param.max_len) + "_" + info.param.rope;
                         });

}  // namespace
}  // namespace nanoinfer
