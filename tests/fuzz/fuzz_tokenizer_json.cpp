// A tokenizer.json of arbitrary bytes: loading it, encoding a text of every kind of character and
// decoding ids either work or throw nanoinfer::Error; what encodes is in the vocabulary.
#include <algorithm>

#include "fuzz_util.h"
#include "nanoinfer/tokenizer.h"

using namespace nanoinfer;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input("tokenizer.json", data, size);
  fuzz::refused_clearly([&] {
    const auto tok = load_tokenizer_json(path);
    const std::vector<int32_t> ids = tok->encode(
        "Hello, world! 123 4567 <s> </s> <|x|> \xc3\xbcn\xc3\xaf \xe2\x96\x81\t\n\n  x"
        "'s \xf0\x9f\x98\x80 \xff\xfe a");
    for (int32_t id : ids)
      fuzz::check(id >= 0 && id < tok->vocab_size(), "encode gave an id outside the vocabulary");
    tok->decode(ids);
    IncrementalDetokenizer inc(*tok, false);
    for (int32_t id = 0; id < std::min(tok->vocab_size(), 300); ++id) inc.push(id);
    inc.flush();
  });
  return 0;
}
