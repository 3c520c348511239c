// Text <-> token ids for Llama-family models, identical to HF tokenizers: byte-level BPE (Llama-3,
// SmolLM2, GPT-2) and SentencePiece-style BPE with byte fallback (Llama-2), added/special tokens,
// the post-processor's BOS/EOS, streaming detokenization and the model's chat template.
//
// Defined behaviour at the edges (tested):
//  - encode("") is just the post-processor's tokens (e.g. [BOS]).
//  - Invalid UTF-8 input never throws: byte-level models pass the bytes through unchanged (each
//    invalid byte groups like punctuation), but for bytes no UTF-8 text holds (0xC0, 0xC1,
//    0xF5-0xFF) that a vocabulary has no token for (SmolLM2's), which are dropped; SentencePiece
//    models encode each invalid byte as its <0xNN> byte-fallback token.
//  - decode replaces invalid byte sequences with U+FFFD as HF does; an id outside the vocabulary
//    throws Error naming the id.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nanoinfer/error.h"  // (the Error its functions throw)

namespace nanoinfer {

class GgufFile;
struct TokenizerModel;
class DecodeState;

struct ChatMessage {
  std::string role;
  std::string content;
};

// encode/decode are const and keep no shared state, so one Tokenizer can serve several threads.
class Tokenizer {
 public:
  explicit Tokenizer(std::unique_ptr<const TokenizerModel> model);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // add_special_tokens: apply the post-processor (BOS/EOS), like HF's argument of that name.
  // Special tokens written in the text are always matched as one id each.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // Renders the model's chat template. Templates are recognised, not interpreted: the Llama-3,
  // Llama-3.1(-3.3), Llama-3.2 and SmolLM2 ChatML templates are supported; any other throws
  // Error, as do no messages and a role other than system, user, assistant, tool or ipython.
  // continue_final_message (HF's): the text ends with the final message's content, not closed,
  // so that a reply goes on with it (an assistant message begun for the model); it excludes
  // add_generation_prompt. date_string (the template variable): the date the Llama-3.1 and 3.2
  // templates write into their system turn; unset, theirs: 26 Jul 2024 and today's date.
  std::string apply_chat_template(
      const std::vector<ChatMessage>& messages, bool add_generation_prompt,
      bool continue_final_message = false,
      const std::optional<std::string>& date_string = std::nullopt) const;

  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 when the tokenizer defines none
  const std::vector<int32_t>& eos_ids() const;
  // The vocabulary's spelling of a token (e.g. "Ġhello", "▁hello", "<|eot_id|>").
  const std::string& piece(int32_t id) const;
  // The bytes a token stands for in a text (" hello"; a byte token's one byte, which may be part
  // of a UTF-8 character; a special token's spelling): the OpenAI API's logprob "bytes".
  std::string token_bytes(int32_t id) const;
  bool is_special(int32_t id) const;
  const TokenizerModel& model() const { return *model_; }

 private:
  std::unique_ptr<const TokenizerModel> model_;
};

// Turns a stream of ids into text pieces for streaming output. A piece never ends inside a UTF-8
// sequence (bytes are held back until the character is complete), and the concatenation of all
// pushes and the final flush equals Tokenizer::decode of the same ids. The tokenizer must outlive
// it.
class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens);
  ~IncrementalDetokenizer();
  IncrementalDetokenizer(const IncrementalDetokenizer&) = delete;
  IncrementalDetokenizer& operator=(const IncrementalDetokenizer&) = delete;

  std::string push(int32_t id);
  // Emits what was held back (incomplete sequences become U+FFFD) and starts over.
  std::string flush();

 private:
  std::unique_ptr<DecodeState> state_;
};

// tokenizer.json (HF tokenizers format); tokenizer_config.json next to it, when present, gives
// the chat template and the BOS/EOS token names.
std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& tokenizer_json_path);
// From a GGUF file's tokenizer.ggml.* metadata.
std::unique_ptr<Tokenizer> load_tokenizer_gguf(const GgufFile& gguf);
// A .gguf file, a HF model directory (tokenizer.json inside) or a tokenizer.json path (a path:
// engine.h's resolve_model_path() turns "default" into the default model's).
std::unique_ptr<Tokenizer> load_tokenizer_for_model(const std::string& model_path);

}  // namespace nanoinfer
