// Tensor parallelism on CPU ranks, run by ctest under mpirun -np 2 and -np 3: a model sharded over
// the job's ranks gives the greedy tokens of one rank (and of HF) on every tiny model whose heads
// the job can split, and on the default model; beam search and a sink cache (whose cache ops
// rank 0 sends along) match one rank too. Every rank runs every test in the same order; the
// other ranks serve rank 0's steps and rank 0 checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "dist/communicator.h"
#include "dist/shard.h"
#include "loader/model_loader.h"
#include "nanoinfer/engine.h"
#include "test_paths.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

EngineOptions options(const std::string& model, bool tensor_parallel) {
  EngineOptions o;
  o.model = model;
  o.tensor_parallel = tensor_parallel;
  return o;
}

// Whether this job's ranks can split the model's heads (the shard plan says so).
bool splits(const std::string& model_dir) {
  const ModelConfig c = parse_hf_config(model_dir + "/config.json");
  try {
    (void)Shard::plan(c, 0, launched_world_size(), 1);
    return true;
  } catch (const Error&) {
    return false;
  }
}

class TinyTp : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyTp, GreedyTokensEqualOneRankAndHf) {
  const std::string dir = test::data_path("models/" + GetParam());
  if (!splits(dir)) {
    // Every rank fails alike, with the reason, before any step.
    try {
      Engine engine(options(dir, true));
      ADD_FAILURE() << "a model these ranks cannot split was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("tensor parallelism over"), std::string::npos)
          << e.what();
    }
    return;
  }
  const nlohmann::json ref = test::read_json("models/" + GetParam() + "/reference.json");
  std::vector<GenerationRequest> requests;
  for (const auto& rc : ref["cases"]) {
    GenerationRequest r{rc["prompt_ids"].get<std::vector<int32_t>>(), {}};
    r.params.max_new_tokens = static_cast<int>(rc["greedy_ids"].size());
    r.params.ignore_eos = !ref["eos_stops_generation"].get<bool>();
    requests.push_back(r);
  }
  ASSERT_FALSE(requests.empty());
  Engine tp(options(dir, true));
  const std::vector<GenerationOutput> batched = tp.generate(requests);
  const std::vector<GenerationOutput> alone = tp.generate({requests[0]});
  if (!tp.is_leader()) return;
  Engine one(options(dir, false));
  const std::vector<GenerationOutput> single = one.generate(requests);
  ASSERT_EQ(batched.size(), requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(batched[i].token_ids, single[i].token_ids) << ref["cases"][i]["name"];
    EXPECT_EQ(batched[i].token_ids, ref["cases"][i]["greedy_ids"].get<std::vector<int32_t>>())
        << ref["cases"][i]["name"];
  }
  EXPECT_EQ(alone[0].token_ids, single[0].token_ids);
}

INSTANTIATE_TEST_SUITE_P(Models, TinyTp, ::testing::ValuesIn(test::tiny_model_names()),
                         [](const auto& info) { return info.param; });

// Beam search forks caches between steps and a sink cache renumbers positions: rank 0 sends
// those cache ops with the next step, and the sharded run must still equal one rank's.
TEST(TinyTpCacheOps, BeamSearchAndSinkCacheEqualOneRank) {
  const std::string dir = test::data_path("models/mha");  // 4 KV heads: splits over 2 or 3
  const nlohmann::json ref = test::read_json("models/mha/reference.json");
  GenerationRequest beam{ref["cases"][0]["prompt_ids"].get<std::vector<int32_t>>(), {}};
  beam.params.num_beams = 3;
  beam.params.num_return_sequences = 2;
  beam.params.max_new_tokens = 12;
  GenerationRequest greedy{beam.prompt_ids, {}};
  greedy.params.max_new_tokens = 40;
  greedy.params.ignore_eos = true;
  EngineOptions sink = options(dir, true);
  sink.rope_cache = "pre";
  sink.sink_tokens = 2;
  sink.window = 16;  // the 16-token prompt fits; 40 new tokens evict
  sink.max_context = 256;

  Engine tp(options(dir, true));
  const std::vector<GenerationOutput> tp_beam = tp.generate({beam});
  Engine tp_sink(sink);
  const std::vector<GenerationOutput> tp_stream = tp_sink.generate({greedy});
  if (!tp.is_leader()) return;
  Engine one(options(dir, false));
  const GenerationOutput one_beam = one.generate({beam})[0];
  sink.tensor_parallel = false;
  Engine one_sink(sink);
  const GenerationOutput one_stream = one_sink.generate({greedy})[0];
  ASSERT_EQ(tp_beam.size(), 1U);
  EXPECT_EQ(tp_beam[0].sequences, one_beam.sequences);
  ASSERT_EQ(tp_beam[0].scores.size(), one_beam.scores.size());
  for (size_t i = 0; i < one_beam.scores.size(); ++i)
    EXPECT_NEAR(tp_beam[0].scores[i], one_beam.scores[i], 1e-5F);
  EXPECT_EQ(tp_stream[0].token_ids, one_stream.token_ids);
}

// An error on rank 0 mid-call reaches the other ranks, which stop with it and stay in step.
TEST(TinyTpErrors, RankZeroErrorStopsEveryRankAndTheGroupGoesOn) {
  const std::string dir = test::data_path("models/mha");
  Engine tp(options(dir, true));
  GenerationRequest too_long{std::vector<int32_t>(300, 5), {}};  // past the 256-position context
  too_long.params.max_new_tokens = 8;
  try {
    tp.generate({too_long});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(tp.is_leader() ? "in the context of 256" : "rank 0 stopped"),
              std::string::npos)
        << what;
  }
  GenerationRequest ok{{1, 2, 3}, {}};
  ok.params.max_new_tokens = 4;
  ok.params.ignore_eos = true;
  const std::vector<GenerationOutput> out = tp.generate({ok});
  if (!tp.is_leader()) return;
  EXPECT_EQ(out.at(0).token_ids.size(), 4U);
}

// A callback's exception of another kind than Error (rank 0 alone runs the callbacks) stops the
// other ranks too, which would otherwise wait for rank 0's next step.
TEST(TinyTpErrors, CallbackExceptionStopsEveryRank) {
  Engine tp(options(test::data_path("models/mha"), true));
  GenerationRequest r{{1, 2, 3}, {}};
  r.params.max_new_tokens = 4;
  r.params.ignore_eos = true;
  const TokenCallback boom = [](size_t, int32_t, const std::string&) -> bool {
    throw std::runtime_error("boom");
  };
  try {
    tp.generate({r}, boom);
    ADD_FAILURE() << "no exception";
  } catch (const std::exception& e) {
    EXPECT_EQ(std::string(e.what()), tp.is_leader() ? "boom" : "rank 0 stopped: boom");
  }
  const std::vector<GenerationOutput> out = tp.generate({r});
  if (!tp.is_leader()) return;
  EXPECT_EQ(out.at(0).token_ids.size(), 4U);
}

TEST(DefaultModelTp, SummaryAndBatchPromptsEqualHf) {
  const std::string path = test::default_model_path();
  if (path.empty()) GTEST_SKIP() << "default model not fetched (make model)";
  const nlohmann::json summary = test::read_json("smollm2/summary_greedy.json");
  const nlohmann::json extra = test::read_json("smollm2/extra_greedy.json");
  std::vector<GenerationRequest> requests;
  std::vector<std::vector<int32_t>> want;
  GenerationRequest s{summary["prompt_ids"].get<std::vector<int32_t>>(), {}};
  s.params.max_new_tokens = summary["max_new_tokens"];
  requests.push_back(s);
  want.push_back(summary["generated_ids"].get<std::vector<int32_t>>());
  for (const auto& c : extra["cases"]) {
    GenerationRequest r{c["prompt_ids"].get<std::vector<int32_t>>(), {}};
    r.params.max_new_tokens = c["max_new_tokens"];
    requests.push_back(r);
    want.push_back(c["generated_ids"].get<std::vector<int32_t>>());
  }
  Engine tp(options(path, true));
  const std::vector<GenerationOutput> out = tp.generate(requests);
  if (!tp.is_leader()) return;
  ASSERT_EQ(out.size(), want.size());
  // One rank gives exactly these (test_parity_smollm2), so equal to them is equal to one rank.
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(out[i].token_ids, want[i]) << "prompt " << i;
}

}  // namespace
}  // namespace nanoinfer
