// The decoder as a state machine over ids, shared by Tokenizer::decode (push all, then finish) and
// IncrementalDetokenizer (one push per generated token), so that streamed pieces concatenate to
// exactly the full decode.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "tokenizer/tokenizer_model.h"

namespace nanoinfer {

class DecodeState {
 public:
  DecodeState(const TokenizerModel& model, bool skip_special_tokens);

  // Appends to `out` the text that is final after `id`; throws Error for an unknown id.
  void push(int32_t id, std::string& out);
  // Appends what is still held back and resets to the start-of-text state.
  void finish(std::string& out);

 private:
  void emit(std::string_view text, std::string& out);
  void flush_byte_group(std::string& out);

  const TokenizerModel& model_;
  bool skip_special_;
  // Byte-level: the bytes of a UTF-8 sequence that is not complete yet. SentencePiece: the run of
  // <0xNN> tokens seen since the last other token, decoded together (HF's ByteFallback decoder).
  std::string pending_;
  int32_t strip_left_;  // leading spaces the SentencePiece decoder still removes
};

}  // namespace nanoinfer
