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

// The requests of one body, as the server runs them: submitted, stepped to the end, each token
// of a stream a chunk, then the last chunk and the usage, or the whole response.
void serve(std::vector<server::ApiRequest>& reqs) {
  Engine& e = engine();
  const Tokenizer* tok = e.tokenizer();
  const server::ResponseId id{"cmpl-1", "micro", 0};
  std::vector<GenerationOutput> outs(reqs.size());
  size_t offset = 0, streamed = 0;
  bool first = true;
  size_t submitted = 0;
  fuzz::refused_clearly([&] {
    for (; submitted < reqs.size(); ++submitted) {
      server::ApiRequest& r = reqs[submitted];
      e.submit(
          r.request,
          [&](size_t rid, int32_t t, const std::string& text) {
            if (!r.stream) return true;
            const std::vector<TokenLogprobs>& lp = e.progress(rid)->logprobs;
            const auto entries = lp.empty() ? std::span<const TokenLogprobs>()
                                            : std::span<const TokenLogprobs>(&lp.back(), 1);
            server::chunk(r, id, text, std::span<const int32_t>(&t, 1), entries, "", first, tok,
                          offset)
                .dump();
            first = false;
            ++streamed;
            return true;
          },
          [&outs, i = submitted](size_t, GenerationOutput&& o) { outs[i] = std::move(o); });
    }
  });
  while (e.step()) {
  }
  if (submitted < reqs.size()) return;  // refused: a 400 (those before it ran to the end)
  if (reqs.front().stream) {
    const GenerationOutput& o = outs.front();
    const size_t from = std::min(streamed, o.token_ids.size());
    server::chunk(
        reqs.front(), id, "", std::span<const int32_t>(o.token_ids).subspan(from),
        std::span<const TokenLogprobs>(o.logprobs).subspan(std::min(from, o.logprobs.size())),
        o.finish_reason, first, tok, offset)
        .dump();
    server::usage_chunk(reqs.front(), id, o).dump();
  } else {
    const std::string body = server::response(reqs, id, outs, tok).dump();
    if (std::getenv("NI_FUZZ_PRINT") != nullptr)
      std::fprintf(stderr, "response: %s\n", body.c_str());
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
          reqs = server::parse_request(body, chat, e.tokenizer(), e.config().vocab_size,
                                       e.max_context());
          for (const server::ApiRequest& r : reqs) r.request.params.validate();
        }))
      fuzz::refused_clearly([&] { serve(reqs); });
  }
  return 0;
}
