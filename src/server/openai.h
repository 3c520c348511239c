// The OpenAI-compatible HTTP API's bodies: a completion or chat request parsed into the engine's
// request, and the responses (whole or as server-sent-event chunks) built from its output.
// https://platform.openai.com/docs/api-reference (completions, chat): the fields nanoinfer
// serves are listed in docs/pseudocode/server.md; others are ignored (and named in the server's
// log), and unsupported values (echo in a stream or in chat) are refused with a message that
// names the field (the error's param).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "nanoinfer/engine.h"
#include "nanoinfer/error.h"
#include "nanoinfer/tokenizer.h"

namespace nanoinfer::server {

// A refusal naming the field at fault (param) and, where the API has one, a code
// (context_length_exceeded).
class ApiError : public Error {
 public:
  ApiError(const std::string& what, std::string code, std::string param)
      : Error(what), code(std::move(code)), param(std::move(param)) {}
  std::string code, param;
};

struct ApiRequest {
  bool chat = false;
  bool stream = false;
  int n = 1;                  // choices a prompt: n requests, the seed + i each
  bool stream_usage = false;  // stream_options.include_usage: a last chunk with the usage
  // Completions' echo: the text starts with the prompt's (prompt_text), and the logprobs, when
  // asked for, start with the prompt tokens' (the first one's null). With max_tokens 0 the
  // response holds the prompt alone (score_only; the engine's one generated token is dropped).
  bool echo = false;
  bool score_only = false;
  std::string prompt_text;
  std::vector<std::string> ignored;  // the body's fields the server does not read (for its log)
  GenerationRequest request;
};

// The seed of a request's choice i (n > 1): the seed given for the first, then seeds mixed from it
// and i, so that a request with the next seed shares no choice with this one (seed + i did: n - 1
// of its samples again).
uint64_t choice_seed(uint64_t seed, int i);

// A JSON library error in plain words: its message without the "[json.exception.type_error.302] "
// tag.
std::string json_words(const nlohmann::json::exception& e);

// Throws Error with a message for the client (HTTP 400) when the body cannot be served. A
// prompt is a text (tokenized with the model's special tokens; chat messages through its
// template) or, for completions, a list of token ids; completions may send a list of prompts.
// Integer fields must be whole numbers in their range. Returns one request a choice: each prompt
// n times in a row (seeds choice_seed(seed, i); without a seed, the engine draws each its own).
// Without max_tokens a choice takes the API's default (16; chat 512), or the room its prompt
// leaves in the engine's request_limit() (the context or the cache, whichever is less; no bound
// over a sink cache) where that is less; a prompt + max_tokens beyond that limit is refused here,
// in the API's terms.
std::vector<ApiRequest> parse_request(const nlohmann::ordered_json& body, bool chat,
                                      const Engine& engine);

// Response identity: "cmpl-<n>" / "chatcmpl-<n>" (n counts from a random start, so that ids do
// not repeat across restarts), the model's name, the creation time.
struct ResponseId {
  std::string id;
  std::string model;
  int64_t created = 0;
};

// The whole response of a finished request: one choice per output, in order, each of the
// request parse_request gave it. finish_reason is the API's: "length", or "stop" for an end
// token or a stop string; token_ids (the generated ids, an ending EOS included) is a nanoinfer
// extension. With logprobs asked for, each choice's in the API's form for its endpoint (tokens
// as text through tok). The usage counts each prompt once.
nlohmann::ordered_json response(const std::vector<ApiRequest>& reqs, const ResponseId& id,
                                const std::vector<GenerationOutput>& outs, const Tokenizer* tok);
// Of a finished request's tokens, how many lead with logprobs: those whose text it returns. Not
// an EOS that ended it, nor the tokens after the start of a stop string that cut its text (the
// API's entries spell the returned text; token_ids keeps them all).
size_t scored_tokens(const GenerationOutput& out, const Tokenizer* tok);
// One streamed chunk of choice `index` (as parse_request ordered them): text and the tokens it
// was made of (their ids, a nanoinfer extension, and with logprobs asked for the entries of the
// first entries.size() of them, entries[i] scoring ids[i], in the endpoint's form with text
// offsets from text_offset, which advances) or, with finish_reason set, the choice's last chunk
// (the tokens no earlier chunk carried, of which an ending EOS or a stop string's have no
// entries). A chat choice's first chunk carries the role.
nlohmann::ordered_json chunk(const ApiRequest& r, const ResponseId& id, size_t index,
                             const std::string& text, std::span<const int32_t> ids,
                             std::span<const TokenLogprobs> entries,
                             const std::string& finish_reason, bool first, const Tokenizer* tok,
                             size_t& text_offset);
// The chunk a stream with stream_options.include_usage ends with: no choices, the usage of all
// its choices (as response()'s).
nlohmann::ordered_json usage_chunk(std::span<const ApiRequest> reqs, const ResponseId& id,
                                   std::span<const GenerationOutput> outs);
// The server log's account of a finished request: "prompt P tokens (C cached), completion N
// tokens (R, ...)", R each choice's finish reason as the engine gave it (eos, length, stop).
std::string summary(std::span<const ApiRequest> reqs, std::span<const GenerationOutput> outs);
// {"error": {"message", "type", "code", "param"}} (code and param null unless given).
nlohmann::ordered_json error_body(const std::string& message, const std::string& type,
                                  const std::string& code = "", const std::string& param = "");

}  // namespace nanoinfer::server
