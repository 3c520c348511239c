// Tokenizer's decode, accessors and chat template entry point, and IncrementalDetokenizer.
// Encoding lives in encode.cpp, loading in load_*.cpp.
#include "nanoinfer/tokenizer.h"

#include "tokenizer/chat_template.h"
#include "tokenizer/decode_state.h"
#include "tokenizer/tokenizer_model.h"
#include "util/error.h"

namespace nanoinfer {

Tokenizer::Tokenizer(std::unique_ptr<const TokenizerModel> model) : model_(std::move(model)) {}
Tokenizer::~Tokenizer() = default;

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  DecodeState state(*model_, skip_special_tokens);
  std::string out;
  for (int32_t id : ids) state.push(id, out);
  state.finish(out);
  return out;
}

std::string Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages,
                                           bool add_generation_prompt, bool continue_final_message,
                                           const std::optional<std::string>& date_string) const {
  if (add_generation_prompt && continue_final_message)
    fail(
        "add_generation_prompt and continue_final_message exclude each other: the one begins a new "
        "reply, the other goes on with the final message");
  const ChatTemplateKind kind = recognise_chat_template(model_->chat_template);
  const std::string bos = model_->bos_id >= 0 ? model_->pieces[model_->bos_id] : std::string();
  return continue_final_message
             ? render_chat_continuing(kind, messages, bos, date_string)
             : render_chat_template(kind, messages, add_generation_prompt, bos, date_string);
}

int32_t Tokenizer::vocab_size() const {
  return static_cast<int32_t>(model_->pieces.size());
}
int32_t Tokenizer::bos_id() const {
  return model_->bos_id;
}
const std::vector<int32_t>& Tokenizer::eos_ids() const {
  return model_->eos_ids;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  piece(id);  // (the id checked)
  return model_->byte_value[id] >= 0 ? std::string(1, static_cast<char>(model_->byte_value[id]))
                                     : model_->token_text[id];
}

const std::string& Tokenizer::piece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) {
    fail("token id " + std::to_string(id) + " is outside the vocabulary (size " +
         std::to_string(vocab_size()) + ")");
  }
  return model_->pieces[id];
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && model_->special[id] != 0;
}

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : state_(std::make_unique<DecodeState>(tokenizer.model(), skip_special_tokens)) {}
IncrementalDetokenizer::~IncrementalDetokenizer() = default;

std::string IncrementalDetokenizer::push(int32_t id) {
  std::string out;
  state_->push(id, out);
  return out;
}

std::string IncrementalDetokenizer::flush() {
  std::string out;
  state_->finish(out);
  return out;
}

}  // namespace nanoinfer
