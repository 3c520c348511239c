// Arbitrary text through the Llama-3, SmolLM2 and Llama-2 tokenizers (the first byte picks one):
// encoding never throws; Llama-3's (whose vocabulary has every byte; SmolLM2's lacks some, which
// HF drops, as we do) decodes valid UTF-8 back to itself; the same bytes read as token ids decode
// in one piece as the incremental detokenizer's pieces add up; the chat template renders the
// text as any turn.
#include <array>
#include <memory>

#include "fuzz_util.h"
#include "nanoinfer/tokenizer.h"
#include "tokenizer/unicode.h"

using namespace nanoinfer;

namespace {

const std::array<std::unique_ptr<Tokenizer>, 3>& tokenizers() {
  static const std::array<std::unique_ptr<Tokenizer>, 3> t = {
      load_tokenizer_json(NI_FUZZ_DATA_DIR "/tokenizer/llama3/tokenizer.json"),
      load_tokenizer_json(NI_FUZZ_DATA_DIR "/tokenizer/smollm2/tokenizer.json"),
      load_tokenizer_json(NI_FUZZ_DATA_DIR "/tokenizer/llama2/tokenizer.json")};
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int which = data[0] % 3;
  const Tokenizer& tok = *tokenizers()[which];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::vector<int32_t> ids = tok.encode(text, /*add_special_tokens=*/false);
  for (int32_t id : ids)
    fuzz::check(id >= 0 && id < tok.vocab_size(), "encode gave an id outside the vocabulary");
  if (which == 0 && is_valid_utf8(text))
    fuzz::check(tok.decode(ids) == text, "decode(encode(text)) != text");
  // The bytes as ids in the vocabulary, decoded whole and piece by piece.
  std::vector<int32_t> raw;
  for (size_t i = 1; i + 1 < size; i += 2)
    raw.push_back(static_cast<int32_t>((data[i] | data[i + 1] << 8) % tok.vocab_size()));
  for (bool skip : {false, true}) {
    IncrementalDetokenizer inc(tok, skip);
    std::string pieces;
    for (int32_t id : raw) pieces += inc.push(id);
    pieces += inc.flush();
    fuzz::check(pieces == tok.decode(raw, skip), "incremental pieces != decode");
  }
  // The text as every turn of a conversation, and its first bytes as a role: the chat template
  // renders any content (a role it does not know, or a template it does not, is an Error).
  const std::string t(text);
  fuzz::refused_clearly([&] {
    tok.encode(tok.apply_chat_template({{"system", t}, {"user", t}, {"assistant", t}}, true),
               false);
  });
  fuzz::refused_clearly([&] { tok.apply_chat_template({{t.substr(0, 8), t}}, false); });
  return 0;
}
