// Recognised chat templates (see chat_template.h). The template texts below are the ones shipped
// with the models (Meta-Llama-3 tokenizer_config.json, SmolLM2's GGUF); matching is exact after
// trimming surrounding whitespace, so an edited template is reported instead of mis-rendered.
#include "tokenizer/chat_template.h"

#include "tokenizer/unicode.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

constexpr std::string_view kLlama3Template =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% "
    "endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}";

constexpr std::string_view kSmolLm2Template =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";

constexpr std::string_view kSmolLm2DefaultSystem =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

std::string_view trim_ascii(std::string_view s) {
  const auto is_space = [](char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; };
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
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
  const std::string_view t = trim_ascii(template_text);
  if (t.empty()) fail("the tokenizer has no chat template");
  if (t == kLlama3Template) return ChatTemplateKind::kLlama3;
  if (t == kSmolLm2Template) return ChatTemplateKind::kSmolLm2ChatMl;
  fail(
      "unsupported chat template (only the Llama-3 and SmolLM2 ChatML templates are "
      "recognised); it begins: " +
      std::string(t.substr(0, 80)));
}

std::string render_chat_template(ChatTemplateKind kind, const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt, std::string_view bos_token) {
  switch (kind) {
    case ChatTemplateKind::kLlama3:
      return render_llama3(messages, bos_token);
    case ChatTemplateKind::kSmolLm2ChatMl:
      return render_smollm2(messages, add_generation_prompt);
  }
  fail("unknown chat template kind");
}

}  // namespace nanoinfer
