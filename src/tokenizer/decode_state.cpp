// Decoding (see decode_state.h). Byte-level: all token bytes form one stream, repaired like Rust's
// from_utf8_lossy. SentencePiece (HF's Replace "▁" -> " ", ByteFallback, Fuse, Strip): a run of
// byte tokens becomes its UTF-8 text when valid and one U+FFFD per byte otherwise, and the first
// leading space(s) of the whole text are dropped.
#include "tokenizer/decode_state.h"

#include "tokenizer/unicode.h"
#include "util/error.h"

namespace nanoinfer {

DecodeState::DecodeState(const TokenizerModel& model, bool skip_special_tokens)
    : model_(model), skip_special_(skip_special_tokens), strip_left_(model.strip_leading_spaces) {}

void DecodeState::push(int32_t id, std::string& out) {
  if (id < 0 || id >= static_cast<int32_t>(model_.pieces.size())) {
    fail("cannot decode token id " + std::to_string(id) + ": outside the vocabulary (size " +
         std::to_string(model_.pieces.size()) + ")");
  }
  if (skip_special_ && model_.special[id] != 0) return;
  if (model_.kind == ModelKind::kByteLevelBpe) {
    pending_ += model_.token_text[id];
    const size_t used = append_utf8_lossy(pending_, false, out);
    pending_.erase(0, used);
    return;
  }
  if (model_.byte_value[id] >= 0) {
    pending_ += static_cast<char>(model_.byte_value[id]);
    return;
  }
  flush_byte_group(out);
  emit(model_.token_text[id], out);
}

void DecodeState::finish(std::string& out) {
  if (model_.kind == ModelKind::kByteLevelBpe) {
    append_utf8_lossy(pending_, true, out);
    pending_.clear();
  } else {
    flush_byte_group(out);
  }
  strip_left_ = model_.strip_leading_spaces;
}

void DecodeState::flush_byte_group(std::string& out) {
  if (pending_.empty()) return;
  if (is_valid_utf8(pending_)) {
    emit(pending_, out);
  } else {
    std::string replaced;
    for (size_t i = 0; i < pending_.size(); ++i) replaced += kReplacementChar;
    emit(replaced, out);
  }
  pending_.clear();
}

void DecodeState::emit(std::string_view text, std::string& out) {
  while (strip_left_ > 0 && !text.empty() && text[0] == ' ') {
    text.remove_prefix(1);
    --strip_left_;
  }
  if (!text.empty()) strip_left_ = 0;
  out.append(text);
}

}  // namespace nanoinfer
