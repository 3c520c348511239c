// A GGUF file of arbitrary bytes: loading it (as stored and dequantised), its tokenizer, and an
// engine over it generating two tokens either work or throw nanoinfer::Error.
#include "fuzz_models.h"
#include "nanoinfer/tokenizer.h"

using namespace nanoinfer;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input("model.gguf", data, size);
  fuzz::refused_clearly([&] {
    const LoadedModel m = load_model(path, {.dequantize = false});
    auto tok = load_tokenizer_gguf(*m.gguf);
    tok->decode(tok->encode("Hello, world"));
  });
  fuzz::load_and_generate(path);  // dequantised
  return 0;
}
