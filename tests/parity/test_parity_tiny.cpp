// Parity with HF transformers on tiny random Llama models (tools/golden/make_tiny_models.py):
// last-position logits within 1e-4 and 32 greedy tokens identical — alone, in one batch, and
// with either RoPE cache policy.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/batch_builder.h"
#include "model/llama.h"
#include "nanoinfer/engine.h"
#include "test_paths.h"

namespace nanoinfer {
namespace {

struct Case {
  std::string model;
  std::string rope;
};

class TinyParity : public ::testing::TestWithParam<Case> {};

TEST_P(TinyParity, LastLogitsMatchHf) {
  const Case c = GetParam();
  const LoadedModel loaded = load_model(test::data_path("models/" + c.model));
  auto be = make_cpu_backend();
  LlamaModel model(loaded, *be, 256);
  const nlohmann::json ref = test::read_json("models/" + c.model + "/reference.json");
  ASSERT_FALSE(ref["cases"].empty());
  for (const auto& rc : ref["cases"]) {
    KvCache cache(*be, loaded.config, {16, 16, c.rope});
    SeqState s(0, cache.create_sequence(), rc["prompt_ids"].get<std::vector<int32_t>>());
    const Batch batch = build_batch({&s}, cache);
    std::vector<float> logits;
    be->to_host_f32(model.forward(batch, cache), logits);
    const auto want = rc["last_logits"].get<std::vector<float>>();
    ASSERT_EQ(logits.size(), want.size());
    float max_diff = 0;  // a NaN anywhere makes it NaN, and the check below fails
    for (size_t i = 0; i < want.size(); ++i) {
      const float d = std::abs(logits[i] - want[i]);
      max_diff = std::isnan(d) || d > max_diff ? d : max_diff;
    }
    EXPECT_LE(max_diff, 1e-4F) << rc["name"];
  }
}

TEST_P(TinyParity, GreedyTokensMatchHfAloneAndBatched) {
  const Case c = GetParam();
  const nlohmann::json ref = test::read_json("models/" + c.model + "/reference.json");
  EngineOptions opt;
  opt.model = test::data_path("models/" + c.model);
  opt.rope_cache = c.rope;
  Engine engine(opt);
  std::vector<GenerationRequest> all;
  for (const auto& rc : ref["cases"]) {
    GenerationRequest r{rc["prompt_ids"].get<std::vector<int32_t>>(), {}};
    r.params.max_new_tokens = static_cast<int>(rc["greedy_ids"].size());
    r.params.ignore_eos = !ref["eos_stops_generation"].get<bool>();
    const auto expected = rc["greedy_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(engine.generate({r})[0].token_ids, expected) << rc["name"] << " alone";
    all.push_back(r);
  }
  const std::vector<GenerationOutput> outs = engine.generate(all);
  for (size_t i = 0; i < all.size(); ++i)
    EXPECT_EQ(outs[i].token_ids, ref["cases"][i]["greedy_ids"].get<std::vector<int32_t>>())
        << ref["cases"][i]["name"] << " in a batch";
}

TEST(TinyParityEos, StopsAtAnyOfSeveralEosIdsAsHfDoes) {
  const nlohmann::json ref = test::read_json("models/multi_eos/reference.json")["eos_stop"];
  EngineOptions opt;
  opt.model = test::data_path("models/multi_eos");
  Engine engine(opt);
  ASSERT_GT(engine.config().eos_token_ids.size(), 1U);  // generation_config.json lists several
  GenerationRequest r{ref["prompt_ids"].get<std::vector<int32_t>>(), {}};
  r.params.max_new_tokens = ref["max_new_tokens"];
  const GenerationOutput out = engine.generate({r})[0];
  EXPECT_EQ(out.token_ids, ref["generated_ids"].get<std::vector<int32_t>>());
  EXPECT_EQ(out.finish_reason, "eos");
}

// No requests: no outputs and empty stats, and the engine serves the next call as before.
TEST(TinyEngine, NoRequestsGiveNoOutputs) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  Engine engine(opt);
  GenerationRequest r{{1, 2, 3}, {}};
  r.params.max_new_tokens = 3;
  r.params.ignore_eos = true;
  const std::vector<int32_t> before = engine.generate({r})[0].token_ids;
  EXPECT_TRUE(engine.generate({}).empty());
  EXPECT_TRUE(engine.last_stats().steps.empty());
  EXPECT_EQ(engine.last_stats().decode_tokens, 0);
  EXPECT_EQ(engine.generate({r})[0].token_ids, before);
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const std::string& m : test::tiny_model_names())
    for (const char* rope : {"post", "pre"}) out.push_back({m, rope});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Models, TinyParity, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.model + "_" + info.param.rope; });

}  // namespace
}  // namespace nanoinfer
