// Chat templates by recognition: a model's Jinja template text is compared with the templates we
// know, and a known one is rendered by C++ code that produces exactly what HF apply_chat_template
// produces. An unknown template is an Error, never a guess.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nanoinfer/tokenizer.h"

namespace nanoinfer {

enum class ChatTemplateKind {
  kLlama3,         // <|start_header_id|>role<|end_header_id|>\n\n{trimmed content}<|eot_id|>
  kLlama31,        // Llama-3.1-Instruct: kLlama3's turns after a system turn that is always there
  kLlama32,        // Llama-3.2-Instruct: kLlama31's, dated today unless date_string is given
  kSmolLm2ChatMl,  // <|im_start|>role\n{content}<|im_end|>\n, default SmolLM system prompt
};

// Throws Error when the template is empty or not one we know (whitespace Jinja would write out
// included).
ChatTemplateKind recognise_chat_template(std::string_view template_text);

// Throws Error for no messages, or a message whose role is not system, user, assistant, tool or
// ipython. date_string: the template variable of that name, the date the Llama-3.1 and 3.2
// templates write into their system turn (unset: "26 Jul 2024" and today's date, as in HF); the
// other templates do not read it.
std::string render_chat_template(ChatTemplateKind kind, const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt, std::string_view bos_token,
                                 const std::optional<std::string>& date_string = std::nullopt);

// HF's continue_final_message: the conversation up to the end of the final message's content,
// with nothing after it (no end of turn), so that the model goes on with that message. Throws
// Error as render_chat_template does, and where the template does not write that content as it
// is (a Llama-3.1 tool result becomes a JSON string).
std::string render_chat_continuing(ChatTemplateKind kind, const std::vector<ChatMessage>& messages,
                                   std::string_view bos_token,
                                   const std::optional<std::string>& date_string = std::nullopt);

}  // namespace nanoinfer
