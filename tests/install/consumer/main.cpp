// consumer MODEL ID...: the greedy continuation (8 tokens) of the prompt ids, space-separated.
#include <nanoinfer/engine.h>

#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: consumer MODEL ID...\n");
    return 2;
  }
  try {
    nanoinfer::EngineOptions options;
    options.model = argv[1];
    nanoinfer::Engine engine(options);
    nanoinfer::GenerationRequest request;
    for (int i = 2; i < argc; ++i) request.prompt_ids.push_back(std::stoi(argv[i]));
    request.params.max_new_tokens = 8;
    request.params.ignore_eos = true;
    const std::vector<nanoinfer::GenerationOutput> out = engine.generate({request});
    for (const int id : out[0].token_ids) std::printf("%d ", id);
    std::printf("\n");
  } catch (const nanoinfer::Error& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
  return 0;
}
