// The hand-written pre-tokenizers split text exactly like their regexes (expected splits produced
// with Python's `regex` module on the same patterns; invalid UTF-8 bytes, which Python strings
// cannot hold, group like punctuation).
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "tokenizer/pretokenizer.h"

namespace nanoinfer {
namespace {

struct SplitCase {
  PreTokenizer kind;
  std::string text;
  std::vector<std::string> pieces;
};

// Keeps test names printable (the texts hold raw bytes).
void PrintTo(const SplitCase& c, std::ostream* os) {
  *os << (c.kind == PreTokenizer::kLlama3 ? "llama3" : "gpt2") << " split into " << c.pieces.size();
}

std::vector<std::string> split(PreTokenizer kind, std::string_view text) {
  std::vector<std::string> out;
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = kind == PreTokenizer::kLlama3 ? llama3_pretoken_end(text, pos)
                                                     : gpt2_pretoken_end(text, pos);
    out.emplace_back(text.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

class PreTokenizerSplit : public ::testing::TestWithParam<SplitCase> {};

TEST_P(PreTokenizerSplit, MatchesRegex) {
  EXPECT_EQ(split(GetParam().kind, GetParam().text), GetParam().pieces);
}

constexpr PreTokenizer kL3 = PreTokenizer::kLlama3;
constexpr PreTokenizer kG2 = PreTokenizer::kGpt2;

INSTANTIATE_TEST_SUITE_P(
    Regexes, PreTokenizerSplit,
    ::testing::Values(
        SplitCase{kL3, "Hello world", {"Hello", " world"}},
        SplitCase{kL3, "I'M here, it's", {"I", "'M", " here", ",", " it", "'s"}},
        SplitCase{kL3, "1234567", {"123", "456", "7"}}, SplitCase{kL3, "  x", {" ", " x"}},
        SplitCase{kL3, "a\n\n b", {"a", "\n\n", " b"}},
        SplitCase{kL3, "x  \n  y", {"x", "  \n", " ", " y"}},
        SplitCase{kL3, "end  ", {"end", "  "}},
        SplitCase{kL3, "(a+b)*2!\n\nok", {"(a", "+b", ")*", "2", "!\n\n", "ok"}},
        SplitCase{kL3, "\tTab", {"\tTab"}}, SplitCase{kL3, "дом 日本 😀😀", {"дом", " 日本", " 😀😀"}},
        SplitCase{kL3, "x\xff\xfey", {"x", "\xff\xfe", "y"}},
        SplitCase{kG2, "Hello world", {"Hello", " world"}},
        SplitCase{kG2, "I'M here, it's", {"I", "'", "M", " here", ",", " it", "'s"}},
        SplitCase{kG2, "1234567", {"1234567"}}, SplitCase{kG2, "  x", {" ", " x"}},
        SplitCase{kG2, "a\n\n b", {"a", "\n\n", " b"}},
        SplitCase{kG2, "x  \n  y", {"x", "  \n ", " y"}}, SplitCase{kG2, "end  ", {"end", "  "}},
        SplitCase{kG2, "(a+b)*2!\n\nok", {"(", "a", "+", "b", ")*", "2", "!", "\n", "\n", "ok"}},
        SplitCase{kG2, "\tTab", {"\t", "Tab"}},
        SplitCase{kG2, "дом 日本 😀😀", {"дом", " 日本", " 😀😀"}},
        SplitCase{kG2, "x\xff\xfey", {"x", "\xff\xfe", "y"}}));

}  // namespace
}  // namespace nanoinfer
