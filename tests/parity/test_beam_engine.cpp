// Beam search through the engine (beams as rows of one forward, caches forked per step) against
// HF generate(num_beams=k, ...): the tiny checkpoints (sampling_golden.py) and the default model
// (beam_smollm2_golden.py), sequences identical and scores close.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "nanoinfer/engine.h"
#include "test_paths.h"

namespace nanoinfer {
namespace {

GenerationRequest request_from(const nlohmann::json& c) {
  GenerationRequest r{c["prompt"].get<std::vector<int32_t>>(), {}};
  SamplingParams& p = r.params;
  p.num_beams = c["num_beams"];
  p.length_penalty = c["length_penalty"];
  p.num_return_sequences = c["num_return_sequences"];
  p.max_new_tokens = c["max_new_tokens"];
  p.eos_token_ids = c["eos"].get<std::vector<int32_t>>();
  const nlohmann::json& es = c["early_stopping"];
  p.early_stopping = es.is_string()   ? EarlyStopping::kNever
                     : es.get<bool>() ? EarlyStopping::kWhenFull
                                      : EarlyStopping::kHeuristic;
  return r;
}

// The engine for a case's tiny model.
EngineOptions options_for(const nlohmann::json& c) {
  EngineOptions opt;
  opt.model = test::data_path("models/" + c["model"].get<std::string>());
  return opt;
}

// Scores within abs + rel * |HF score| (a score is a sum over the sequence's log-probabilities).
void expect_same(const GenerationOutput& out, const nlohmann::json& c, float abs, float rel = 0) {
  const auto& seqs = c["sequences"];
  ASSERT_EQ(out.sequences.size(), seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    EXPECT_EQ(out.sequences[i], seqs[i]["tokens"].get<std::vector<int32_t>>())
        << "hypothesis " << i;
    const auto want = seqs[i]["score"].get<float>();
    EXPECT_NEAR(out.scores[i], want, abs + rel * std::abs(want)) << "hypothesis " << i;
  }
}

TEST(BeamEngine, TinyModelsMatchHf) {
  const nlohmann::json doc = test::read_json("sampling/beam_tiny_models.json");
  std::string loaded_name;
  std::unique_ptr<Engine> engine;
  for (const auto& c : doc["cases"]) {
    if (c["model"] != loaded_name) {
      loaded_name = c["model"];
      engine = std::make_unique<Engine>(options_for(c));
    }
    SCOPED_TRACE(c.dump().substr(0, 120));
    expect_same(engine->generate({request_from(c)})[0], c, 1e-4F);
  }
}

TEST(BeamEngine, BeamAndSampledRequestsShareOneBatch) {
  const nlohmann::json c = test::read_json("sampling/beam_tiny_models.json")["cases"][1];
  Engine engine(options_for(c));
  GenerationRequest greedy{c["prompt"].get<std::vector<int32_t>>(), {}};
  greedy.params.max_new_tokens = 12;
  greedy.params.ignore_eos = true;
  const std::vector<int32_t> alone = engine.generate({greedy})[0].token_ids;
  const std::vector<GenerationOutput> both = engine.generate({greedy, request_from(c)});
  EXPECT_EQ(both[0].token_ids, alone);
  expect_same(both[1], c, 1e-4F);
}

// Under ignore_eos an eos id is an ordinary token: a best hypothesis that ends on one ran to its
// length, and says so (it used to say "eos").
TEST(BeamEngine, IgnoreEosEndsOnLength) {
  const nlohmann::json c = test::read_json("sampling/beam_tiny_models.json")["cases"][1];
  Engine engine(options_for(c));
  GenerationRequest beams = request_from(c);
  beams.params.ignore_eos = true;
  beams.params.max_new_tokens = 6;
  const GenerationOutput free_run = engine.generate({beams})[0];
  ASSERT_EQ(free_run.token_ids.size(), 6U);
  EXPECT_EQ(free_run.finish_reason, "length");
  beams.params.eos_token_ids = {free_run.token_ids.back()};
  const GenerationOutput out = engine.generate({beams})[0];
  EXPECT_EQ(out.sequences, free_run.sequences);
  EXPECT_EQ(out.finish_reason, "length");
  beams.params.ignore_eos = false;  // the same id as eos without ignore_eos ends the search on it
  EXPECT_EQ(engine.generate({beams})[0].finish_reason, "eos");
}

// A beam request whose vocabulary, less its suppressed tokens, cannot give each beam the
// max(2, 1 + eos ids) tokens a step takes is refused before anything runs, naming the request; the
// engine serves the next call as before. With two tokens left, four beams run (two of them
// continue the prompt's other copies at -1e9, as in HF, where the engine used to read past its
// one prompt sequence).
TEST(BeamEngine, TooFewUnsuppressedTokens) {
  const nlohmann::json c = test::read_json("sampling/beam_tiny_models.json")["cases"][1];
  Engine engine(options_for(c));
  GenerationRequest greedy{c["prompt"].get<std::vector<int32_t>>(), {}};
  greedy.params.max_new_tokens = 4;
  const std::vector<int32_t> before = engine.generate({greedy})[0].token_ids;
  GenerationRequest beams = request_from(c);
  ASSERT_EQ(beams.params.num_beams, 4);
  const int vocab = engine.config().vocab_size;
  for (int t = 1; t < vocab; ++t) beams.params.suppress_tokens.push_back(t);
  try {
    engine.generate({greedy, beams});
    FAIL() << "a search with one token left was accepted";
  } catch (const std::exception& e) {
    EXPECT_EQ(std::string(e.what()),
              "request 1: beam search: each beam needs 2 tokens a step (max(2, 1 + eos ids)), "
              "but the vocabulary of " +
                  std::to_string(vocab) + " ids less its " + std::to_string(vocab - 1) +
                  " suppressed token(s) leaves 1");
  }
  beams.params.suppress_tokens.pop_back();  // tokens 0 and vocab - 1 left
  const std::vector<GenerationOutput> out = engine.generate({greedy, beams});
  EXPECT_EQ(out[0].token_ids, before);
  ASSERT_EQ(out[1].sequences.size(), static_cast<size_t>(beams.params.num_return_sequences));
  for (const auto& seq : out[1].sequences)
    for (const int32_t t : seq) EXPECT_TRUE(t == 0 || t == vocab - 1) << t;
}

TEST(BeamEngine, DefaultModelMatchesHf) {
  const std::string path = test::default_model_path();
  if (path.empty()) GTEST_SKIP() << "default model not fetched (make model)";
  EngineOptions opt;
  opt.model = path;
  Engine engine(opt);
  const nlohmann::json doc = test::read_json("sampling/beam_smollm2.json");
  ASSERT_FALSE(doc["cases"].empty());
  for (const auto& c : doc["cases"]) {
    SCOPED_TRACE(c.dump().substr(0, 160));
    // Q4_1 weights in fp32: our sums run in another order than torch's, and a score sums up to
    // 128 log-probabilities, hence the wider bound (1e-3 + 5e-5 relative).
    expect_same(engine.generate({request_from(c)})[0], c, 1e-3F, 5e-5F);
  }
}

}  // namespace
}  // namespace nanoinfer
