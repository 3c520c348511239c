// An HTTP body of arbitrary bytes for /v1/completions and /v1/chat/completions (the SmolLM2
// tokenizer and its chat template): parse_request and the sampling parameters' check of what it
// gives either work or throw nanoinfer::Error, the server's 400.
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "nanoinfer/tokenizer.h"
#include "server/openai.h"

using namespace nanoinfer;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto tok = load_tokenizer_json(NI_FUZZ_DATA_DIR "/tokenizer/smollm2/tokenizer.json");
  const nlohmann::json body = nlohmann::json::parse(data, data + size, nullptr, false);
  if (body.is_discarded()) return 0;
  for (bool chat : {false, true})
    fuzz::refused_clearly([&] {
      for (const server::ApiRequest& r :
           server::parse_request(body, chat, tok.get(), tok->vocab_size(), 64))
        r.request.params.validate();
    });
  return 0;
}
