// Golden test: for every corpus string and tokenizer, ids (with and without special tokens) and
// decode (with and without skip_special_tokens) equal HF tokenizers' output, and the incremental
// detokenizer's pieces concatenate to the full decode.
#include <gtest/gtest.h>

#include "tokenizer_test_util.h"

namespace nanoinfer::test {
namespace {

struct GoldenCase {
  std::string model;
  size_t index;
};

std::vector<GoldenCase> all_cases() {
  std::vector<GoldenCase> cases;
  for (const std::string model : {"llama3", "llama2", "smollm2", "smollm2_gguf"}) {
    const size_t n = read_json("tokenizer/golden_" + golden_name(model) + ".json")["cases"].size();
    for (size_t i = 0; i < n; ++i) cases.push_back({model, i});
  }
  return cases;
}

const nlohmann::json& golden_case(const GoldenCase& c) {
  static std::map<std::string, nlohmann::json> files;
  const std::string name = golden_name(c.model);
  if (!files.count(name)) files[name] = read_json("tokenizer/golden_" + name + ".json");
  return files[name]["cases"][c.index];
}

class TokenizerGolden : public ::testing::TestWithParam<GoldenCase> {
 protected:
  void SetUp() override {
    tok_ = tokenizer_for(GetParam().model);
    if (tok_ == nullptr) GTEST_SKIP() << "default model not fetched";
    const nlohmann::json& g = golden_case(GetParam());
    text_ = g["text"].get<std::string>();
    ids_ = g["ids"].get<std::vector<int32_t>>();
    ids_no_special_ = g["ids_no_special"].get<std::vector<int32_t>>();
    decode_ = g["decode"].get<std::string>();
    decode_skip_ = g["decode_skip_special"].get<std::string>();
  }
  const Tokenizer* tok_ = nullptr;
  std::string text_;
  std::vector<int32_t> ids_;
  std::vector<int32_t> ids_no_special_;
  std::string decode_;
  std::string decode_skip_;
};

TEST_P(TokenizerGolden, EncodeMatchesHf) {
  EXPECT_EQ(tok_->encode(text_), ids_) << "text: " << text_;
  EXPECT_EQ(tok_->encode(text_, false), ids_no_special_) << "text: " << text_;
}

TEST_P(TokenizerGolden, DecodeMatchesHf) {
  EXPECT_EQ(tok_->decode(ids_), decode_);
  EXPECT_EQ(tok_->decode(ids_, true), decode_skip_);
}

TEST_P(TokenizerGolden, StreamingConcatenatesToDecode) {
  for (const bool skip : {false, true}) {
    IncrementalDetokenizer detok(*tok_, skip);
    std::string streamed;
    for (int32_t id : ids_) streamed += detok.push(id);
    streamed += detok.flush();
    EXPECT_EQ(streamed, skip ? decode_skip_ : decode_) << "skip_special=" << skip;
  }
}

INSTANTIATE_TEST_SUITE_P(Corpus, TokenizerGolden, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<GoldenCase>& info) {
                           return info.param.model + "_" + std::to_string(info.param.index);
                         });

}  // namespace
}  // namespace nanoinfer::test
