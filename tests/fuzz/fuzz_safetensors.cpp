// A HF directory whose model.safetensors holds arbitrary bytes (config.json: the micro model of
// fuzz_models.h): loading it and an engine generating two tokens either work or throw
// nanoinfer::Error.
#include "fuzz_models.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nanoinfer::fuzz::hf_dir_with("model.safetensors", data, size);
  return 0;
}
