// A HF directory whose config.json holds arbitrary bytes (weights: the micro model of
// fuzz_models.h): loading it and an engine generating two tokens either work or throw
// nanoinfer::Error.
#include "fuzz_models.h"
#include "fuzz_util.h"
#include "loader/model_loader.h"
#include "nanoinfer/engine.h"

using namespace nanoinfer;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool written = [] {
    const std::string b = fuzz::micro_safetensors();
    fuzz::write_input("model.safetensors", reinterpret_cast<const uint8_t*>(b.data()), b.size());
    return true;
  }();
  (void)written;
  fuzz::write_input("config.json", data, size);
  const std::string dir = fuzz::scratch_dir().string();
  if (!fuzz::refused_clearly([&] { load_model(dir); })) return 0;
  fuzz::refused_clearly([&] {
    EngineOptions o;
    o.model = dir;
    o.max_context = 32;
    Engine engine(o);
    GenerationRequest r;
    r.prompt_ids = {0, 1};
    r.params.max_new_tokens = 2;
    engine.generate({r});
  });
  return 0;
}
