// Builds a Tokenizer from GGUF metadata (tokenizer.ggml.*): "gpt2" models are byte-level BPE with
// the pre-tokenizer named by tokenizer.ggml.pre; "llama" models are SentencePiece BPE whose merges
// follow from the token scores. Token types CONTROL and UNKNOWN become special added tokens,
// USER_DEFINED plain added tokens, as HF transformers' GGUF conversion does.
#include <string>

#include "loader/gguf.h"
#include "nanoinfer/tokenizer.h"
#include "tokenizer/tokenizer_model.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

enum GgufTokenType : int64_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4 };

bool bool_or(const GgufFile& g, const std::string& key, bool fallback) {
  const auto it = g.metadata().find(key);
  if (it == g.metadata().end()) return fallback;
  if (const bool* b = std::get_if<bool>(&it->second)) return *b;
  if (const int64_t* i = std::get_if<int64_t>(&it->second)) return *i != 0;
  fail(g.path() + ": metadata " + key + " is not a boolean");
}

PreTokenizer pre_tokenizer_for(const GgufFile& g, bool& ignore_merges) {
  const std::string pre =
      g.has("tokenizer.ggml.pre") ? g.get_string("tokenizer.ggml.pre") : std::string("default");
  if (pre == "llama-bpe" || pre == "llama3") {
    ignore_merges = true;
    return PreTokenizer::kLlama3;
  }
  if (pre == "default" || pre == "gpt2" || pre == "gpt-2" || pre == "smollm") {
    return PreTokenizer::kGpt2;
  }
  fail(g.path() + ": unsupported tokenizer.ggml.pre '" + pre + "'");
}

void read_added_tokens(const GgufFile& g, TokenizerSpec& spec) {
  if (!g.has("tokenizer.ggml.token_type")) return;
  const std::vector<int64_t>& types = g.get_ints("tokenizer.ggml.token_type");
  if (types.size() != spec.pieces.size()) {
    fail(g.path() + ": tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length");
  }
  for (size_t id = 0; id < types.size(); ++id) {
    if (types[id] == kControl || types[id] == kUnknown || types[id] == kUserDefined) {
      spec.added.push_back({static_cast<int32_t>(id), spec.pieces[id], types[id] != kUserDefined});
    }
  }
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer_gguf(const GgufFile& g) {
  const std::string model = g.get_string("tokenizer.ggml.model");
  TokenizerSpec spec;
  spec.pieces = g.get_strings("tokenizer.ggml.tokens");
  bool add_bos = false;
  if (model == "gpt2") {
    spec.kind = ModelKind::kByteLevelBpe;
    spec.pre_tokenizer = pre_tokenizer_for(g, spec.ignore_merges);
    for (const std::string& m : g.get_strings("tokenizer.ggml.merges")) {
      const size_t space = m.find(' ');
      if (space == std::string::npos) fail(g.path() + ": malformed merge '" + m + "'");
      spec.merges.emplace_back(m.substr(0, space), m.substr(space + 1));
    }
    add_bos = bool_or(g, "tokenizer.ggml.add_bos_token", false);
  } else if (model == "llama") {
    spec.kind = ModelKind::kSentencePieceBpe;
    const std::vector<double>& scores = g.get_floats("tokenizer.ggml.scores");
    spec.scores.assign(scores.begin(), scores.end());
    spec.prepend_space = bool_or(g, "tokenizer.ggml.add_space_prefix", true);
    spec.strip_leading_spaces = spec.prepend_space ? 1 : 0;
    add_bos = bool_or(g, "tokenizer.ggml.add_bos_token", true);
  } else {
    fail(g.path() + ": unsupported tokenizer.ggml.model '" + model + "'");
  }
  read_added_tokens(g, spec);

  spec.bos_id = g.get_int32_or("tokenizer.ggml.bos_token_id", -1);
  const auto eos = g.get_int32_or("tokenizer.ggml.eos_token_id", -1);
  spec.eos_ids = g.eos_ids();  // (as the model's config lists them)
  if (add_bos && spec.bos_id >= 0) spec.prefix_ids.push_back(spec.bos_id);
  if (bool_or(g, "tokenizer.ggml.add_eos_token", false) && eos >= 0) spec.suffix_ids.push_back(eos);
  if (g.has("tokenizer.chat_template"))
    spec.chat_template = g.get_string("tokenizer.chat_template");
  return std::make_unique<Tokenizer>(
      std::make_unique<const TokenizerModel>(build_tokenizer_model(std::move(spec))));
}

}  // namespace nanoinfer
