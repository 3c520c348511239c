// Writes the fuzz targets' starting corpora under the directory given: DIR/<target>/<seed>. The
// model files come from fuzz_models.h, the tokenizer.json files are the test data's, cut to their
// first 400 ids, fuzz_generate's from tests/data/fuzz/generate; `make fuzz` adds the test data's
// configs and texts.
#include <filesystem>
#include <fstream>
#include <set>

#include "fuzz_models.h"

using nanoinfer::test::write_file;
using nlohmann::json;

namespace {

// A tokenizer.json with the ids below `keep` only: the merges among them, and the added tokens
// renumbered after them.
std::string cut_tokenizer(const std::string& path, int keep) {
  json j = json::parse(std::ifstream(path));
  json& model = j["model"];
  json vocab = json::object();
  std::set<std::string> kept;
  for (const auto& [piece, id] : model["vocab"].items())
    if (id.get<int>() < keep) {
      vocab[piece] = id;
      kept.insert(piece);
    }
  json merges = json::array();
  for (const json& m : model["merges"]) {
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      a = s.substr(0, s.find(' '));
      b = s.substr(s.find(' ') + 1);
    } else {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    }
    if (kept.count(a) && kept.count(b) && kept.count(a + b)) merges.push_back(m);
  }
  model["vocab"] = vocab;
  model["merges"] = merges;
  json added = json::array();
  int next = keep;
  for (json t : j["added_tokens"]) {
    if (t["id"].get<int>() >= keep) t["id"] = next++;
    if (added.size() < 8) added.push_back(t);
  }
  j["added_tokens"] = added;
  return j.dump();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  auto seed = [&](const std::string& target, const std::string& name, const std::string& bytes) {
    std::filesystem::create_directories(dir / target);
    write_file((dir / target / name).string(), bytes);
  };
  seed("fuzz_gguf", "bpe.gguf", nanoinfer::fuzz::micro_gguf(false));
  seed("fuzz_gguf", "sentencepiece.gguf", nanoinfer::fuzz::micro_gguf(true));
  seed("fuzz_safetensors", "micro.safetensors", nanoinfer::fuzz::micro_safetensors());
  seed("fuzz_hf_config", "micro.json", nanoinfer::fuzz::micro_config_json());
  for (const char* name : {"llama3", "smollm2", "llama2"})
    seed(
        "fuzz_tokenizer_json", std::string(name) + ".json",
        cut_tokenizer(std::string(NI_FUZZ_DATA_DIR "/tokenizer/") + name + "/tokenizer.json", 400));
  const char* bodies[] = {
      R"({"prompt": "Hello", "max_tokens": 4, "temperature": 0.5, "top_p": 0.9, "stop": ["x"]})",
      R"({"prompt": [[1, 2], [3]], "n": 2, "logprobs": 3, "echo": true, "seed": 7})",
      R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
          "logprobs": true, "top_logprobs": 2, "stream": true,
          "stream_options": {"include_usage": true}, "logit_bias": {"5": -100}})",
      R"({"prompt": "a", "top_k": 3, "min_p": 0.1, "repetition_penalty": 1.2,
          "presence_penalty": 0.5, "frequency_penalty": 0.5, "ignore_eos": true})",
      R"({"prompt": ["ab", "c"], "n": 2, "max_tokens": 3, "temperature": 0.8, "stream": true,
          "logprobs": 2, "stream_options": {"include_usage": true}})"};
  int i = 0;
  for (const char* b : bodies) seed("fuzz_request", std::to_string(i++) + ".json", b);
  // Requests that run (not refused), picked from random candidates to cover the four engines,
  // online and whole runs, sampling, beams, logprobs, stop strings, biases and suppressed tokens.
  std::filesystem::create_directories(dir / "fuzz_generate");
  for (const auto& f : std::filesystem::directory_iterator(NI_FUZZ_DATA_DIR "/fuzz/generate"))
    std::filesystem::copy_file(f.path(), dir / "fuzz_generate" / f.path().filename(),
                               std::filesystem::copy_options::overwrite_existing);
  return 0;
}
