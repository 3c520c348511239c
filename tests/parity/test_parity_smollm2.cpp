// The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) against HF transformers fp32 on the same
// file (tools/golden/smollm2_golden.py): the summary prompt's ids, its last-position logits,
// 128 greedy tokens and their text; the batch and chat prompts alone and together.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/batch_builder.h"
#include "model/llama.h"
#include "nanoinfer/engine.h"
#include "nanoinfer/tokenizer.h"
#include "test_paths.h"

namespace nanoinfer {
namespace {

std::string read_text(const std::string& rel) {
  std::ifstream in(test::data_path(rel), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class SmolLM2 : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = test::default_model_path();
    if (path_.empty()) GTEST_SKIP() << "default model not fetched (make model)";
  }
  std::string path_;
};

// Both RoPE cache policies must give HF's tokens.
class SmolLM2Greedy : public SmolLM2, public ::testing::WithParamInterface<std::string> {};

TEST_P(SmolLM2Greedy, SummaryPromptGreedy128MatchesHf) {
  const nlohmann::json ref = test::read_json("smollm2/summary_greedy.json");
  const auto tok = load_tokenizer_for_model(path_);
  const std::vector<int32_t> prompt = tok->encode(read_text(ref["prompt_file"]));
  ASSERT_EQ(prompt, ref["prompt_ids"].get<std::vector<int32_t>>());

  EngineOptions opt;
  opt.model = path_;
  opt.rope_cache = GetParam();
  Engine engine(opt);
  GenerationRequest req{prompt, {}};
  req.params.max_new_tokens = ref["max_new_tokens"];
  const GenerationOutput out = engine.generate({req})[0];
  EXPECT_EQ(out.token_ids, ref["generated_ids"].get<std::vector<int32_t>>());
  EXPECT_EQ(tok->decode(out.token_ids, true), ref["text"].get<std::string>());
  EXPECT_EQ(tok->decode(out.token_ids, false), ref["text_with_special"].get<std::string>());
}

INSTANTIATE_TEST_SUITE_P(RopePolicies, SmolLM2Greedy, ::testing::Values("post", "pre"));

// Both weight paths: GGUF blocks widened per tile (the engine's CPU default) and dequantised
// at load must give the same logits, within fp32 summation noise of HF's.
class SmolLM2Logits : public SmolLM2, public ::testing::WithParamInterface<bool> {};

TEST_P(SmolLM2Logits, SummaryLastLogitsMatchHf) {
  const nlohmann::json ref = test::read_json("smollm2/summary_greedy.json");
  const auto full =
      test::read_json("smollm2/summary_last_logits.json")["logits"].get<std::vector<float>>();
  LoadOptions lo;
  lo.dequantize = GetParam();
  const LoadedModel loaded = load_model(path_, lo);
  auto be = make_cpu_backend();
  LlamaModel model(loaded, *be, 2048);
  KvCache cache(*be, loaded.config, {16, 128, "post"});
  SeqState s(0, cache.create_sequence(), ref["prompt_ids"].get<std::vector<int32_t>>());
  std::vector<float> logits;
  be->to_host_f32(model.forward(build_batch({&s}, cache), cache), logits);
  ASSERT_EQ(logits.size(), full.size());
  float max_diff = 0;
  for (size_t i = 0; i < full.size(); ++i) {
    const float d = std::abs(logits[i] - full[i]);  // a NaN sticks and fails the check
    max_diff = std::isnan(d) || d > max_diff ? d : max_diff;
  }
  EXPECT_LE(max_diff, 2e-3F);  // 30 layers, 994 tokens of fp32 sums in another order
  EXPECT_EQ(std::max_element(logits.begin(), logits.end()) - logits.begin(),
            ref["prompt_last_logits"]["argmax"].get<int64_t>());
}

INSTANTIATE_TEST_SUITE_P(WeightPaths, SmolLM2Logits, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "dequantised" : "blocks"; });

TEST_F(SmolLM2, ExtraPromptsMatchHfAloneAndBatched) {
  const nlohmann::json ref = test::read_json("smollm2/extra_greedy.json");
  const auto tok = load_tokenizer_for_model(path_);
  EngineOptions opt;
  opt.model = path_;
  Engine engine(opt);
  std::vector<GenerationRequest> all;
  for (const auto& c : ref["cases"]) {
    const std::string text = c["chat"].get<bool>()
                                 ? tok->apply_chat_template({{"user", c["prompt_text"]}}, true)
                                 : c["prompt_text"].get<std::string>();
    GenerationRequest r{tok->encode(text, !c["chat"].get<bool>()), {}};
    ASSERT_EQ(r.prompt_ids, c["prompt_ids"].get<std::vector<int32_t>>()) << c["name"];
    r.params.max_new_tokens = c["max_new_tokens"];
    const auto expected = c["generated_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(engine.generate({r})[0].token_ids, expected) << c["name"] << " alone";
    all.push_back(r);
  }
  const auto outs = engine.generate(all);
  for (size_t i = 0; i < all.size(); ++i)
    EXPECT_EQ(outs[i].token_ids, ref["cases"][i]["generated_ids"].get<std::vector<int32_t>>())
        << ref["cases"][i]["name"] << " batched";
}

TEST_F(SmolLM2, StopStringEndsTheTextBeforeIt) {
  EngineOptions opt;
  opt.model = path_;
  Engine engine(opt);
  const Tokenizer& tok = *engine.tokenizer();
  GenerationRequest r{tok.encode("The capital of France is"), {}};
  r.params.max_new_tokens = 20;
  const GenerationOutput free_run = engine.generate({r})[0];
  ASSERT_NE(free_run.text.find(" Paris."), std::string::npos) << free_run.text;
  r.params.stop = {"."};
  std::string streamed;
  const GenerationOutput out = engine.generate({r}, [&](size_t, int32_t, const std::string& piece) {
    streamed += piece;
    return true;
  })[0];
  EXPECT_EQ(out.finish_reason, "stop");
  EXPECT_EQ(out.text, free_run.text.substr(0, free_run.text.find('.')));
  EXPECT_EQ(streamed, out.text);  // the stop string itself never reaches the stream
}

}  // namespace
}  // namespace nanoinfer
