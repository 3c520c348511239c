// Parity with HF transformers on tiny random Llama models (tools/golden/make_tiny_models.py):
// last-position logits within 1e-4 and 32 greedy tokens identical — alone, in one batch, and
// with either RoPE cache policy.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

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

// logprobs: the first token's log-probability and the five most likely tokens are HF's last
// logits through a log-softmax (to 2e-4), best first; a sampled batch beside greedy requests
// gets one entry per token, and its tokens are the ones it gets without logprobs.
TEST_P(TinyParity, LogprobsAreHfsLogSoftmax) {
  const Case c = GetParam();
  const nlohmann::json ref = test::read_json("models/" + c.model + "/reference.json");
  EngineOptions opt;
  opt.model = test::data_path("models/" + c.model);
  opt.rope_cache = c.rope;
  Engine engine(opt);
  std::vector<GenerationRequest> sampled;
  std::vector<TokenLogprobs> first;
  for (const auto& rc : ref["cases"]) {
    const auto logits = rc["last_logits"].get<std::vector<double>>();
    double top = logits[0];
    for (const double x : logits) top = std::max(top, x);
    double z = 0;
    for (const double x : logits) z += std::exp(x - top);
    const double log_z = top + std::log(z);
    GenerationRequest r{rc["prompt_ids"].get<std::vector<int32_t>>(), {}};
    r.params.max_new_tokens = 1;
    r.params.logprobs = 5;
    const GenerationOutput out = engine.generate({r})[0];
    ASSERT_EQ(out.logprobs.size(), 1U);
    const TokenLogprobs& lp = out.logprobs[0];
    EXPECT_EQ(out.token_ids[0], rc["greedy_ids"][0]) << rc["name"];
    EXPECT_NEAR(lp.logprob, logits[static_cast<size_t>(out.token_ids[0])] - log_z, 2e-4)
        << rc["name"];
    ASSERT_EQ(lp.top.size(), 5U);
    EXPECT_EQ(lp.top[0].first, out.token_ids[0]);
    for (size_t k = 0; k < lp.top.size(); ++k) {
      const auto [id, v] = lp.top[k];
      EXPECT_NEAR(v, logits[static_cast<size_t>(id)] - log_z, 2e-4) << rc["name"] << " top " << k;
      if (k > 0) {
        EXPECT_LE(v, lp.top[k - 1].second);
      }
    }
    first.push_back(lp);
    r.params.max_new_tokens = 12;
    r.params.temperature = 0.8F;
    r.params.top_k = 20;
    r.params.seed = 5;
    sampled.push_back(r);
  }
  std::vector<GenerationRequest> plain = sampled;
  for (GenerationRequest& r : plain) r.params.logprobs = -1;
  sampled.push_back(plain.back());  // a row without logprobs in the same steps
  const std::vector<GenerationOutput> with = engine.generate(sampled);
  const std::vector<GenerationOutput> without = engine.generate(plain);
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_EQ(with[i].token_ids, without[i].token_ids) << i;
    ASSERT_EQ(with[i].logprobs.size(), with[i].token_ids.size()) << i;
    // The model's distribution, not the one temperature and top-k sampled from: the first
    // step's alternatives are the greedy request's.
    EXPECT_EQ(with[i].logprobs[0].top, first[i].top) << i;
    for (const TokenLogprobs& lp : with[i].logprobs) {
      EXPECT_LE(lp.logprob, 0.0F);
      EXPECT_LE(lp.logprob, lp.top[0].second);  // sampled: not always the most likely
    }
  }
  EXPECT_TRUE(with.back().logprobs.empty());
  EXPECT_EQ(with.back().token_ids, without.back().token_ids);
}

// prompt_logprobs: a prompt of HF's own prompt and greedy continuation is scored at every token
// after the first. Where the continuation starts, the score is HF's last logits through a
// log-softmax; over the continuation, each position's best token is HF's next greedy token; and
// every position's best tokens are those of a request whose prompt ends there. Scored in steps
// of 7 tokens (chunked prefill) beside requests that decode, as in one step, and the other
// requests' outputs are unchanged by them.
TEST_P(TinyParity, PromptLogprobsScoreEveryPromptToken) {
  const Case c = GetParam();
  const nlohmann::json ref = test::read_json("models/" + c.model + "/reference.json");
  for (const int step_tokens : {16384, 7}) {
    EngineOptions opt;
    opt.model = test::data_path("models/" + c.model);
    opt.rope_cache = c.rope;
    opt.max_step_tokens = step_tokens;
    Engine engine(opt);
    std::vector<GenerationRequest> batch;
    for (const auto& rc : ref["cases"]) {
      GenerationRequest r{rc["prompt_ids"].get<std::vector<int32_t>>(), {}};
      r.params.max_new_tokens = 3;
      batch.push_back(r);  // decodes beside the scored prompts
      const auto greedy = rc["greedy_ids"].get<std::vector<int32_t>>();
      r.prompt_ids.insert(r.prompt_ids.end(), greedy.begin(), greedy.begin() + 8);
      r.params.prompt_logprobs = 2;
      batch.push_back(r);
    }
    const std::vector<GenerationOutput> outs = engine.generate(batch);
    for (size_t k = 0; k < ref["cases"].size(); ++k) {
      const auto& rc = ref["cases"][k];
      const std::string at =
          rc["name"].get<std::string>() + ", steps of " + std::to_string(step_tokens);
      GenerationRequest alone = batch[2 * k];
      EXPECT_EQ(outs[2 * k].token_ids, engine.generate({alone})[0].token_ids) << at;
      EXPECT_TRUE(outs[2 * k].prompt_logprobs.empty()) << at;
      const std::vector<int32_t>& p = batch[2 * k + 1].prompt_ids;
      const std::vector<TokenLogprobs>& lp = outs[2 * k + 1].prompt_logprobs;
      ASSERT_EQ(lp.size(), p.size() - 1) << at;
      const size_t n = rc["prompt_ids"].size();
      const auto logits = rc["last_logits"].get<std::vector<double>>();
      double log_z = 0;
      for (const double x : logits) log_z += std::exp(x);
      log_z = std::log(log_z);
      EXPECT_NEAR(lp[n - 1].logprob, logits[static_cast<size_t>(p[n])] - log_z, 2e-4) << at;
      for (size_t i = n - 1; i + 1 < p.size(); ++i) {
        ASSERT_EQ(lp[i].top.size(), 2U) << at;
        EXPECT_EQ(lp[i].top[0].first, p[i + 1]) << at << " position " << i;
        EXPECT_FLOAT_EQ(lp[i].logprob, lp[i].top[0].second) << at << " position " << i;
      }
      std::vector<GenerationRequest> prefixes;
      for (size_t i = 0; i + 1 < p.size(); ++i) {
        GenerationRequest q{std::vector<int32_t>(p.begin(), p.begin() + static_cast<long>(i) + 1),
                            {}};
        q.params.max_new_tokens = 1;
        q.params.logprobs = 2;
        prefixes.push_back(q);
      }
      const std::vector<GenerationOutput> ends = engine.generate(prefixes);
      for (size_t i = 0; i + 1 < p.size(); ++i) {
        ASSERT_EQ(lp[i].top.size(), ends[i].logprobs[0].top.size()) << at;
        for (size_t t = 0; t < lp[i].top.size(); ++t) {
          EXPECT_EQ(lp[i].top[t].first, ends[i].logprobs[0].top[t].first) << at << " " << i;
          EXPECT_NEAR(lp[i].top[t].second, ends[i].logprobs[0].top[t].second, 1e-5) << at;
        }
        EXPECT_LE(lp[i].logprob, lp[i].top[0].second) << at;
      }
    }
  }
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

// A sampled request without a seed draws its own when queued: equal prompts of one batch sample
// apart, each output names its seed, and that seed given back samples the same tokens (through
// generate() and submit() alike). A greedy request without one has none; a given seed is kept.
TEST(TinyEngine, UnseededRequestsDrawTheirOwnSeeds) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  Engine engine(opt);
  GenerationRequest sampled{{1, 2, 3}, {}};
  sampled.params.max_new_tokens = 16;
  sampled.params.ignore_eos = true;
  sampled.params.temperature = 1.5F;  // (a tiny random model: near-uniform over its vocabulary)
  GenerationRequest greedy = sampled, seeded = sampled;
  greedy.params.temperature = 0.0F;
  seeded.params.seed = 77;
  const std::vector<GenerationOutput> outs = engine.generate({sampled, sampled, greedy, seeded});
  ASSERT_TRUE(outs[0].seed && outs[1].seed);
  EXPECT_NE(*outs[0].seed, *outs[1].seed);
  EXPECT_NE(outs[0].token_ids, outs[1].token_ids);
  EXPECT_FALSE(outs[2].seed.has_value());
  EXPECT_EQ(outs[3].seed, std::optional<uint64_t>(77));
  for (size_t i : {0U, 1U}) {
    GenerationRequest again = sampled;
    again.params.seed = outs[i].seed;
    EXPECT_EQ(engine.generate({again})[0].token_ids, outs[i].token_ids) << i;
  }
  GenerationOutput online;
  engine.submit(sampled, nullptr, [&](size_t, GenerationOutput&& o) { online = std::move(o); });
  while (engine.step()) {
  }
  ASSERT_TRUE(online.seed.has_value());
  GenerationRequest again = sampled;
  again.params.seed = online.seed;
  EXPECT_EQ(engine.generate({again})[0].token_ids, online.token_ids);
}

// Sampler ids (suppressed, biased, EOS) outside the vocabulary, or suppressing all of it, are
// refused with the request before anything runs (they failed the whole batch at its first
// sampled step; found by fuzzing).
TEST(TinyEngine, SamplerIdsAreCheckedBeforeAnythingRuns) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  Engine engine(opt);
  const int vocab = engine.config().vocab_size;
  GenerationRequest good{{1, 2, 3}, {}}, bad = good;
  good.params.max_new_tokens = bad.params.max_new_tokens = 2;
  bad.params.suppress_tokens = {vocab};
  const auto error = [&](const GenerationRequest& r) {
    try {
      engine.generate({good, r});
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(error(bad), "request 1: suppress_tokens: id " + std::to_string(vocab) +
                            " is outside the vocabulary of " + std::to_string(vocab));
  bad.params.suppress_tokens.clear();
  bad.params.eos_token_ids = {2, vocab + 5};  // (an EOS that could never be generated)
  EXPECT_EQ(error(bad), "request 1: eos_token_ids: id " + std::to_string(vocab + 5) +
                            " is outside the vocabulary of " + std::to_string(vocab));
  bad.params.eos_token_ids.clear();
  for (int32_t t = vocab - 1; t >= 0; --t) bad.params.suppress_tokens.push_back(t);
  bad.params.suppress_tokens.push_back(0);
  EXPECT_EQ(error(bad), "request 1: suppress_tokens: every token of the vocabulary is suppressed");
  bad.params.suppress_tokens.pop_back();
  bad.params.suppress_tokens.pop_back();  // one token left: it is the only pick
  const GenerationOutput out = engine.generate({bad})[0];
  EXPECT_EQ(out.token_ids, (std::vector<int32_t>{0, 0}));
  // Parameters out of range name their request too.
  GenerationRequest negative = good;
  negative.params.top_k = -3;
  EXPECT_EQ(error(negative), "request 1: top_k must be >= 0 (0 = off), got -3");
}

// Options out of range are refused by name before anything loads (the model path here does not
// exist: a later check would name it instead); block_size 0 divided by zero before.
TEST(TinyEngine, OptionsOutOfRangeAreRefusedBeforeLoading) {
  const std::vector<std::pair<std::function<void(EngineOptions&)>, std::string>> bad = {
      {[](EngineOptions& o) { o.block_size = 0; }, "block_size must be >= 1, got 0"},
      {[](EngineOptions& o) { o.max_context = -1; }, "max_context must be >= 0, got -1"},
      {[](EngineOptions& o) { o.cache_tokens = -5; }, "cache_tokens must be >= 0, got -5"},
      {[](EngineOptions& o) { o.max_step_tokens = -2; }, "max_step_tokens must be >= -1, got -2"},
      {[](EngineOptions& o) { o.sink_tokens = -2; }, "sink_tokens must be >= -1, got -2"},
      {[](EngineOptions& o) { o.window = -1; }, "window must be >= 0, got -1"},
      {[](EngineOptions& o) { o.rope_cache = "mid"; },
       "unknown rope_cache 'mid' (expected post or pre)"},
      {[](EngineOptions& o) { o.backend = "tpu"; }, "unknown backend 'tpu' (expected cpu or cuda)"},
      {[](EngineOptions& o) { o.dtype = "fp16"; }, "unknown CUDA dtype 'fp16'"},
  };
  for (const auto& [set, expected] : bad) {
    EngineOptions opt;
    opt.model = test::data_path("models/no_such_model");
    set(opt);
    std::string what;
    try {
      const Engine engine(opt);
    } catch (const Error& e) {
      what = e.what();
    }
    EXPECT_NE(what.find(expected), std::string::npos) << what;
  }
  EngineOptions ok;
  ok.model = test::data_path("models/gqa");
  ok.block_size = 7;
  EXPECT_NO_THROW(ok.validate());
}

// The context an engine gets without max_context: the model's positions up to 4,096 (what serve
// sizes its default cache by: 16 such contexts).
TEST(TinyEngine, TheDefaultContextIsTheModelsPositionsUpTo4096) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  const ModelConfig config = read_model_config(opt);
  ASSERT_EQ(config.max_position_embeddings, 256);
  EXPECT_EQ(resolved_max_context(opt, config), 256);
  EXPECT_EQ(Engine(opt).max_context(), 256);
  ModelConfig long_one = config;
  long_one.max_position_embeddings = 131072;
  EXPECT_EQ(resolved_max_context(opt, long_one), 4096);
  opt.max_context = 100;
  EXPECT_EQ(resolved_max_context(opt, long_one), 100);
  EXPECT_EQ(Engine(opt).max_context(), 100);
}

// Host memory that runs out while an engine is made (a context of 2^31 - 1 positions: RoPE tables
// of about 100 GB) is an Error naming max_context, not std::bad_alloc.
TEST(TinyEngine, AContextTooLargeForMemoryIsAnError) {
#ifdef __SANITIZE_ADDRESS__
  GTEST_SKIP() << "AddressSanitizer aborts on an allocation this size";
#endif
  // (where the kernel grants any allocation, the tables would be written until it kills us)
  std::string mode;
  std::ifstream("/proc/sys/vm/overcommit_memory") >> mode;
  if (mode == "1") GTEST_SKIP() << "vm.overcommit_memory = 1: no allocation fails";
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_context = INT_MAX;
  opt.warmup = false;
  try {
    Engine engine(opt);
    FAIL() << "an engine of " << INT_MAX << " positions was made";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of memory making the engine: with max_context "
                                         "2147483647, "),
              std::string::npos)
        << e.what();
  }
}

// The step cap left at -1 is the backend's: 512 tokens on the CPU, so a 600-token prompt prefills
// in two steps; 0 (no cap) takes it in one; either way the same tokens.
TEST(TinyEngine, TheDefaultStepCapIsTheBackends) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_context = 640;  // (beyond the model's 256 positions: the library takes it)
  Engine capped(opt);
  EXPECT_EQ(capped.max_step_tokens(), 512);
  opt.max_step_tokens = 0;
  Engine whole(opt);
  EXPECT_EQ(whole.max_step_tokens(), 0);
  GenerationRequest r;
  for (int i = 0; i < 600; ++i) r.prompt_ids.push_back(i % 300);
  r.params.max_new_tokens = 2;
  r.params.ignore_eos = true;
  const std::vector<int32_t> ids = capped.generate({r})[0].token_ids;
  std::vector<int64_t> tokens;
  for (const StepStats& s : capped.last_stats().steps) tokens.push_back(s.tokens);
  EXPECT_EQ(tokens, (std::vector<int64_t>{512, 88, 1}));
  EXPECT_EQ(whole.generate({r})[0].token_ids, ids);
  EXPECT_EQ(whole.last_stats().steps.front().tokens, 600);
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
