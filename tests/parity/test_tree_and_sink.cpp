// Explicit positions with a tree mask (SpecInfer-style verification) and the StreamingLLM sink
// cache, on a tiny HF model.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/batch_builder.h"
#include "model/llama.h"
#include "nanoinfer/engine.h"
#include "test_paths.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

std::vector<float> run(LlamaModel& model, KvCache& cache, SeqState& s) {
  const Batch batch = build_batch({&s}, cache);
  std::vector<float> logits;
  model.backend().to_host_f32(model.forward(batch, cache), logits);
  return logits;
}

class TreeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TreeTest, EachBranchOfATreeForwardEqualsTheBranchAlone) {
  const LoadedModel loaded = load_model(test::data_path("models/gqa"));
  auto be = make_cpu_backend();
  LlamaModel model(loaded, *be, 256);
  const int V = loaded.config.vocab_size;
  const std::vector<int32_t> prompt = {5, 17, 42, 9, 100, 3};
  // Tree over new tokens a=7, b=11, c=13, d=19:  a -> {b -> d, c}.
  const std::vector<int32_t> tree = {7, 11, 13, 19};
  const int p0 = static_cast<int>(prompt.size());
  KvCache cache(*be, loaded.config, {4, 32, GetParam()});
  SeqState s(0, cache.create_sequence(), prompt);
  run(model, cache, s);
  s.pending = tree;
  s.positions = {p0, p0 + 1, p0 + 1, p0 + 2};
  s.tree_mask = {1, 0, 0, 0,   // a
                 1, 1, 0, 0,   // b sees a
                 1, 0, 1, 0,   // c sees a
                 1, 1, 0, 1};  // d sees a, b
  s.all_logits = true;
  const std::vector<float> tree_logits = run(model, cache, s);

  const std::vector<std::vector<int>> branches = {{0, 1, 3}, {0, 2}};
  for (const auto& br : branches) {
    KvCache alone(*be, loaded.config, {4, 32, GetParam()});
    SeqState a(0, alone.create_sequence(), prompt);
    for (int i : br) a.pending.push_back(tree[static_cast<size_t>(i)]);
    a.all_logits = true;
    const std::vector<float> lin = run(model, alone, a);
    for (size_t k = 0; k < br.size(); ++k) {
      const float* x = lin.data() + (prompt.size() + k) * V;
      const float* y = tree_logits.data() + static_cast<size_t>(br[k]) * V;
      for (int v = 0; v < V; ++v) ASSERT_NEAR(x[v], y[v], 1e-5) << "branch token " << br[k];
    }
  }
}

INSTANTIATE_TEST_SUITE_P(RopePolicies, TreeTest, ::testing::Values("post", "pre"));

// Greedy decode of n tokens one at a time; returns the ids.
std::vector<int32_t> greedy(LlamaModel& model, KvCache& cache, std::vector<int32_t> prompt, int n) {
  SeqState s(0, cache.create_sequence(), std::move(prompt));
  const int V = model.config().vocab_size;
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    const std::vector<float> l = run(model, cache, s);
    const float* row = l.data() + l.size() - V;
    out.push_back(static_cast<int32_t>(std::max_element(row, row + V) - row));
    s.pending = {out.back()};
  }
  return out;
}

TEST(SinkCache, EqualsTheFullCacheWhileTheWindowHoldsEverything) {
  const LoadedModel loaded = load_model(test::data_path("models/gqa"));
  auto be = make_cpu_backend();
  LlamaModel model(loaded, *be, 256);
  KvCache full(*be, loaded.config, {16, 8, "pre"});
  KvCacheOptions sink_opt{16, 8, "pre"};
  sink_opt.sink_tokens = 4;
  sink_opt.window = 100;
  KvCache sink(*be, loaded.config, sink_opt);
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(greedy(model, full, prompt, 40), greedy(model, sink, prompt, 40));
}

TEST(SinkCache, GeneratingFourTimesTheWindowKeepsMemoryConstant) {
  const LoadedModel loaded = load_model(test::data_path("models/gqa"));
  auto be = make_cpu_backend();
  LlamaModel model(loaded, *be, 256);
  KvCacheOptions opt{1, 20, "pre"};  // exactly sink + window slots: any leak would fail
  opt.sink_tokens = 4;
  opt.window = 16;
  KvCache cache(*be, loaded.config, opt);
  const int64_t bytes = cache.bytes();
  SeqState s(0, cache.create_sequence(), {1, 2, 3, 4, 5, 6});
  const int V = loaded.config.vocab_size;
  for (int i = 0; i < 4 * 20; ++i) {
    const std::vector<float> l = run(model, cache, s);
    ASSERT_LE(cache.length(s.cache_id), 20);
    for (float x : l) ASSERT_TRUE(std::isfinite(x));
    s.pending = {static_cast<int32_t>(std::max_element(l.end() - V, l.end()) - (l.end() - V))};
  }
  EXPECT_EQ(cache.length(s.cache_id), 20);
  EXPECT_EQ(cache.bytes(), bytes);
  EXPECT_EQ(s.fed, 6 + 4 * 20 - 1);  // text positions went far past the cache size
}

TEST(SinkCache, RejectsPostRope) {
  const LoadedModel loaded = load_model(test::data_path("models/gqa"));
  auto be = make_cpu_backend();
  KvCacheOptions opt{1, 20, "post"};
  opt.sink_tokens = 4;
  opt.window = 16;
  EXPECT_THROW(KvCache(*be, loaded.config, opt), Error);
}

// A window without sink tokens would keep every token in silence: refused, through the engine too.
TEST(SinkCache, RejectsAWindowWithoutTheSinkCache) {
  const LoadedModel loaded = load_model(test::data_path("models/gqa"));
  auto be = make_cpu_backend();
  KvCacheOptions opt{1, 20, "pre"};
  opt.window = 16;
  EXPECT_THROW(KvCache(*be, loaded.config, opt), Error);
  opt.sink_tokens = 0;  // the window alone
  EXPECT_NO_THROW(KvCache(*be, loaded.config, opt));
  EngineOptions eo;
  eo.model = test::data_path("models/gqa");
  eo.rope_cache = "pre";
  eo.window = 8;
  try {  // refused as the engine is made, before any request (a server would start otherwise)
    Engine engine(eo);
    FAIL() << "an engine of a window without sink tokens was made";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("kept only by the sink cache"), std::string::npos)
        << e.what();
  }
}

// Through the engine a prompt is prefilled in one step, so a sink cache takes only a prompt that
// fits its window (sink tokens aside); a longer one is refused before anything runs, naming the
// request, and one that fits runs.
TEST(SinkCache, EngineRefusesAPromptLongerThanTheWindow) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.rope_cache = "pre";
  opt.sink_tokens = 2;
  opt.window = 4;
  Engine engine(opt);
  GenerationRequest fits{{1, 2, 3, 4}, {}}, longer{{1, 2, 3, 4, 5}, {}};
  fits.params.max_new_tokens = longer.params.max_new_tokens = 8;
  fits.params.ignore_eos = true;
  try {
    engine.generate({fits, longer});
    FAIL() << "a 5-token prompt was accepted by a window of 4";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "request 1: the prompt (5 tokens) does not fit the sink(2+4) cache, which takes "
                 "at most 4 new tokens a step: a longer prompt would evict its own first tokens "
                 "before its last ones were read");
  }
  EXPECT_EQ(engine.generate({fits})[0].token_ids.size(), 8U);
}

// StreamingLLM's point: through the engine a sink cache generates past the context, its positions
// renumbered below its size (here 200 new tokens with max_context 64), token for token what the
// model gives over the same cache driven directly, in the memory of its size. The engine's keys are
// pre-RoPE without being asked (rope_cache left empty); asked for post-RoPE ones, it is refused, as
// is a sink cache larger than the context, when the engine is built.
TEST(SinkCache, EngineGeneratesPastTheContext) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_context = 64;
  opt.sink_tokens = 4;
  opt.window = 28;
  Engine engine(opt);
  GenerationRequest r{{1, 2, 3, 4, 5, 6, 7, 8}, {}};
  r.params.max_new_tokens = 200;
  r.params.ignore_eos = true;
  const std::vector<int32_t> got = engine.generate({r})[0].token_ids;
  // Its memory is the sink cache's 32 entries, not the 208 of prompt + max new tokens.
  const int64_t bytes = engine.last_stats().steps.back().kv_reserved_bytes;
  const ModelConfig& c = engine.config();
  EXPECT_EQ(bytes, 32 * 2 * int64_t{c.num_layers} * c.num_kv_heads * c.head_dim * 4);

  const LoadedModel loaded = load_model(test::data_path("models/gqa"));
  auto be = make_cpu_backend();
  LlamaModel model(loaded, *be, 256);
  KvCacheOptions sink_opt{1, 32, "pre"};
  sink_opt.sink_tokens = 4;
  sink_opt.window = 28;
  KvCache sink(*be, loaded.config, sink_opt);
  EXPECT_EQ(got, greedy(model, sink, r.prompt_ids, 200));

  EngineOptions post = opt;
  post.rope_cache = "post";
  try {
    Engine refused(post);
    FAIL() << "a sink cache of post-RoPE keys was made";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("keys must be rotated on read"), std::string::npos)
        << e.what();
  }

  opt.window = 61;
  try {
    Engine too_large(opt);
    FAIL() << "a sink cache of 65 entries was built under max_context 64";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "sink_tokens + window (65) exceed max_context (64)");
  }
}

}  // namespace
}  // namespace nanoinfer
