// Golden test: for every corpus string and tokenizer, ids (with and without special tokens) and
// decode (with and without skip_special_tokens) equal HF tokenizers' output, and the incremental
// detokenizer's pieces concatenate to the full decode. Parametrised by tokenizer (each ctest
// process loads one tokenizer); the corpus is looped inside with the failing string traced.
#include <gtest/gtest.h>

#include "tokenizer_test_util.h"

namespace nanoinfer::test {
namespace {

struct GoldenCase {
  std::string text;
  std::vector<int32_t> ids;
  std::vector<int32_t> ids_no_special;
  std::string decode;
  std::string decode_skip_special;
};

class TokenizerGolden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    tok_ = tokenizer_for(GetParam());
    if (tok_ == nullptr) GTEST_SKIP() << "default model not fetched";
    const nlohmann::json golden =
        read_json("tokenizer/golden_" + golden_name(GetParam()) + ".json");
    for (const auto& g : golden["cases"]) {
      cases_.push_back(
          {g["text"], g["ids"], g["ids_no_special"], g["decode"], g["decode_skip_special"]});
    }
    ASSERT_GE(cases_.size(), 200U);
  }
  const Tokenizer* tok_ = nullptr;
  std::vector<GoldenCase> cases_;
};

TEST_P(TokenizerGolden, EncodeMatchesHf) {
  for (size_t i = 0; i < cases_.size(); ++i) {
    const GoldenCase& c = cases_[i];
    SCOPED_TRACE("corpus string " + std::to_string(i) + ": " + c.text);
    EXPECT_EQ(tok_->encode(c.text), c.ids);
    EXPECT_EQ(tok_->encode(c.text, false), c.ids_no_special);
  }
}

TEST_P(TokenizerGolden, DecodeMatchesHf) {
  for (size_t i = 0; i < cases_.size(); ++i) {
    const GoldenCase& c = cases_[i];
    SCOPED_TRACE("corpus string " + std::to_string(i) + ": " + c.text);
    EXPECT_EQ(tok_->decode(c.ids), c.decode);
    EXPECT_EQ(tok_->decode(c.ids, true), c.decode_skip_special);
  }
}

TEST_P(TokenizerGolden, StreamingConcatenatesToDecode) {
  for (size_t i = 0; i < cases_.size(); ++i) {
    const GoldenCase& c = cases_[i];
    SCOPED_TRACE("corpus string " + std::to_string(i) + ": " + c.text);
    for (const bool skip : {false, true}) {
      IncrementalDetokenizer detok(*tok_, skip);
      std::string streamed;
      for (int32_t id : c.ids) streamed += detok.push(id);
      streamed += detok.flush();
      EXPECT_EQ(streamed, skip ? c.decode_skip_special : c.decode) << "skip_special=" << skip;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Corpus, TokenizerGolden,
                         ::testing::Values("llama3", "llama2", "smollm2", "smollm2_gguf"));

}  // namespace
}  // namespace nanoinfer::test
