// Chat templates: the rendered text and its ids equal HF apply_chat_template for 1, 2 and 5-turn
// conversations, with and without a system message (SmolLM2 then adds its default one), with and
// without add_generation_prompt; a tokenizer without a known template throws.
#include <gtest/gtest.h>

#include "tokenizer_test_util.h"

namespace nanoinfer::test {
namespace {

struct ChatCase {
  std::string model;   // tokenizer_for name
  std::string golden;  // chat_<golden>.json
  size_t index;
};

std::vector<ChatCase> all_cases() {
  std::vector<ChatCase> cases;
  for (const auto& [model, golden] : std::vector<std::pair<std::string, std::string>>{
           {"llama3", "llama3"}, {"smollm2", "smollm2"}, {"smollm2_gguf", "smollm2"}}) {
    const size_t n = read_json("tokenizer/chat_" + golden + ".json")["cases"].size();
    for (size_t i = 0; i < n; ++i) cases.push_back({model, golden, i});
  }
  return cases;
}

class ChatTemplateGolden : public ::testing::TestWithParam<ChatCase> {};

TEST_P(ChatTemplateGolden, MatchesHfApplyChatTemplate) {
  const Tokenizer* tok = tokenizer_for(GetParam().model);
  if (tok == nullptr) GTEST_SKIP() << "default model not fetched";
  const nlohmann::json g =
      read_json("tokenizer/chat_" + GetParam().golden + ".json")["cases"][GetParam().index];
  std::vector<ChatMessage> messages;
  for (const auto& m : g["messages"]) messages.push_back({m["role"], m["content"]});
  const std::string text = tok->apply_chat_template(messages, g["add_generation_prompt"]);
  EXPECT_EQ(text, g["text"].get<std::string>()) << g["name"];
  EXPECT_EQ(tok->encode(text, false), g["ids"].get<std::vector<int32_t>>()) << g["name"];
}

INSTANTIATE_TEST_SUITE_P(Conversations, ChatTemplateGolden, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<ChatCase>& info) {
                           return info.param.model + "_" + std::to_string(info.param.index);
                         });

TEST(ChatTemplate, TokenizerWithoutTemplateThrows) {
  const Tokenizer* tok = tokenizer_for("llama2");
  EXPECT_THROW(tok->apply_chat_template({{"user", "hi"}}, true), Error);
}

}  // namespace
}  // namespace nanoinfer::test
