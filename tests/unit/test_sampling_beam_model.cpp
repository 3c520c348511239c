// BeamSearch driven by our Llama forward on the tiny random checkpoints of tests/data/models,
// against HF generate(num_beams=k, ...) on the same checkpoints (tests/data/sampling/
// beam_tiny_models.json). Every step re-feeds each beam's whole sequence into a fresh cache
// sequence, so the test depends only on the model forward and the search, not on cache forking.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "engine/batch_builder.h"
#include "loader/model_loader.h"
#include "model/llama.h"
#include "sampling/beam_search.h"
#include "test_paths.h"

namespace nanoinfer::sampling {
namespace {

const nlohmann::json& golden() {
  static const nlohmann::json doc = [] {
    std::ifstream in(test::data_path("sampling/beam_tiny_models.json"));
    return nlohmann::json::parse(in);
  }();
  return doc;
}

SamplingParams params_from(const nlohmann::json& c) {
  SamplingParams p;
  p.num_beams = c["num_beams"];
  p.length_penalty = c["length_penalty"];
  p.num_return_sequences = c["num_return_sequences"];
  p.max_new_tokens = c["max_new_tokens"];
  const nlohmann::json& es = c["early_stopping"];
  p.early_stopping = es.is_string()   ? EarlyStopping::kNever
                     : es.get<bool>() ? EarlyStopping::kWhenFull
                                      : EarlyStopping::kHeuristic;
  return p;
}

class BeamOnTinyModel : public testing::TestWithParam<int> {};

TEST_P(BeamOnTinyModel, SequencesAndScoresEqualHf) {
  const nlohmann::json& c = golden()["cases"][GetParam()];
  const LoadedModel loaded = load_model(test::data_path("models/" + c["model"].get<std::string>()));
  auto backend = make_cpu_backend();
  LlamaModel model(loaded, *backend, 64);
  const auto prompt = c["prompt"].get<std::vector<int32_t>>();
  BeamSearch search(params_from(c), c["eos"].get<std::vector<int32_t>>());
  std::vector<float> logits;
  bool first = true;
  while (!search.done()) {
    KvCache cache(*backend, loaded.config, {16, 32, "post"});
    std::vector<SeqState> seqs;
    const size_t fed = first ? 1 : search.running().size();  // the prompt alone on step one
    for (size_t b = 0; b < fed; ++b) {
      std::vector<int32_t> tokens = prompt;
      tokens.insert(tokens.end(), search.running()[b].begin(), search.running()[b].end());
      seqs.emplace_back(0, cache.create_sequence(), tokens);
    }
    std::vector<SeqState*> live;
    live.reserve(seqs.size());
    for (SeqState& s : seqs) live.push_back(&s);
    backend->to_host_f32(model.forward(build_batch(live, cache), cache), logits);
    if (first) {  // every beam starts from the prompt's logits
      const size_t vocab = logits.size();
      for (int b = 1; b < search.num_beams(); ++b) {
        logits.insert(logits.end(), logits.begin(), logits.begin() + vocab);
      }
      first = false;
    }
    search.step(logits, loaded.config.vocab_size);
  }
  const auto results = search.results();
  const nlohmann::json& want = c["sequences"];
  ASSERT_EQ(results.size(), want.size());
  for (size_t i = 0; i < results.size(); ++i) {
    SCOPED_TRACE("sequence " + std::to_string(i));
    EXPECT_EQ(results[i].tokens, want[i]["tokens"].get<std::vector<int32_t>>());
    const float score = want[i]["score"];
    // Our forward matches HF's logits to ~1e-5, so summed log-probs agree to about 1e-4.
    EXPECT_NEAR(results[i].score, score, 1e-4F * std::max(1.0F, std::abs(score)));
  }
}

std::string case_name(const testing::TestParamInfo<int>& info) {
  const nlohmann::json& c = golden()["cases"][info.param];
  const auto lp = static_cast<int>(c["length_penalty"].get<float>() * 10);
  const nlohmann::json& es = c["early_stopping"];
  std::ostringstream name;
  name << c["model"].get<std::string>() << "_k" << c["num_beams"].get<int>() << "_lp"
       << (lp < 0 ? "m" : "") << std::abs(lp) << "_es"
       << (es.is_string() ? "never" : (es.get<bool>() ? "true" : "false")) << "_ret"
       << c["num_return_sequences"].get<int>();
  return name.str();
}

INSTANTIATE_TEST_SUITE_P(Hf, BeamOnTinyModel,
                         testing::Range(0, static_cast<int>(golden()["cases"].size())), case_name);

}  // namespace
}  // namespace nanoinfer::sampling
