// Whole-model checks of the CUDA backend on the tiny HF models (tests/data/models) and, where it
// is present, the default model: the fp32 mode reproduces HF's greedy tokens exactly (alone and
// batched, queued and chunked by continuous batching, both RoPE policies, with and without CUDA
// graphs) and its last logits within 1e-4; bf16 stays close to fp32; graph replay gives the same
// logits as eager decoding.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/batch_builder.h"
#include "gpu_test_util.h"
#include "loader/model_loader.h"
#include "model/llama.h"
#include "nanoinfer/engine.h"
#include "test_paths.h"
#ifdef NANOINFER_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace nanoinfer {
namespace {

std::vector<GenerationRequest> requests(const nlohmann::json& ref) {
  std::vector<GenerationRequest> out;
  for (const auto& rc : ref["cases"]) {
    GenerationRequest r{rc["prompt_ids"].get<std::vector<int32_t>>(), {}};
    r.params.max_new_tokens = static_cast<int>(rc["greedy_ids"].size());
    r.params.ignore_eos = !ref["eos_stops_generation"].get<bool>();
    out.push_back(r);
  }
  return out;
}

struct Case {
  std::string model, rope;
  bool graphs;
};

class CudaTinyParity : public ::testing::TestWithParam<Case> {};

// The foundation's SmolLM2 parity check in the fp32 mode: the summary prompt's 128 greedy tokens
// equal HF's (the GGUF's blocks widened to f32 as the CUDA backend uploads them). On the GPU
// machine the model is there only when brought over (scripts/split_model.sh); otherwise the test
// skips.
TEST(CudaSmolLM2, Fp32SummaryGreedy128MatchesHf) {
  NI_REQUIRE_CUDA(probe, DType::F32);
  const std::string path = test::default_model_path();
  if (path.empty()) GTEST_SKIP() << "default model not on this machine";
  const nlohmann::json ref = test::read_json("smollm2/summary_greedy.json");
  EngineOptions opt;
  opt.model = path;
  opt.backend = "cuda";
  opt.dtype = "f32";
  Engine engine(opt);
  GenerationRequest req{ref["prompt_ids"].get<std::vector<int32_t>>(), {}};
  req.params.max_new_tokens = ref["max_new_tokens"];
  EXPECT_EQ(engine.generate({req})[0].token_ids, ref["generated_ids"].get<std::vector<int32_t>>());
}

TEST_P(CudaTinyParity, Fp32GreedyMatchesHfAloneAndBatched) {
  NI_REQUIRE_CUDA(probe, DType::F32);
  const Case c = GetParam();
  const nlohmann::json ref = test::read_json("models/" + c.model + "/reference.json");
  EngineOptions opt;
  opt.model = test::data_path("models/" + c.model);
  opt.backend = "cuda";
  opt.dtype = "f32";
  opt.rope_cache = c.rope;
  opt.cuda_graphs = c.graphs;
  Engine engine(opt);
  std::vector<GenerationRequest> all = requests(ref);
  for (size_t i = 0; i < all.size(); ++i)
    EXPECT_EQ(engine.generate({all[i]})[0].token_ids,
              ref["cases"][i]["greedy_ids"].get<std::vector<int32_t>>())
        << ref["cases"][i]["name"] << " alone";
  // Three sequences: the decode batch is padded to its bucket of 4.
  all.push_back(all[0]);
  const std::vector<GenerationOutput> outs = engine.generate(all);
  for (size_t i = 0; i < all.size(); ++i)
    EXPECT_EQ(outs[i].token_ids,
              ref["cases"][i % ref["cases"].size()]["greedy_ids"].get<std::vector<int32_t>>())
        << "request " << i << " in a batch of " << all.size();
  // Continuous batching: a cache with room for the longest request and one block more (the
  // others wait for room), steps of at most 5 tokens (prompts prefilled in chunks beside decode
  // rows): HF's tokens still.
  size_t longest = 0;
  for (const GenerationRequest& r : all)
    longest = std::max(longest, r.prompt_ids.size() + static_cast<size_t>(r.params.max_new_tokens));
  opt.cache_tokens = static_cast<int>((longest + 15) / 16 * 16 + 16);
  opt.max_step_tokens = 5;
  Engine limited(opt);
  const std::vector<GenerationOutput> queued = limited.generate(all);
  for (size_t i = 0; i < all.size(); ++i)
    EXPECT_EQ(queued[i].token_ids,
              ref["cases"][i % ref["cases"].size()]["greedy_ids"].get<std::vector<int32_t>>())
        << "request " << i << " with continuous batching";
}

TEST_P(CudaTinyParity, LastLogitsFp32AndBf16) {
  NI_REQUIRE_CUDA(gpu32, DType::F32);
  const Case c = GetParam();
  const nlohmann::json ref = test::read_json("models/" + c.model + "/reference.json");
  const LoadedModel loaded = load_model(test::data_path("models/" + c.model));
  for (const DType dt : {DType::F32, DType::BF16}) {
    auto be = make_cuda_backend(dt);
    LlamaModel model(loaded, *be, 256);
    for (const auto& rc : ref["cases"]) {
      KvCache cache(*be, loaded.config, {16, 16, c.rope});
      SeqState s(0, cache.create_sequence(), rc["prompt_ids"].get<std::vector<int32_t>>());
      std::vector<float> logits;
      be->to_host_f32(model.forward(build_batch({&s}, cache), cache), logits);
      const auto want = rc["last_logits"].get<std::vector<float>>();
      ASSERT_EQ(logits.size(), want.size());
      if (dt == DType::F32) {
        float max_diff = 0;
        for (size_t i = 0; i < want.size(); ++i)
          max_diff = std::max(max_diff, std::abs(logits[i] - want[i]));
        EXPECT_LE(max_diff, 1e-4F) << rc["name"];
      } else {
        // bf16 end to end (weights, activations, cache) against HF's fp32 logits.
        EXPECT_LT(test::rel_error(logits, want.data(), want.size()), 6e-2) << rc["name"] << " bf16";
      }
    }
  }
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const std::string& m : test::tiny_model_names())
    for (const char* rope : {"post", "pre"})
      for (const bool graphs : {true, false}) out.push_back({m, rope, graphs});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Models, CudaTinyParity, ::testing::ValuesIn(cases()),
                         [](const auto& info) {
                           return info.param.model + "_" + info.param.rope +
                                  (info.param.graphs ? "_graph" : "_eager");
                         });

#ifdef NANOINFER_HAVE_CUDA
// bf16 decode replayed from CUDA graphs (3 sequences, padded to the bucket of 4) gives bit for
// bit the logits of the same kernels run eagerly, and graphs were really captured and replayed.
TEST(CudaGraphs, Bf16GraphReplayEqualsEager) {
  NI_REQUIRE_CUDA(probe, DType::BF16);
  const LoadedModel loaded = load_model(test::data_path("models/gqa"));
  std::vector<std::vector<float>> runs[2];
  for (const bool graphs : {false, true}) {
    cuda::CudaBackend be(DType::BF16);
    LlamaModel model(loaded, be, 256);
    model.set_graph_capture(graphs);
    KvCache cache(be, loaded.config, {16, 32, "post"});
    std::vector<SeqState> seqs;
    seqs.reserve(3);
    for (int s = 0; s < 3; ++s)
      seqs.emplace_back(s, cache.create_sequence(), std::vector<int32_t>(5 + 7 * s, 11 + s));
    for (int step = 0; step < 6; ++step) {
      std::vector<SeqState*> live;
      live.reserve(seqs.size());
      for (SeqState& s : seqs) live.push_back(&s);
      std::vector<float> logits;
      be.to_host_f32(model.forward(build_batch(live, cache), cache), logits);
      for (size_t s = 0; s < seqs.size(); ++s) {
        const float* row = logits.data() + s * loaded.config.vocab_size;
        seqs[s].pending = {
            static_cast<int32_t>(std::max_element(row, row + loaded.config.vocab_size) - row)};
      }
      runs[graphs ? 1 : 0].push_back(logits);
    }
    EXPECT_EQ(be.graphs_held(), graphs ? 1 : 0);
  }
  ASSERT_EQ(runs[0].size(), runs[1].size());
  for (size_t i = 0; i < runs[0].size(); ++i) EXPECT_EQ(runs[0][i], runs[1][i]) << "step " << i;
}

// The warm-up at load (prompts of every GEMM bucket, a decode graph captured) leaves nothing
// behind that a request could see: a batch of three greedy requests gives the same tokens with and
// without it, and the stats are the batch's alone. The CPU backend has no one-time costs to warm.
TEST(CudaEngine, WarmupChangesNothingButTheFirstRequestsCosts) {
  NI_REQUIRE_CUDA(probe, DType::BF16);
  std::vector<GenerationRequest> reqs(3);
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].prompt_ids = std::vector<int32_t>(3 + 9 * i, static_cast<int32_t>(7 + i));
    reqs[i].params.max_new_tokens = 12;
    reqs[i].params.ignore_eos = true;
  }
  std::vector<GenerationOutput> outs[2];
  GenerationStats stats[2];
  for (const bool warm : {false, true}) {
    EngineOptions opt;
    opt.model = test::data_path("models/llama3_rope");
    opt.backend = "cuda";
    opt.warmup = warm;
    Engine engine(opt);
    EXPECT_EQ(engine.warmup_seconds() > 0.0, warm);
    EXPECT_GE(engine.load_seconds(), engine.warmup_seconds());
    outs[warm ? 1 : 0] = engine.generate(reqs);
    stats[warm ? 1 : 0] = engine.last_stats();
  }
  for (size_t i = 0; i < reqs.size(); ++i)
    EXPECT_EQ(outs[0][i].token_ids, outs[1][i].token_ids) << "request " << i;
  EXPECT_EQ(stats[1].prefill_tokens, 3 + 12 + 21);  // one prefill step: the three prompts
  EXPECT_EQ(stats[1].decode_tokens, stats[0].decode_tokens);
  EXPECT_EQ(stats[1].steps.size(), stats[0].steps.size());
  EngineOptions cpu;
  cpu.model = test::data_path("models/llama3_rope");
  EXPECT_EQ(Engine(cpu).warmup_seconds(), 0.0);
  // A fixed cache of four blocks: the warm-up stops at the prompts it holds (it used to fail).
  EngineOptions small;
  small.model = test::data_path("models/llama3_rope");
  small.backend = "cuda";
  small.cache_tokens = 64;
  Engine engine(small);
  EXPECT_GT(engine.warmup_seconds(), 0.0);
  EXPECT_EQ(engine.generate({reqs[0]}).at(0).token_ids.size(), 12U);
}

// Prefix reuse on the GPU (fp32): requests that share a 50-token system prompt, started over
// several steps, take its blocks from the first; each gets the tokens it gets alone.
TEST(CudaEngine, PrefixReuseGivesEachRequestItsTokensAlone) {
  NI_REQUIRE_CUDA(probe, DType::F32);
  EngineOptions opt;
  opt.model = test::data_path("models/llama3_rope");
  opt.backend = "cuda";
  opt.dtype = "f32";
  opt.max_step_tokens = 24;
  Engine engine(opt);
  std::vector<GenerationRequest> reqs(4);
  for (size_t i = 0; i < reqs.size(); ++i) {
    for (int t = 0; t < 50; ++t) reqs[i].prompt_ids.push_back(3 + t % 40);
    for (size_t t = 0; t < 3 + i; ++t)
      reqs[i].prompt_ids.push_back(static_cast<int32_t>(60 + i + t));
    reqs[i].params.max_new_tokens = 8;
    reqs[i].params.ignore_eos = true;
  }
  const std::vector<GenerationOutput> out = engine.generate(reqs);
  EXPECT_GE(engine.last_stats().reused_prompt_tokens, 3 * 48);
  for (size_t i = 0; i < reqs.size(); ++i)
    EXPECT_EQ(out[i].token_ids, engine.generate({reqs[i]})[0].token_ids) << "request " << i;
}

// A conversation's next turn on the GPU (fp32): submitted after the last turn has finished, it
// takes the blocks of the last turn's prompt and of the tokens its decode steps wrote, and gets
// the tokens it gets alone.
TEST(CudaEngine, ANextTurnTakesTheBlocksOfTheLastTurnsReply) {
  NI_REQUIRE_CUDA(probe, DType::F32);
  EngineOptions opt;
  opt.model = test::data_path("models/llama3_rope");
  opt.backend = "cuda";
  opt.dtype = "f32";
  opt.max_context = 256;
  Engine engine(opt);
  auto run = [&engine](const GenerationRequest& r) {
    GenerationOutput out;
    engine.submit(r, nullptr, [&out](size_t, GenerationOutput&& o) { out = std::move(o); });
    while (engine.step()) {
    }
    return out;
  };
  GenerationRequest turn;
  for (int t = 0; t < 37; ++t) turn.prompt_ids.push_back(3 + (t * 7) % 90);
  turn.params.max_new_tokens = 20;
  turn.params.ignore_eos = true;
  std::vector<GenerationRequest> turns;
  std::vector<GenerationOutput> replies;
  for (int t = 0; t < 3; ++t) {
    turns.push_back(turn);
    replies.push_back(run(turn));
    // 37 + 19 tokens in the cache after the first turn (3 blocks), 37 + 20 + 9 + 19 after the
    // second (5 blocks).
    EXPECT_EQ(replies.back().reused_prompt_tokens, t == 0 ? 0 : t == 1 ? 48 : 80) << "turn " << t;
    turn.prompt_ids.insert(turn.prompt_ids.end(), replies.back().token_ids.begin(),
                           replies.back().token_ids.end());
    for (int32_t i = 0; i < 9; ++i) turn.prompt_ids.push_back(40 + i + t);
  }
  for (size_t t = 0; t < turns.size(); ++t)  // (generate() starts from an empty cache)
    EXPECT_EQ(replies[t].token_ids, engine.generate({turns[t]})[0].token_ids) << "turn " << t;
}

// The engine keeps its KV cache between calls: a call that fits in it captures no graph for a
// batch-size bucket already captured over it (the warm-up's one request: bucket 1), the same
// tokens as the first time; a call that needs a larger cache (new device memory) captures anew,
// and so does the call after release_cache().
TEST(CudaEngine, CallsThatFitTheKeptCacheReplayTheGraphsCapturedBefore) {
  NI_REQUIRE_CUDA(probe, DType::BF16);
  EngineOptions opt;
  opt.model = test::data_path("models/llama3_rope");
  opt.backend = "cuda";
  Engine engine(opt);
  auto request = [](int prompt, int new_tokens, int32_t id) {
    GenerationRequest r;
    r.prompt_ids.assign(static_cast<size_t>(prompt), id);
    r.params.max_new_tokens = new_tokens;
    r.params.ignore_eos = true;
    return r;
  };
  const std::vector<GenerationRequest> one = {request(5, 12, 3)};
  const std::vector<GenerationRequest> three = {request(4, 10, 5), request(9, 10, 6),
                                                request(2, 10, 7)};
  const auto first = engine.generate(one);
  EXPECT_EQ(engine.last_stats().graph_captures, 0);
  EXPECT_EQ(engine.generate(three).size(), 3U);
  EXPECT_EQ(engine.last_stats().graph_captures, 1);  // bucket 4: new
  EXPECT_EQ(engine.generate(three).at(1).token_ids.size(), 10U);
  EXPECT_EQ(engine.last_stats().graph_captures, 0);
  EXPECT_EQ(engine.generate(one).at(0).token_ids, first.at(0).token_ids);
  EXPECT_EQ(engine.last_stats().graph_captures, 0);
  // 40 sequences of 40 tokens: more blocks than any call before (the warm-up's longest prompt
  // took 65), so a new cache, and the graphs captured before are gone.
  EXPECT_EQ(engine.generate(std::vector<GenerationRequest>(40, request(30, 10, 8))).size(), 40U);
  EXPECT_EQ(engine.generate(one).at(0).token_ids, first.at(0).token_ids);
  EXPECT_EQ(engine.last_stats().graph_captures, 1);
  // The cache given back: the next call allocates a smaller one and captures again, the same
  // tokens; the call after it replays.
  const int64_t kept = engine.cache_bytes();
  engine.release_cache();
  EXPECT_EQ(engine.cache_bytes(), 0);
  EXPECT_EQ(engine.generate(one).at(0).token_ids, first.at(0).token_ids);
  EXPECT_EQ(engine.last_stats().graph_captures, 1);
  EXPECT_GT(engine.cache_bytes(), 0);
  EXPECT_LT(engine.cache_bytes(), kept);
  EXPECT_EQ(engine.generate(one).at(0).token_ids, first.at(0).token_ids);
  EXPECT_EQ(engine.last_stats().graph_captures, 0);
}

// The requests generated by the llama3_rope model in bf16 on the GPU twice: with the tokens
// picked (and beam rows summarised) on the device, then with every step's logits on the host.
std::array<std::vector<GenerationOutput>, 2> picked_on_device_and_on_host(
    const std::vector<GenerationRequest>& reqs) {
  std::array<std::vector<GenerationOutput>, 2> outs;
  for (const bool device : {true, false}) {
    EngineOptions opt;
    opt.model = test::data_path("models/llama3_rope");
    opt.backend = "cuda";
    opt.pick_on_device = device;
    outs[device ? 0 : 1] = Engine(opt).generate(reqs);
  }
  return outs;
}

// The engine's picks on the device (Backend::pick_to_host) give the tokens its host sampler
// gives: one batch of greedy and sampled requests (each filter, the penalties, logit biases and
// suppressed tokens, different seeds) generated twice in bf16 with graphs, picked on the device and
// then with every step's logits sampled on the host. Equal logits at each step, so any difference
// is the pick, the edits or the seed and draw index the engine hands the backend.
TEST(CudaEnginePicks, DeviceEqualsHostSampler) {
  NI_REQUIRE_CUDA(probe, DType::BF16);
  const nlohmann::json ref = test::read_json("models/llama3_rope/reference.json");
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 11; ++i) {
    GenerationRequest r{ref["cases"][i % 2]["prompt_ids"].get<std::vector<int32_t>>(), {}};
    r.params.max_new_tokens = 40;
    r.params.ignore_eos = true;
    r.params.seed = 1000 + i;
    r.params.temperature = i == 0 || i == 8 ? 0.0F : 0.6F + 0.05F * i;
    if (i == 2 || i == 5 || i == 10) r.params.top_k = 20;
    if (i == 3 || i == 5 || i == 10) r.params.top_p = 0.8F;
    if (i == 4 || i == 5) r.params.min_p = 0.05F;
    if (i == 8 || i == 10) r.params.repetition_penalty = 1.3F;
    if (i == 7 || i == 10) r.params.presence_penalty = 0.6F;
    if (i == 9 || i == 10) r.params.frequency_penalty = 0.4F;
    if (i == 9 || i == 10) r.params.suppress_tokens = {5, 17, 42};
    if (i == 6 || i == 10) r.params.logit_bias = {{7, 2.5F}, {17, 3.0F}, {90, -100.0F}};
    reqs.push_back(r);
  }
  const auto outs = picked_on_device_and_on_host(reqs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(outs[0][i].token_ids, outs[1][i].token_ids) << "request " << i;
    EXPECT_EQ(outs[0][i].token_ids.size(), 40U);
  }
  // The seeds matter: two sampled requests on the same prompt drew different tokens. And the
  // penalties: the greedy request with a repetition penalty left the plain greedy one.
  EXPECT_NE(outs[0][1].token_ids, outs[0][3].token_ids);
  EXPECT_NE(outs[0][0].token_ids, outs[0][8].token_ids);
  for (const int32_t t : outs[0][9].token_ids) EXPECT_TRUE(t != 5 && t != 17 && t != 42) << t;
}

// logprobs on the GPU: in fp32 the first token's log-probability and alternatives are HF's last
// logits through a log-softmax (to 2e-4); in bf16 a batch where some requests ask for logprobs
// (so its steps copy the logits and sample on the host) draws the tokens it draws without them
// (picked on the device).
TEST(CudaEnginePicks, LogprobsAreHfsLogSoftmaxAndChangeNoToken) {
  NI_REQUIRE_CUDA(probe, DType::F32);
  const nlohmann::json ref = test::read_json("models/llama3_rope/reference.json");
  EngineOptions opt;
  opt.model = test::data_path("models/llama3_rope");
  opt.backend = "cuda";
  opt.dtype = "f32";
  Engine fp32(opt);
  for (const auto& rc : ref["cases"]) {
    const auto logits = rc["last_logits"].get<std::vector<double>>();
    const double top = *std::max_element(logits.begin(), logits.end());
    double z = 0;
    for (const double x : logits) z += std::exp(x - top);
    const double log_z = top + std::log(z);
    GenerationRequest r{rc["prompt_ids"].get<std::vector<int32_t>>(), {}};
    r.params.max_new_tokens = 1;
    r.params.logprobs = 4;
    const GenerationOutput out = fp32.generate({r})[0];
    ASSERT_EQ(out.logprobs.size(), 1U);
    EXPECT_NEAR(out.logprobs[0].logprob, logits[static_cast<size_t>(out.token_ids[0])] - log_z,
                2e-4);
    ASSERT_EQ(out.logprobs[0].top.size(), 4U);
    for (const auto& [id, v] : out.logprobs[0].top)
      EXPECT_NEAR(v, logits[static_cast<size_t>(id)] - log_z, 2e-4) << rc["name"];
  }
  opt.dtype = "bf16";
  Engine bf16(opt);
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 6; ++i) {
    GenerationRequest r{ref["cases"][i % 2]["prompt_ids"].get<std::vector<int32_t>>(), {}};
    r.params.max_new_tokens = 24;
    r.params.ignore_eos = true;
    r.params.seed = 50 + i;
    r.params.temperature = i == 0 ? 0.0F : 0.7F;
    r.params.top_p = i == 0 ? 1.0F : 0.9F;
    reqs.push_back(r);
  }
  const std::vector<GenerationOutput> plain = bf16.generate(reqs);
  for (int i = 0; i < 6; i += 2) reqs[static_cast<size_t>(i)].params.logprobs = 3;
  const std::vector<GenerationOutput> with = bf16.generate(reqs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(with[i].token_ids, plain[i].token_ids) << "request " << i;
    EXPECT_EQ(with[i].logprobs.size(), i % 2 == 0 ? 24U : 0U) << "request " << i;
  }
}

// prompt_logprobs on the GPU: scored prompts (HF's prompt and greedy continuation) in chunks of 7
// tokens, beside a greedy and a sampled request whose rows are picked on the device; in fp32 every
// prompt token's log-probability and alternatives are the CPU engine's (to 1e-4), and the greedy
// tokens are the CPU's and those of each request alone.
TEST(CudaEnginePicks, PromptLogprobsAreTheCpusInFp32) {
  NI_REQUIRE_CUDA(probe, DType::F32);
  const nlohmann::json ref = test::read_json("models/llama3_rope/reference.json");
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 4; ++i) {
    const auto& rc = ref["cases"][i % 2];
    GenerationRequest r{rc["prompt_ids"].get<std::vector<int32_t>>(), {}};
    r.params.max_new_tokens = 6;
    if (i == 1) r.params.temperature = 0.8F, r.params.seed = 9;
    if (i >= 2) {
      const auto greedy = rc["greedy_ids"].get<std::vector<int32_t>>();
      r.prompt_ids.insert(r.prompt_ids.end(), greedy.begin(), greedy.begin() + 8);
      r.params.prompt_logprobs = 3;
    }
    reqs.push_back(r);
  }
  EngineOptions opt;
  opt.model = test::data_path("models/llama3_rope");
  opt.max_step_tokens = 7;
  Engine cpu(opt);
  const std::vector<GenerationOutput> want = cpu.generate(reqs);
  opt.backend = "cuda";
  opt.dtype = "f32";
  Engine gpu(opt);
  const std::vector<GenerationOutput> got = gpu.generate(reqs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(got[i].token_ids.size(), 6U) << "request " << i;
    if (i != 1) {  // greedy
      EXPECT_EQ(got[i].token_ids, want[i].token_ids) << "request " << i;
      EXPECT_EQ(got[i].token_ids, gpu.generate({reqs[i]})[0].token_ids) << "request " << i;
    }
    ASSERT_EQ(got[i].prompt_logprobs.size(), want[i].prompt_logprobs.size()) << "request " << i;
    EXPECT_EQ(got[i].prompt_logprobs.size(), i >= 2 ? reqs[i].prompt_ids.size() - 1 : 0U);
    for (size_t p = 0; p < got[i].prompt_logprobs.size(); ++p) {
      const TokenLogprobs &g = got[i].prompt_logprobs[p], &w = want[i].prompt_logprobs[p];
      EXPECT_NEAR(g.logprob, w.logprob, 1e-4) << "request " << i << " position " << p;
      ASSERT_EQ(g.top.size(), 3U);
      for (size_t t = 0; t < 3; ++t) {
        EXPECT_EQ(g.top[t].first, w.top[t].first) << "request " << i << " position " << p;
        EXPECT_NEAR(g.top[t].second, w.top[t].second, 1e-4);
      }
    }
  }
}

// Beam search with its rows summarised on the device (Backend::beam_rows_to_host) against the
// logits copied and summarised on the host: two beam requests (one with suppressed tokens and a
// length penalty, three sequences back) batched with a greedy and a sampled request, in bf16
// with graphs. The same sequences; the scores agree to float rounding of the log-sum-exp.
TEST(CudaEnginePicks, BeamRowsOnDeviceEqualHost) {
  NI_REQUIRE_CUDA(probe, DType::BF16);
  const nlohmann::json ref = test::read_json("models/llama3_rope/reference.json");
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 4; ++i) {
    GenerationRequest r{ref["cases"][i % 2]["prompt_ids"].get<std::vector<int32_t>>(), {}};
    r.params.max_new_tokens = 24;
    r.params.ignore_eos = true;
    if (i == 1) r.params.temperature = 0.8F, r.params.seed = 3;
    if (i >= 2) r.params.num_beams = 2 + i;
    if (i == 3) {
      r.params.suppress_tokens = {5, 17};
      r.params.length_penalty = 0.7F;
      r.params.num_return_sequences = 3;
    }
    reqs.push_back(r);
  }
  const auto outs = picked_on_device_and_on_host(reqs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(outs[0][i].token_ids, outs[1][i].token_ids) << "request " << i;
    ASSERT_EQ(outs[0][i].sequences.size(), outs[1][i].sequences.size()) << "request " << i;
    for (size_t j = 0; j < outs[0][i].sequences.size(); ++j) {
      EXPECT_EQ(outs[0][i].sequences[j], outs[1][i].sequences[j]) << "request " << i;
      EXPECT_NEAR(outs[0][i].scores[j], outs[1][i].scores[j], 1e-5) << "request " << i;
    }
  }
  EXPECT_EQ(outs[0][3].sequences.size(), 3U);
  for (const auto& seq : outs[0][3].sequences)
    for (const int32_t t : seq) EXPECT_TRUE(t != 5 && t != 17) << t;
}

// Beam forks on the GPU's cache (full blocks shared, the partial one copied in every layer by one
// copy_slots call) give the CPU backend's beams: fp32, block size 4 so that forks land inside
// and at the ends of blocks, 6 beams over 30 tokens; the same sequences, scores within 1e-4.
TEST(CudaEnginePicks, BeamForksAsTheCpuBackend) {
  NI_REQUIRE_CUDA(probe, DType::F32);
  const nlohmann::json ref = test::read_json("models/llama3_rope/reference.json");
  GenerationRequest r{ref["cases"][1]["prompt_ids"].get<std::vector<int32_t>>(), {}};
  r.params.max_new_tokens = 30;
  r.params.ignore_eos = true;
  r.params.num_beams = 6;
  r.params.num_return_sequences = 6;
  std::array<GenerationOutput, 2> outs;
  for (const bool gpu : {true, false}) {
    EngineOptions opt;
    opt.model = test::data_path("models/llama3_rope");
    opt.backend = gpu ? "cuda" : "cpu";
    opt.dtype = "f32";
    opt.block_size = 4;
    outs[gpu ? 0 : 1] = Engine(opt).generate({r})[0];
  }
  ASSERT_EQ(outs[0].sequences.size(), 6U);
  ASSERT_EQ(outs[1].sequences.size(), 6U);
  for (size_t j = 0; j < 6; ++j) {
    EXPECT_EQ(outs[0].sequences[j], outs[1].sequences[j]) << "sequence " << j;
    EXPECT_NEAR(outs[0].scores[j], outs[1].scores[j], 1e-4) << "sequence " << j;
  }
}
#endif

}  // namespace
}  // namespace nanoinfer
