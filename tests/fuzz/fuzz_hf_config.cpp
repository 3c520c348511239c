// A HF directory whose config.json holds arbitrary bytes (weights: the micro model of
// fuzz_models.h): loading it and an engine generating two tokens either work or throw
// nanoinfer::Error.
#include "fuzz_models.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nanoinfer::fuzz::hf_dir_with("config.json", data, size);
  return 0;
}
