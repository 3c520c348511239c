// Chat templates: the rendered text and its ids equal HF apply_chat_template for 1, 2 and 5-turn
// conversations, with and without a system message (SmolLM2 then adds its default one), with and
// without add_generation_prompt; a tokenizer without a known template throws.
#include <gtest/gtest.h>

#include <array>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "tokenizer/chat_template.h"
#include "tokenizer_test_util.h"

namespace nanoinfer::test {
namespace {

struct ChatSource {
  std::string model;   // tokenizer_for name
  std::string golden;  // chat_<golden>.json
};

class ChatTemplateGolden : public ::testing::TestWithParam<ChatSource> {};

TEST_P(ChatTemplateGolden, MatchesHfApplyChatTemplate) {
  const Tokenizer* tok = tokenizer_for(GetParam().model);
  if (tok == nullptr) GTEST_SKIP() << "default model not fetched";
  const nlohmann::json cases = read_json("tokenizer/chat_" + GetParam().golden + ".json")["cases"];
  ASSERT_EQ(cases.size(), 12U);  // {1, 2, 5} turns x {system, none} x add_generation_prompt
  for (const auto& g : cases) {
    SCOPED_TRACE(g["name"].get<std::string>() +
                 (g["add_generation_prompt"] ? " +generation prompt" : ""));
    std::vector<ChatMessage> messages;
    for (const auto& m : g["messages"]) messages.push_back({m["role"], m["content"]});
    const std::string text = tok->apply_chat_template(messages, g["add_generation_prompt"]);
    EXPECT_EQ(text, g["text"].get<std::string>());
    EXPECT_EQ(tok->encode(text, false), g["ids"].get<std::vector<int32_t>>());
  }
}

INSTANTIATE_TEST_SUITE_P(Conversations, ChatTemplateGolden,
                         ::testing::Values(ChatSource{"llama3", "llama3"},
                                           ChatSource{"smollm2", "smollm2"},
                                           ChatSource{"smollm2_gguf", "smollm2"}),
                         [](const ::testing::TestParamInfo<ChatSource>& info) {
                           return info.param.model;
                         });

std::string file_text(const std::string& name) {
  std::ifstream in(data_path(name), std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Llama-3.1-Instruct's template (tests/data/tokenizer/llama31_chat_template.jinja) is recognised
// and renders as HF apply_chat_template does (tools/golden/chat_llama31_golden.py: the
// conversations above and one with a tool result); with one character changed it is refused.
TEST(ChatTemplate, Llama31MatchesHfApplyChatTemplate) {
  const std::string text = file_text("tokenizer/llama31_chat_template.jinja");
  ASSERT_GT(text.size(), 4000U);
  const ChatTemplateKind kind = recognise_chat_template(text);
  ASSERT_EQ(kind, ChatTemplateKind::kLlama31);
  const nlohmann::json cases = read_json("tokenizer/chat_llama31.json")["cases"];
  ASSERT_EQ(cases.size(), 14U);
  for (const auto& g : cases) {
    SCOPED_TRACE(g["name"].get<std::string>() +
                 (g["add_generation_prompt"] ? " +generation prompt" : ""));
    std::vector<ChatMessage> messages;
    for (const auto& m : g["messages"]) messages.push_back({m["role"], m["content"]});
    EXPECT_EQ(render_chat_template(kind, messages, g["add_generation_prompt"], "<|begin_of_text|>"),
              g["text"].get<std::string>());
  }
  std::string edited = text;
  edited[edited.find("December")] = 'd';
  EXPECT_THROW(recognise_chat_template(edited), Error);
}

// Llama-3.2-Instruct's template (tests/data/tokenizer/llama32_chat_template.jinja) is recognised,
// and both it and Llama-3.1's render as HF apply_chat_template does given a date_string
// (tools/golden/chat_llama32_golden.py), continue_final_message included. Without one, 3.2's
// writes today's date as strftime("%d %b %Y") in the C locale writes it, 3.1's its own.
TEST(ChatTemplate, Llama32AndDateStringMatchHfApplyChatTemplate) {
  const std::string text = file_text("tokenizer/llama32_chat_template.jinja");
  ASSERT_GT(text.size(), 3000U);
  ASSERT_EQ(recognise_chat_template(text), ChatTemplateKind::kLlama32);
  const nlohmann::json cases = read_json("tokenizer/chat_llama32.json")["cases"];
  ASSERT_EQ(cases.size(), 34U);
  for (const auto& g : cases) {
    const ChatTemplateKind kind =
        g["template"] == "llama32" ? ChatTemplateKind::kLlama32 : ChatTemplateKind::kLlama31;
    SCOPED_TRACE(g["template"].get<std::string>() + " " + g["name"].get<std::string>() +
                 (g["add_generation_prompt"] ? " +generation prompt" : "") +
                 (g["continue_final_message"] ? " continuing" : ""));
    std::vector<ChatMessage> messages;
    for (const auto& m : g["messages"]) messages.push_back({m["role"], m["content"]});
    const std::string date = g["date_string"];
    EXPECT_EQ(g["continue_final_message"]
                  ? render_chat_continuing(kind, messages, "<|begin_of_text|>", date)
                  : render_chat_template(kind, messages, g["add_generation_prompt"],
                                         "<|begin_of_text|>", date),
              g["text"].get<std::string>());
  }
  const std::vector<ChatMessage> hi = {{"user", "hi"}};
  const auto dated = [&](ChatTemplateKind kind, const std::string& date) {
    return render_chat_template(kind, hi, true, "", date);
  };
  const auto today = [] {
    const std::time_t now = std::time(nullptr);
    std::tm t{};
    localtime_r(&now, &t);
    std::array<char, 32> buf{};
    EXPECT_GT(std::strftime(buf.data(), buf.size(), "%d %b %Y", &t), 0U);
    return std::string(buf.data());
  };
  const std::string before = today();
  const std::string undated = render_chat_template(ChatTemplateKind::kLlama32, hi, true, "");
  const std::string after = today();  // (the day may turn between the two)
  EXPECT_TRUE(undated == dated(ChatTemplateKind::kLlama32, before) ||
              undated == dated(ChatTemplateKind::kLlama32, after))
      << undated;
  EXPECT_EQ(render_chat_template(ChatTemplateKind::kLlama31, hi, true, ""),
            dated(ChatTemplateKind::kLlama31, "26 Jul 2024"));
  std::string edited = text;
  edited[edited.find("strftime_now")] = 'S';
  EXPECT_THROW(recognise_chat_template(edited), Error);
}

std::string template_of(const std::string& model) {
  return read_json("tokenizer/" + model + "/tokenizer_config.json")["chat_template"];
}

// Only the whitespace Jinja drops as HF compiles a template (one trailing newline; spaces and
// tabs before a leading block tag) leaves it recognised; any other is text HF would write out
// (an extra newline at the end of the prompt, one before it), so the template is refused.
TEST(ChatTemplate, OnlyWhitespaceJinjaDropsIsIgnored) {
  for (const std::string& model : {std::string("llama3"), std::string("smollm2")}) {
    SCOPED_TRACE(model);
    const std::string t = template_of(model);
    const ChatTemplateKind kind = recognise_chat_template(t);
    for (const std::string& same : {t + "\n", t + "\r\n", " \t" + t})
      EXPECT_EQ(recognise_chat_template(same), kind);
    for (const std::string& other : {t + "\n\n", t + " ", "\n" + t, "\r\n" + t})
      EXPECT_THROW(recognise_chat_template(other), Error);
  }
}

// A chat_template.jinja beside tokenizer_config.json wins over the config's template, as it does
// in transformers (the config's had been rendered).
TEST(ChatTemplate, JinjaFileWinsOverTheConfigsTemplate) {
  const auto dir = std::filesystem::temp_directory_path() / "nanoinfer_tok_chat_jinja";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << R"({"pre_tokenizer": {"type": "ByteLevel",
      "add_prefix_space": false, "use_regex": true}, "decoder": {"type": "ByteLevel"},
      "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})";
  std::ofstream(dir / "tokenizer_config.json")
      << nlohmann::json{{"chat_template", template_of("smollm2")}}.dump();
  std::ofstream(dir / "chat_template.jinja") << template_of("llama3");
  const auto tok = load_tokenizer_json((dir / "tokenizer.json").string());
  std::filesystem::remove_all(dir);
  EXPECT_EQ(tok->apply_chat_template({{"user", "ab"}}, true),
            "<|start_header_id|>user<|end_header_id|>\n\nab<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

// continue_final_message renders as HF's does (tools/golden/chat_continue_golden.py): the final
// message open, trimmed where the template trims contents (an empty one loses the header's blank
// line there, as in HF), a Llama-3.1 tool result cut inside its JSON string.
TEST(ChatTemplate, ContinueFinalMessageMatchesHf) {
  const nlohmann::json cases = read_json("tokenizer/chat_continue.json")["cases"];
  ASSERT_EQ(cases.size(), 30U);
  for (const auto& g : cases) {
    const std::string model = g["template"];
    SCOPED_TRACE(model + " " + g["name"].get<std::string>());
    std::vector<ChatMessage> messages;
    for (const auto& m : g["messages"]) messages.push_back({m["role"], m["content"]});
    const std::string text =
        model == "llama31"
            ? render_chat_continuing(ChatTemplateKind::kLlama31, messages, "<|begin_of_text|>")
            : tokenizer_for(model)->apply_chat_template(messages, false, true);
    EXPECT_EQ(text, g["text"].get<std::string>());
  }
  const Tokenizer* tok = tokenizer_for("smollm2");
  EXPECT_THROW((void)tok->apply_chat_template({{"user", "hi"}}, true, true), Error);
  EXPECT_THROW((void)tok->apply_chat_template({}, false, true), Error);
}

TEST(ChatTemplate, NoMessagesThrows) {
  for (const ChatTemplateKind kind :
       {ChatTemplateKind::kLlama3, ChatTemplateKind::kLlama31, ChatTemplateKind::kSmolLm2ChatMl})
    EXPECT_THROW((void)render_chat_template(kind, {}, true, ""), Error);
}

TEST(ChatTemplate, TokenizerWithoutTemplateThrows) {
  const Tokenizer* tok = tokenizer_for("llama2");
  EXPECT_THROW(tok->apply_chat_template({{"user", "hi"}}, true), Error);
}

// Every template refuses a role it would otherwise write into the prompt as it is, naming the
// message; the known roles all render.
TEST(ChatTemplate, UnknownRolesAreRefused) {
  for (const ChatTemplateKind kind :
       {ChatTemplateKind::kLlama3, ChatTemplateKind::kLlama31, ChatTemplateKind::kSmolLm2ChatMl}) {
    std::string what;
    try {
      (void)render_chat_template(kind, {{"system", "Be brief"}, {"usr", "hi"}}, true, "");
    } catch (const Error& e) {
      what = e.what();
    }
    EXPECT_EQ(what,
              "chat message 1: unknown role 'usr' (expected system, user, assistant, tool or "
              "ipython)");
    EXPECT_NO_THROW((void)render_chat_template(
        kind, {{"system", "s"}, {"user", "u"}, {"assistant", "a"}, {"tool", "t"}, {"ipython", "i"}},
        true, ""));
  }
}

}  // namespace
}  // namespace nanoinfer::test
