// An HTTP body of arbitrary bytes for /v1/completions and /v1/chat/completions, served as the
// server serves it by an engine over the micro model of fuzz_models.h with SmolLM2's vocabulary,
// tokenizer and chat template: parse_request and the sampling parameters' check either work or
// throw nanoinfer::Error (the server's 400); what they give is submitted (an Error: a 400 too) and
// run to the end, and its response, or its stream's chunks, must be JSON that dumps strictly.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "fuzz_models.h"
#include "server/openai.h"

using namespace nanoinfer;

namespace {

Engine& engine() {
  static const std::unique_ptr<Engine> e = [] {
    const std::filesystem::path dir = fuzz::scratch_dir() / "smol";
    std::filesystem::create_directories(dir);
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
      std::filesystem::copy_file(std::string(NI_FUZZ_DATA_DIR "/tokenizer/smollm2/") + f, dir / f,
                                 std::filesystem::copy_options::overwrite_existing);
    ModelConfig c = fuzz::micro_config();
    c.vocab_size = 49152;
    c.tie_word_embeddings = true;
    test::write_file((dir / "config.json").string(), test::tiny_config_json(c).dump());
    const auto shapes = expected_weight_shapes(c);
    std::vector<test::StTensor> tensors;
    for (const auto& [name, v] : test::tiny_weights(c))
      tensors.push_back({name, "F32", shapes.at(name), test::f32_bytes(v)});
    test::write_file((dir / "model.safetensors").string(), test::safetensors_bytes(tensors));
    EngineOptions o;
    o.model = dir.string();
    o.max_context = 64;
    return std::make_unique<Engine>(o);
  }();
  return *e;
}

// The requests of one body (its choices), as the server runs them: submitted, stepped to the
// end, each token of a stream a chunk of its choice, then each choice's last chunk and, where
// asked for, the usage; or the whole response.
void serve(std::vector<server::ApiRequest>& reqs) {
  Engine& e = engine();
  const Tokenizer* tok = e.tokenizer();
  const server::ResponseId id{"cmpl-1", "micro", 0};
  const size_t n = reqs.size();
  std::vector<GenerationOutput> outs(n);
  // Per choice, as the server keeps them: its text offset, text and ids streamed, first chunk.
  std::vector<size_t> offset(n, 0), text_sent(n, 0), ids_sent(n, 0);
  std::vector<char> first(n, 1);
  size_t submitted = 0;
  fuzz::refused_clearly([&] {
    for (; submitted < n; ++submitted) {
      const size_t i = submitted;
      e.submit(
          reqs[i].request,
          [&, i](size_t rid, int32_t t, const std::string& text) {
            if (!reqs[i].stream) return true;
            const std::vector<TokenLogprobs>& lp = e.progress(rid)->logprobs;
            const auto entries = lp.empty() ? std::span<const TokenLogprobs>()
                                            : std::span<const TokenLogprobs>(&lp.back(), 1);
            server::chunk(reqs[i], id, i, text, std::span<const int32_t>(&t, 1), entries, "",
                          first[i] != 0, tok, offset[i])
                .dump();
            first[i] = 0;
            text_sent[i] += text.size();
            ++ids_sent[i];
            return true;
          },
          [&outs, i](size_t, GenerationOutput&& o) { outs[i] = std::move(o); });
    }
  });
  while (e.step()) {
  }
  if (submitted < n) return;  // refused: a 400 (those before it ran to the end)
  if (!reqs.front().stream) {
    const std::string body = server::response(reqs, id, outs, tok).dump();
    if (std::getenv("NI_FUZZ_PRINT") != nullptr)
      std::fprintf(stderr, "response: %s\n", body.c_str());
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    const GenerationOutput& o = outs[i];
    const size_t from = std::min(ids_sent[i], o.token_ids.size());
    server::chunk(
        reqs[i], id, i, o.text.size() > text_sent[i] ? o.text.substr(text_sent[i]) : "",
        std::span<const int32_t>(o.token_ids).subspan(from),
        std::span<const TokenLogprobs>(o.logprobs).subspan(std::min(from, o.logprobs.size())),
        o.finish_reason, first[i] != 0, tok, offset[i])
        .dump();
  }
  if (reqs.front().stream_usage) server::usage_chunk(reqs, id, outs).dump();
  if (std::getenv("NI_FUZZ_PRINT") != nullptr) {
    size_t chunks = 0;
    for (size_t sent : ids_sent) chunks += sent;
    std::fprintf(stderr, "streamed %zu choices, %zu token chunks\n", n, chunks);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Engine& e = engine();
  const nlohmann::json body = nlohmann::json::parse(data, data + size, nullptr, false);
  if (body.is_discarded()) return 0;
  for (bool chat : {false, true}) {
    std::vector<server::ApiRequest> reqs;
    if (fuzz::refused_clearly([&] {
          reqs = server::parse_request(body, chat, e);
          for (const server::ApiRequest& r : reqs) r.request.params.validate();
        }))
      fuzz::refused_clearly([&] { serve(reqs); });
  }
  return 0;
}
