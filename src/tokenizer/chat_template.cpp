// Recognised chat templates (see chat_template.h). The template texts below are the ones shipped
// with the models (Meta-Llama-3 tokenizer_config.json, SmolLM2's GGUF); Llama-3.1-Instruct's and
// Llama-3.2-Instruct's, 4.6 and 3.8 KB, by length and FNV-1a hash (the texts are
// tests/data/tokenizer/llama3{1,2}_chat_template.jinja);
// matching is exact after the two edits Jinja makes to any template as HF compiles it (one
// trailing newline dropped; with lstrip_blocks, spaces and tabs before a leading {% tag), so an
// edited template, extra whitespace around it included, is reported instead of mis-rendered.
#include "tokenizer/chat_template.h"

#include <array>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "tokenizer/unicode.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

constexpr std::string_view kLlama3Template =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% "
    "endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}";

struct HashedTemplate {
  size_t size;
  uint64_t fnv1a;
  ChatTemplateKind kind;
};
constexpr std::array<HashedTemplate, 2> kHashedTemplates = {{
    {4613, 0xcc0368e1ffb6b958ULL, ChatTemplateKind::kLlama31},  // (Llama-3.3-Instruct's too)
    {3826, 0x368f4c34b8554414ULL, ChatTemplateKind::kLlama32},
}};

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ULL;
  return h;
}

constexpr std::string_view kSmolLm2Template =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";

constexpr std::string_view kSmolLm2DefaultSystem =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

// What Jinja renders of a template as HF compiles it: one trailing newline is dropped
// (keep_trailing_newline off), and lstrip_blocks drops the spaces and tabs that begin a line
// before a block tag. Any other whitespace is text that the template writes out.
std::string_view as_jinja_reads(std::string_view s) {
  if (s.ends_with("\r\n")) {
    s.remove_suffix(2);
  } else if (s.ends_with('\n') || s.ends_with('\r')) {
    s.remove_suffix(1);
  }
  const size_t text = s.find_first_not_of(" \t");
  if (text != std::string_view::npos && s.substr(text).starts_with("{%")) s.remove_prefix(text);
  return s;
}

// The Llama-3 template ignores add_generation_prompt: it always ends with the assistant header.
std::string render_llama3(const std::vector<ChatMessage>& messages, std::string_view bos_token) {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i == 0) out += bos_token;
    out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n";
    out += python_strip(messages[i].content);
    out += "<|eot_id|>";
  }
  out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// strftime_now("%d %b %Y") as HF's template environment defines it: today's local date, the
// month's English abbreviation (the C locale's, whatever the process's locale).
std::string today() {
  static constexpr std::array<const char*, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::time_t now = std::time(nullptr);
  std::tm t{};
  localtime_r(&now, &t);
  std::array<char, 32> buf{};
  std::snprintf(buf.data(), buf.size(), "%02d %s %d", t.tm_mday, kMonths.at(t.tm_mon),
                t.tm_year + 1900);
  return buf.data();
}

// Llama-3.1- and 3.2-Instruct, as their templates render without tools (the variables
// custom_tools, tools and builtin_tools are never defined here): a system turn first, always, with
// the knowledge cutoff, the date and the system message if the conversation starts with one
// (trimmed); then each turn trimmed, a tool or ipython result under the ipython header as a JSON
// string (Jinja's `is iterable` holds for strings, so the template takes its tojson branch).
std::string render_llama31(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                           std::string_view bos_token, std::string_view date) {
  std::string out(bos_token);
  const bool has_system = !messages.empty() && messages[0].role == "system";
  out += "<|start_header_id|>system<|end_header_id|>\n\n";
  out += "Cutting Knowledge Date: December 2023\nToday Date: ";
  out += date;
  out += "\n\n";
  if (has_system) out += python_strip(messages[0].content);
  out += "<|eot_id|>";
  for (size_t i = has_system ? 1 : 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "tool" || m.role == "ipython") {
      out += "<|start_header_id|>ipython<|end_header_id|>\n\n";
      out +=
          nlohmann::json(m.content).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } else {
      out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + python_strip(m.content);
    }
    out += "<|eot_id|>";
  }
  if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

std::string render_smollm2(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string out;
  if (!messages.empty() && messages[0].role != "system") {
    out += "<|im_start|>system\n";
    out += kSmolLm2DefaultSystem;
    out += "<|im_end|>\n";
  }
  for (const ChatMessage& m : messages) {
    out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

}  // namespace

ChatTemplateKind recognise_chat_template(std::string_view template_text) {
  const std::string_view t = as_jinja_reads(template_text);
  if (t.find_first_not_of(" \t\r\n") == std::string_view::npos)
    fail("the tokenizer has no chat template");
  if (t == kLlama3Template) return ChatTemplateKind::kLlama3;
  for (const HashedTemplate& h : kHashedTemplates)
    if (t.size() == h.size && fnv1a(t) == h.fnv1a) return h.kind;
  if (t == kSmolLm2Template) return ChatTemplateKind::kSmolLm2ChatMl;
  fail(
      "unsupported chat template (only the Llama-3, Llama-3.1, Llama-3.2 and SmolLM2 ChatML "
      "templates are recognised); it begins: " +
      std::string(t.substr(0, 80)));
}

std::string render_chat_template(ChatTemplateKind kind, const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt, std::string_view bos_token,
                                 const std::optional<std::string>& date_string) {
  // (HF refuses an empty conversation too; the Llama-3.1 template would index messages[0])
  if (messages.empty()) fail("a chat needs at least one message");
  // (the templates write any role into the prompt as it is: a misspelt one would go unnoticed)
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    if (r != "system" && r != "user" && r != "assistant" && r != "tool" && r != "ipython")
      fail("chat message " + std::to_string(i) + ": unknown role '" + r +
           "' (expected system, user, assistant, tool or ipython)");
  }
  switch (kind) {
    case ChatTemplateKind::kLlama3:
      return render_llama3(messages, bos_token);
    case ChatTemplateKind::kLlama31:
      return render_llama31(messages, add_generation_prompt, bos_token,
                            date_string.value_or("26 Jul 2024"));
    case ChatTemplateKind::kLlama32:
      return render_llama31(messages, add_generation_prompt, bos_token,
                            date_string ? *date_string : today());
    case ChatTemplateKind::kSmolLm2ChatMl:
      return render_smollm2(messages, add_generation_prompt);
  }
  fail("unknown chat template kind");
}

// The final content is rendered with a mark after it, and the text is cut where the mark begins.
// The mark ends in a space: where the template trims contents that space is gone, and so is the
// content's own trailing whitespace, which the cut text then loses too. (The mark is the one HF
// uses, so that the two agree even where a template escapes or drops part of it.)
std::string render_chat_continuing(ChatTemplateKind kind, const std::vector<ChatMessage>& messages,
                                   std::string_view bos_token,
                                   const std::optional<std::string>& date_string) {
  if (messages.empty()) fail("a chat needs at least one message");
  constexpr std::string_view kMark = "CONTINUE_FINAL_MESSAGE_TAG ";
  std::vector<ChatMessage> marked = messages;
  marked.back().content += kMark;
  std::string out = render_chat_template(kind, marked, false, bos_token, date_string);
  const size_t at = out.rfind(kMark.substr(0, kMark.size() - 1));
  if (at == std::string::npos ||
      out.find(python_strip(messages.back().content)) == std::string::npos)
    fail(
        "continue_final_message: the chat template does not write the final message's content as "
        "it is, so it cannot be continued");
  const bool trimmed = out.compare(at, kMark.size(), kMark) != 0;
  out.resize(at);
  return trimmed ? python_rstrip(out) : out;
}

}  // namespace nanoinfer
