// bf16 greedy agreement with HF transformers bf16 on the GPU. The HF side runs in the same device
// call (tools/bench/hf_bf16_greedy.py, scripts/device.sh) and its file is named by
// NANOINFER_HF_BF16; elsewhere both tests skip. Teacher forcing: we feed HF's tokens and compare
// our argmax with HF's next token at every position, so one flip does not cascade.
//
// Two sets, one test each. "real": the default model (SmolLM2-135M-Instruct, the GGUF HF loaded,
// named in the file) on real text, >= 99% of the positions where HF's bf16 logits decide.
// "tiny": the random-weight models of tests/data/models, whose near-ties make it a floor only.
// A position is decisive when HF's top-1 logit beats its top-2 by more than one bf16 spacing
// (hf_gap_ulps > 1): below that, bf16 has no precision to say which token comes first, so two
// correct bf16 implementations (or HF's own full forward against its generate) part ways there.
// Measured on an H200 (2026-12-01, docs/perf.md) over the 22 real prompts x 48 tokens: 11% of the
// positions have a gap <= 1 spacing (logits near 16 have spacing 1/8); HF's bf16 one-pass
// forward against its own bf16 generate agrees on 98.8% of all positions and 100% of decisive
// ones, this engine's bf16 on 98.0% and 99.9%. HF's default attention there is cuDNN's; HF itself
// with torch's flash-attention backend agrees with it on 97.9% of all positions, as we do
// (2026-12-04, tools/bench/hf_bf16_spread.py), so the all-positions floor below is 97%. HF with its
// products and attention in float64 (no rounding inside them) agrees on 98.7% (H100, 2026-12-06).
// Against HF's eager attention as the reference (hf_bf16_greedy.py --attn-implementation eager),
// an HF with eager's rounding points and float64 sums agrees on 98.2%, this engine on 97.7%.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/batch_builder.h"
#include "gpu_test_util.h"
#include "loader/model_loader.h"
#include "model/llama.h"
#include "test_paths.h"

namespace nanoinfer {
namespace {

// HF's bf16 model returns bf16 logits (spacing 2^-6 near 3) and its greedy pick breaks their ties
// by the lowest index. Ours must be bf16 values too (the backend rounds the LM head's sums), picked
// the same way, as the engine's argmax picks; -1 when a logit is not a bf16 value.
int32_t argmax_of_bf16_logits(const std::vector<float>& row) {
  for (const float v : row)
    if (bf16_to_f32(f32_to_bf16(v)) != v) return -1;
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

struct Agreement {
  int agree = 0, total = 0;              // every position
  int decisive_agree = 0, decisive = 0;  // positions with hf_gap_ulps > 1
  static double rate(int a, int n) { return n > 0 ? static_cast<double>(a) / n : 0.0; }
  double all() const { return rate(agree, total); }
  double decided() const { return rate(decisive_agree, decisive); }
};

// HF's reference file, or nullopt (the test skips) where it was not made.
std::optional<nlohmann::json> read_reference() {
  const char* path = std::getenv("NANOINFER_HF_BF16");
  if (path == nullptr) return std::nullopt;
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// Runs every case of one set, each model loaded once with a cache sized for its longest case.
Agreement run_set(const nlohmann::json& ref, const std::string& set, Backend& be) {
  std::map<std::string, std::vector<const nlohmann::json*>> by_model;
  for (const auto& c : ref["cases"])
    if (c["set"] == set) by_model[c["model"].get<std::string>()].push_back(&c);
  Agreement a;
  for (const auto& [name, cases] : by_model) {
    const LoadedModel m = load_model(set == "real" ? ref["gguf"].get<std::string>()
                                                   : test::data_path("models/" + name));
    size_t longest = 0;
    for (const auto* c : cases)
      longest = std::max(longest, (*c)["prompt_ids"].size() + (*c)["generated_ids"].size());
    const int len = static_cast<int>(longest);
    LlamaModel model(m, be, len);
    KvCache cache(be, m.config, {16, (len + 15) / 16, "post"});
    for (const auto* c : cases) {
      const auto gen = (*c)["generated_ids"].get<std::vector<int32_t>>();
      const auto gaps = (*c)["hf_gap_ulps"].get<std::vector<double>>();
      const int seq = cache.create_sequence();
      SeqState s(0, seq, (*c)["prompt_ids"].get<std::vector<int32_t>>());
      int case_agree = 0;
      for (size_t i = 0; i < gen.size(); ++i) {
        std::vector<float> logits;
        be.to_host_f32(model.forward(build_batch({&s}, cache), cache), logits);
        const int32_t pick = argmax_of_bf16_logits(logits);
        EXPECT_GE(pick, 0) << (*c)["name"] << " position " << i << ": logits not bf16 values";
        const bool same = pick == gen[i];
        case_agree += same ? 1 : 0;
        if (gaps.at(i) > 1.0) {
          ++a.decisive;
          a.decisive_agree += same ? 1 : 0;
        }
        s.pending = {gen[i]};
      }
      cache.release(seq);
      a.agree += case_agree;
      a.total += static_cast<int>(gen.size());
      ::testing::Test::RecordProperty(set + "_" + (*c)["name"].get<std::string>(), case_agree);
    }
  }
  std::printf(
      "bf16 greedy agreement with HF bf16, %s set: %d / %d positions = %.2f%%; "
      "decisive (HF gap > 1 bf16 spacing) %d / %d = %.2f%%\n",
      set.c_str(), a.agree, a.total, 100.0 * a.all(), a.decisive_agree, a.decisive,
      100.0 * a.decided());
  ::testing::Test::RecordProperty(set + "_agreement_pct", std::to_string(100.0 * a.all()));
  ::testing::Test::RecordProperty(set + "_decisive_agreement_pct",
                                  std::to_string(100.0 * a.decided()));
  return a;
}

TEST(CudaHfBf16, SmolLM2GreedyAgreementAtLeast99Percent) {
  const auto ref = read_reference();
  if (!ref) GTEST_SKIP() << "NANOINFER_HF_BF16 unset (made on the GPU machine)";
  if (!ref->contains("gguf") || (*ref)["gguf"].is_null())
    GTEST_SKIP() << "SmolLM2 set skipped: no real-model cases (hf_bf16_greedy.py ran without "
                    "--gguf: the GGUF was not on the device)";
  NI_REQUIRE_CUDA(be, DType::BF16);
  const Agreement a = run_set(*ref, "real", *be);
  ASSERT_GT(a.total, 0);
  EXPECT_GE(a.decided(), 0.99);
  EXPECT_GE(a.all(), 0.97);  // near-ties included: HF against itself reaches ~98% here
}

TEST(CudaHfBf16, TinyModelsGreedyAgreementFloor) {
  const auto ref = read_reference();
  if (!ref) GTEST_SKIP() << "NANOINFER_HF_BF16 unset (made on the GPU machine)";
  NI_REQUIRE_CUDA(be, DType::BF16);
  const Agreement a = run_set(*ref, "tiny", *be);
  ASSERT_GT(a.total, 0);
  // Random weights: top-1/top-2 gaps of ~0.01, so near-ties are common (98.0% measured on the
  // device over all positions); a floor that catches a broken model, not bf16 noise.
  EXPECT_GE(a.all(), 0.97);
}

}  // namespace
}  // namespace nanoinfer
