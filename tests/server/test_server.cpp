// The OpenAI-compatible server end to end over HTTP on the loopback: a small random-weight model
// with SmolLM2's tokenizer and chat template (fp32 CPU). Responses carry the tokens the engine
// gives each request alone; streams add up to the whole response; requests sent at once are
// batched and each still gets its own tokens; bad requests get a 400 with a message.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "nanoinfer/engine.h"
#include "nanoinfer/tokenizer.h"
#include "server/openai.h"
#include "server/server.h"
#include "test_paths.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

using nlohmann::json;

EngineOptions model_options() {
  const auto config = std::filesystem::temp_directory_path() / "nanoinfer_server_test_config.json";
  std::ofstream(config) << json{
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", 64},
      {"intermediate_size", 128},
      {"num_hidden_layers", 2},
      {"num_attention_heads", 4},
      {"num_key_value_heads", 2},
      {"vocab_size", 49152},
      {"max_position_embeddings", 512},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"tie_word_embeddings",
       false}}.dump();
  EngineOptions o;
  o.random_weights = true;
  o.config = config.string();
  o.model = test::data_path("tokenizer/smollm2");  // the tokenizer and its chat template
  o.max_context = 256;
  o.cache_tokens = 16 * 40;
  return o;
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    alone_ = std::make_unique<Engine>(model_options());
    start(model_options(), server::Server::kHttpThreads);
  }
  void TearDown() override {
    server_->stop();
    thread_.join();
  }
  // A new server (the one running stops first), allowing these origins (CORS).
  void start(const EngineOptions& o, int http_threads, std::vector<std::string> origins = {}) {
    if (server_) TearDown();
    server_.reset();
    serving_ = std::make_unique<Engine>(o);
    server_ = std::make_unique<server::Server>(*serving_, "tiny", http_threads,
                                               [this](const std::string& line) {
                                                 const std::lock_guard<std::mutex> lock(log_m_);
                                                 log_.push_back(line);
                                               });
    server_->allow_origins(std::move(origins));
    port_ = server_->bind("127.0.0.1", 0);
    thread_ = std::thread([this] { server_->run(); });
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    return c;
  }
  json post(const std::string& path, const json& body, int want_status = 200) const {
    const httplib::Result r = client().Post(path, body.dump(), "application/json");
    EXPECT_TRUE(r) << "no response: " << httplib::to_string(r.error());
    if (!r) return {};
    EXPECT_EQ(r->status, want_status) << r->body;
    return json::parse(r->body);
  }
  // Within 10 s the server counts one request stopped by its client, and it serves the next.
  void expect_stopped_then_serving(uint64_t requests = 1) const {
    for (int i = 0; i < 200 && server_->stopped_by_client() < requests; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(server_->stopped_by_client(), requests);
    EXPECT_EQ(
        post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 2}})["usage"]["completion_tokens"],
        2);
  }
  // Streams n choices of 200 tokens and hangs up after the first chunk.
  void leave_a_stream(int n) const {
    const json body = {{"prompt", "Stream and leave"},
                       {"max_tokens", 200},
                       {"temperature", 0},
                       {"ignore_eos", true},
                       {"n", n},
                       {"stream", true}};
    int chunks = 0;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
      return ++chunks < 1;  // hang up after the first
    };
    httplib::Client c = client();
    EXPECT_FALSE(c.send(req));  // the client cancelled
  }
  // Within 10 s, the server's log has a line that matches `pattern` (whole; `*` stands for any
  // text, `#` for one or more digits).
  void expect_logged(const std::string& pattern) const {
    for (int i = 0; i < 200; ++i) {
      {
        const std::lock_guard<std::mutex> lock(log_m_);
        if (std::any_of(log_.begin(), log_.end(),
                        [&](const std::string& l) { return matches(pattern, l); }))
          return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const std::lock_guard<std::mutex> lock(log_m_);
    std::string all;
    for (const std::string& l : log_) all += l + "\n";
    ADD_FAILURE() << "no log line matches " << pattern << "; the log:\n" << all;
  }
  static bool matches(std::string_view pattern, std::string_view text) {
    if (pattern.empty()) return text.empty();
    const auto digit = [](char c) { return c >= '0' && c <= '9'; };
    switch (pattern[0]) {
      case '*':
        for (size_t k = 0; k <= text.size(); ++k)
          if (matches(pattern.substr(1), text.substr(k))) return true;
        return false;
      case '#':
        for (size_t k = 1; k <= text.size() && digit(text[k - 1]); ++k)
          if (matches(pattern.substr(1), text.substr(k))) return true;
        return false;
      default:
        return !text.empty() && text[0] == pattern[0] && matches(pattern.substr(1), text.substr(1));
    }
  }
  // What the engine gives the request alone.
  GenerationOutput alone(const std::vector<int32_t>& ids, int max_tokens) const {
    GenerationRequest r{ids, {}};
    r.params.max_new_tokens = max_tokens;
    return alone_->generate({r})[0];
  }

  std::unique_ptr<Engine> serving_, alone_;
  std::unique_ptr<server::Server> server_;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex log_m_;
  std::vector<std::string> log_;
};

// The API's finish reasons: an end token and a stop string both read "stop".
TEST(OpenAiBodies, FinishReasons) {
  server::ApiRequest chat;
  chat.chat = true;
  GenerationOutput out;
  out.text = "Paris.";
  out.token_ids = {7, 2};
  for (const auto& [ours, api] : std::vector<std::pair<std::string, std::string>>{
           {"eos", "stop"}, {"stop", "stop"}, {"length", "length"}}) {
    out.finish_reason = ours;
    const json r = server::response({chat}, {"chatcmpl-1", "m", 5}, {out}, nullptr);
    EXPECT_EQ(r["choices"][0]["finish_reason"], api);
    EXPECT_EQ(r["choices"][0]["message"]["content"], "Paris.");
    size_t offset = 0;
    EXPECT_EQ(server::chunk(chat, {"chatcmpl-1", "m", 5}, 0, "", {}, {}, ours, false, nullptr,
                            offset)["choices"][0]["finish_reason"],
              api);
  }
  size_t offset = 0;
  const std::vector<int32_t> nine = {9};
  const json c = server::chunk(chat, {"c", "m", 5}, 3, "Hi", nine, {}, "", true, nullptr, offset);
  EXPECT_EQ(c["choices"][0]["delta"], (json{{"role", "assistant"}, {"content", "Hi"}}));
  EXPECT_EQ(c["choices"][0]["index"], 3);
}

TEST_F(ServerTest, ModelsAndHealth) {
  const httplib::Result h = client().Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  const httplib::Result m = client().Get("/v1/models");
  ASSERT_TRUE(m);
  EXPECT_EQ(json::parse(m->body)["data"][0]["id"], "tiny");
  EXPECT_GT(json::parse(m->body)["data"][0]["created"].get<int64_t>(), 1'700'000'000);
  // Response ids do not repeat when the server starts again (they counted from 0 each time).
  const json body = {{"prompt", "x"}, {"max_tokens", 1}};
  const std::string first = post("/v1/completions", body)["id"];
  start(model_options(), server::Server::kHttpThreads);
  EXPECT_NE(post("/v1/completions", body)["id"], first);
  // What cpp-httplib answers itself is a JSON error too: no such path (404), or a known path
  // asked with another method (405).
  const httplib::Result missing = client().Get("/v1/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(json::parse(missing->body)["error"]["message"], "no endpoint GET /v1/nothing");
  const httplib::Result get = client().Get("/v1/completions");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 405);
  EXPECT_EQ(get->get_header_value("Allow"), "POST");
  EXPECT_EQ(json::parse(get->body)["error"]["message"], "/v1/completions takes POST only");
  // A port in use is an error, not a port shared with the first server, and says why.
  server::Server second(*alone_, "second");
  try {
    second.bind("127.0.0.1", port_);
    ADD_FAILURE() << "bound a port in use";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot listen on 127.0.0.1:" + std::to_string(port_) + " (" +
                                         std::strerror(EADDRINUSE) + ")");
  }
}

TEST_F(ServerTest, CompletionIsTheEnginesOutput) {
  const json r = post("/v1/completions",
                      {{"prompt", "The quick brown fox"}, {"max_tokens", 12}, {"temperature", 0}});
  const std::vector<int32_t> ids = serving_->tokenizer()->encode("The quick brown fox", true);
  const GenerationOutput want = alone(ids, 12);
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["model"], "tiny");
  EXPECT_EQ(r["choices"][0]["text"], want.text);
  EXPECT_EQ(r["choices"][0]["token_ids"].get<std::vector<int32_t>>(), want.token_ids);
  EXPECT_EQ(r["choices"][0]["finish_reason"], want.finish_reason);
  EXPECT_EQ(r["usage"]["prompt_tokens"], ids.size());
  EXPECT_EQ(r["usage"]["completion_tokens"], want.token_ids.size());
  // Token ids as the prompt give the same.
  const json by_ids =
      post("/v1/completions", {{"prompt", ids}, {"max_tokens", 12}, {"temperature", 0}});
  EXPECT_EQ(by_ids["choices"][0]["token_ids"], r["choices"][0]["token_ids"]);
}

// A server over a StreamingLLM sink cache (keys rotated as they are read) serves a request past
// its context of 64 positions, with the tokens an engine of the same cache gives it alone, and
// without max_tokens a chat reply takes the API's whole default (512), which the context no
// longer bounds; a prompt longer than the window gets a 400 that says so.
TEST_F(ServerTest, ASinkCacheServesPastTheContext) {
  EngineOptions o = model_options();
  o.rope_cache = "pre";
  o.sink_tokens = 4;
  o.window = 60;
  o.max_context = 64;
  start(o, server::Server::kHttpThreads);
  const std::vector<int32_t> ids = {5, 6, 7, 8, 9, 10};
  const json r =
      post("/v1/completions",
           {{"prompt", ids}, {"max_tokens", 100}, {"temperature", 0}, {"ignore_eos", true}});
  EXPECT_EQ(r["usage"]["completion_tokens"], 100);
  GenerationRequest want{ids, {}};
  want.params.max_new_tokens = 100;
  want.params.ignore_eos = true;
  EXPECT_EQ(r["choices"][0]["token_ids"].get<std::vector<int32_t>>(),
            Engine(o).generate({want})[0].token_ids);
  const json chat = post(
      "/v1/chat/completions",
      {{"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})}, {"ignore_eos", true}});
  EXPECT_EQ(chat["usage"]["completion_tokens"], 512);
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "length");
  const std::vector<int32_t> too_long(61, 7);
  EXPECT_NE(
      post("/v1/completions", {{"prompt", too_long}, {"max_tokens", 4}}, 400)["error"]["message"]
          .get<std::string>()
          .find("does not fit the sink(4+60) cache"),
      std::string::npos);
}

// A request that starts with an earlier one's prompt and reply (a conversation's next turn) takes
// their whole blocks from the cache, and its usage says how many prompt tokens that was.
TEST_F(ServerTest, UsageCountsThePromptTokensTakenFromTheCache) {
  std::vector<int32_t> ids(40);
  for (int32_t i = 0; i < 40; ++i) ids[static_cast<size_t>(i)] = 100 + 7 * i;
  const json first =
      post("/v1/completions",
           {{"prompt", ids}, {"max_tokens", 20}, {"temperature", 0}, {"ignore_eos", true}});
  EXPECT_EQ(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  const auto reply = first["choices"][0]["token_ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(reply.size(), 20U);
  std::vector<int32_t> next = ids;
  next.insert(next.end(), reply.begin(), reply.end());
  next.insert(next.end(), {7, 8, 9});
  const json second =
      post("/v1/completions", {{"prompt", next}, {"max_tokens", 6}, {"temperature", 0}});
  // The first request's cache held 40 + 19 tokens (not its last): three whole blocks of 16.
  EXPECT_EQ(second["usage"]["prompt_tokens_details"]["cached_tokens"], 48);
  EXPECT_EQ(second["choices"][0]["token_ids"].get<std::vector<int32_t>>(),
            alone(next, 6).token_ids);
}

// logprobs: the completions' form (tokens, token_logprobs, top_logprobs, text_offset) and the
// chat form (content: token, logprob, top_logprobs), with the engine's values.
TEST_F(ServerTest, LogprobsInTheFormOfEachEndpoint) {
  const Tokenizer& tok = *serving_->tokenizer();
  const std::vector<int32_t> ids = tok.encode("Once upon a time", true);
  const json r = post("/v1/completions", {{"prompt", ids},
                                          {"max_tokens", 5},
                                          {"temperature", 0},
                                          {"ignore_eos", true},
                                          {"logprobs", 3}});
  GenerationRequest req{ids, {}};
  req.params.max_new_tokens = 5;
  req.params.ignore_eos = true;
  req.params.logprobs = 3;
  const GenerationOutput want = alone_->generate({req})[0];
  const json& lp = r["choices"][0]["logprobs"];
  ASSERT_EQ(lp["token_logprobs"].size(), 5U) << lp;
  size_t offset = 0;
  for (size_t i = 0; i < 5; ++i) {
    const std::string text = tok.decode(std::vector<int32_t>{want.token_ids[i]});
    EXPECT_EQ(lp["tokens"][i], text);
    EXPECT_EQ(lp["token_logprobs"][i].get<float>(), want.logprobs[i].logprob);
    EXPECT_EQ(lp["text_offset"][i], offset);
    offset += static_cast<size_t>(std::count_if(text.begin(), text.end(), [](char c) {
      return (static_cast<unsigned char>(c) & 0xC0U) != 0x80U;  // characters, not bytes
    }));
    EXPECT_LE(lp["top_logprobs"][i].size(), 3U);  // (alternatives that read the same merge)
    EXPECT_EQ(lp["top_logprobs"][i][tok.decode(std::vector<int32_t>{want.logprobs[i].top[0].first})]
                  .get<float>(),
              want.logprobs[i].top[0].second);
  }
  // Read in the order sent: each top_logprobs likeliest first (they had come in key order), the
  // response's fields in the API's order.
  const httplib::Result raw = client().Post("/v1/completions",
                                            json{{"prompt", ids},
                                                 {"max_tokens", 5},
                                                 {"temperature", 0},
                                                 {"ignore_eos", true},
                                                 {"logprobs", 3}}
                                                .dump(),
                                            "application/json");
  ASSERT_TRUE(raw);
  const auto ordered = nlohmann::ordered_json::parse(raw->body);
  std::vector<std::string> keys;
  for (const auto& [key, value] : ordered.items()) keys.push_back(key);
  EXPECT_EQ(keys,
            std::vector<std::string>({"id", "object", "created", "model", "choices", "usage"}));
  for (const auto& top : ordered["choices"][0]["logprobs"]["top_logprobs"]) {
    std::vector<float> values;
    for (const auto& [text, v] : top.items()) values.push_back(v.get<float>());
    EXPECT_TRUE(std::is_sorted(values.rbegin(), values.rend())) << top.dump();
  }
  const json chat = post("/v1/chat/completions",
                         {{"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})},
                          {"max_tokens", 4},
                          {"temperature", 0},
                          {"logprobs", true},
                          {"top_logprobs", 2}});
  const json& content = chat["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), chat["choices"][0]["token_ids"].size() -
                                (chat["choices"][0]["finish_reason"] == "stop" ? 1 : 0));
  for (const json& t : content) {
    ASSERT_EQ(t["top_logprobs"].size(), 2U);
    EXPECT_EQ(t["logprob"], t["top_logprobs"][0]["logprob"]);  // greedy: the most likely
    EXPECT_EQ(t["token"], t["top_logprobs"][0]["token"]);
  }
  EXPECT_TRUE(
      post("/v1/completions", {{"prompt", ids}, {"max_tokens", 2}})["choices"][0]["logprobs"]
          .is_null());
}

// Every entry names its token's bytes (chat's "bytes"; a completions token that is a piece of a
// character reads "bytes:\xf0", so that pieces do not all read U+FFFD), the completions' top
// entries always hold the sampled token (the API's "up to logprobs + 1"), and offsets stay
// within the text.
TEST_F(ServerTest, LogprobsNameEveryByteAndTheSampledToken) {
  const Tokenizer& tok = *serving_->tokenizer();
  int32_t lead = -1;  // the token of the byte 0xF0, which starts a 4-byte character
  for (int32_t id = 0; id < tok.vocab_size() && lead < 0; ++id)
    if (tok.token_bytes(id) == "\xF0") lead = id;
  ASSERT_GE(lead, 0);
  const json bias = {{std::to_string(lead), 100}};
  const json chat = post("/v1/chat/completions",
                         {{"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})},
                          {"max_tokens", 2},
                          {"logprobs", true},
                          {"top_logprobs", 1},
                          {"logit_bias", bias}})["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(chat.size(), 2U) << chat;
  for (const json& t : chat) {
    EXPECT_EQ(t["token"], "bytes:\\xf0") << t;
    EXPECT_EQ(t["bytes"], json::array({0xF0})) << t;
    // (the likeliest under the model, before the bias: its bytes spell its token)
    const json& best = t["top_logprobs"][0];
    std::string spelled;
    for (const json& b : best["bytes"]) spelled += static_cast<char>(b.get<int>());
    if (best["token"].get<std::string>().rfind("bytes:", 0) != 0) {
      EXPECT_EQ(spelled, best["token"]);
    }
  }
  const json text = post(
      "/v1/completions",
      {{"prompt", "Hi"}, {"max_tokens", 3}, {"logprobs", 0}, {"logit_bias", bias}})["choices"][0];
  const json& lp = text["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 3U) << lp;
  const std::string returned = text["text"];
  const auto characters =
      static_cast<size_t>(std::count_if(returned.begin(), returned.end(), [](char c) {
        return (static_cast<unsigned char>(c) & 0xC0U) != 0x80U;
      }));
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(lp["tokens"][i], "bytes:\\xf0") << lp;
    EXPECT_EQ(lp["top_logprobs"][i], json({{"bytes:\\xf0", lp["token_logprobs"][i]}})) << lp;
    EXPECT_LE(lp["text_offset"][i].get<size_t>(), characters) << text;
  }
  // Sampled at a high temperature, tokens outside the one likeliest are still among their tops.
  const json sampled = post("/v1/completions", {{"prompt", "Once upon a time"},
                                                {"max_tokens", 12},
                                                {"temperature", 1.5},
                                                {"seed", 3},
                                                {"logprobs", 1}})["choices"][0]["logprobs"];
  for (size_t i = 0; i < sampled["tokens"].size(); ++i) {
    const json& top = sampled["top_logprobs"][i];
    EXPECT_LE(top.size(), 2U);
    ASSERT_TRUE(top.contains(sampled["tokens"][i].get<std::string>())) << sampled;
    EXPECT_EQ(top[sampled["tokens"][i].get<std::string>()], sampled["token_logprobs"][i]);
  }
}

// echo: the text and the logprobs start with the prompt's (the engine's prompt_logprobs, the
// first token's null); with max_tokens 0 the prompt alone is scored (lm-evaluation-harness's
// loglikelihood requests), no completion tokens counted.
TEST_F(ServerTest, EchoReturnsThePromptAndItsLogprobs) {
  const Tokenizer& tok = *serving_->tokenizer();
  const std::string text = "Once upon a time there was";
  const std::vector<int32_t> ids = tok.encode(text, true);
  GenerationRequest req{ids, {}};
  req.params.max_new_tokens = 3;
  req.params.ignore_eos = true;
  req.params.logprobs = 2;
  req.params.prompt_logprobs = 2;
  const GenerationOutput want = alone_->generate({req})[0];
  ASSERT_EQ(want.prompt_logprobs.size(), ids.size() - 1);
  for (const int max_tokens : {0, 3}) {
    const json r = post("/v1/completions", {{"prompt", text},
                                            {"max_tokens", max_tokens},
                                            {"temperature", 0},
                                            {"ignore_eos", true},
                                            {"echo", true},
                                            {"logprobs", 2}});
    const json& c = r["choices"][0];
    const size_t n = ids.size() + static_cast<size_t>(max_tokens);
    EXPECT_EQ(c["text"], max_tokens == 0 ? text : text + want.text);
    EXPECT_EQ(r["usage"]["completion_tokens"], max_tokens);
    EXPECT_EQ(c["token_ids"].size(), static_cast<size_t>(max_tokens));
    const json& lp = c["logprobs"];
    ASSERT_EQ(lp["tokens"].size(), n) << lp;
    EXPECT_TRUE(lp["token_logprobs"][0].is_null());
    EXPECT_TRUE(lp["top_logprobs"][0].is_null());
    for (size_t i = 1; i < n; ++i) {
      const TokenLogprobs& e =
          i < ids.size() ? want.prompt_logprobs[i - 1] : want.logprobs[i - ids.size()];
      EXPECT_EQ(lp["token_logprobs"][i].get<float>(), e.logprob) << i;
      EXPECT_EQ(
          lp["top_logprobs"][i][tok.decode(std::vector<int32_t>{e.top[0].first})].get<float>(),
          e.top[0].second)
          << i;
    }
    EXPECT_EQ(lp["tokens"][1], tok.decode(std::vector<int32_t>{ids[1]}));
  }
  // text_offset counts characters, as the API (a Python string's length): each token's text is
  // where its offset says in the text, past characters of two bytes.
  auto decode = [](const std::string& text) {  // (1- and 2-byte characters only)
    std::u32string out;
    for (size_t b = 0; b < text.size(); ++b) {
      const auto c = static_cast<unsigned char>(text[b]);
      out += c < 0x80U ? char32_t{c}
                       : static_cast<char32_t>(((c & 0x1FU) << 6U) |
                                               (static_cast<unsigned char>(text[++b]) & 0x3FU));
    }
    return out;
  };
  const std::string utf8 = "Le caf\xC3\xA9 est tr\xC3\xA8s bon, \xC3\xA0 la cr\xC3\xA8me";
  const std::u32string accented = decode(utf8);
  const json echoed = post("/v1/completions",
                           {{"prompt", utf8}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 0}});
  const json& lp = echoed["choices"][0]["logprobs"];
  size_t checked = 0;
  for (size_t i = 0; i < lp["tokens"].size(); ++i) {
    const auto piece = lp["tokens"][i].get<std::string>();
    if (piece.find("\xEF\xBF\xBD") != std::string::npos) continue;  // (a piece of a character)
    const std::u32string want = decode(piece);
    const auto at = lp["text_offset"][i].get<size_t>();
    EXPECT_EQ(accented.substr(at, want.size()), want) << "token " << i << " '" << piece << "'";
    ++checked;
  }
  EXPECT_GE(checked, 10U);
  const json plain = post("/v1/completions",
                          {{"prompt", ids}, {"max_tokens", 2}, {"temperature", 0}, {"echo", true}});
  EXPECT_EQ(plain["choices"][0]["text"].get<std::string>().rfind(tok.decode(ids), 0), 0U);
  EXPECT_TRUE(plain["choices"][0]["logprobs"].is_null());
}

// logit_bias: the API's object of token ids (as text) and biases, added before sampling: +100
// makes a token every greedy pick.
TEST_F(ServerTest, LogitBiasForcesAToken) {
  const std::vector<int32_t> ids = serving_->tokenizer()->encode("Once upon a time", true);
  const json r = post("/v1/completions", {{"prompt", ids},
                                          {"max_tokens", 4},
                                          {"temperature", 0},
                                          {"ignore_eos", true},
                                          {"logit_bias", {{"42", 100}, {"7", -100}}}});
  EXPECT_EQ(r["choices"][0]["token_ids"], (std::vector<int>{42, 42, 42, 42}));
}

// n choices: one request each, with the seeds of choice_seed (the seed itself first); each choice
// is what the engine gives its request alone, a request with the next seed shares none of them
// (with seeds seed + i it had shared two), and the usage counts the prompt once.
TEST_F(ServerTest, NChoicesAreRequestsWithSeedsOfTheirOwn) {
  const std::vector<int32_t> ids = serving_->tokenizer()->encode("Once upon a time", true);
  auto three = [&](int seed) {
    return post("/v1/completions", {{"prompt", ids},
                                    {"max_tokens", 8},
                                    {"temperature", 0.9},
                                    {"seed", seed},
                                    {"ignore_eos", true},
                                    {"n", 3}});
  };
  const json r = three(40);
  ASSERT_EQ(r["choices"].size(), 3U) << r;
  std::set<std::vector<int32_t>> distinct;
  for (size_t i = 0; i < 3; ++i) {
    GenerationRequest want{ids, {}};
    want.params.max_new_tokens = 8;
    want.params.temperature = 0.9F;
    want.params.seed = server::choice_seed(40, static_cast<int>(i));
    want.params.ignore_eos = true;
    const auto got = r["choices"][i]["token_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(r["choices"][i]["index"], i);
    EXPECT_EQ(got, alone_->generate({want})[0].token_ids) << "choice " << i;
    distinct.insert(got);
  }
  EXPECT_EQ(distinct.size(), 3U);  // the seeds differ
  EXPECT_EQ(r["usage"]["prompt_tokens"], ids.size());
  EXPECT_EQ(r["usage"]["completion_tokens"], 24);
  const json next = three(41);
  ASSERT_EQ(next["choices"].size(), 3U) << next;
  for (const json& c : next["choices"])
    EXPECT_FALSE(distinct.contains(c["token_ids"].get<std::vector<int32_t>>())) << c;
}

// Several prompts in one completion request (texts, or lists of ids): n choices each, in order
// (index = prompt * n + choice), each what the engine gives its request alone; the usage counts
// every prompt once, and echo starts each choice with its own prompt.
TEST_F(ServerTest, SeveralPromptsGetTheirChoicesInOrder) {
  const Tokenizer& tok = *serving_->tokenizer();
  const std::vector<std::string> texts = {"Once upon a time", "The capital of France is"};
  const json r = post("/v1/completions", {{"prompt", texts},
                                          {"max_tokens", 5},
                                          {"temperature", 0.9},
                                          {"seed", 7},
                                          {"ignore_eos", true},
                                          {"echo", true},
                                          {"n", 2}});
  ASSERT_EQ(r["choices"].size(), 4U) << r;
  size_t prompt_tokens = 0;
  for (size_t k = 0; k < 2; ++k) {
    const std::vector<int32_t> ids = tok.encode(texts[k], true);
    prompt_tokens += ids.size();
    for (size_t i = 0; i < 2; ++i) {
      GenerationRequest want{ids, {}};
      want.params.max_new_tokens = 5;
      want.params.temperature = 0.9F;
      want.params.seed = server::choice_seed(7, static_cast<int>(i));
      want.params.ignore_eos = true;
      const GenerationOutput w = alone_->generate({want})[0];
      const json& c = r["choices"][2 * k + i];
      EXPECT_EQ(c["index"], 2 * k + i);
      EXPECT_EQ(c["token_ids"].get<std::vector<int32_t>>(), w.token_ids) << k << " " << i;
      EXPECT_EQ(c["text"], texts[k] + w.text);
    }
  }
  EXPECT_EQ(r["usage"]["prompt_tokens"], prompt_tokens);
  EXPECT_EQ(r["usage"]["completion_tokens"], 20);
  const std::vector<std::vector<int32_t>> id_lists = {{5, 6, 7}, {8, 9}};
  const json ids = post("/v1/completions", {{"prompt", id_lists}, {"max_tokens", 2}});
  ASSERT_EQ(ids["choices"].size(), 2U);
  EXPECT_EQ(ids["usage"]["prompt_tokens"], 5);
}

// A stream's chunks, choice by choice (their index): text, token ids, the finish reason (once),
// how many chunks carried the chat role and whether the first did; the usage chunk (last), how
// many chunks before it had "usage": null (as the API's, with include_usage), and whether [DONE]
// ended it.
struct Streamed {
  struct Choice {
    std::string text;
    std::vector<int32_t> ids;
    std::string finish;
    int finishes = 0, roles = 0, chunks = 0;
    bool role_first = false;
  };
  std::map<size_t, Choice> choices;
  json usage;
  int usage_nulls = 0;
  bool done = false;
};
Streamed read_stream(const std::string& body, bool chat) {
  Streamed out;
  std::istringstream events(body);
  for (std::string line; std::getline(events, line);) {
    if (line.rfind("data: ", 0) != 0) continue;
    const std::string data = line.substr(6);
    EXPECT_FALSE(out.done) << "an event after [DONE]: " << data;
    if (data == "[DONE]") {
      out.done = true;
      continue;
    }
    const json c = json::parse(data);
    EXPECT_TRUE(out.usage.is_null()) << "a chunk after the usage: " << data;
    if (c["choices"].empty()) {  // stream_options.include_usage: the usage comes last
      out.usage = c["usage"];
      continue;
    }
    EXPECT_EQ(c["choices"].size(), 1U) << data;
    out.usage_nulls += c.contains("usage") && c["usage"].is_null() ? 1 : 0;
    const json& ch = c["choices"][0];
    Streamed::Choice& got = out.choices[ch["index"].get<size_t>()];
    EXPECT_EQ(got.finishes, 0) << "a chunk after the choice's last: " << data;
    if (chat) {
      const bool role = ch["delta"].contains("role");
      got.roles += role ? 1 : 0;
      if (got.chunks == 0) got.role_first = role;
      got.text += ch["delta"].value("content", "");
    } else {
      got.text += ch["text"].get<std::string>();
    }
    ++got.chunks;
    for (const auto& t : ch["token_ids"]) got.ids.push_back(t);
    if (!ch["finish_reason"].is_null()) {
      got.finish = ch["finish_reason"];
      ++got.finishes;
    }
  }
  return out;
}

// A stream of one choice or of several (n, several prompts; their chunks interleaved, each with
// its index) adds up, choice by choice, to the whole response of the same body (the same seeds),
// with the same token counts.
TEST_F(ServerTest, StreamAddsUpToTheWholeResponse) {
  const json sampled = {{"temperature", 0.9}, {"ignore_eos", true}};
  const std::vector<std::pair<std::string, json>> cases = {
      {"/v1/completions",
       {{"prompt", "Once upon a time"},
        {"max_tokens", 10},
        {"temperature", 0},
        {"ignore_eos", true}}},
      {"/v1/completions",
       {{"prompt", "Once upon a time"}, {"max_tokens", 8}, {"n", 3}, {"seed", 40}}},
      {"/v1/completions",
       {{"prompt", {"Once upon a time", "The capital of France is"}},
        {"max_tokens", 5},
        {"n", 2},
        {"seed", 7}}},
      {"/v1/chat/completions",
       {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
        {"max_tokens", 6},
        {"n", 2},
        {"seed", 3}}},
  };
  for (auto [path, body] : cases) {
    if (body.contains("n")) body.update(sampled);
    const bool chat = path == "/v1/chat/completions";
    const json whole = post(path, body);
    json streamed = body;
    streamed["stream"] = true;
    streamed["stream_options"] = {{"include_usage", true}};
    const httplib::Result r = client().Post(path, streamed.dump(), "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
    const Streamed got = read_stream(r->body, chat);
    EXPECT_TRUE(got.done) << body;
    int chunks = 0;
    for (const auto& [i, c] : got.choices) chunks += c.chunks;
    EXPECT_EQ(got.usage_nulls, chunks) << body;
    // (the cached tokens aside: the stream's prompt finds the blocks the whole response filled)
    for (const char* k : {"prompt_tokens", "completion_tokens", "total_tokens"})
      EXPECT_EQ(got.usage[k], whole["usage"][k]) << body << " " << k;
    ASSERT_EQ(got.choices.size(), whole["choices"].size()) << body;
    for (const auto& [i, c] : got.choices) {
      const json& w = whole["choices"].at(i);
      EXPECT_EQ(c.text, chat ? w["message"]["content"] : w["text"]) << body << " choice " << i;
      EXPECT_EQ(c.ids, w["token_ids"].get<std::vector<int32_t>>()) << body << " choice " << i;
      EXPECT_EQ(c.finishes, 1) << body << " choice " << i;
      EXPECT_EQ(c.finish, w["finish_reason"]) << body << " choice " << i;
      if (chat) {
        EXPECT_EQ(c.roles, 1) << body << " choice " << i;
        EXPECT_TRUE(c.role_first) << body << " choice " << i;
      }
    }
  }
}

// logprobs in streams: the chunks' entries, one list after another, are the whole response's in
// the endpoint's form (the completions' text_offset counts across chunks), and so are their
// token ids; a request ended by its EOS (forced here by logit_bias) gets the EOS id in the last
// chunk, where no token callback announced it, and no logprob entry for it (not part of the text,
// as the API leaves it out).
TEST_F(ServerTest, StreamedLogprobsAddUpToTheWholeResponse) {
  const int eos = serving_->config().eos_token_ids.at(0);
  const json user = json::array({{{"role", "user"}, {"content", "Once upon a time"}}});
  const std::vector<std::pair<std::string, json>> cases = {
      {"/v1/completions", {{"prompt", "Once upon a time"}, {"logprobs", 2}}},
      {"/v1/chat/completions", {{"messages", user}, {"logprobs", true}, {"top_logprobs", 2}}},
      {"/v1/completions",
       {{"prompt", "Once"}, {"logprobs", 1}, {"logit_bias", {{std::to_string(eos), 100}}}}}};
  for (auto [path, body] : cases) {
    SCOPED_TRACE(path + " " + body.dump());
    body["max_tokens"] = 12;
    body["temperature"] = 0;
    const json whole = post(path, body)["choices"][0];
    body["stream"] = true;
    const httplib::Result r = client().Post(path, body.dump(), "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    json got = json::object();
    std::vector<int32_t> ids;
    std::istringstream events(r->body);
    for (std::string line; std::getline(events, line);) {
      if (line.rfind("data: {", 0) != 0) continue;
      const json c = json::parse(line.substr(6))["choices"][0];
      for (const auto& t : c["token_ids"]) ids.push_back(t);
      // (null in a chunk whose tokens have no entries: the last, when it holds only the EOS)
      ASSERT_TRUE(c["logprobs"].is_object() ||
                  (c["logprobs"].is_null() && c["finish_reason"] != nullptr))
          << line;
      for (const auto& [key, list] : c["logprobs"].items())
        for (const auto& x : list.is_array() ? list : json::array()) {
          got[key].push_back(x);
        }
    }
    for (const auto& [key, list] : whole["logprobs"].items())
      if (!got.contains(key)) got[key] = json::array();
    EXPECT_EQ(ids, whole["token_ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(got, whole["logprobs"]);
    if (body.contains("logit_bias")) {
      EXPECT_EQ(ids, std::vector<int32_t>{eos});
      EXPECT_EQ(whole["logprobs"]["tokens"], json::array());
    }
  }
}

// A stop string that starts inside a token cuts the text there: the logprobs keep the tokens
// whose text starts within the returned text (the straddling one included) and leave out the
// rest of the stop string's, in a whole response and in a stream alike; token_ids keeps them all.
// Before, every token of the stop string kept its entry.
TEST_F(ServerTest, LogprobsSpellTheTextAStopStringCut) {
  json body = {{"prompt", "Once upon a time"},
               {"max_tokens", 12},
               {"temperature", 0},
               {"ignore_eos", true},
               {"logprobs", 0}};
  const json base = post("/v1/completions", body)["choices"][0];
  const auto texts = base["logprobs"]["tokens"].get<std::vector<std::string>>();
  const auto offsets = base["logprobs"]["text_offset"].get<std::vector<size_t>>();
  const std::string text = base["text"];
  // A stop string of the last bytes of token k and the first of token k + 1 (plain ASCII texts),
  // found nowhere earlier.
  size_t k = 2;
  std::string stop;
  const auto ascii = [](const std::string& s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c > ' ' && c < 127; });
  };
  for (; k + 1 < texts.size(); ++k) {
    if (texts[k].size() < 2 || texts[k + 1].empty() || !ascii(texts[k].substr(1)) ||
        !ascii(texts[k + 1].substr(0, 1)))
      continue;
    stop = texts[k].substr(1) + texts[k + 1].substr(0, 1);
    if (text.find(stop) == offsets[k] + 1) break;
  }
  ASSERT_LT(k + 1, texts.size()) << base;
  body["stop"] = stop;
  const json cut = post("/v1/completions", body)["choices"][0];
  EXPECT_EQ(cut["text"], text.substr(0, offsets[k] + 1));
  EXPECT_EQ(cut["finish_reason"], "stop");
  const auto ids = base["token_ids"].get<std::vector<int32_t>>();
  EXPECT_EQ(cut["token_ids"], std::vector<int32_t>(ids.begin(), ids.begin() + k + 2));
  EXPECT_EQ(cut["logprobs"]["tokens"],
            std::vector<std::string>(texts.begin(), texts.begin() + k + 1));
  EXPECT_EQ(cut["logprobs"]["token_logprobs"].size(), k + 1);
  body["stream"] = true;
  const httplib::Result r = client().Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(r);
  json tokens = json::array();
  std::string streamed;
  std::istringstream events(r->body);
  for (std::string line; std::getline(events, line);) {
    if (line.rfind("data: {", 0) != 0) continue;
    const json c = json::parse(line.substr(6))["choices"][0];
    streamed += c["text"].get<std::string>();
    if (c["logprobs"].is_null()) continue;  // (the last chunk's tokens have no entries here)
    for (const auto& t : c["logprobs"]["tokens"]) tokens.push_back(t);
  }
  EXPECT_EQ(streamed, cut["text"]);
  EXPECT_EQ(tokens, cut["logprobs"]["tokens"]);
}

// The tokens with logprob entries, counted on outputs made here: all but an ending EOS; with a
// stop string, those that spell the returned text, including the second byte of a character
// split over two tokens (its first byte alone decodes as U+FFFD, three bytes for one).
TEST_F(ServerTest, ScoredTokensSpellTheReturnedText) {
  const Tokenizer& tok = *serving_->tokenizer();
  const auto byte_token = [&](const std::string& b) {
    for (int32_t id = 0; id < tok.vocab_size(); ++id)
      if (tok.token_bytes(id) == b) return id;
    return int32_t{-1};
  };
  const int32_t c3 = byte_token("\xC3"), a9 = byte_token("\xA9"), x = byte_token("x");
  ASSERT_TRUE(c3 >= 0 && a9 >= 0 && x >= 0);
  GenerationOutput out;
  out.token_ids = {x, c3, a9, x, x};
  out.text = "x\xC3\xA9";  // "xé", then a stop string "xx": the last two
  out.finish_reason = "stop";
  EXPECT_EQ(server::scored_tokens(out, &tok), 3U);
  out.text = "x\xC3\xA9x";  // (a stop string "x": the last token)
  EXPECT_EQ(server::scored_tokens(out, &tok), 4U);
  out.finish_reason = "length";
  EXPECT_EQ(server::scored_tokens(out, &tok), 5U);
  out.finish_reason = "eos";
  EXPECT_EQ(server::scored_tokens(out, &tok), 4U);
}

TEST_F(ServerTest, ChatUsesTheTemplate) {
  const json messages = json::array({{{"role", "user"}, {"content", "Hi there"}}});
  const json r =
      post("/v1/chat/completions", {{"messages", messages}, {"max_tokens", 8}, {"temperature", 0}});
  const Tokenizer& tok = *serving_->tokenizer();
  const GenerationOutput want =
      alone(tok.encode(tok.apply_chat_template({{"user", "Hi there"}}, true), false), 8);
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r["choices"][0]["message"]["content"], want.text);
  EXPECT_EQ(r["choices"][0]["token_ids"].get<std::vector<int32_t>>(), want.token_ids);
  // Content as a list of text parts is their texts joined by newlines.
  const json parts =
      json::array({{{"role", "user"},
                    {"content", json::array({{{"type", "text"}, {"text", "Hi"}},
                                             {{"type", "text"}, {"text", "there"}}})}}});
  const GenerationOutput joined =
      alone(tok.encode(tok.apply_chat_template({{"user", "Hi\nthere"}}, true), false), 8);
  EXPECT_EQ(
      post("/v1/chat/completions",
           {{"messages", parts}, {"max_tokens", 8}, {"temperature", 0}})["choices"][0]["token_ids"]
          .get<std::vector<int32_t>>(),
      joined.token_ids);
  // vLLM's continue_final_message: a final assistant message begun for the model goes on; the
  // generation prompt must be turned off for it, and both fields are chat's only.
  const json begun = json::array({{{"role", "user"}, {"content", "Hi there"}},
                                  {{"role", "assistant"}, {"content", "Hello, I am"}}});
  const GenerationOutput going_on =
      alone(tok.encode(tok.apply_chat_template({{"user", "Hi there"}, {"assistant", "Hello, I am"}},
                                               false, true),
                       false),
            8);
  EXPECT_EQ(
      post("/v1/chat/completions", {{"messages", begun},
                                    {"max_tokens", 8},
                                    {"temperature", 0},
                                    {"add_generation_prompt", false},
                                    {"continue_final_message", true}})["choices"][0]["token_ids"]
          .get<std::vector<int32_t>>(),
      going_on.token_ids);
  EXPECT_NE(going_on.token_ids,
            alone(tok.encode(tok.apply_chat_template(
                                 {{"user", "Hi there"}, {"assistant", "Hello, I am"}}, true),
                             false),
                  8)
                .token_ids);
  EXPECT_EQ(post("/v1/chat/completions", {{"messages", begun}, {"continue_final_message", true}},
                 400)["error"]["param"],
            "continue_final_message");
  EXPECT_EQ(post("/v1/completions", {{"prompt", "x"}, {"add_generation_prompt", false}},
                 400)["error"]["message"],
            "'add_generation_prompt' is served for chat completions only");
}

// vLLM's chat_template_kwargs: date_string dates a Llama-3.2 template's system turn (today's
// without it); our templates' other variables are refused, not dropped, and so is the field on
// completions; a variable none of them reads is passed over, as the template would.
TEST_F(ServerTest, ChatTemplateKwargsDateTheLlama32SystemTurn) {
  EngineOptions o = model_options();
  const std::string dir =
      test::llama32_chat_model("nanoinfer_server_llama32", json::parse(std::ifstream(o.config)));
  o.config = dir + "/config.json";
  o.model = dir;
  start(o, server::Server::kHttpThreads);
  const Tokenizer& tok = *serving_->tokenizer();
  const std::string date = "the second of March, 2025";
  const std::vector<int32_t> dated =
      tok.encode(tok.apply_chat_template({{"user", "Hi"}}, true, false, date), false);
  const std::vector<int32_t> undated =
      tok.encode(tok.apply_chat_template({{"user", "Hi"}}, true), false);
  ASSERT_NE(dated.size(), undated.size());
  const json hi = json::array({{{"role", "user"}, {"content", "Hi"}}});
  EXPECT_EQ(post("/v1/chat/completions",
                 {{"messages", hi},
                  {"max_tokens", 2},
                  {"chat_template_kwargs", {{"date_string", date}}}})["usage"]["prompt_tokens"],
            dated.size());
  // A variable no template here reads is passed over, as the template would.
  EXPECT_EQ(post("/v1/chat/completions",
                 {{"messages", hi},
                  {"max_tokens", 2},
                  {"chat_template_kwargs",
                   {{"enable_thinking", false}, {"tool", 1}}}})["usage"]["prompt_tokens"],
            undated.size());
  for (const json& vars : {json{{"tools", json::array()}}, json{{"date_string", 2025}}, json("x"),
                           json{{"add_generation_prompt", false}}, json{{"bos_token", "<s>"}}})
    EXPECT_EQ(post("/v1/chat/completions", {{"messages", hi}, {"chat_template_kwargs", vars}},
                   400)["error"]["param"],
              "chat_template_kwargs")
        << vars;
  EXPECT_EQ(post("/v1/completions", {{"prompt", "x"}, {"chat_template_kwargs", json::object()}},
                 400)["error"]["message"],
            "'chat_template_kwargs' is served for chat completions only");
  std::filesystem::remove_all(dir);
}

// Without max_tokens the API's default (16; chat 512) shrinks to the room the prompt leaves in
// the context (256 positions here), or the cache, instead of failing; a max_tokens given is still
// checked.
TEST_F(ServerTest, WithoutMaxTokensTheDefaultFitsTheContext) {
  const json chat = post(
      "/v1/chat/completions",
      {{"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})}, {"ignore_eos", true}});
  EXPECT_EQ(chat["usage"]["total_tokens"], 256);
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "length");
  const std::vector<int32_t> long_prompt(250, 7);
  const json done = post("/v1/completions", {{"prompt", long_prompt}, {"ignore_eos", true}});
  EXPECT_EQ(done["usage"]["completion_tokens"], 6);
  EXPECT_EQ(post("/v1/completions", {{"prompt", long_prompt}, {"max_tokens", 16}},
                 400)["error"]["message"]
                .get<std::string>(),
            "prompt (250 tokens) + max_tokens (16) exceeds the context of 256 positions");
  const json few = post("/v1/completions", {{"prompt", "x"}, {"ignore_eos", true}});
  EXPECT_EQ(few["usage"]["completion_tokens"], 16);
  // ... or in the KV cache, where that holds less (--cache-tokens 100: 7 blocks, 112 tokens).
  EngineOptions o = model_options();
  o.cache_tokens = 100;
  start(o, server::Server::kHttpThreads);
  const json small = post(
      "/v1/chat/completions",
      {{"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})}, {"ignore_eos", true}});
  EXPECT_EQ(small["usage"]["total_tokens"], 112);
  // Beyond the limit, the refusal names the API's fields and the limit that binds.
  const std::string over_cache =
      post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 200}}, 400)["error"]["message"];
  EXPECT_EQ(over_cache,
            "prompt (1 token) + max_tokens (200) exceeds this server's KV cache of "
            "112 tokens");
  // ... with OpenAI's code and the field, which clients and wrappers recognise.
  const json error = post("/v1/chat/completions",
                          {{"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})},
                           {"max_completion_tokens", 500}},
                          400)["error"];
  EXPECT_EQ(error["code"], "context_length_exceeded");
  EXPECT_EQ(error["param"], "max_completion_tokens");
  EXPECT_NE(error["message"].get<std::string>().find("+ max_completion_tokens (500) exceeds"),
            std::string::npos)
      << error;
  const std::string full =
      post("/v1/completions", {{"prompt", std::vector<int32_t>(112, 7)}}, 400)["error"]["message"];
  EXPECT_EQ(full,
            "prompt (112 tokens) leaves no room for a new token in this server's KV cache "
            "of 112 tokens");
  EXPECT_EQ(
      post("/v1/completions", {{"prompt", std::vector<int32_t>(112, 7)}}, 400)["error"]["param"],
      "prompt");
  // The same with max_tokens given: the prompt alone is too long, so the prompt is named.
  const json whole_cache =
      post("/v1/completions", {{"prompt", std::vector<int32_t>(112, 7)}, {"max_tokens", 2}},
           400)["error"];
  EXPECT_EQ(whole_cache["param"], "prompt");
  EXPECT_EQ(whole_cache["message"], full);
}

// Clients at once are all in the running batch, beyond cpp-httplib's default pool (cores - 1, at
// least 8, HTTP threads); with http_threads 2, two at a time and the others wait their turn.
TEST_F(ServerTest, TheRequestsServedAtOnceAreTheHttpThreads) {
  EngineOptions o = model_options();
  o.cache_tokens = 48 * 9 * 16;  // room for every request below at once
  for (const int threads : {server::Server::kHttpThreads, 2}) {
    start(o, threads);
    const int n = threads == 2 ? 6 : 48;
    std::vector<json> got(static_cast<size_t>(n));
    std::vector<std::thread> clients;
    clients.reserve(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i)
      clients.emplace_back([&, i] {
        got[static_cast<size_t>(i)] = post("/v1/completions", {{"prompt", {5, 6, 7 + i}},
                                                               {"max_tokens", 120},
                                                               {"temperature", 0},
                                                               {"ignore_eos", true}});
      });
    for (std::thread& t : clients) t.join();
    for (int i = 0; i < n; ++i)
      EXPECT_EQ(got[static_cast<size_t>(i)]["usage"]["completion_tokens"], 120) << "client " << i;
    if (threads == 2)
      EXPECT_EQ(server_->peak_requests(), 2U);
    else
      EXPECT_GE(server_->peak_requests(), 24U) << "most of the 48 clients shared steps";
  }
}

// Every HTTP thread starts with the server, so their number is bounded (the CLI checks the same).
TEST_F(ServerTest, HttpThreadsOutsideTheirRangeAreRefused) {
  for (const int threads : {0, server::Server::kMaxHttpThreads + 1}) {
    try {
      server::Server refused(*serving_, "tiny", threads);
      ADD_FAILURE() << threads << " HTTP threads were taken";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()),
                "the server's HTTP threads must be 1 to 4096, not " + std::to_string(threads));
    }
  }
}

#if !defined(__SANITIZE_ADDRESS__)  // (whose shadow memory needs an unlimited address space)
// Limits the process's address space to what it maps now and `more` bytes; returns the limit
// before, which the caller sets again (setrlimit(RLIMIT_AS, &was)).
rlimit limit_address_space(size_t more) {
  rlimit was{};
  EXPECT_EQ(getrlimit(RLIMIT_AS, &was), 0);
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0;
  statm >> pages;
  rlimit tight = was;
  tight.rlim_cur = pages * static_cast<size_t>(sysconf(_SC_PAGESIZE)) + more;
  EXPECT_EQ(setrlimit(RLIMIT_AS, &tight), 0);
  return was;
}
#endif

// A machine that cannot start every HTTP thread (here: an address space with no room for their
// stacks) gets a message before the server serves; cpp-httplib's own pool hung there.
TEST_F(ServerTest, HttpThreadsThatCannotStartAreAnError) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's shadow memory needs an unlimited address space";
#else
  // Room for ~32 more thread stacks of 8 MiB, not for 4,096 of them.
  const rlimit was = limit_address_space(size_t{256} << 20);
  std::string message;
  try {
    server::Server refused(*serving_, "tiny", server::Server::kMaxHttpThreads);
  } catch (const Error& e) {
    message = e.what();
  }
  ASSERT_EQ(setrlimit(RLIMIT_AS, &was), 0);
  EXPECT_NE(message.find("cannot start the server's 4096 HTTP threads"), std::string::npos)
      << message;
  EXPECT_NE(message.find("ask for fewer (--http-threads)"), std::string::npos) << message;
  // The server that was running still serves.
  const json after =
      post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 2}, {"ignore_eos", true}});
  EXPECT_EQ(after["usage"]["completion_tokens"], 2);
#endif
}

// A KV cache the machine cannot hold (here: 4 GiB in an address space with room for 256 MiB
// more) fails as the server is made, not at its first request (which ended the process), with
// the library's message.
TEST_F(ServerTest, ACacheTooLargeFailsBeforeServing) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's shadow memory needs an unlimited address space";
#else
  EngineOptions o = model_options();
  o.cache_tokens = 1 << 24;  // x 2 layers x K and V x 64 bytes at least
  Engine huge(o);
  const rlimit was = limit_address_space(size_t{256} << 20);
  std::string refused;
  try {
    server::Server never(huge, "huge", 4);
  } catch (const Error& e) {  // (the cache's tensor, with the bytes it asked for)
    refused = e.what();
  }
  ASSERT_EQ(setrlimit(RLIMIT_AS, &was), 0);
  EXPECT_EQ(refused.rfind("out of memory: a f32 tensor [", 0), 0U) << refused;
#endif
}

// Eight clients at once: their requests share steps (the cache holds about four of them), and
// each gets what it gets alone.
TEST_F(ServerTest, ConcurrentRequestsEachGetTheirOwnTokens) {
  const int n = 8;
  std::vector<json> got(n);
  std::vector<std::thread> clients;
  clients.reserve(n);
  for (int i = 0; i < n; ++i)
    clients.emplace_back([&, i] {
      got[i] = post("/v1/completions", {{"prompt", "Request number " + std::to_string(i)},
                                        {"max_tokens", 60 + i},
                                        {"temperature", 0},
                                        {"ignore_eos", true}});
    });
  for (std::thread& t : clients) t.join();
  for (int i = 0; i < n; ++i) {
    const std::vector<int32_t> ids =
        serving_->tokenizer()->encode("Request number " + std::to_string(i), true);
    GenerationRequest r{ids, {}};
    r.params.max_new_tokens = 60 + i;
    r.params.ignore_eos = true;
    EXPECT_EQ(got[i]["choices"][0]["token_ids"].get<std::vector<int32_t>>(),
              alone_->generate({r})[0].token_ids)
        << "client " << i;
  }
}

// A streaming client that hangs up after its first chunk: the server notices at its next write
// and stops the request (it would have run 200 tokens), and goes on serving.
TEST_F(ServerTest, AClientThatGoesAwayStopsItsRequest) {
  leave_a_stream(1);
  expect_stopped_then_serving();
  expect_logged(
      R"(127.0.0.1 "POST /v1/completions" 200 cmpl-# (stream): the client went away after )"
      R"(#.### s)");
}

// ... and every choice of a stream of several.
TEST_F(ServerTest, AClientThatGoesAwayStopsEveryChoiceOfItsStream) {
  leave_a_stream(3);
  expect_stopped_then_serving(3);
}

// A client that hangs up while its whole (not streamed) response is computed stops its request
// too: the server looks at the connection while it waits.
TEST_F(ServerTest, AClientThatGoesAwayStopsItsWholeResponse) {
  EngineOptions o = model_options();
  o.max_context = 4096;
  o.cache_tokens = 4096;
  start(o, server::Server::kHttpThreads);
  {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(0, 300'000);  // it gives up after 0.3 s (4,000 tokens take longer)
    const json body = {{"prompt", "Wait and leave"},
                       {"max_tokens", 4000},
                       {"temperature", 0},
                       {"ignore_eos", true}};
    const httplib::Result r = c.Post("/v1/completions", body.dump(), "application/json");
    EXPECT_FALSE(r) << r->status << " " << r->body;
  }  // (the socket closes)
  expect_stopped_then_serving();
  expect_logged(R"(127.0.0.1 "POST /v1/completions" - cmpl-#: the client went away after )"
                R"(#.### s)");
}

// A request still running when the server stops gets a 503.
TEST_F(ServerTest, ARequestInFlightAtShutdownGets503) {
  EngineOptions o = model_options();
  o.max_context = 4096;
  o.cache_tokens = 4096;
  start(o, server::Server::kHttpThreads);
  int status = 0;
  std::thread waiting([&] {
    const json body = {{"prompt", "x"}, {"max_tokens", 4000}, {"ignore_eos", true}};
    const httplib::Result r = client().Post("/v1/completions", body.dump(), "application/json");
    if (r) status = r->status;
  });
  for (int i = 0; i < 200 && server_->peak_requests() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  server_->stop();
  waiting.join();
  EXPECT_EQ(status, 503);
  expect_logged(R"(127.0.0.1 "POST /v1/completions" 503 the server is stopping)");
}

// Streams running when the server stops each end with the error event and [DONE], and each gets
// its log line. Before, the HTTP loop stopped first and cut some streams short after an ordinary
// chunk.
TEST_F(ServerTest, StreamsInFlightAtShutdownEndWithTheError) {
  EngineOptions o = model_options();
  o.max_context = 4096;
  o.cache_tokens = 3 * 4096;
  start(o, server::Server::kHttpThreads);
  constexpr int kStreams = 3;
  std::array<std::string, kStreams> bodies;
  std::atomic<int> started{0};
  std::vector<std::thread> clients;
  clients.reserve(kStreams);
  for (int i = 0; i < kStreams; ++i)
    clients.emplace_back([&, i] {
      const json body = {
          {"prompt", "x"}, {"max_tokens", 4000}, {"ignore_eos", true}, {"stream", true}};
      httplib::Request req;
      req.method = "POST";
      req.path = "/v1/completions";
      req.body = body.dump();
      req.set_header("Content-Type", "application/json");
      bool first = true;
      req.content_receiver = [&, i](const char* data, size_t n, uint64_t, uint64_t) {
        bodies[static_cast<size_t>(i)].append(data, n);
        if (std::exchange(first, false)) ++started;
        return true;
      };
      client().send(req);
    });
  for (int i = 0; i < 1000 && started < kStreams; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(started, kStreams);
  server_->stop();
  for (std::thread& t : clients) t.join();
  for (const std::string& body : bodies) {
    const std::string end = "data: [DONE]\n\n";
    ASSERT_GE(body.size(), end.size());
    EXPECT_EQ(body.substr(body.size() - end.size()), end) << body.substr(body.size() - 300);
    EXPECT_NE(body.find(R"("message":"the server is stopping")"), std::string::npos);
  }
  expect_logged(R"(127.0.0.1 "POST /v1/completions" 200 cmpl-# (stream): ended by an error )"
                R"(after #.### s: the server is stopping)");
  const std::lock_guard<std::mutex> lock(log_m_);
  EXPECT_EQ(std::count_if(log_.begin(), log_.end(),
                          [](const std::string& l) {
                            return l.find("ended by an error") != std::string::npos;
                          }),
            kStreams);
}

// The log has a line for each generation request (its id, tokens, finish reasons and time) and
// each refusal (its status and message); none for what was served without a generation.
TEST_F(ServerTest, EachRequestAndRefusalIsLogged) {
  const json whole = post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 2}});
  expect_logged(R"(127.0.0.1 "POST /v1/completions" 200 )" + whole["id"].get<std::string>() +
                R"(: prompt 1 token (0 cached), completion 2 tokens (length), #.### s)");
  const json body = {{"prompt", "x"}, {"max_tokens", 3}, {"n", 2}, {"stream", true}};
  const httplib::Result r = client().Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_NE(r->body.find("[DONE]"), std::string::npos);
  expect_logged(R"(127.0.0.1 "POST /v1/completions" 200 cmpl-# (stream): prompt 1 token )"
                R"((0 cached), completion 6 tokens (length, length), #.### s)");
  post("/v1/chat/completions", {{"messages", 5}}, 400);
  expect_logged(R"(127.0.0.1 "POST /v1/chat/completions" 400 'messages' must be *)");
  EXPECT_EQ(client().Get("/v1/nothing")->status, 404);
  expect_logged(R"(127.0.0.1 "GET /v1/nothing" 404 no endpoint GET /v1/nothing)");
  EXPECT_EQ(client().Get("/v1/completions")->status, 405);
  expect_logged(R"(127.0.0.1 "GET /v1/completions" 405 /v1/completions takes POST only)");
  EXPECT_EQ(client().Get("/health")->status, 200);
  // Fields the server does not read are served around, and named (a typo shows there).
  const json typo = post("/v1/completions",
                         {{"prompt", "x"}, {"max_token", 3}, {"user", "u1"}, {"ignore_eos", true}});
  EXPECT_EQ(typo["usage"]["completion_tokens"], 16);
  expect_logged(R"(127.0.0.1 "POST /v1/completions" 200 )" + typo["id"].get<std::string>() +
                R"(: prompt 1 token (0 cached), completion 16 tokens (length), #.### s; )"
                R"(fields ignored: max_token, user)");
  const std::lock_guard<std::mutex> lock(log_m_);
  EXPECT_EQ(log_.size(), 6U);
}

// A body larger than the server takes is refused (a 413, logged) without being held whole,
// whether it gives its length or comes in chunks; the server serves on.
TEST_F(ServerTest, ABodyOverTheCapIsRefused) {
  const std::string big =
      R"({"prompt": "x", "user": ")" + std::string(server::Server::kMaxBodyBytes, 'u') + R"("})";
  const std::string want = "the body is larger than this server takes (16 MiB)";
  const httplib::Result sized = client().Post("/v1/completions", big, "application/json");
  ASSERT_TRUE(sized) << httplib::to_string(sized.error());
  EXPECT_EQ(sized->status, 413);
  EXPECT_EQ(json::parse(sized->body)["error"]["message"], want);
  expect_logged(R"(127.0.0.1 "POST /v1/completions" 413 )" + want);
  size_t sent = 0;
  httplib::Client again = client();  // (a kept connection: the client serves on after the refusal)
  again.set_keep_alive(true);
  const httplib::Result chunked = again.Post(
      "/v1/completions",
      [&](size_t, httplib::DataSink& sink) {
        const size_t n = std::min<size_t>(size_t{1} << 20U, big.size() - sent);
        sink.write(big.data() + sent, n);
        sent += n;
        if (sent == big.size()) sink.done();
        return true;
      },
      "application/json");
  ASSERT_TRUE(chunked) << httplib::to_string(chunked.error());
  EXPECT_EQ(chunked->status, 413);
  EXPECT_EQ(json::parse(chunked->body)["error"]["message"], want);
  // (its unread rest is dropped with the connection, which the client makes anew)
  EXPECT_EQ(chunked->get_header_value("Connection"), "close");
  EXPECT_EQ(sized->get_header_value("Connection"), "close");
  const httplib::Result next = again.Post(
      "/v1/completions", json{{"prompt", "x"}, {"max_tokens", 2}}.dump(), "application/json");
  ASSERT_TRUE(next) << httplib::to_string(next.error());
  EXPECT_EQ(next->status, 200) << next->body;
}

// Pages of an allowed origin may call the API from a browser (CORS): the preflight says what they
// may send, and every response (whole, streamed, an error) names the origin. Other origins get
// no such header, nor does anyone from a server that allows none (the default).
TEST_F(ServerTest, AllowedOriginsMayCallFromABrowser) {
  const httplib::Headers ask = {{"Origin", "http://ui.example"},
                                {"Access-Control-Request-Method", "POST"},
                                {"Access-Control-Request-Headers", "authorization, content-type"}};
  const auto from = [](const std::string& origin) { return httplib::Headers{{"Origin", origin}}; };
  const std::string whole = json{{"prompt", "x"}, {"max_tokens", 2}}.dump();
  const std::string stream = json{{"prompt", "x"}, {"max_tokens", 2}, {"stream", true}}.dump();
  const std::string allowed = "Access-Control-Allow-Origin";
  httplib::Result r = client().Options("/v1/chat/completions", ask);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 204);
  EXPECT_FALSE(r->has_header(allowed));
  r = client().Post("/v1/completions", from("http://ui.example"), whole, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_FALSE(r->has_header(allowed));

  start(model_options(), server::Server::kHttpThreads, {"http://ui.example"});
  r = client().Options("/v1/chat/completions", ask);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 204);
  EXPECT_EQ(r->get_header_value(allowed), "http://ui.example");
  EXPECT_EQ(r->get_header_value("Access-Control-Allow-Methods"), "GET, POST");
  EXPECT_EQ(r->get_header_value("Access-Control-Allow-Headers"), "authorization, content-type");
  for (const std::string& body : {whole, stream, json{{"prompt", "x"}, {"n", 0}}.dump()}) {
    r = client().Post("/v1/completions", from("http://ui.example"), body, "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->get_header_value(allowed), "http://ui.example") << body;
    EXPECT_EQ(r->get_header_value("Vary"), "Origin") << body;
    r = client().Post("/v1/completions", from("http://other.example"), body, "application/json");
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->has_header(allowed)) << body;
  }
  r = client().Get("/v1/nothing", from("http://ui.example"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->get_header_value(allowed), "http://ui.example");

  start(model_options(), server::Server::kHttpThreads, {"*"});
  r = client().Post("/v1/completions", from("http://any.example"), whole, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value(allowed), "*");
}

// A connection to the server with `request` written on it as is; -1 where that failed.
int send_raw(int port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) == 0 &&
      write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size()))
    return fd;
  close(fd);
  return -1;
}

// A completion request's bytes.
std::string completion_request(const json& body) {
  const std::string text = body.dump();
  return "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
         std::to_string(text.size()) + "\r\n\r\n" + text;
}

// What the server answers a request written as is (the connection closed after it).
std::string raw_exchange(int port, const std::string& request) {
  const int fd = send_raw(port, request);
  std::string answer;
  if (fd < 0) return answer;
  std::array<char, 4096> buf{};
  for (ssize_t n = 0; (n = read(fd, buf.data(), buf.size())) > 0;) answer.append(buf.data(), n);
  close(fd);
  return answer;
}

// A stream that waits for room in the cache is stopped once its client hangs up: it had waited
// for its first token to find the client gone, its prompt computed for nothing.
TEST_F(ServerTest, AStreamWaitingForRoomStopsWhenItsClientLeaves) {
  EngineOptions o = model_options();
  o.max_context = 4096;
  o.cache_tokens = 4096;
  start(o, server::Server::kHttpThreads);
  std::atomic<bool> held{true};
  std::thread holder([&] {  // (the whole cache, for 4,000 steps)
    post("/v1/completions", {{"prompt", "Hold"}, {"max_tokens", 4000}, {"ignore_eos", true}});
    held = false;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const int fd = send_raw(
      port_, completion_request({{"prompt", "Wait"}, {"max_tokens", 200}, {"stream", true}}));
  ASSERT_GE(fd, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  close(fd);
  for (int i = 0; i < 100 && server_->stopped_by_client() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(server_->stopped_by_client(), 1U);
  EXPECT_TRUE(held) << "the cache was free again before the stream was stopped";
  expect_logged(
      R"(127.0.0.1 "POST /v1/completions" 200 cmpl-# (stream): the client went away after )"
      R"(#.### s)");
  holder.join();
}

// A request whose client reset the connection while it waited for the HTTP thread is not
// computed: cpp-httplib leaves it without a peer address, so its socket could not be watched, and
// it had run in full for nobody.
TEST_F(ServerTest, ARequestResetWhileItWaitsForAThreadIsNotServed) {
  EngineOptions o = model_options();
  o.max_context = 4096;
  o.cache_tokens = 4096;
  start(o, 1);
  std::thread holder([&] {  // (the one HTTP thread)
    post("/v1/completions", {{"prompt", "Hold"}, {"max_tokens", 4000}, {"ignore_eos", true}});
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const int fd = send_raw(port_, completion_request({{"prompt", "Reset"}, {"max_tokens", 50}}));
  ASSERT_GE(fd, 0);
  const linger reset{1, 0};  // (closed with a reset, not a FIN)
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)), 0);
  close(fd);
  holder.join();
  expect_logged(R"(* "POST /v1/completions" - cmpl-#: the client went away before it was served)");
}

// A POST with no body (curl -X POST without data: no length, no chunks) is told so at once, on
// the generating paths and on the others (where it is a 405 or a 404).
TEST_F(ServerTest, APostWithoutABodyIsToldSo) {
  const auto answer = [&](const std::string& path) {
    return raw_exchange(port_,
                        "POST " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  };
  const std::string none = answer("/v1/completions");
  EXPECT_EQ(none.rfind("HTTP/1.1 400", 0), 0U) << none;
  EXPECT_NE(none.find("the request has no body: send a JSON object"), std::string::npos) << none;
  const std::string models = answer("/v1/models");
  EXPECT_EQ(models.rfind("HTTP/1.1 405", 0), 0U) << models;
  EXPECT_NE(models.find("/v1/models takes GET only"), std::string::npos) << models;
  const std::string nowhere = answer("/v1/nowhere");
  EXPECT_EQ(nowhere.rfind("HTTP/1.1 404", 0), 0U) << nowhere;
  EXPECT_NE(nowhere.find("no endpoint POST /v1/nowhere"), std::string::npos) << nowhere;
  for (const std::string method : {"PUT", "PATCH", "DELETE"}) {
    const std::string other = raw_exchange(
        port_, method + " /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(other.rfind("HTTP/1.1 405", 0), 0U) << other;
    EXPECT_NE(other.find("/v1/completions takes POST only"), std::string::npos) << other;
  }
  // ... and a POST to another path with a body: its body is read, so the connection serves on.
  httplib::Client c = client();
  EXPECT_EQ(c.Post("/v1/models", R"({"x": 1})", "application/json")->status, 405);
  EXPECT_EQ(
      c.Post("/v1/completions", R"({"prompt": "x", "max_tokens": 2})", "application/json")->status,
      200);
}

// A refusal names the field at fault as the error's param, as the API's do (clients show it);
// one of no field (not JSON, not an object) has none.
TEST_F(ServerTest, ARefusalNamesItsField) {
  const std::vector<std::pair<json, std::string>> cases = {
      {{{"prompt", "x"}, {"temperature", "hot"}}, "temperature"},  // the type
      {{{"prompt", "x"}, {"temperature", -1}}, "temperature"},     // the engine's range
      {{{"prompt", "x"}, {"temperature", 1}, {"top_p", 1.5}}, "top_p"},
      {{{"prompt", "x"}, {"temperature", 1}, {"min_p", 2}}, "min_p"},
      {{{"prompt", "x"}, {"n", 0}}, "n"},
      {{{"prompt", "x"}, {"frequency_penalty", 3}}, "frequency_penalty"},
      {{{"prompt", "x"}, {"presence_penalty", -3}}, "presence_penalty"},
      {{{"prompt", "x"}, {"repetition_penalty", 0}}, "repetition_penalty"},
      {{{"prompt", "x"}, {"stop", {""}}}, "stop"},
      {{{"prompt", "x"}, {"logit_bias", {{"5", 300}}}}, "logit_bias"},
      {{{"prompt", "x"}, {"seed", 1.5}}, "seed"},
      {{{"prompt", {1, 99999}}}, "prompt"},
      {{{"max_tokens", 3}}, "prompt"},
      {{{"prompt", json::array()}}, "prompt"},
      {{{"prompt", json::array({json::array()})}}, "prompt"},
      {{{"prompt", "x"}, {"suffix", "end"}}, "suffix"},
      {{{"prompt", "x"}, {"stream_options", {{"include_usage", 1}}}}, "include_usage"},
      // true or false for a number (the JSON library would read 1 or 0: temperature false ran
      // greedy), a logit_bias key or value of the wrong kind, each in its own words
      {{{"prompt", "x"}, {"temperature", false}}, "temperature"},
      {{{"prompt", "x"}, {"top_p", true}}, "top_p"},
      {{{"prompt", "x"}, {"presence_penalty", true}}, "presence_penalty"},
      {{{"prompt", "x"}, {"logit_bias", {{"5", false}}}}, "logit_bias"},
      {{{"prompt", "x"}, {"logit_bias", {{"five", 1}}}}, "logit_bias"},
      {{{"prompt", "x"}, {"logit_bias", {{" 7", 1}}}}, "logit_bias"}};  // (stoi skips the space)
  for (const auto& [body, param] : cases)
    EXPECT_EQ(post("/v1/completions", body, 400)["error"]["param"], param) << body;
  auto message = [&](const json& body) {
    return post("/v1/completions", body, 400)["error"]["message"].get<std::string>();
  };
  EXPECT_EQ(message({{"prompt", "x"}, {"temperature", false}}),
            "'temperature' must be a number, got false");
  EXPECT_EQ(message({{"prompt", "x"}, {"logit_bias", {{"5", "2"}}}}),
            "'logit_bias': the bias of token 5 must be a number, got \"2\"");
  EXPECT_EQ(message({{"prompt", "x"}, {"logit_bias", {{"five", 1}}}}),
            "'logit_bias': the key \"five\" is not a token id");
  // A whole number written 2.0 is a seed, as it is any other integer field's value.
  const json seeded = {{"prompt", "x"}, {"max_tokens", 3}, {"temperature", 1}, {"seed", 2}};
  json as_float = seeded;
  as_float["seed"] = 2.0;
  EXPECT_EQ(post("/v1/completions", as_float)["choices"][0]["token_ids"],
            post("/v1/completions", seeded)["choices"][0]["token_ids"]);
  EXPECT_EQ(post("/v1/chat/completions", {{"messages", "hi"}}, 400)["error"]["param"], "messages");
  // A role the chat template refuses names the messages too.
  EXPECT_EQ(post("/v1/chat/completions", {{"messages", {{{"role", "usr"}, {"content", "hi"}}}}},
                 400)["error"]["param"],
            "messages");
  EXPECT_TRUE(post("/v1/completions", json::array({1}), 400)["error"]["param"].is_null());
}

// curl -d sends its body as application/x-www-form-urlencoded, which cpp-httplib would cap at
// 8,192 bytes: the body is JSON whatever its Content-Type says.
TEST_F(ServerTest, AFormEncodedBodyOver8KbIsServed) {
  const json body = {{"prompt", "x"}, {"max_tokens", 2}, {"user", std::string(9000, 'u')}};
  const httplib::Result r =
      client().Post("/v1/completions", body.dump(), "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["usage"]["completion_tokens"], 2);
}

// A streamed request the engine refuses (a prompt longer than a sink cache's window) gets the
// 400 a whole one gets, not a 200 with an error event.
TEST_F(ServerTest, AStreamTheEngineRefusesIsA400) {
  EngineOptions o = model_options();
  o.sink_tokens = 4;
  o.window = 60;
  start(o, server::Server::kHttpThreads);
  const std::vector<int32_t> long_prompt(100, 7);
  for (const bool stream : {false, true}) {
    const json body = {{"prompt", long_prompt}, {"max_tokens", 16}, {"stream", stream}};
    const httplib::Result r = client().Post("/v1/completions", body.dump(), "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << r->body;
    EXPECT_NE(json::parse(r->body)["error"]["message"].get<std::string>().find(
                  "does not fit the sink(4+60) cache"),
              std::string::npos)
        << r->body;
  }
}

// Without a seed each request draws its own (the API's); with one, the same tokens every time.
TEST_F(ServerTest, WithoutASeedEachRequestSamplesAfresh) {
  json body = {{"prompt", "Once upon a time"}, {"max_tokens", 8}, {"ignore_eos", true}};
  const json a = post("/v1/completions", body)["choices"][0]["token_ids"];
  const json b = post("/v1/completions", body)["choices"][0]["token_ids"];
  EXPECT_NE(a, b);
  body["seed"] = 3;
  EXPECT_EQ(post("/v1/completions", body)["choices"][0]["token_ids"],
            post("/v1/completions", body)["choices"][0]["token_ids"]);
  // The API's seed is signed: a negative one is a seed like the others.
  body["seed"] = -1;
  const json negative = post("/v1/completions", body)["choices"][0]["token_ids"];
  EXPECT_EQ(post("/v1/completions", body)["choices"][0]["token_ids"], negative);
  body["seed"] = 3;
  EXPECT_NE(post("/v1/completions", body)["choices"][0]["token_ids"], negative);
}

// What OpenAI clients send and the API serves: top_p (or top_k, min_p) beside temperature 0,
// which is greedy and ignores them; top_p 0; the "developer" role, the system role's newer name; a
// model looked up by its id.
TEST_F(ServerTest, WhatApiClientsSendIsServed) {
  const json greedy = {{"prompt", "Once upon a time"}, {"max_tokens", 8}, {"temperature", 0}};
  json filtered = greedy;
  filtered["top_p"] = 0.9;
  filtered["top_k"] = 5;
  filtered["min_p"] = 0.1;
  EXPECT_EQ(post("/v1/completions", filtered)["choices"][0]["token_ids"],
            post("/v1/completions", greedy)["choices"][0]["token_ids"]);
  // top_p 0 keeps the likeliest token alone, whatever the temperature (it was refused).
  json nucleus = greedy;
  nucleus["temperature"] = 1.5;
  nucleus["top_p"] = 0;
  EXPECT_EQ(post("/v1/completions", nucleus)["choices"][0]["token_ids"],
            post("/v1/completions", greedy)["choices"][0]["token_ids"]);
  auto reply = [&](const std::string& role) {
    return post("/v1/chat/completions",
                {{"messages", json::array({{{"role", role}, {"content", "Be brief."}},
                                           {{"role", "user"}, {"content", "Hi"}}})},
                 {"max_tokens", 6},
                 {"temperature", 0}})["usage"]["prompt_tokens"];
  };
  EXPECT_EQ(reply("developer"), reply("system"));
  const httplib::Result model = client().Get("/v1/models/tiny");
  ASSERT_TRUE(model);
  EXPECT_EQ(model->status, 200);
  EXPECT_EQ(json::parse(model->body)["id"], "tiny");
  const httplib::Result other = client().Get("/v1/models/gpt-4o");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  EXPECT_EQ(json::parse(other->body)["error"]["message"],
            "no model 'gpt-4o' (this server serves 'tiny')");
}

// A body of several prompts of which the engine refuses one is a 400 at once: the prompts it took
// stop (before, the 400 came after they had run to their end).
TEST_F(ServerTest, ARefusedPromptStopsTheOthersOfItsRequest) {
  EngineOptions o = model_options();
  o.sink_tokens = 4;
  o.window = 60;
  start(o, server::Server::kHttpThreads);
  const std::string refusal =
      post("/v1/completions",
           {{"prompt", json::array({json::array({5, 6, 7}), json(std::vector<int>(100, 9))})},
            {"max_tokens", 200},
            {"ignore_eos", true}},
           400)["error"]["message"]
          .get<std::string>();
  EXPECT_NE(refusal.find("does not fit the sink(4+60) cache"), std::string::npos) << refusal;
  for (int i = 0; i < 600 && server_->stopped_by_client() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(server_->stopped_by_client(), 1U);  // the first prompt, stopped at its first token
}

TEST_F(ServerTest, BadRequestsGetAMessage) {
  const httplib::Result notjson = client().Post("/v1/completions", "{oops", "application/json");
  ASSERT_TRUE(notjson);
  EXPECT_EQ(notjson->status, 400);
  const std::string said = json::parse(notjson->body)["error"]["message"];
  EXPECT_TRUE(said.starts_with("the body is not JSON: parse error at line 1, column 2")) << said;
  auto message = [&](const json& body) {
    return post("/v1/completions", body, 400)["error"]["message"].get<std::string>();
  };
  EXPECT_NE(message({{"prompt", "x"}, {"n", 0}}).find("'n' must be an integer in [1, 16], got 0"),
            std::string::npos);
  EXPECT_NE(message({{"max_tokens", 3}}).find("'prompt' is required"), std::string::npos);
  EXPECT_NE(message({{"prompt", {1, 99999}}}).find("outside the vocabulary"), std::string::npos);
  EXPECT_EQ(message({{"prompt", json::array()}}), "'prompt' is empty: it has no tokens");
  EXPECT_EQ(message({{"prompt", {"a", ""}}}), "'prompt' is empty: it has no tokens");
  EXPECT_NE(message({{"prompt", "x"}, {"temperature", "hot"}}).find("'temperature'"),
            std::string::npos);
  // (refused in the API's words before the engine sees it)
  const std::string too_long = message({{"prompt", "x"}, {"max_tokens", 1000}});
  EXPECT_EQ(too_long.rfind("prompt (", 0), 0U) << too_long;
  EXPECT_NE(too_long.find("exceeds the context"), std::string::npos) << too_long;
  EXPECT_EQ(post("/v1/chat/completions",
                 {{"messages", json::array({{{"role", "assistant"},
                                             {"content", nullptr},
                                             {"tool_calls", json::array({{{"id", "c1"}}})}}})}},
                 400)["error"]["message"],
            "a message's 'tool_calls': tool and function calls are not served");
  EXPECT_NE(message({{"prompt", "x"}, {"stream_options", true}}).find("'stream_options'"),
            std::string::npos);
  EXPECT_NE(
      message({{"prompt", "x"}, {"logprobs", 50}}).find("'logprobs' must be an integer in [0, 20]"),
      std::string::npos);
  EXPECT_NE(message({{"prompt", "x"}, {"echo", true}, {"stream", true}}).find("streams"),
            std::string::npos);
  EXPECT_NE(message({{"prompt", "x"}, {"logit_bias", {{"x1", 3}}}}).find("is not a token id"),
            std::string::npos);
  EXPECT_NE(message({{"prompt", "x"}, {"logit_bias", {{"99999", 3}}}}).find("outside the vocab"),
            std::string::npos);
  EXPECT_NE(message({{"prompt", "x"}, {"logit_bias", {{"5", 300}}}}).find("[-100, 100]"),
            std::string::npos);
  EXPECT_NE(message({{"prompt", json::array({"a", json::array({1, 2})})}})
                .find("texts only or lists of token ids only"),
            std::string::npos);
  EXPECT_NE(message({{"prompt", json::array({json::array({1}), json::array({1, 99999})})}})
                .find("outside the vocabulary"),
            std::string::npos);
  EXPECT_NE(message({{"prompt", "x"}, {"max_tokens", 0}})
                .find("'max_tokens' must be an integer in [1, 2147483647], got 0"),
            std::string::npos);
  EXPECT_NE(
      post("/v1/chat/completions",
           {{"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})}, {"echo", true}},
           400)["error"]["message"]
          .get<std::string>()
          .find("'echo' is served for completions only"),
      std::string::npos);
  EXPECT_NE(post("/v1/chat/completions",
                 {{"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})},
                  {"top_logprobs", 2}},
                 400)["error"]["message"]
                .get<std::string>()
                .find("needs 'logprobs': true"),
            std::string::npos);
  EXPECT_NE(message({{"prompt", "x"}, {"stream_options", {{"include_usage", "yes"}}}})
                .find("'include_usage' has the wrong type: type must be boolean, but is string"),
            std::string::npos);
  EXPECT_NE(post("/v1/chat/completions", {{"messages", "hi"}}, 400)["error"]["message"]
                .get<std::string>()
                .find("'messages'"),
            std::string::npos);
  EXPECT_NE(
      post("/v1/chat/completions",
           {{"messages", json::array({{{"role", "system"}, {"content", "Be brief"}},
                                      {{"role", "usr"}, {"content", "Hi"}}})}},
           400)["error"]["message"]
          .get<std::string>()
          .find("chat message 1: unknown role 'usr' (expected system, user, assistant, tool or "
                "ipython)"),
      std::string::npos);
  // What would change the request and is not served is refused, not dropped.
  const json hi = json::array({{{"role", "user"}, {"content", "Hi"}}});
  auto chat_message = [&](json body) {
    body["messages"] = hi;
    return post("/v1/chat/completions", body, 400)["error"]["message"].get<std::string>();
  };
  const json tool = {{"type", "function"}, {"function", {{"name", "f"}}}};
  EXPECT_NE(chat_message({{"tools", json::array({tool})}}).find("'tools': tool and function"),
            std::string::npos);
  EXPECT_NE(chat_message({{"tool_choice", "required"}}).find("'tool_choice'"), std::string::npos);
  EXPECT_NE(chat_message({{"response_format", {{"type", "json_object"}}}}).find("no JSON mode"),
            std::string::npos);
  EXPECT_NE(post("/v1/chat/completions",
                 {{"messages", json::array({{{"role", "user"},
                                             {"content", json::array({{{"type", "image_url"},
                                                                       {"image_url", "x"}}})}}})}},
                 400)["error"]["message"]
                .get<std::string>()
                .find("no other kind is served"),
            std::string::npos);
  EXPECT_NE(message({{"prompt", "x"}, {"suffix", "end"}}).find("'suffix'"), std::string::npos);
  EXPECT_NE(message({{"prompt", "x"}, {"best_of", 3}}).find("'best_of'"), std::string::npos);
  EXPECT_NE(chat_message({{"modalities", {"text", "audio"}}, {"audio", {{"voice", "alloy"}}}})
                .find("only text output"),
            std::string::npos);
  EXPECT_NE(chat_message({{"web_search_options", json::object()}}).find("web search"),
            std::string::npos);
  // ... and their empty or neutral forms pass.
  const json neutral = {{"messages", hi},        {"max_tokens", 2},
                        {"ignore_eos", true},    {"tools", json::array()},
                        {"tool_choice", "none"}, {"response_format", {{"type", "text"}}},
                        {"modalities", {"text"}}};
  EXPECT_EQ(post("/v1/chat/completions", neutral)["usage"]["completion_tokens"], 2);
  EXPECT_EQ(
      post("/v1/completions",
           {{"prompt", "x"}, {"max_tokens", 2}, {"best_of", 1}})["usage"]["completion_tokens"],
      2);
  // Integer fields are whole numbers in their range, not wrapped or truncated: the message names
  // the field and the value sent.
  const std::vector<std::pair<json, std::string>> integers = {
      {{{"max_tokens", 4294967297}},
       "'max_tokens' must be an integer in [1, 2147483647], got 4294967297"},
      {{{"max_tokens", -4294967295}},
       "'max_tokens' must be an integer in [1, 2147483647], got -4294967295"},
      {{{"max_tokens", 2147483648}},
       "'max_tokens' must be an integer in [1, 2147483647], got 2147483648"},
      {{{"max_tokens", 1e10}},
       "'max_tokens' must be an integer in [1, 2147483647], got 10000000000.0"},
      {{{"max_tokens", 4.5}}, "'max_tokens' must be an integer in [1, 2147483647], got 4.5"},
      {{{"max_tokens", "4"}}, "'max_tokens' must be an integer in [1, 2147483647], got \"4\""},
      {{{"max_completion_tokens", 4294967297}}, "'max_completion_tokens' must be an integer"},
      {{{"n", 4294967297}}, "'n' must be an integer in [1, 16], got 4294967297"},
      {{{"logprobs", 4294967297}}, "'logprobs' must be an integer in [0, 20], got 4294967297"},
      {{{"top_k", -1}, {"temperature", 1}},
       "'top_k' must be an integer in [0, 2147483647], got -1"},
      {{{"seed", 1.5}}, "'seed' must be an integer in [-2^63, 2^64 - 1], got 1.5"}};
  for (const auto& [fields, want] : integers) {
    json body = fields;
    body["prompt"] = "x";
    EXPECT_NE(message(body).find(want), std::string::npos) << body << ": " << message(body);
  }
  EXPECT_NE(post("/v1/chat/completions",
                 {{"messages", hi}, {"logprobs", true}, {"top_logprobs", 4294967298}},
                 400)["error"]["message"]
                .get<std::string>()
                .find("'top_logprobs' must be an integer in [0, 20], got 4294967298"),
            std::string::npos);
  // ... and whole numbers written as such, or as floats, pass.
  EXPECT_EQ(
      post("/v1/completions", {{"prompt", "x"},
                               {"max_tokens", 2.0},
                               {"ignore_eos", true},
                               {"seed", 18446744073709551615ULL}})["usage"]["completion_tokens"],
      2);
  // A body nested deeper than any field is refused as it is read (a 200 KB one overflowed the
  // stack where its value was quoted in a message, or copied).
  for (const std::string& field : {std::string("max_tokens"), std::string("prompt")}) {
    const std::string deep =
        "{\"" + field + "\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
    const httplib::Result r = client().Post("/v1/completions", deep, "application/json");
    ASSERT_TRUE(r) << field;
    EXPECT_EQ(r->status, 400) << field;
    EXPECT_NE(json::parse(r->body)["error"]["message"].get<std::string>().find(
                  "the body nests deeper than 128 levels"),
              std::string::npos)
        << r->body;
  }
  // A body that is not UTF-8: a 400 whose message (quoting the bytes) is JSON.
  const httplib::Result bytes = client().Post(
      "/v1/completions", "{\"prompt\":\"\xff\xfe\",\"max_tokens\":2}", "application/json");
  ASSERT_TRUE(bytes);
  EXPECT_EQ(bytes->status, 400);
  EXPECT_NE(json::parse(bytes->body)["error"]["message"].get<std::string>().find("not JSON"),
            std::string::npos)
      << bytes->body;
  // The server still serves after them.
  EXPECT_EQ(
      post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 2}})["usage"]["completion_tokens"],
      2);
}

}  // namespace
}  // namespace nanoinfer
