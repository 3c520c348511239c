// A GGUF file of arbitrary bytes: loading it (as stored and dequantised), its tokenizer, and an
// engine over it generating two tokens either work or throw nanoinfer::Error.
#include "fuzz_util.h"
#include "loader/model_loader.h"
#include "nanoinfer/engine.h"
#include "nanoinfer/tokenizer.h"

using namespace nanoinfer;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input("model.gguf", data, size);
  bool loads = false;
  fuzz::refused_clearly([&] {
    const LoadedModel m = load_model(path, {.dequantize = false});
    loads = true;
    auto tok = load_tokenizer_gguf(*m.gguf);
    tok->decode(tok->encode("Hello, world"));
  });
  if (!loads) return 0;
  fuzz::refused_clearly([&] { load_model(path); });
  fuzz::refused_clearly([&] {
    EngineOptions o;
    o.model = path;
    o.max_context = 32;
    Engine engine(o);
    GenerationRequest r;
    r.prompt_ids = {0, 1};
    r.params.max_new_tokens = 2;
    engine.generate({r});
  });
  return 0;
}
