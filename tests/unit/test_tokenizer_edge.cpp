// Defined behaviour at the edges: empty text, invalid UTF-8, NUL bytes, 1 MB inputs, unknown ids,
// bytes missing from a byte-level vocabulary, streaming that never splits a character, and clear
// errors from the loaders.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "tokenizer/unicode.h"
#include "tokenizer_test_util.h"

namespace nanoinfer::test {
namespace {

class EveryTokenizer : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    tok_ = tokenizer_for(GetParam());
    if (tok_ == nullptr) GTEST_SKIP() << "default model not fetched";
  }
  const Tokenizer* tok_ = nullptr;
};

TEST_P(EveryTokenizer, EmptyTextIsOnlyThePostProcessorTokens) {
  EXPECT_TRUE(tok_->encode("", false).empty());
  EXPECT_EQ(tok_->decode(std::vector<int32_t>{}), "");
}

// Byte-level models repair the byte stream like Rust's from_utf8_lossy (one U+FFFD per maximal
// invalid subpart); SmolLM2 first loses the bytes its vocabulary lacks (0xFE, 0xFF); Llama-2 keeps
// each invalid byte as a <0xNN> token and HF's ByteFallback decoder turns an invalid run of byte
// tokens into one U+FFFD per byte.
TEST_P(EveryTokenizer, InvalidUtf8DecodesWithReplacementCharacters) {
  const std::string text = "ok \xff\xfe and \xc3 end \xe2\x82";
  const std::map<std::string, std::string> expected = {
      {"llama3", "ok \uFFFD\uFFFD and \uFFFD end \uFFFD"},
      {"llama2", "ok \uFFFD\uFFFD and \uFFFD end \uFFFD\uFFFD"},
      {"smollm2", "ok  and \uFFFD end \uFFFD"},
      {"smollm2_gguf", "ok  and \uFFFD end \uFFFD"}};
  EXPECT_EQ(tok_->decode(tok_->encode(text, false)), expected.at(GetParam()));
}

TEST_P(EveryTokenizer, NulBytesAreText) {
  const std::string text("a\0b", 3);
  EXPECT_EQ(tok_->decode(tok_->encode(text, false)), text);
}

TEST_P(EveryTokenizer, OneMegabyteRoundTrips) {
  std::string text;
  while (text.size() < (1 << 20)) text += "The quick brown fox, 1234 times; ñandú 日本語 😀\n";
  const std::vector<int32_t> ids = tok_->encode(text, false);
  EXPECT_GT(ids.size(), text.size() / 8);
  EXPECT_EQ(tok_->decode(ids), text);
}

TEST_P(EveryTokenizer, UnknownIdOnDecodeThrowsNamingIt) {
  for (const int32_t bad : {tok_->vocab_size(), -1, 1 << 30}) {
    try {
      tok_->decode(std::vector<int32_t>{bad});
      FAIL() << "no error for id " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::to_string(bad)), std::string::npos) << e.what();
    }
    IncrementalDetokenizer detok(*tok_, false);
    EXPECT_THROW(detok.push(bad), Error);
    EXPECT_THROW(tok_->piece(bad), Error);
    EXPECT_FALSE(tok_->is_special(bad));
  }
}

TEST_P(EveryTokenizer, StreamedPiecesAreValidUtf8) {
  const std::string text =
      "👨‍👩‍👧‍👦 🧑🏻‍💻 日本語 é नमस्ते";
  IncrementalDetokenizer detok(*tok_, false);
  std::string all;
  for (int32_t id : tok_->encode(text, false)) {
    const std::string piece = detok.push(id);
    EXPECT_TRUE(is_valid_utf8(piece));
    all += piece;
  }
  all += detok.flush();
  EXPECT_EQ(all, text);
}

TEST_P(EveryTokenizer, StreamingHoldsBackAnIncompleteCharacterUntilFlush) {
  // The bytes of "é" split over two pushes must come out together; a lone lead byte becomes
  // U+FFFD at flush, exactly as decode() renders it.
  const std::string e_acute = "\xc3\xa9";
  const std::vector<int32_t> ids = tok_->encode(e_acute + "\xc3", false);
  IncrementalDetokenizer detok(*tok_, false);
  std::string streamed;
  for (int32_t id : ids) streamed += detok.push(id);
  streamed += detok.flush();
  EXPECT_EQ(streamed, tok_->decode(ids));
  EXPECT_EQ(streamed, e_acute + "\uFFFD");
}

INSTANTIATE_TEST_SUITE_P(Models, EveryTokenizer,
                         ::testing::Values("llama3", "llama2", "smollm2", "smollm2_gguf"));

TEST(TokenizerEdge, SpecialIdsAndSizes) {
  const Tokenizer* l3 = tokenizer_for("llama3");
  EXPECT_EQ(l3->vocab_size(), 128256);
  EXPECT_EQ(l3->bos_id(), 128000);
  EXPECT_EQ(l3->eos_ids(), std::vector<int32_t>{128001});
  EXPECT_TRUE(l3->is_special(128009));
  EXPECT_EQ(l3->piece(128009), "<|eot_id|>");
  EXPECT_EQ(l3->encode("Hello"), std::vector<int32_t>{9906});  // post-processor adds no BOS

  const Tokenizer* l2 = tokenizer_for("llama2");
  EXPECT_EQ(l2->vocab_size(), 32000);
  EXPECT_EQ(l2->bos_id(), 1);
  EXPECT_EQ(l2->eos_ids(), std::vector<int32_t>{2});
  EXPECT_EQ(l2->encode(""), std::vector<int32_t>{1});
  EXPECT_FALSE(l2->is_special(13));  // <0x0A>, a byte-fallback token, is not special
}

TEST(TokenizerEdge, SmolLm2DropsBytesItsVocabularyLacks) {
  // SmolLM2 has no token for byte 0x04; HF tokenizers silently drops it.
  const Tokenizer* tok = tokenizer_for("smollm2");
  EXPECT_EQ(tok->encode("a\x04"
                        "b"),
            (std::vector<int32_t>{81, 82}));
}

TEST(TokenizerEdge, SentencePieceEncodesInvalidBytesAsByteTokens) {
  const Tokenizer* tok = tokenizer_for("llama2");
  const std::vector<int32_t> ids = tok->encode("\xff", false);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(tok->piece(ids.back()), "<0xFF>");
}

TEST(TokenizerLoad, MissingFileNamesThePath) {
  try {
    load_tokenizer_for_model("/nonexistent/dir/tokenizer.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/tokenizer.json"), std::string::npos);
  }
}

TEST(TokenizerLoad, UnsupportedModelTypeIsAnError) {
  const auto dir = std::filesystem::temp_directory_path() / "nanoinfer_tok_unigram";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << R"({"model": {"type": "Unigram", "vocab": []}})";
  try {
    load_tokenizer_for_model(dir.string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Unigram"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

// An added token marked normalized in a SentencePiece tokenizer is matched by HF in the normalized
// text (▁ before each space), with its own ids around it; a file with one is refused rather than
// encoded otherwise (found by a differential run against HF tokenizers). Not normalized, it loads.
TEST(TokenizerLoad, ANormalizedAddedTokenBesideASentencePieceNormalizerIsRefused) {
  const auto dir = std::filesystem::temp_directory_path() / "nanoinfer_tok_normalized_added";
  std::filesystem::create_directories(dir);
  nlohmann::json j;
  std::ifstream(data_path("tokenizer/llama2/tokenizer.json")) >> j;
  for (const bool normalized : {true, false}) {
    SCOPED_TRACE(normalized);
    nlohmann::json t = j;
    t["added_tokens"].push_back({{"id", 32000},
                                 {"content", "qxhello"},
                                 {"single_word", false},
                                 {"lstrip", false},
                                 {"rstrip", false},
                                 {"normalized", normalized},
                                 {"special", false}});
    std::ofstream(dir / "tokenizer.json") << t.dump();
    std::string message;
    try {
      load_tokenizer_json((dir / "tokenizer.json").string());
    } catch (const Error& e) {
      message = e.what();
    }
    EXPECT_EQ(message.starts_with("tokenizer.json: unsupported added token options"), normalized)
        << message;
  }
  std::filesystem::remove_all(dir);
}

// A byte-level tokenizer.json of three pieces with one change, and a tokenizer_config.json.
struct BadTokenizerCase {
  std::string name;
  std::string model_patch;  // JSON merged into the tokenizer.json
  std::string config;       // tokenizer_config.json ("" = none)
  std::string message;
};
void PrintTo(const BadTokenizerCase& c, std::ostream* os) {
  *os << c.name;
}

class TokenizerLoadError : public ::testing::TestWithParam<BadTokenizerCase> {};

// Found by fuzzing (make fuzz): ids that were floats overflowed an int, huge ids sized the
// vocabulary by them (2e9 entries), and tokenizer_config.json's type errors escaped as JSON
// exceptions.
TEST_P(TokenizerLoadError, IsAnErrorNamingTheProblem) {
  const auto dir = std::filesystem::temp_directory_path() / ("nanoinfer_tok_" + GetParam().name);
  std::filesystem::create_directories(dir);
  nlohmann::json j = nlohmann::json::parse(R"({
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
      "decoder": {"type": "ByteLevel"},
      "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})");
  j.merge_patch(nlohmann::json::parse(GetParam().model_patch));
  std::ofstream(dir / "tokenizer.json") << j.dump();
  if (!GetParam().config.empty()) std::ofstream(dir / "tokenizer_config.json") << GetParam().config;
  std::string message;
  try {
    load_tokenizer_json((dir / "tokenizer.json").string());
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find(GetParam().message), std::string::npos) << "got: " << message;
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, TokenizerLoadError,
    ::testing::Values(
        BadTokenizerCase{"VocabIdFloat", R"({"model": {"vocab": {"b": 3e61}}})", "",
                         "the id of 'b', 3e+61 is not a whole number from 0 to 2"},
        BadTokenizerCase{"VocabIdHuge", R"({"model": {"vocab": {"b": 2000000000}}})", "",
                         "the id of 'b', 2000000000 is not a whole number from 0 to 2"},
        BadTokenizerCase{"AddedIdHuge",
                         R"({"added_tokens": [{"id": 2147483647, "content": "<x>"}]})", "",
                         "added token id 2147483647 is not a whole number from 0 to 3"},
        BadTokenizerCase{"ConfigTemplateListOfNumbers", "{}", R"({"chat_template": [1, 2]})",
                         "tokenizer_config.json: unexpected structure"}),
    [](const auto& info) { return info.param.name; });

TEST(TokenizerLoad, HfDirectoryAndGgufGiveTheSameTokenizer) {
  const std::string gguf = default_model_path();
  if (gguf.empty()) GTEST_SKIP() << "default model not fetched";
  const auto from_gguf = load_tokenizer_for_model(gguf);
  const auto from_dir = load_tokenizer_for_model(data_path("tokenizer/smollm2"));
  EXPECT_EQ(from_gguf->vocab_size(), from_dir->vocab_size());
  EXPECT_EQ(from_gguf->bos_id(), from_dir->bos_id());
  EXPECT_EQ(from_gguf->eos_ids(), from_dir->eos_ids());
  const std::string text = "<|im_start|>user\nHi there, 123!<|im_end|>";
  EXPECT_EQ(from_gguf->encode(text), from_dir->encode(text));
}

}  // namespace
}  // namespace nanoinfer::test
