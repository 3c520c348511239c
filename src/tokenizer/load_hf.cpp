// Loads a HF tokenizer.json (+ tokenizer_config.json / chat_template.jinja beside it) into a
// TokenizerSpec. Only the pipelines our models use are accepted; anything else is an Error naming
// the unsupported part, since a silently different pipeline would give wrong ids.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "nanoinfer/tokenizer.h"
#include "tokenizer/tokenizer_model.h"
#include "util/error.h"
#include "util/json_file.h"

namespace nanoinfer {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581
constexpr std::string_view kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

[[noreturn]] void unsupported(const std::string& what, const json& j) {
  fail("tokenizer.json: unsupported " + what + ": " + j.dump().substr(0, 200));
}

// A whole number in [0, limit) (a float such as 3e61 would overflow get<int>; a huge id would
// size the vocabulary by it).
int32_t number_below(const json& j, int64_t limit, const std::string& what) {
  if (!j.is_number_integer() || j.get<int64_t>() < 0 || j.get<int64_t>() >= limit)
    fail("tokenizer.json: " + what + " " + j.dump().substr(0, 40) +
         " is not a whole number from 0 to " + std::to_string(limit - 1));
  return static_cast<int32_t>(j.get<int64_t>());
}

void read_pre_tokenizer(const json& pre, TokenizerSpec& spec) {
  if (pre.is_null()) return;
  const std::string type = pre.value("type", "");
  if (type == "ByteLevel") {
    if (pre.value("add_prefix_space", false)) unsupported("pre_tokenizer", pre);
    spec.pre_tokenizer = pre.value("use_regex", true) ? PreTokenizer::kGpt2 : PreTokenizer::kNone;
    return;
  }
  if (type == "Sequence") {
    const json& list = pre.at("pretokenizers");
    const bool llama3 =
        list.size() == 2 && list[0].value("type", "") == "Split" &&
        list[0].at("pattern").value("Regex", "") == kLlama3Regex &&
        list[0].value("behavior", "") == "Isolated" && !list[0].value("invert", false) &&
        list[1].value("type", "") == "ByteLevel" && !list[1].value("use_regex", true) &&
        !list[1].value("add_prefix_space", false);
    if (!llama3) unsupported("pre_tokenizer", pre);
    spec.pre_tokenizer = PreTokenizer::kLlama3;
    return;
  }
  unsupported("pre_tokenizer", pre);
}

// SentencePiece-style models: Prepend("▁") + Replace(" ", "▁").
void read_normalizer(const json& norm, TokenizerSpec& spec) {
  if (norm.is_null()) return;
  const bool sentencepiece = norm.value("type", "") == "Sequence" &&
                             norm.at("normalizers").size() == 2 &&
                             norm["normalizers"][0].value("type", "") == "Prepend" &&
                             norm["normalizers"][0].value("prepend", "") == kSpaceMarker &&
                             norm["normalizers"][1].value("type", "") == "Replace" &&
                             norm["normalizers"][1].at("pattern").value("String", "") == " " &&
                             norm["normalizers"][1].value("content", "") == kSpaceMarker;
  if (!sentencepiece) unsupported("normalizer", norm);
  spec.prepend_space = true;
}

// ByteLevel, or Replace("▁", " ") + ByteFallback + Fuse [+ Strip(" ", n, 0)].
void read_decoder(const json& dec, TokenizerSpec& spec) {
  const std::string type = dec.is_null() ? "" : dec.value("type", "");
  if (spec.kind == ModelKind::kByteLevelBpe) {
    if (type != "ByteLevel") unsupported("decoder for a byte-level model", dec);
    return;
  }
  if (type != "Sequence") unsupported("decoder", dec);
  const json& list = dec.at("decoders");
  const bool ok = list.size() >= 3 && list[0].value("type", "") == "Replace" &&
                  list[0].at("pattern").value("String", "") == kSpaceMarker &&
                  list[0].value("content", "") == " " &&
                  list[1].value("type", "") == "ByteFallback" &&
                  list[2].value("type", "") == "Fuse" &&
                  (list.size() == 3 ||
                   (list.size() == 4 && list[3].value("type", "") == "Strip" &&
                    list[3].value("content", "") == " " && list[3].value("stop", json(0)) == 0));
  if (!ok) unsupported("decoder", dec);
  spec.strip_leading_spaces =
      list.size() == 4 ? number_below(list[3].value("start", json(0)), 64, "Strip start") : 0;
}

void read_template_processing(const json& proc, TokenizerSpec& spec) {
  bool after_sequence = false;
  for (const json& item : proc.at("single")) {
    if (item.contains("Sequence")) {
      after_sequence = true;
      continue;
    }
    const std::string name = item.at("SpecialToken").at("id");
    for (const json& id : proc.at("special_tokens").at(name).at("ids")) {
      (after_sequence ? spec.suffix_ids : spec.prefix_ids)
          .push_back(
              number_below(id, static_cast<int64_t>(spec.pieces.size()), "post-processor id"));
    }
  }
}

void read_post_processor(const json& proc, TokenizerSpec& spec) {
  if (proc.is_null()) return;
  const std::string type = proc.value("type", "");
  if (type == "ByteLevel") return;  // only adjusts offsets
  if (type == "TemplateProcessing") {
    read_template_processing(proc, spec);
    return;
  }
  if (type == "Sequence") {
    for (const json& p : proc.at("processors")) read_post_processor(p, spec);
    return;
  }
  unsupported("post_processor", proc);
}

// id_limit: the entries of the vocabulary and the added tokens, which no id reaches.
void read_model(const json& model, int64_t id_limit, TokenizerSpec& spec) {
  if (model.value("type", "") != "BPE") unsupported("model", json(model.value("type", "")));
  const bool byte_fallback = model.value("byte_fallback", false);
  if (byte_fallback != (spec.kind == ModelKind::kSentencePieceBpe)) {
    unsupported("byte_fallback setting for this pre-tokenizer", json(byte_fallback));
  }
  spec.ignore_merges = model.value("ignore_merges", false);
  for (const auto& [piece, id] : model.at("vocab").items()) {
    const int32_t i = number_below(id, id_limit, "the id of '" + piece.substr(0, 40) + "',");
    if (static_cast<size_t>(i) >= spec.pieces.size()) spec.pieces.resize(i + 1);
    spec.pieces[i] = piece;
  }
  for (const json& m : model.at("merges")) {
    if (m.is_array()) {
      spec.merges.emplace_back(m.at(0).get<std::string>(), m.at(1).get<std::string>());
      continue;
    }
    const std::string s = m.get<std::string>();
    const size_t space = s.find(' ');
    if (space == std::string::npos) fail("tokenizer.json: malformed merge '" + s + "'");
    spec.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
  }
}

void read_added_tokens(const json& added, int64_t id_limit, TokenizerSpec& spec) {
  for (const json& t : added) {
    const int32_t id = number_below(t.at("id"), id_limit, "added token id");
    const std::string content = t.at("content");
    const bool special = t.value("special", false);
    // (a token matched in the normalized text, where the SentencePiece normalizer has put its ▁
    // before every space: HF's default for a token that is not special)
    const bool normalized = spec.prepend_space && t.value("normalized", !special);
    if (t.value("lstrip", false) || t.value("rstrip", false) || t.value("single_word", false) ||
        normalized) {
      unsupported("added token options", t);
    }
    spec.added.push_back({id, content, special});
    if (static_cast<size_t>(id) >= spec.pieces.size()) spec.pieces.resize(id + 1);
    spec.pieces[id] = content;
  }
}

// "<s>" or {"content": "<s>", ...}
std::string token_name(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object()) return j.value("content", "");
  return "";
}

void read_config(const fs::path& dir, TokenizerSpec& spec) {
  const fs::path config_path = dir / "tokenizer_config.json";
  json config = fs::exists(config_path) ? read_json_file(config_path.string()) : json::object();
  const auto id_of = [&](const json& j) {
    const std::string name = token_name(j);
    return name.empty() ? -1 : find_piece(spec.pieces, name);
  };
  spec.bos_id = config.contains("bos_token") ? id_of(config["bos_token"]) : -1;
  if (spec.bos_id < 0 && !spec.prefix_ids.empty()) spec.bos_id = spec.prefix_ids.front();
  if (config.contains("eos_token") && id_of(config["eos_token"]) >= 0) {
    spec.eos_ids.push_back(id_of(config["eos_token"]));
  }
  // (a chat_template.jinja beside the config wins over the config's template, as in transformers)
  const json& tmpl = config.contains("chat_template") ? config["chat_template"] : json();
  if (fs::exists(dir / "chat_template.jinja")) {
    spec.chat_template = read_file_bytes((dir / "chat_template.jinja").string());
  } else if (tmpl.is_string()) {
    spec.chat_template = tmpl.get<std::string>();
  } else if (tmpl.is_array()) {
    for (const json& named : tmpl) {
      if (named.value("name", "") == "default") spec.chat_template = named.value("template", "");
    }
  }
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& tokenizer_json_path) {
  const json root = read_json_file(tokenizer_json_path);
  if (!root.is_object() || !root.contains("model"))  // (tokenizer_config.json, config.json, ...)
    fail(tokenizer_json_path +
         ": not a tokenizer.json (it has no \"model\": the vocabulary and merges)");
  TokenizerSpec spec;
  try {
    read_pre_tokenizer(root.value("pre_tokenizer", json()), spec);
    read_normalizer(root.value("normalizer", json()), spec);
    if (spec.prepend_space && spec.pre_tokenizer != PreTokenizer::kNone) {
      fail(
          "tokenizer.json: a SentencePiece normalizer together with a pre-tokenizer is not "
          "supported");
    }
    const bool byte_level_pre = root.value("pre_tokenizer", json()).is_object();
    spec.kind = byte_level_pre ? ModelKind::kByteLevelBpe : ModelKind::kSentencePieceBpe;
    const json added = root.value("added_tokens", json::array());
    const int64_t id_limit =
        static_cast<int64_t>(root.at("model").at("vocab").size() + added.size());
    read_model(root.at("model"), id_limit, spec);
    read_added_tokens(added, id_limit, spec);
    read_decoder(root.value("decoder", json()), spec);
    read_post_processor(root.value("post_processor", json()), spec);
  } catch (const json::exception& e) {
    fail(tokenizer_json_path + ": unexpected structure: " + e.what());
  }
  const fs::path dir = fs::path(tokenizer_json_path).parent_path();
  try {
    read_config(dir, spec);
  } catch (const json::exception& e) {  // e.g. a chat_template list whose entries are no objects
    fail((dir / "tokenizer_config.json").string() + ": unexpected structure: " + e.what());
  }
  return std::make_unique<Tokenizer>(
      std::make_unique<const TokenizerModel>(build_tokenizer_model(std::move(spec))));
}

}  // namespace nanoinfer
