// The data behind a Tokenizer, and the spec a loader fills in to build it. Loaders (tokenizer.json,
// GGUF) only translate their file format into a TokenizerSpec; build_tokenizer_model derives the
// lookup tables every encode/decode needs.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pretokenizer.h"

namespace nanoinfer {

enum class ModelKind {
  kByteLevelBpe,      // GPT-2 byte alphabet, pre-tokenizer regex, merges per pre-token
  kSentencePieceBpe,  // "▁" for spaces, whole segment is one word, <0xNN> byte fallback
};

struct TokenizerSpec {
  ModelKind kind = ModelKind::kByteLevelBpe;
  PreTokenizer pre_tokenizer = PreTokenizer::kNone;
  bool ignore_merges = false;        // a pre-token that is itself in the vocabulary is one id
  bool prepend_space = false;        // SentencePiece: "▁" before each non-empty segment
  int32_t strip_leading_spaces = 0;  // SentencePiece decoder: spaces removed from the start
  std::vector<std::string> pieces;   // by id, added tokens included
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::vector<float> scores;  // SentencePiece from GGUF: merges derive from scores
  std::vector<AddedToken> added;
  std::vector<int32_t> prefix_ids;  // post-processor, when add_special_tokens
  std::vector<int32_t> suffix_ids;
  int32_t bos_id = -1;
  std::vector<int32_t> eos_ids;
  std::string chat_template;
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringToId = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct TokenizerModel {
  ModelKind kind = ModelKind::kByteLevelBpe;
  PreTokenizer pre_tokenizer = PreTokenizer::kNone;
  bool ignore_merges = false;
  bool prepend_space = false;
  int32_t strip_leading_spaces = 0;
  // SentencePiece: no piece has "▁" right after another character, so no merge can cross the
  // start of a "▁"-led word, and words can be merged (and cached) one at a time.
  bool split_at_space_marker = false;

  std::vector<std::string> pieces;      // id -> vocabulary spelling
  std::vector<std::string> token_text;  // id -> what decode emits (bytes for byte-level)
  std::vector<int16_t> byte_value;      // id -> byte of a <0xNN> token, else -1 (SentencePiece)
  std::vector<uint8_t> special;         // id -> special added token
  StringToId vocab;                     // encoding key (raw bytes / "▁" spelling) -> id
  std::array<int32_t, 256> byte_ids{};  // byte -> its single-byte token (or <0xNN> token)
  MergeTable merges;
  AddedTokenMatcher added;

  std::vector<int32_t> prefix_ids;
  std::vector<int32_t> suffix_ids;
  int32_t bos_id = -1;
  std::vector<int32_t> eos_ids;
  std::string chat_template;
};

// Throws Error when the spec is inconsistent (a merge of unknown pieces, a byte without a token).
TokenizerModel build_tokenizer_model(TokenizerSpec spec);

// The id of `piece`, or -1.
int32_t find_piece(const std::vector<std::string>& pieces, std::string_view piece);

}  // namespace nanoinfer
