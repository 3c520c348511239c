#include "server/openai.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

#include "sampling/counter_rng.h"
#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/str_cat.h"

namespace nanoinfer::server {

std::string json_words(const nlohmann::json::exception& e) {
  const std::string what = e.what();
  const size_t tag = what.starts_with("[json.exception.") ? what.find("] ") : std::string::npos;
  return tag == std::string::npos ? what : what.substr(tag + 2);
}

uint64_t choice_seed(uint64_t seed, int i) {
  return i == 0 ? seed : sampling::mix64(seed ^ sampling::mix64(static_cast<uint64_t>(i)));
}

namespace {

// Keys in the order written: the API's fields in its order, top_logprobs likeliest first.
using json = nlohmann::ordered_json;

// A refusal of one field: the error's param names it, as the API's do (its clients show it).
[[noreturn]] void refuse(const std::string& key, const std::string& message) {
  throw ApiError(message, "", key);
}

template <typename T>
void take(const json& body, const char* key, T& into) {
  if (!body.contains(key) || body[key].is_null()) return;
  if constexpr (std::is_floating_point_v<T>)  // (the JSON library reads true as 1)
    if (!body[key].is_number())
      refuse(key, std::string("'") + key + "' must be a number, got " +
                      body[key].dump(-1, ' ', false, json::error_handler_t::replace));
  try {
    into = body[key].get<T>();
  } catch (const json::exception& e) {
    refuse(key, std::string("'") + key + "' has the wrong type: " + json_words(e));
  }
}

// An integer field: a whole number in [lo, hi], refused (naming the field and the value sent)
// rather than truncated or wrapped. (A long double holds every 64-bit integer exactly.)
template <typename T>
void take_int(const json& body, const char* key, T& into, T lo, T hi) {
  if (!body.contains(key) || body[key].is_null()) return;
  const json& v = body[key];
  const long double x = v.is_number() ? v.get<long double>() : NAN;
  if (!(x == std::trunc(x) && x >= static_cast<long double>(lo) &&
        x <= static_cast<long double>(hi)))
    refuse(key, std::string("'") + key + "' must be an integer in [" + std::to_string(lo) + ", " +
                    std::to_string(hi) + "], got " +
                    v.dump(-1, ' ', false, json::error_handler_t::replace));
  into = static_cast<T>(x);
}

std::vector<int32_t> prompt_ids(const json& prompt, const Tokenizer* tok, int vocab_size) {
  std::vector<int32_t> ids;
  if (prompt.is_string()) {
    if (tok == nullptr) fail("this model has no tokenizer: send the prompt as token ids");
    ids = tok->encode(prompt.get<std::string>(), true);
  } else if (prompt.is_array() && (prompt.empty() || prompt[0].is_number_integer())) {
    for (const json& t : prompt) {
      if (!t.is_number_integer())
        refuse("prompt", "'prompt': a list of token ids holds integers only");
      const auto id = t.get<int64_t>();
      if (id < 0 || id >= vocab_size)
        refuse("prompt", "'prompt': token id " + std::to_string(id) +
                             " is outside the vocabulary (" + std::to_string(vocab_size) + " ids)");
      ids.push_back(static_cast<int32_t>(id));
    }
  } else {
    refuse("prompt",
           "'prompt' must be a text, a list of token ids, or a list of either (several prompts)");
  }
  if (ids.empty()) refuse("prompt", "'prompt' is empty: it has no tokens");
  return ids;
}

// The prompts of a completion request: one (a text, a list of ids) or a list of several.
std::vector<json> prompt_list(const json& prompt) {
  if (prompt.is_array() && !prompt.empty() && (prompt[0].is_string() || prompt[0].is_array())) {
    for (const json& p : prompt)
      if (p.type() != prompt[0].type())
        refuse("prompt", "'prompt': a list of prompts holds texts only or lists of token ids only");
    return prompt.get<std::vector<json>>();
  }
  return {prompt};
}

// A message's content: a text, or a list of parts, text ones only, joined by newlines.
std::string content_text(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) refuse("messages", "each message needs a 'role' and a text 'content'");
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
        !part.contains("text") || !part["text"].is_string())
      refuse("messages",
             "a message's content parts must be {\"type\": \"text\", \"text\": ...}: no other "
             "kind is served");
    text += (i > 0 ? "\n" : "") + part["text"].get<std::string>();
  }
  return text;
}

std::vector<int32_t> chat_ids(const json& messages, const Tokenizer* tok, bool add_prompt,
                              bool go_on, const std::optional<std::string>& date) {
  if (tok == nullptr) fail("this model has no tokenizer, so no chat template");
  if (!messages.is_array() || messages.empty())
    refuse("messages", "'messages' must be a non-empty list");
  std::vector<ChatMessage> chat;
  for (const json& m : messages) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content"))
      refuse("messages", "each message needs a 'role' and a text 'content'");
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";  // (the API's newer name for the system role)
    // (the template would drop them: the model would read another conversation)
    for (const char* key : {"tool_calls", "function_call"})
      if (m.contains(key) && !m[key].is_null() && !(m[key].is_array() && m[key].empty()))
        refuse("messages",
               std::string("a message's '") + key + "': tool and function calls are not served");
    chat.push_back({role, content_text(m["content"])});
  }
  // A chat template already holds the special tokens it needs.
  try {
    return tok->encode(tok->apply_chat_template(chat, add_prompt, go_on, date), false);
  } catch (const Error& e) {  // ("chat message 1: unknown role 'x'")
    refuse("messages", e.what());
  }
}

// Fields that would change what the model is asked to do and that this server does not serve
// (tool calls, JSON output, insertion, ranked choices) are refused, not dropped.
void refuse_unserved(const json& body, int n) {
  auto given = [&](const char* key) { return body.contains(key) && !body[key].is_null(); };
  for (const char* key : {"tools", "functions"})
    if (given(key) && !(body[key].is_array() && body[key].empty()))
      refuse(key, std::string("'") + key + "': tool and function calls are not served");
  for (const char* key : {"tool_choice", "function_call"})
    if (given(key) && body[key] != "none")
      refuse(key, std::string("'") + key + "': tool and function calls are not served");
  if (given("response_format")) {
    const json& f = body["response_format"];
    if (!f.is_object() || !f.contains("type") || f["type"] != "text")
      refuse("response_format",
             "'response_format': only {\"type\": \"text\"} is served (no JSON mode or schema)");
  }
  if (given("suffix") && !(body["suffix"].is_string() && body["suffix"].get<std::string>().empty()))
    refuse("suffix", "'suffix': insertion is not served");
  if (given("best_of") && body["best_of"] != n)
    refuse("best_of", "'best_of' other than 'n' is not served (choices are not ranked)");
  if (given("audio") || (given("modalities") && body["modalities"] != json::array({"text"})))
    refuse(given("audio") ? "audio" : "modalities",
           "'audio', 'modalities': only text output is served");
  if (given("web_search_options"))
    refuse("web_search_options", "'web_search_options': web search is not served");
}

// The API names two ways to end: "length", and "stop" for an end token or a stop string alike.
std::string api_finish(const std::string& reason) {
  return reason == "length" ? reason : "stop";
}

// The generated tokens a choice returns (none when only the prompt is scored).
size_t returned(const ApiRequest& r, const GenerationOutput& out) {
  return r.score_only ? 0 : out.token_ids.size();
}

// {prompt_tokens, completion_tokens, total_tokens, prompt_tokens_details {cached_tokens}}: each
// prompt once (the cached tokens those of its first choice), the tokens of every choice.
json usage(std::span<const ApiRequest> choices, std::span<const GenerationOutput> outs) {
  int64_t prompt = 0, cached = 0, completion = 0;
  for (size_t i = 0; i < outs.size(); ++i) {
    if (i % static_cast<size_t>(choices[i].n) == 0) {
      prompt += static_cast<int64_t>(choices[i].request.prompt_ids.size());
      cached += outs[i].reused_prompt_tokens;
    }
    completion += static_cast<int64_t>(returned(choices[i], outs[i]));
  }
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

// Characters (code points) of UTF-8 text: the completions' text_offset counts them, as the API
// does (the length of a Python string). A piece of a character counts where its first byte is.
bool starts_character(char c) {
  return (static_cast<unsigned char>(c) & 0xC0U) != 0x80U;
}
size_t characters(const std::string& text) {
  return static_cast<size_t>(std::count_if(text.begin(), text.end(), starts_character));
}

// A token's bytes, and its text as the API shows it: the bytes where they are whole UTF-8
// characters, else "bytes:\xe4\xbd" (pieces of one character would all read U+FFFD, and
// collide as top_logprobs keys); its id where the model has no tokenizer.
std::string token_bytes(const Tokenizer* tok, int32_t id) {
  return tok != nullptr ? tok->token_bytes(id) : std::to_string(id);
}
std::string token_text(const std::string& b) {
  if (is_valid_utf8(b)) return b;
  std::string text = "bytes:";
  for (const char c : b) {
    std::array<char, 5> hex{};
    std::snprintf(hex.data(), hex.size(), "\\x%02x", static_cast<unsigned char>(c));
    text += hex.data();
  }
  return text;
}
json byte_list(const std::string& b) {
  json out = json::array();
  for (const char c : b) out.push_back(static_cast<unsigned char>(c));
  return out;
}

// Logprobs of tokens (entries[i] scores ids[i]; null for a prompt's first token, which nothing
// predicts): chat's {content: [{token, logprob, bytes, top_logprobs}]}, or the completions'
// {tokens, token_logprobs, top_logprobs: [{token: logprob}] (the token itself among them, as the
// API always returns the sampled token's), text_offset}, offsets counted in characters from
// `offset` (advanced past the tokens' bytes) and kept within `most` characters.
json logprobs_of(bool chat, std::span<const int32_t> ids,
                 std::span<const TokenLogprobs* const> entries, const Tokenizer* tok,
                 size_t& offset, size_t most = SIZE_MAX) {
  if (chat) {
    json content = json::array();
    for (size_t i = 0; i < ids.size(); ++i) {
      json top = json::array();
      for (const auto& [t, lp] : entries[i]->top) {
        const std::string b = token_bytes(tok, t);
        top.push_back({{"token", token_text(b)}, {"logprob", lp}, {"bytes", byte_list(b)}});
      }
      const std::string b = token_bytes(tok, ids[i]);
      content.push_back({{"token", token_text(b)},
                         {"logprob", entries[i]->logprob},
                         {"bytes", byte_list(b)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  for (size_t i = 0; i < ids.size(); ++i) {
    const TokenLogprobs* lp = entries[i];
    const std::string bytes = token_bytes(tok, ids[i]), text = token_text(bytes);
    tokens.push_back(text);
    json alternatives = json::object();
    if (lp != nullptr) {
      for (const auto& [t, v] : lp->top)  // (best first: where texts coincide, the likeliest
        alternatives.emplace(token_text(token_bytes(tok, t)), v);  // keeps the key)
      alternatives.emplace(text, lp->logprob);
    }
    token_logprobs.push_back(lp != nullptr ? json(lp->logprob) : json(nullptr));
    top.push_back(lp != nullptr ? alternatives : json(nullptr));
    const size_t within = offset > 0 && !bytes.empty() && !starts_character(bytes[0]) ? 1 : 0;
    offsets.push_back(std::min(offset - within, most));
    offset += characters(bytes);
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

// A whole choice's logprobs: the prompt's first when echoed (completions), then every returned
// token's.
json logprobs(const ApiRequest& r, const GenerationOutput& out, const Tokenizer* tok) {
  std::vector<int32_t> ids;
  std::vector<const TokenLogprobs*> entries;
  if (r.echo) {
    for (size_t i = 0; i < r.request.prompt_ids.size(); ++i) {
      ids.push_back(r.request.prompt_ids[i]);
      entries.push_back(i > 0 ? &out.prompt_logprobs.at(i - 1) : nullptr);
    }
  }
  for (size_t i = 0; i < std::min(scored_tokens(out, tok), returned(r, out)); ++i) {
    ids.push_back(out.token_ids[i]);
    entries.push_back(&out.logprobs.at(i));
  }
  size_t offset = 0;
  return logprobs_of(r.chat, ids, entries, tok, offset,
                     characters(r.prompt_text) + (r.score_only ? 0 : characters(out.text)));
}

}  // namespace

size_t scored_tokens(const GenerationOutput& out, const Tokenizer* tok) {
  size_t n = out.token_ids.size();
  if (out.finish_reason == "eos") return n > 0 ? n - 1 : 0;
  if (out.finish_reason != "stop" || tok == nullptr) return n;
  // Token n - 1 goes while the tokens before it already spell the whole text (a stop string is
  // found as soon as it is whole: only the last few go). Spell, not outgrow: the first byte of a
  // character split over two tokens decodes alone as U+FFFD, longer than the byte it stands for.
  const std::span<const int32_t> ids(out.token_ids);
  while (n > 0 && tok->decode(ids.first(n - 1), true).starts_with(out.text)) --n;
  return n;
}

// Variables of our chat templates that chat_template_kwargs may not set (see parse_request).
constexpr std::array<std::string_view, 8> kUnservedTemplateVars = {"messages",
                                                                   "bos_token",
                                                                   "tools",
                                                                   "custom_tools",
                                                                   "builtin_tools",
                                                                   "tools_in_user_message",
                                                                   "add_generation_prompt",
                                                                   "continue_final_message"};

// The fields parse_request reads or refuses, either endpoint's (model is not checked), sorted.
constexpr std::array<std::string_view, 35> kRead = {"add_generation_prompt",
                                                    "audio",
                                                    "best_of",
                                                    "chat_template_kwargs",
                                                    "continue_final_message",
                                                    "echo",
                                                    "frequency_penalty",
                                                    "function_call",
                                                    "functions",
                                                    "ignore_eos",
                                                    "logit_bias",
                                                    "logprobs",
                                                    "max_completion_tokens",
                                                    "max_tokens",
                                                    "messages",
                                                    "min_p",
                                                    "modalities",
                                                    "model",
                                                    "n",
                                                    "presence_penalty",
                                                    "prompt",
                                                    "repetition_penalty",
                                                    "response_format",
                                                    "seed",
                                                    "stop",
                                                    "stream",
                                                    "stream_options",
                                                    "suffix",
                                                    "temperature",
                                                    "tool_choice",
                                                    "tools",
                                                    "top_k",
                                                    "top_logprobs",
                                                    "top_p",
                                                    "web_search_options"};
static_assert(std::ranges::is_sorted(kRead));

std::vector<ApiRequest> parse_request(const json& body, bool chat, const Engine& engine) {
  if (!body.is_object()) fail("the body must be a JSON object");
  const Tokenizer* tok = engine.tokenizer();
  const int vocab_size = engine.config().vocab_size;
  const int64_t request_limit = engine.request_limit();
  ApiRequest r;
  r.chat = chat;
  take(body, "stream", r.stream);
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    if (!body["stream_options"].is_object())
      refuse("stream_options", "'stream_options' must be an object");
    take(body["stream_options"], "include_usage", r.stream_usage);
  }
  take_int(body, "n", r.n, 1, 16);
  refuse_unserved(body, r.n);
  // Log-probabilities: completions take 'logprobs' as the number of alternatives, chat takes
  // 'logprobs' true and 'top_logprobs'.
  SamplingParams& p = r.request.params;
  if (chat) {
    bool wanted = false;
    take(body, "logprobs", wanted);
    int top = 0;
    take_int(body, "top_logprobs", top, 0, 20);
    if (body.contains("top_logprobs") && !body["top_logprobs"].is_null() && !wanted)
      refuse("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    if (wanted) p.logprobs = top;
  } else if (body.contains("logprobs") && !body["logprobs"].is_null() &&
             body["logprobs"] != false) {
    take_int(body, "logprobs", p.logprobs, 0, 20);
  }
  take(body, "echo", r.echo);
  if (r.echo && chat) refuse("echo", "'echo' is served for completions only");
  if (r.echo && r.stream) refuse("echo", "'echo' is not served in streams");
  if (r.echo && p.logprobs >= 0) p.prompt_logprobs = p.logprobs;
  std::vector<json> prompts;
  // (vLLM's fields: a final assistant message begun for the model, which goes on with it; the
  // template's variables, of which ours read date_string)
  bool add_prompt = true;
  bool go_on = false;
  std::optional<std::string> date;
  for (const char* key :
       {"add_generation_prompt", "continue_final_message", "chat_template_kwargs"})
    if (!chat && body.contains(key) && !body[key].is_null())
      refuse(key, std::string("'") + key + "' is served for chat completions only");
  take(body, "add_generation_prompt", add_prompt);
  take(body, "continue_final_message", go_on);
  if (add_prompt && go_on)
    refuse("continue_final_message",
           "'continue_final_message' needs 'add_generation_prompt': false (the one goes on with "
           "the final message, the other begins a new one)");
  if (body.contains("chat_template_kwargs") && !body["chat_template_kwargs"].is_null()) {
    const json& vars = body["chat_template_kwargs"];
    if (!vars.is_object())
      refuse("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    // The variables our templates read (tokenizer.md): date_string is served; the others draw
    // tool definitions or overlap the request's own fields and the tokenizer's, and are refused.
    // Any other is one none of them reads, which the template would pass over (Qwen's
    // enable_thinking, say).
    for (const auto& v : vars.items()) {
      if (v.key() == "date_string") {
        if (!v.value().is_string())
          refuse("chat_template_kwargs", "'chat_template_kwargs': 'date_string' must be a string");
        date = v.value().get<std::string>();
      } else if (std::ranges::find(kUnservedTemplateVars, v.key()) != kUnservedTemplateVars.end()) {
        refuse("chat_template_kwargs",
               "'chat_template_kwargs': '" + v.key() +
                   "' is not served (of the template's variables only 'date_string' is)");
      }
    }
  }
  if (chat) {
    if (!body.contains("messages")) refuse("messages", "'messages' is required");
    r.request.prompt_ids = chat_ids(body["messages"], tok, add_prompt, go_on, date);
  } else {
    if (!body.contains("prompt")) refuse("prompt", "'prompt' is required");
    prompts = prompt_list(body["prompt"]);
  }
  p.temperature = 1.0F;  // the API's default
  p.max_new_tokens = chat ? 512 : 16;
  std::string max_key;  // the field that set it, if one did
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (body.contains(key) && !body[key].is_null()) max_key = key;
    take_int(body, key, p.max_new_tokens, r.echo ? 0 : 1, INT_MAX);
  }
  const bool max_given = !max_key.empty();
  if (p.max_new_tokens == 0 && r.echo) {  // the prompt alone, scored
    r.score_only = true;
    p.max_new_tokens = 1;
  }
  take(body, "temperature", p.temperature);
  take(body, "top_p", p.top_p);
  take_int(body, "top_k", p.top_k, 0, INT_MAX);
  take(body, "min_p", p.min_p);
  take(body, "presence_penalty", p.presence_penalty);
  take(body, "frequency_penalty", p.frequency_penalty);
  take(body, "repetition_penalty", p.repetition_penalty);
  // Without a seed, the engine draws one for each choice (fresh samples, as the API's); with
  // one, the same tokens each time. The API's seed is a signed 64-bit integer: a negative one is
  // a seed like the others.
  if (body.contains("seed") && !body["seed"].is_null()) {
    const json& v = body["seed"];
    const long double x = v.is_number_float() ? v.get<long double>() : NAN;
    if (v.is_number_unsigned())
      p.seed = v.get<uint64_t>();
    else if (v.is_number_integer())
      p.seed = static_cast<uint64_t>(v.get<int64_t>());
    else if (x == std::trunc(x) && x >= -0x1p63L && x < 0x1p64L)  // (2.0, as the other integers)
      p.seed = x < 0 ? static_cast<uint64_t>(static_cast<int64_t>(x)) : static_cast<uint64_t>(x);
    else  // (a whole number too large for 64 bits reads as a float: refused too)
      refuse("seed", "'seed' must be an integer in [-2^63, 2^64 - 1], got " +
                         v.dump(-1, ' ', false, json::error_handler_t::replace));
  }
  take(body, "ignore_eos", p.ignore_eos);
  if (body.contains("logit_bias") && !body["logit_bias"].is_null()) {
    if (!body["logit_bias"].is_object())
      refuse("logit_bias", "'logit_bias' must be an object of token ids (as text) and biases");
    for (const auto& [key, bias] : body["logit_bias"].items()) {
      size_t used = 0;
      int id = -1;
      try {
        id = std::stoi(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != key.size() || std::isspace(static_cast<unsigned char>(key[0])) != 0)
        refuse("logit_bias", "'logit_bias': the key \"" + key + "\" is not a token id");
      if (!bias.is_number())
        refuse("logit_bias", "'logit_bias': the bias of token " + key + " must be a number, got " +
                                 bias.dump(-1, ' ', false, json::error_handler_t::replace));
      if (id < 0 || id >= vocab_size)
        refuse("logit_bias", "'logit_bias': token id " + key + " is outside the vocabulary (" +
                                 std::to_string(vocab_size) + " ids)");
      p.logit_bias.emplace_back(id, bias.get<float>());
    }
  }
  if (body.contains("stop") && !body["stop"].is_null()) {
    if (body["stop"].is_string())
      p.stop = {body["stop"].get<std::string>()};
    else
      take(body, "stop", p.stop);
  }
  // Greedy (temperature 0, or below 1e-5) ignores the filters, as the API does: its clients
  // send top_p with it.
  if (!p.samples()) {
    const SamplingParams off;
    p.top_k = off.top_k;
    p.top_p = off.top_p;
    p.min_p = off.min_p;
  }
  // top_p 0, which the API takes, keeps the likeliest token alone (as HF reads it): top_k 1.
  if (p.top_p == 0.0F) {
    p.top_p = SamplingParams().top_p;
    p.top_k = 1;
  }
  try {
    p.validate();
  } catch (const Error& e) {  // (the library's message starts with the field, in the API's name)
    const std::string what = e.what();
    for (const char* key : {"temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                            "presence_penalty", "frequency_penalty", "logit_bias", "stop"})
      if (what.starts_with(key)) refuse(key, what);
    throw;
  }
  // Fields the server does not read are ignored (as vLLM does), and named in its log.
  for (const auto& field : body.items())
    if (!std::binary_search(kRead.begin(), kRead.end(), field.key()))
      r.ignored.push_back(field.key());
  // One request a choice: each prompt n times, with the seeds of choice_seed when one is given.
  std::vector<ApiRequest> choices;
  for (size_t k = 0; k < std::max<size_t>(prompts.size(), 1); ++k) {
    ApiRequest c = r;
    if (!chat) {
      c.request.prompt_ids = prompt_ids(prompts[k], tok, vocab_size);
      if (c.echo)
        c.prompt_text = prompts[k].is_string() ? prompts[k].get<std::string>()
                        : tok != nullptr       ? tok->decode(c.request.prompt_ids)
                                               : std::string();
    }
    const auto n = static_cast<int64_t>(c.request.prompt_ids.size());
    const int64_t room = request_limit - n;
    if (!max_given) engine.fit_to_room(c.request);
    // The engine would refuse it too, in the library's terms (max_new_tokens, cache_tokens).
    if (request_limit > 0 && n + c.request.params.max_new_tokens > request_limit) {
      const std::string limit =
          request_limit < engine.max_context()
              ? str_cat("this server's KV cache of ", request_limit, " tokens")
              : str_cat("the context of ", request_limit, " positions");
      // (OpenAI's code and parameter for it, which clients and wrappers recognise; the prompt's
      // when it leaves no room at all)
      if (max_given && !r.score_only && room >= 1)
        throw ApiError(str_cat("prompt (", count_of(n, "token"), ") + ", max_key, " (",
                               c.request.params.max_new_tokens, ") exceeds ", limit),
                       "context_length_exceeded", max_key);
      throw ApiError(str_cat("prompt (", count_of(n, "token"), ") leaves no room for ",
                             r.score_only ? "scoring" : "a new token", " in ", limit),
                     "context_length_exceeded", chat ? "messages" : "prompt");
    }
    for (int i = 0; i < r.n; ++i) {
      choices.push_back(c);
      if (auto& seed = choices.back().request.params.seed) *seed = choice_seed(*seed, i);
    }
  }
  return choices;
}

json response(const std::vector<ApiRequest>& reqs, const ResponseId& id,
              const std::vector<GenerationOutput>& outs, const Tokenizer* tok) {
  NI_ASSERT(!reqs.empty() && reqs.size() == outs.size());
  json choices = json::array();
  for (size_t i = 0; i < outs.size(); ++i) {
    const GenerationOutput& out = outs[i];
    const ApiRequest& r = reqs[i];
    json choice = {{"index", i},
                   {"finish_reason", r.score_only ? "length" : api_finish(out.finish_reason)},
                   {"token_ids", r.score_only ? std::vector<int32_t>{} : out.token_ids}};
    if (r.chat)
      choice["message"] = {{"role", "assistant"}, {"content", out.text}};
    else
      choice["text"] = r.prompt_text + (r.score_only ? std::string() : out.text);
    choice["logprobs"] = r.request.params.logprobs < 0 ? json(nullptr) : logprobs(r, out, tok);
    choices.push_back(choice);
  }
  return {{"id", id.id},           {"object", reqs[0].chat ? "chat.completion" : "text_completion"},
          {"created", id.created}, {"model", id.model},
          {"choices", choices},    {"usage", usage(reqs, outs)}};
}

json chunk(const ApiRequest& r, const ResponseId& id, size_t index, const std::string& text,
           std::span<const int32_t> ids, std::span<const TokenLogprobs> entries,
           const std::string& finish_reason, bool first, const Tokenizer* tok,
           size_t& text_offset) {
  json choice = {{"index", index}, {"token_ids", std::vector<int32_t>(ids.begin(), ids.end())}};
  choice["finish_reason"] = finish_reason.empty() ? json(nullptr) : json(api_finish(finish_reason));
  json lp = nullptr;  // (also for a last chunk whose tokens have none: an EOS, a stop string's)
  NI_ASSERT(entries.size() <= ids.size());
  if (r.request.params.logprobs >= 0 && !entries.empty()) {
    std::vector<const TokenLogprobs*> e;
    for (const TokenLogprobs& t : entries) e.push_back(&t);
    lp = logprobs_of(r.chat, ids.first(e.size()), e, tok, text_offset);
  }
  if (r.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty()) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = lp;
  json c = {{"id", id.id},
            {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
            {"created", id.created},
            {"model", id.model},
            {"choices", json::array({choice})}};
  if (r.stream_usage) c["usage"] = nullptr;  // (the API's: only the last chunk has a usage)
  return c;
}

json usage_chunk(std::span<const ApiRequest> reqs, const ResponseId& id,
                 std::span<const GenerationOutput> outs) {
  NI_ASSERT(!reqs.empty() && reqs.size() == outs.size());
  return {{"id", id.id},
          {"object", reqs[0].chat ? "chat.completion.chunk" : "text_completion"},
          {"created", id.created},
          {"model", id.model},
          {"choices", json::array()},
          {"usage", usage(reqs, outs)}};
}

std::string summary(std::span<const ApiRequest> reqs, std::span<const GenerationOutput> outs) {
  const json u = usage(reqs, outs);
  std::string reasons;
  for (const GenerationOutput& o : outs) reasons += (reasons.empty() ? "" : ", ") + o.finish_reason;

  return "prompt " + count_of(u["prompt_tokens"].get<int64_t>(), "token") + " (" +
         u["prompt_tokens_details"]["cached_tokens"].dump() + " cached), completion " +
         count_of(u["completion_tokens"].get<int64_t>(), "token") + " (" + reasons + ")";
}

json error_body(const std::string& message, const std::string& type, const std::string& code,
                const std::string& param) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"code", code.empty() ? json(nullptr) : json(code)},
            {"param", param.empty() ? json(nullptr) : json(param)}}}};
}

}  // namespace nanoinfer::server
