// `nanoinfer tokenize`: text -> ids and pieces (or ids -> text with --decode), using only the
// tokenizer of a model (GGUF metadata or HF tokenizer.json), without loading weights.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "nanoinfer/engine.h"
#include "nanoinfer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/json_file.h"
#include "util/str_cat.h"

namespace nanoinfer::cli {
namespace {

struct TokenizeArgs {
  std::string model;
  std::string tokenizer;
  std::string text;
  std::string text_file;
  std::string decode;
  bool decoding = false;  // --decode given (an empty list decodes to empty text)
  bool no_special = false;
  bool skip_special = false;
  bool json = false;
};

// JSON string with invalid UTF-8 replaced (pieces are valid, decoded text may not be).
std::string json_string(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void run_tokenize(const TokenizeArgs& a) {
  const std::string model = resolve_model_path(a.model);
  const std::unique_ptr<Tokenizer> tok =
      load_tokenizer_for_model(a.tokenizer.empty() ? model : a.tokenizer);
  if (a.decoding) {
    const std::vector<int32_t> ids =
        a.decode.empty() ? std::vector<int32_t>{} : parse_ids(a.decode, "--decode");
    const std::string text = tok->decode(ids, a.skip_special);
    if (a.json) {
      std::printf("{\"text\": %s}\n", json_string(text).c_str());
    } else {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::printf("\n");
    }
    return;
  }
  const std::string text = a.text_file.empty() ? a.text : read_file(a.text_file, "--text-file");
  note_if_not_utf8(text, a.text_file.empty() ? "--text" : "--text-file " + a.text_file);
  const std::vector<int32_t> ids = tok->encode(text, !a.no_special);
  if (a.json) {
    std::string pieces;
    for (int32_t id : ids) pieces += (pieces.empty() ? "" : ", ") + json_string(tok->piece(id));
    std::string id_list;
    for (int32_t id : ids) id_list += (id_list.empty() ? "" : ", ") + std::to_string(id);
    std::printf("{\"ids\": [%s], \"pieces\": [%s]}\n", id_list.c_str(), pieces.c_str());
    return;
  }
  std::printf("%s\n", count_of(std::ssize(ids), "token").c_str());
  for (int32_t id : ids) std::printf("%8d  %s\n", id, json_string(tok->piece(id)).c_str());
}

}  // namespace

void note_if_not_utf8(std::string_view text, const std::string& what) {
  if (!is_valid_utf8(text))
    std::fprintf(stderr,
                 "nanoinfer: note: %s is not valid UTF-8: the tokenizer takes its bytes as they "
                 "are and drops any its vocabulary has no token for, as HF's tokenizers do\n",
                 what.c_str());
}

std::string read_file(const std::string& path, const std::string& what) {
  if (path == "-") {
    std::string bytes{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    if (std::cin.bad()) fail("standard input: cannot read " + what);
    return bytes;
  }
  try {
    return read_file_bytes(path);
  } catch (const Error&) {  // (the CLI's message names what the file was for)
    fail(path + ": cannot read " + what +
         (std::filesystem::is_directory(path) ? " (a directory)" : ""));
  }
}

std::vector<int32_t> parse_ids(const std::string& list, const std::string& flag) {
  std::vector<int32_t> ids;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || item.find_first_not_of(' ', used) != std::string::npos || v < INT32_MIN ||
        v > INT32_MAX) {
      fail(std::string(flag).append(" expects comma-separated integers, got '").append(item) + "'");
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) fail(flag + " expects comma-separated integers, got nothing");
  return ids;
}

void add_tokenize_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("tokenize", "Encode text to token ids (or decode ids to text)");
  auto args = std::make_shared<TokenizeArgs>();
  auto* model = cmd->add_option("--model", args->model, "HF directory, .gguf file or 'default'");
  auto* tokenizer = cmd->add_option("--tokenizer", args->tokenizer,
                                    "a tokenizer.json file (or the directory that holds one)");
  model->excludes(tokenizer);
  auto* text = cmd->add_option("--text", args->text, "text to encode");
  auto* file = cmd->add_option("--text-file", args->text_file,
                               "file whose raw bytes to encode (-: standard input)");
  auto* decode = cmd->add_option("--decode", args->decode, "comma-separated ids to decode");
  text->excludes(file)->excludes(decode);
  file->excludes(decode);
  cmd->add_flag("--no-special", args->no_special,
                "encoding: do not add BOS/EOS (add_special_tokens=False)")
      ->excludes(decode);
  cmd->add_flag("--skip-special", args->skip_special, "with --decode: drop special tokens")
      ->needs(decode);
  cmd->add_flag("--json", args->json, "print JSON: {\"ids\": [...], \"pieces\": [...]}");
  cmd->callback([args, model, tokenizer, text, file, decode] {
    if (model->count() == 0 && tokenizer->count() == 0)
      fail("tokenize needs --model or --tokenizer");
    if (text->count() == 0 && file->count() == 0 && decode->count() == 0) {
      fail("tokenize needs --text, --text-file or --decode");
    }
    args->decoding = decode->count() > 0;
    run_tokenize(*args);
  });
}

}  // namespace nanoinfer::cli
