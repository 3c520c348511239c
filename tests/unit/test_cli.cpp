// The command line as a user meets it: every user error ends with exit code != 0 and one line on
// stderr that names the problem; a tokenizer-less checkpoint generates from --prompt-ids and the
// JSON carries HF's greedy ids.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "nanoinfer/engine.h"
#include "nanoinfer/tokenizer.h"
#include "test_paths.h"

namespace nanoinfer {
namespace {

struct CliRun {
  int code = -1;
  std::string out, err;
};

// Runs the CLI with `input` as its standard input; `shell` runs before it (a ulimit...).
CliRun run_cli(const std::string& args, const std::string& input = "",
               const std::string& shell = "") {
  // (per process: two test runs at once, a sanitizer's beside a plain one, read each other's)
  const std::string tag = std::to_string(getpid());
  const std::string err_file = ::testing::TempDir() + "/nanoinfer_cli_stderr_" + tag + ".txt";
  const std::string in_file = ::testing::TempDir() + "/nanoinfer_cli_stdin_" + tag + ".txt";
  std::ofstream(in_file) << input;
  const std::string cmd =
      shell + std::string(NI_CLI) + " " + args + " <" + in_file + " 2>" + err_file;
  CliRun r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err_file);
  r.err.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return r;
}

const std::string kTiny = test::data_path("models/gqa");

struct BadArgs {
  const char* name;
  std::string args;
  const char* message;
};
class CliErrors : public ::testing::TestWithParam<BadArgs> {};

TEST_P(CliErrors, ExitNonZeroWithOneLineNamingTheProblem) {
  const CliRun r = run_cli(GetParam().args);
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.out, "");
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;  // exactly one line
  EXPECT_NE(r.err.find(GetParam().message), std::string::npos) << r.err;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CliErrors,
    ::testing::Values(
        BadArgs{"unknown_command", "frobnicate", "unknown command 'frobnicate'"},
        BadArgs{"a_flag_twice",
                "generate --model " + kTiny + " --prompt-ids 1 --temperature 0.5 --temperature 1",
                "--temperature: given 2 times (it takes one value)"},
        BadArgs{"no_command", "", "a command is needed (generate, chat,"},
        BadArgs{"flag_before_command", "--model x generate",
                "a command comes before '--model' (generate, chat,"},
        BadArgs{"unknown_flag", "generate --model " + kTiny + " --bogus", "--bogus"},
        BadArgs{"missing_model", "generate --model /nonexistent/m.gguf --prompt-ids 1",
                "/nonexistent/m.gguf"},
        BadArgs{"zero_new_tokens",
                "generate --model " + kTiny + " --prompt-ids 1 --max-new-tokens 0",
                "expected a whole number from 1"},
        BadArgs{"word_new_tokens",
                "generate --model " + kTiny + " --prompt-ids 1 --max-new-tokens abc", "'abc'"},
        BadArgs{"word_temperature",
                "generate --model " + kTiny + " --prompt-ids 1 --temperature abc",
                "--temperature: expected a number, got 'abc'"},
        BadArgs{"negative_seed", "generate --model " + kTiny + " --prompt-ids 1 --seed -5", "'-5'"},
        BadArgs{"negative_temperature",
                "generate --model " + kTiny + " --prompt-ids 1 --temperature -1", "temperature"},
        BadArgs{"top_p_above_one", "generate --model " + kTiny + " --prompt-ids 1 --top-p 1.5",
                "top_p"},
        BadArgs{"zero_beams", "generate --model " + kTiny + " --prompt-ids 1 --num-beams 0",
                "num_beams"},
        BadArgs{"stray_word_after_prompt", "generate --model " + kTiny + " --prompt-ids 1 extra",
                "extra"},
        BadArgs{"bad_ids", "generate --model " + kTiny + " --prompt-ids 1,x", "'x'"},
        BadArgs{"id_outside_vocabulary", "generate --model " + kTiny + " --prompt-ids 1,384",
                "outside the vocabulary"},
        BadArgs{"text_without_tokenizer", "generate --model " + kTiny + " --prompt hi",
                "no tokenizer.json"},
        BadArgs{"no_prompt", "generate --model " + kTiny, "no prompt given"},
        // (the port asked, not -1, and why: the name was not found)
        BadArgs{"unknown_host", "serve --model " + kTiny + " --host nonexistent.invalid --port 0",
                "cannot listen on nonexistent.invalid (any free port): "},
        BadArgs{"no_model", "generate --prompt-ids 1", "no model given"},
        BadArgs{"random_weights_text_prompt",
                "generate --random-weights --config " + kTiny + "/config.json --prompt hi",
                "random weights without --model have no tokenizer"},
        BadArgs{"random_weights_without_config", "generate --random-weights --prompt-ids 1",
                "random_weights (--random-weights) needs config (--config FILE"},
        BadArgs{"empty_memory_trace",
                "generate --model " + kTiny + " --prompt-ids 1 --memory-trace ''",
                "--memory-trace: must not be empty"},
        BadArgs{"unwritable_memory_trace",
                "generate --model " + kTiny + " --prompt-ids 1 --memory-trace /nonexistent/d/t.csv",
                "/nonexistent/d/t.csv: cannot write the memory trace"},
        BadArgs{"bench_beyond_the_context", "bench --model " + kTiny + " --prompt-tokens 100000",
                "prompt (100000 tokens) leaves no room for a new token in the context"},
        // Output that a full disk lost is an error, not exit 0.
        BadArgs{
            "output_to_a_full_disk",
            "generate --model " + kTiny + " --prompt-ids 1 --max-new-tokens 2 --json >/dev/full",
            "writing the output failed (No space left on device)"},
        BadArgs{"memory_trace_to_a_full_disk",
                "generate --model " + kTiny +
                    " --prompt-ids 1 --max-new-tokens 2 --memory-trace /dev/full",
                "/dev/full: write failed"},
        BadArgs{"config_without_random_weights",
                "generate --model " + kTiny + " --prompt-ids 1 --config " + kTiny + "/config.json",
                "config (--config FILE) is read with random_weights (--random-weights) only"},
        BadArgs{"logprobs_without_json",
                "generate --model " + kTiny + " --prompt-ids 1 --logprobs 2",
                "--logprobs: the log-probabilities come with --json"},
        BadArgs{"perplexity_without_tokenizer",
                "perplexity " + test::data_path("prompts/summary_prompt.txt") + " --model " +
                    kTiny + " --context 64",
                "perplexity needs a model with a tokenizer"},
        BadArgs{"perplexity_unreadable_text", "perplexity /nonexistent.txt --model " + kTiny,
                "/nonexistent.txt: cannot read the text"},
        BadArgs{"perplexity_context_without_room",
                "perplexity " + test::data_path("prompts/summary_prompt.txt") +
                    " --random-weights --config " + kTiny + "/config.json --model " +
                    test::data_path("tokenizer/smollm2") + " --context 64 --max-context 64",
                "--context 64 needs --max-context 65 or more"},
        BadArgs{"logit_bias_without_bias",
                "generate --model " + kTiny + " --prompt-ids 1 --logit-bias 5",
                "--logit-bias: expected ID=BIAS (e.g. 13=-100), got '5'"},
        BadArgs{"logit_bias_outside_vocabulary",
                "generate --model " + kTiny + " --prompt-ids 1 --logit-bias 400=1",
                "logit_bias: id 400 is outside the vocabulary"},
        BadArgs{"chat_without_tokenizer", "chat --model " + kTiny,
                "chat needs a model with a tokenizer"},
        // Each special-token flag belongs to one direction.
        BadArgs{"no_special_with_decode", "tokenize --model " + kTiny + " --decode 1 --no-special",
                "--decode excludes --no-special"},
        BadArgs{"skip_special_without_decode",
                "tokenize --model " + kTiny + " --text hi --skip-special",
                "--skip-special requires --decode"},
        BadArgs{"missing_tokenizer_file", "tokenize --tokenizer /nonexistent.json --text hi",
                "/nonexistent.json"},
        // A context beyond the model's positions (256 here) is refused, as perplexity's is.
        BadArgs{"generate_beyond_positions",
                "generate --model " + kTiny + " --prompt-ids 1 --max-context 300",
                "--max-context 300 exceeds the model's 256 positions"},
        // ... before the model is built: a context whose RoPE table alone would not fit in
        // memory gets the same message, not an out-of-memory one.
        BadArgs{"generate_far_beyond_positions",
                "generate --model " + kTiny + " --prompt-ids 1 --max-context 2000000000",
                "--max-context 2000000000 exceeds the model's 256 positions"},
        // The pool starts every HTTP thread at once: tens of thousands exhaust the process limit.
        BadArgs{"serve_too_many_http_threads",
                "serve --model " + kTiny + " --port 0 --http-threads 65536",
                "--http-threads: expected a whole number from 1 to 4096"},
        BadArgs{"serve_beyond_positions", "serve --model " + kTiny + " --port 0 --max-context 300",
                "--max-context 300 exceeds the model's 256 positions"},
        // serve takes the sink cache's flags, and the cache's own checks: asked for post-RoPE keys
        // (pre-RoPE is what --sink-tokens implies), it is refused.
        BadArgs{
            "serve_sink_cache_post_rope",
            "serve --model " + kTiny + " --port 0 --rope-cache post --sink-tokens 4 --window 60",
            "keys must be rotated on read: use the pre-RoPE cache"},
        // chat takes them too (--rope-cache after --sink-tokens wins all the same).
        BadArgs{"chat_sink_cache_post_rope",
                "chat --model " + kTiny + " --sink-tokens 4 --window 60 --rope-cache post",
                "keys must be rotated on read: use the pre-RoPE cache"},
        BadArgs{"sink_tokens_negative", "chat --model " + kTiny + " --sink-tokens -5 --window 60",
                "--sink-tokens: expected a whole number from 0"},
        BadArgs{"chat_beyond_positions", "chat --model " + kTiny + " --max-context 300",
                "--max-context 300 exceeds the model's 256 positions"},
        BadArgs{"bench_beyond_positions", "bench --model " + kTiny + " --max-context 300",
                "--max-context 300 exceeds the model's 256 positions"},
        BadArgs{"perplexity_beyond_positions",
                "perplexity " + test::data_path("prompts/summary_prompt.txt") +
                    " --random-weights --config " + kTiny + "/config.json --model " +
                    test::data_path("tokenizer/smollm2") + " --context 300",
                "--context 300 exceeds the model's"},
        // A flag where an option's value should be is refused: CLI11 took it as the value.
        BadArgs{"flag_as_prompt", "generate --model " + kTiny + " --prompt --json",
                "--prompt: its value is missing (--json is a flag)"},
        BadArgs{"flag_as_stop", "generate --model " + kTiny + " --prompt-ids 1 --stop --stats",
                "--stop: its value is missing (--stats is a flag)"},
        BadArgs{"flag_as_system", "chat --model " + kTiny + " --system --max-new-tokens 2",
                "--system: its value is missing (--max-new-tokens is a flag)"},
        BadArgs{"flag_as_text", "tokenize --model " + kTiny + " --text --json",
                "--text: its value is missing (--json is a flag)"},
        BadArgs{"serve_no_model", "serve --port 0",
                "no model given: use --model PATH|default, or --random-weights --config FILE"},
        BadArgs{"serve_empty_name", "serve --model " + kTiny + " --served-model-name ''",
                "--served-model-name: must not be empty"},
        BadArgs{"prompts_file_stdin_twice",
                "generate --model " + kTiny + " --prompts-file - --prompts-file -",
                "--prompts-file -: standard input is read once, so give it once"},
        // A directory where a file is read is named as one.
        BadArgs{"prompts_file_directory",
                "generate --model " + kTiny + " --prompts-file " + test::data_path("models"),
                "cannot read the prompts file (a directory)"},
        BadArgs{"perplexity_text_directory",
                "perplexity " + test::data_path("models") + " --model " + kTiny,
                "cannot read the text (a directory)"},
        BadArgs{"tokenize_text_file_directory",
                "tokenize --tokenizer " + test::data_path("tokenizer/smollm2/tokenizer.json") +
                    " --text-file " + test::data_path("models"),
                "cannot read --text-file (a directory)"}),
    [](const auto& info) { return std::string(info.param.name); });

// A command that runs the CPU backend starts again with GOMP_SPINCOUNT=1000 where the user set
// neither GOMP_SPINCOUNT nor OMP_WAIT_POLICY (engine_flags.cpp), and only then: libgomp's own
// report of its settings (OMP_DISPLAY_ENV) comes once per start, the last one holding the value
// in effect; the command's output comes once.
TEST(Cli, CpuCommandsRunWithAShortOpenMpSpin) {
  auto spins = [](const CliRun& r) {
    std::vector<std::string> got;
    const std::string key = "GOMP_SPINCOUNT = '";
    for (size_t at = r.err.find(key); at != std::string::npos; at = r.err.find(key, at + 1))
      got.push_back(
          r.err.substr(at + key.size(), r.err.find('\'', at + key.size()) - at - key.size()));
    return got;
  };
  const std::string show = "export OMP_DISPLAY_ENV=verbose; unset GOMP_SPINCOUNT OMP_WAIT_POLICY; ";
  const std::string gen = "generate --model " + kTiny + " --prompt-ids 1,2 --max-new-tokens 3";
  const CliRun plain = run_cli(gen, "", show);
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_EQ(spins(plain), (std::vector<std::string>{"300000", "1000"})) << plain.err;
  EXPECT_EQ(run_cli(gen).out, plain.out);  // the same tokens, printed once
  const CliRun chosen = run_cli(gen, "", show + "export GOMP_SPINCOUNT=5; ");
  EXPECT_EQ(spins(chosen), (std::vector<std::string>{"5"})) << chosen.err;
  const CliRun policy = run_cli(gen, "", show + "export OMP_WAIT_POLICY=active; ");
  EXPECT_EQ(spins(policy).size(), 1U) << policy.err;
  // No CPU backend: no second start.
  const CliRun cuda = run_cli(gen + " --backend cuda", "", show);
  EXPECT_EQ(spins(cuda), (std::vector<std::string>{"300000"})) << cuda.err;
  const CliRun tokenize = run_cli(
      "tokenize --tokenizer " + test::data_path("tokenizer/smollm2/tokenizer.json") + " --text hi",
      "", show);
  EXPECT_EQ(spins(tokenize), (std::vector<std::string>{"300000"})) << tokenize.err;
}

// HF's decode of the golden ids, and of no ids at all (empty text, not an encoding of "").
TEST(Cli, VersionAndHelpExitZero) {
  const CliRun version = run_cli("--version");
  EXPECT_EQ(version.code, 0);
  EXPECT_EQ(version.out, std::string(NANOINFER_VERSION) + "\n");
  const CliRun help = run_cli("--help");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("perplexity"), std::string::npos) << help.out;
}

TEST(Cli, TokenizeDecodesIdsAndTheEmptyList) {
  std::ifstream in(test::data_path("tokenizer/golden_smollm2.json"));
  const nlohmann::json golden = nlohmann::json::parse(in);
  const std::string tok =
      "tokenize --tokenizer " + test::data_path("tokenizer/smollm2/tokenizer.json");
  const auto& cases = golden["cases"];
  const auto it = std::find_if(cases.begin(), cases.end(),
                               [](const nlohmann::json& g) { return g["ids"].size() >= 8; });
  ASSERT_NE(it, cases.end());
  const nlohmann::json& c = *it;
  std::string ids;
  for (const auto& id : c["ids"]) ids += (ids.empty() ? "" : ",") + std::to_string(int{id});
  CliRun r = run_cli(tok + " --json --decode " + ids);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["text"], c["decode"]);
  r = run_cli(tok + " --json --decode ''");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["text"], "");
  // --text-file - encodes standard input's bytes, as the golden ids have them.
  r = run_cli(tok + " --json --text-file -", c["text"].get<std::string>());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["ids"], c["ids"]);
  EXPECT_EQ(r.err, "");
  // Bytes that are not UTF-8 are encoded as they are, with a note: SmolLM2's vocabulary has no
  // token for 0xFF or 0xFE, so they are dropped, as in HF (they had gone without a word).
  r = run_cli(tok + " --json --text-file -", "\xff\xfeHi");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["pieces"], nlohmann::json::array({"Hi"}));
  EXPECT_EQ(r.err,
            "nanoinfer: note: --text-file - is not valid UTF-8: the tokenizer takes its bytes as "
            "they are and drops any its vocabulary has no token for, as HF's tokenizers do\n");
  // --tokenizer takes the directory that holds the tokenizer.json too; another JSON file is
  // told it is none (it had been a JSON library error).
  r = run_cli(
      "tokenize --json --tokenizer " + test::data_path("tokenizer/smollm2") + " --text-file -",
      c["text"].get<std::string>());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["ids"], c["ids"]);
  r = run_cli("tokenize --tokenizer " + test::data_path("tokenizer/smollm2/tokenizer_config.json") +
              " --text hi");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("tokenizer_config.json: not a tokenizer.json"), std::string::npos) << r.err;
}

TEST(Cli, PromptIdsGiveHfGreedyIdsInJson) {
  std::ifstream in(test::data_path("models/gqa/reference.json"));
  const nlohmann::json ref = nlohmann::json::parse(in);
  const auto& c = ref["cases"][0];
  std::string ids;
  for (const auto& id : c["prompt_ids"]) ids += (ids.empty() ? "" : ",") + std::to_string(int{id});
  const size_t n = c["greedy_ids"].size();
  const CliRun r = run_cli("generate --model " + kTiny + " --prompt-ids " + ids +
                           " --ignore-eos --json --max-new-tokens " + std::to_string(n));
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["outputs"][0]["token_ids"], c["greedy_ids"]);
  EXPECT_EQ(j["outputs"][0]["prompt_tokens"], c["prompt_ids"].size());
  EXPECT_GT(j["timings"]["prefill_ms"].get<double>(), 0.0);
  EXPECT_GT(j["timings"]["load_s"].get<double>(), 0.0);
  EXPECT_GT(j["timings"]["weight_bytes"].get<int64_t>(), 0);
  // --logprobs N: each token's entry, its id the token's, N alternatives best first.
  const CliRun lp =
      run_cli("generate --model " + kTiny + " --prompt-ids " + ids +
              " --ignore-eos --json --logprobs 2 --max-new-tokens " + std::to_string(n));
  ASSERT_EQ(lp.code, 0) << lp.err;
  const nlohmann::json o = nlohmann::json::parse(lp.out)["outputs"][0];
  ASSERT_EQ(o["logprobs"].size(), n);
  for (size_t t = 0; t < n; ++t) {
    const nlohmann::json& e = o["logprobs"][t];
    EXPECT_EQ(e["id"], c["greedy_ids"][t]);
    ASSERT_EQ(e["top"].size(), 2U);
    EXPECT_EQ(e["top"][0]["id"], e["id"]);  // greedy: the most likely
    EXPECT_EQ(e["top"][0]["logprob"], e["logprob"]);
    EXPECT_LE(e["top"][1]["logprob"].get<double>(), e["logprob"].get<double>());
  }
  // --logit-bias ID=BIAS: +100 makes token 5 every greedy pick; -100 on HF's first greedy token
  // makes the first pick another.
  const int first = c["greedy_ids"][0];
  const CliRun bias =
      run_cli("generate --model " + kTiny + " --prompt-ids " + ids +
              " --ignore-eos --json --max-new-tokens 3 --logit-bias 5=100 --logit-bias " +
              std::to_string(first) + "=-100");
  ASSERT_EQ(bias.code, 0) << bias.err;
  EXPECT_EQ(nlohmann::json::parse(bias.out)["outputs"][0]["token_ids"],
            (std::vector<int>{5, 5, 5}));
  // (spaces around the numbers are taken, as --prompt-ids takes them)
  const CliRun ban =
      run_cli("generate --model " + kTiny + " --prompt-ids " + ids +
              " --json --max-new-tokens 1 --logit-bias ' " + std::to_string(first) + " = -100 '");
  ASSERT_EQ(ban.code, 0) << ban.err;
  EXPECT_NE(nlohmann::json::parse(ban.out)["outputs"][0]["token_ids"][0], first);
}

// A model of a config's shape with random weights needs no checkpoint: --prompt-ids, no --model;
// the same seed gives the same tokens.
TEST(Cli, RandomWeightsWithoutAModel) {
  const std::string args =
      "generate --random-weights --config " + kTiny +
      "/config.json --prompt-ids 5,9,14 --max-new-tokens 3 --ignore-eos --json";
  const CliRun r = run_cli(args), again = run_cli(args);
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["outputs"][0]["token_ids"].size(), 3U);
  EXPECT_EQ(j["outputs"][0]["token_ids"],
            nlohmann::json::parse(again.out)["outputs"][0]["token_ids"]);
}

// Sampling without --seed draws a fresh seed each prompt, given in --json; --seed with it samples
// the same tokens again. Greedy output names no seed.
TEST(Cli, UnseededSamplingDrawsASeedItReports) {
  const std::string args = "generate --model " + kTiny +
                           " --prompt-ids 1,2,3 --prompt-ids 1,2,3 --max-new-tokens 12"
                           " --ignore-eos --json";
  const CliRun r = run_cli(args + " --temperature 1.5");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json outs = nlohmann::json::parse(r.out)["outputs"];
  ASSERT_TRUE(outs[0].contains("seed") && outs[1].contains("seed")) << r.out;
  EXPECT_NE(outs[0]["seed"], outs[1]["seed"]);
  EXPECT_NE(outs[0]["token_ids"], outs[1]["token_ids"]);  // equal prompts sample apart
  const CliRun again = run_cli(args + " --temperature 1.5 --seed " +
                               std::to_string(outs[1]["seed"].get<uint64_t>()));
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(nlohmann::json::parse(again.out)["outputs"][0]["token_ids"], outs[1]["token_ids"]);
  const CliRun greedy = run_cli(args);
  ASSERT_EQ(greedy.code, 0) << greedy.err;
  EXPECT_FALSE(nlohmann::json::parse(greedy.out)["outputs"][0].contains("seed"));
}

// --cache-tokens and --max-step-tokens: a cache of one block runs the prompts one after the other
// (the second waits), steps of at most 2 tokens cut the first prompt; the same tokens as without.
TEST(Cli, ContinuousBatchingLimits) {
  const std::string args = "generate --model " + kTiny +
                           " --prompt-ids 5,9,14 --prompt-ids 7 --max-new-tokens 4 --ignore-eos"
                           " --stats --json";
  const CliRun plain = run_cli(args),
               limited = run_cli(args + " --cache-tokens 16 --max-step-tokens 2");
  ASSERT_EQ(plain.code, 0) << plain.err;
  ASSERT_EQ(limited.code, 0) << limited.err;
  const nlohmann::json p = nlohmann::json::parse(plain.out), l = nlohmann::json::parse(limited.out);
  for (size_t i = 0; i < 2; ++i)
    EXPECT_EQ(l["outputs"][i]["token_ids"], p["outputs"][i]["token_ids"]) << "prompt " << i;
  std::vector<int> tokens, waiting;
  for (const auto& s : l["steps"]) {
    tokens.push_back(s["tokens"]);
    waiting.push_back(s["waiting"]);
  }
  // 3 prompt tokens in chunks of 2 and 1, three decode steps, then the second request's prompt
  // and three decode steps.
  EXPECT_EQ(tokens, (std::vector<int>{2, 1, 1, 1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(waiting, (std::vector<int>{1, 1, 1, 1, 1, 0, 0, 0, 0}));
  EXPECT_NE(run_cli(args + " --max-step-tokens -3").code, 0);
}

// Without --max-new-tokens a prompt near the end of the context gets the room it leaves (the
// default 128 would not fit); with it, prompt + N beyond the context is refused.
TEST(Cli, WithoutMaxNewTokensAPromptGetsTheRoomItLeaves) {
  std::string ids = "1";
  for (int i = 1; i < 60; ++i) ids += "," + std::to_string(i % 300 + 1);
  const std::string args =
      "generate --model " + kTiny + " --max-context 64 --ignore-eos --json --prompt-ids " + ids;
  const CliRun fit = run_cli(args + " --prompt-ids 5,9");
  ASSERT_EQ(fit.code, 0) << fit.err;
  const nlohmann::json j = nlohmann::json::parse(fit.out);
  EXPECT_EQ(j["outputs"][0]["token_ids"].size(), 4U);   // 60 + 4 = 64 positions
  EXPECT_EQ(j["outputs"][1]["token_ids"].size(), 62U);  // the short prompt: 62 of its 128
  const CliRun given = run_cli(args + " --max-new-tokens 5");
  EXPECT_NE(given.code, 0);
  EXPECT_NE(given.err.find("exceed"), std::string::npos) << given.err;
  // A prompt that fills the context is told so (not blamed on a max new tokens never given).
  const CliRun full = run_cli(args + ",1,2,3,4");
  EXPECT_NE(full.code, 0);
  EXPECT_NE(full.err.find("prompt (64 tokens) leaves no room for a new token in the context of 64 "
                          "positions (max_context)"),
            std::string::npos)
      << full.err;
}

// --stats: every step's time and cache use, and the call's CUDA-graph captures: in the JSON
// always (none on the CPU), on stderr only for the CUDA backend.
TEST(Cli, StatsListEveryStepAndTheGraphCaptures) {
  const std::string args = "generate --model " + kTiny +
                           " --prompt-ids 5,9,14 --prompt-ids 7 --max-new-tokens 4 --ignore-eos"
                           " --stats";
  const CliRun r = run_cli(args + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["steps"].size(), 4U);  // the prefill and three decode steps
  for (const auto& s : j["steps"]) {
    EXPECT_GT(s["ms"].get<double>(), 0.0);
    EXPECT_LE(s["cache_used"].get<int64_t>(), s["cache_allocated"].get<int64_t>());
  }
  EXPECT_EQ(j["steps"][0]["tokens"], 4);
  EXPECT_EQ(j["graph_captures"], 0);
  const CliRun text = run_cli(args);
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.err.find("step 3: 2 tokens of 2 sequences (0 waiting)"), std::string::npos)
      << text.err;
  EXPECT_EQ(text.err.find("CUDA graphs captured"), std::string::npos) << text.err;
}

// --profile's report: phase -> op -> calls, from lines "  <op> <n> calls <ms> ms <us> us/call
// <share>%" under "<phase>: <ms> ms of CPU time in ops" (each phase's ms into phase_ms).
std::map<std::string, std::map<std::string, int>> profile_calls(
    const std::string& report, std::map<std::string, double>& phase_ms) {
  std::map<std::string, std::map<std::string, int>> calls;
  std::istringstream lines(report);
  std::string line, phase;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    const std::vector<std::string> w{std::istream_iterator<std::string>(words), {}};
    if (w.size() == 8 && line.find("ms of CPU time in ops") != std::string::npos) {
      phase = w[0].substr(0, w[0].size() - 1);
      phase_ms[phase] = std::stod(w[1]);
      continue;
    }
    const auto at = std::find(w.begin(), w.end(), "calls");
    if (phase.empty() || line.rfind("  ", 0) != 0 || at == w.end() || at - w.begin() < 2) continue;
    std::string op = w[0];
    for (auto it = w.begin() + 1; it < at - 1; ++it) op += " " + *it;
    calls[phase][op] = std::stoi(*(at - 1));
  }
  return calls;
}

// --profile on the CPU: each op's calls and time, the prefill step and the decode steps apart.
TEST(Cli, ProfileCountsEveryOpOfEachPhase) {
  const CliRun r = run_cli("generate --model " + kTiny +
                           " --prompt-ids 5,9,14 --prompt-ids 7 --max-new-tokens 4 --ignore-eos"
                           " --profile");
  ASSERT_EQ(r.code, 0) << r.err;
  std::map<std::string, double> phase_ms;
  auto calls = profile_calls(r.err, phase_ms);
  ASSERT_EQ(phase_ms.size(), 2U) << r.err;
  EXPECT_GT(phase_ms["prefill"], 0.0);
  EXPECT_GT(phase_ms["decode"], 0.0);
  // The tiny model has 3 layers, 6 query and 2 KV heads of 12 (q|k|v: 120 rows), vocabulary 384;
  // one prefill step for both prompts, then three decode steps.
  for (const auto& [phase, steps] : {std::pair<std::string, int>{"prefill", 1}, {"decode", 3}}) {
    EXPECT_EQ(calls[phase]["attention"], 3 * steps) << phase << "\n" << r.err;
    EXPECT_EQ(calls[phase]["rope_store_kv"], 3 * steps) << phase;
    EXPECT_EQ(calls[phase]["matmul 120x72 f32"], 3 * steps) << phase;
    EXPECT_EQ(calls[phase]["matmul 384x72 f32"], steps) << phase;
    EXPECT_EQ(calls[phase]["embedding"], steps) << phase;
    EXPECT_EQ(calls[phase].count("add"), 0U) << "add_rmsnorm's add counted apart";
  }
  // A one-token prompt's step feeds one token, as decode steps do, and is prefill all the same.
  const CliRun one = run_cli("generate --model " + kTiny +
                             " --prompt-ids 7 --max-new-tokens 3 --ignore-eos --profile");
  ASSERT_EQ(one.code, 0) << one.err;
  std::map<std::string, double> one_ms;
  auto one_calls = profile_calls(one.err, one_ms);
  EXPECT_EQ(one_calls["prefill"]["embedding"], 1) << one.err;
  EXPECT_EQ(one_calls["decode"]["embedding"], 2) << one.err;
}

// CUDA-only engine flags on the CPU: the same tokens, and a note naming the flags given.
TEST(Cli, CudaOnlyFlagsOnTheCpuSayTheyAreIgnored) {
  const std::string args =
      "generate --model " + kTiny + " --prompt-ids 5,9,14 --max-new-tokens 3 --ignore-eos --json";
  const CliRun plain = run_cli(args), flagged = run_cli(args + " --keep-blocks --no-graph");
  ASSERT_EQ(plain.code, 0) << plain.err;
  ASSERT_EQ(flagged.code, 0) << flagged.err;
  const nlohmann::json ids = nlohmann::json::parse(plain.out)["outputs"][0]["token_ids"];
  EXPECT_EQ(ids.size(), 3U);
  EXPECT_EQ(nlohmann::json::parse(flagged.out)["outputs"][0]["token_ids"], ids);
  EXPECT_NE(
      flagged.err.find(
          "nanoinfer: note: --no-graph --keep-blocks: CUDA backend only, ignored on --backend cpu"),
      std::string::npos)
      << flagged.err;
  EXPECT_EQ(plain.err.find("CUDA backend only"), std::string::npos) << plain.err;
  const CliRun dtype = run_cli(args + " --dtype f32 --backend cpu");
  ASSERT_EQ(dtype.code, 0) << dtype.err;
  EXPECT_NE(dtype.err.find("note: --dtype: CUDA backend only"), std::string::npos) << dtype.err;
}

// Memory the machine cannot give (here a RoPE table of 2^31 positions, for a model of the tiny
// one's shape that claims as many, under a 4 GB address space) is one line that says so, not
// "unexpected error: std::bad_alloc"; a tensor the library could not allocate names its bytes.
TEST(Cli, OutOfMemoryIsOneClearLine) {
#ifdef __SANITIZE_ADDRESS__
  GTEST_SKIP() << "AddressSanitizer's shadow memory does not fit under a 4 GB ulimit -v";
#endif
  nlohmann::json config = nlohmann::json::parse(std::ifstream(kTiny + "/config.json"));
  config["max_position_embeddings"] = 2147483647;
  const std::string path = ::testing::TempDir() + "/nanoinfer_cli_long_config.json";
  std::ofstream(path) << config.dump();
  const CliRun r = run_cli(
      "generate --random-weights --config " + path + " --prompt-ids 1 --max-context 2147483647", "",
      "ulimit -v 4000000; ");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err,
            "nanoinfer: error: out of memory making the engine: with max_context 2147483647, its "
            "model, RoPE tables and buffers did not fit in host memory (a smaller --max-context, "
            "--cache-tokens or --num-beams needs less)\n");
  // The largest cache the flag takes is out of memory too (its block count overflowed before).
  const CliRun cache =
      run_cli("generate --model " + kTiny + " --prompt-ids 1 --cache-tokens 2147483647", "",
              "ulimit -v 4000000; ");
  EXPECT_EQ(cache.code, 1);
  const std::string tensor =
      "nanoinfer: error: out of memory: a i32 tensor [2147483648] asked for 8589934592 bytes "
      "(8192.0 MiB); the host has ";
  const std::string limit =
      " MiB available, and this process's address space is limited to "
      "3906 MiB (ulimit -v) (a smaller --max-context, --cache-tokens or "
      "--num-beams needs less)\n";
  EXPECT_EQ(cache.err.substr(0, tensor.size()), tensor) << cache.err;
  ASSERT_GE(cache.err.size(), limit.size());
  EXPECT_EQ(cache.err.substr(cache.err.size() - limit.size()), limit) << cache.err;
  // serve allocates its cache before it serves (it had failed at the first request, ending the
  // process).
  const CliRun serve = run_cli("serve --model " + kTiny + " --port 0 --cache-tokens 2147483647", "",
                               "ulimit -v 4000000; timeout 60 ");
  EXPECT_EQ(serve.code, 1);
  EXPECT_EQ(serve.err.substr(0, tensor.size()), tensor) << serve.err;
}

// A run that fails leaves the file its memory trace would have replaced as it was (it had been
// emptied), and makes none where there was none.
TEST(Cli, AFailedRunKeepsTheMemoryTraceFile) {
  const std::string kept = ::testing::TempDir() + "/nanoinfer_cli_kept.csv";
  const std::string none = ::testing::TempDir() + "/nanoinfer_cli_none.csv";
  std::ofstream(kept) << "earlier\n";
  std::remove(none.c_str());
  const std::string failing = "generate --model " + kTiny + " --prompt-ids 1 --max-new-tokens 1000";
  for (const std::string& path : {kept, none}) {
    std::string args = failing;
    args += " --memory-trace ";
    args += path;
    const CliRun r = run_cli(args);
    EXPECT_EQ(r.code, 1) << r.err;
  }
  std::ifstream in(kept);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()),
            "earlier\n");
  EXPECT_FALSE(std::ifstream(none).good());
}

// serve names the model it serves after its checkpoint (a directory given with a trailing slash
// too), or after the config of random weights; --served-model-name overrides it.
TEST(Cli, ServeNamesTheModelAfterItsCheckpoint) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--model " + kTiny + "/", "serving gqa on "},
      {"--random-weights --config " + kTiny + "/config.json", "serving random-gqa on "},
      {"--model " + kTiny + " --served-model-name mine", "serving mine on "},
  };
  // (--foreground: timeout signals the server alone; to its process group too, a second SIGINT
  // could arrive after the first was taken, and the server exits at once, 130.)
  for (const auto& [flags, says] : cases) {
    const CliRun r =
        run_cli("serve --port 0 " + flags, "", "timeout --foreground --preserve-status -s INT 2 ");
    EXPECT_EQ(r.code, 0) << flags << ": " << r.err;
    EXPECT_NE(r.err.find(says), std::string::npos) << flags << ": " << r.err;
  }
}

// --chat applies the template to text prompts: given with --prompt-ids alone, a note says so.
TEST(Cli, ChatWithPromptIdsSaysItIsIgnored) {
  const std::string args = "generate --model " + kTiny + " --prompt-ids 5,9 --max-new-tokens 2";
  const CliRun chat = run_cli(args + " --chat"), plain = run_cli(args);
  ASSERT_EQ(chat.code, 0) << chat.err;
  EXPECT_EQ(chat.out, plain.out);
  EXPECT_NE(chat.err.find("nanoinfer: note: --chat: the chat template applies to text prompts "
                          "only, not to --prompt-ids"),
            std::string::npos)
      << chat.err;
}

// --date-string dates a Llama-3.2 chat template's system turn (today's without it), and needs
// --chat. The model: random weights of the tiny shape under the Llama-3 tokenizer and the
// Llama-3.2-Instruct template.
TEST(Cli, DateStringDatesTheLlama32ChatTemplate) {
  const std::string dir = test::llama32_chat_model(
      "nanoinfer_cli_llama32", nlohmann::json::parse(std::ifstream(kTiny + "/config.json")));
  const std::string args = "generate --random-weights --config " + dir + "/config.json --model " +
                           dir + " --prompt Hi --max-new-tokens 1 --json";
  const std::string date = "the second of March, 2025";
  const CliRun dated = run_cli(args + " --chat --date-string '" + date + "'");
  const CliRun undated = run_cli(args + " --chat");
  const CliRun no_chat = run_cli(args + " --date-string '" + date + "'");
  const auto tok = load_tokenizer_for_model(dir);
  std::filesystem::remove_all(dir);
  ASSERT_EQ(dated.code, 0) << dated.err;
  ASSERT_EQ(undated.code, 0) << undated.err;
  const auto prompt_tokens = [](const CliRun& r) {
    return nlohmann::json::parse(r.out)["outputs"][0]["prompt_tokens"].get<size_t>();
  };
  EXPECT_EQ(
      prompt_tokens(dated),
      tok->encode(tok->apply_chat_template({{"user", "Hi"}}, true, false, date), false).size());
  EXPECT_EQ(prompt_tokens(undated),
            tok->encode(tok->apply_chat_template({{"user", "Hi"}}, true), false).size());
  EXPECT_NE(prompt_tokens(dated), prompt_tokens(undated));
  EXPECT_NE(no_chat.code, 0);
  EXPECT_NE(no_chat.err.find("--date-string requires --chat"), std::string::npos) << no_chat.err;
}

// Beam search from --prompt-ids on a checkpoint without a tokenizer: the beams' ids and scores
// (it used to refuse, asking for the --prompt-ids it had been given).
TEST(Cli, BeamsFromPromptIdsWithoutATokenizer) {
  const CliRun r = run_cli("generate --model " + kTiny +
                           " --prompt-ids 5,9,14 --num-beams 3 --num-return-sequences 2"
                           " --max-new-tokens 4 --ignore-eos --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json beams = nlohmann::json::parse(r.out)["outputs"][0]["beams"];
  ASSERT_EQ(beams.size(), 2U);
  for (const auto& b : beams) {
    EXPECT_EQ(b["token_ids"].size(), 4U);
    EXPECT_EQ(b["text"], "");
    EXPECT_LT(b["score"].get<double>(), 0.0);
  }
  const CliRun plain = run_cli("generate --model " + kTiny +
                               " --prompt-ids 5,9,14 --num-beams 3 --num-return-sequences 2"
                               " --max-new-tokens 4 --ignore-eos");
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_NE(plain.out.find("--- beam 1 (score"), std::string::npos) << plain.out;
}

// `bench`: every run computes the prompts and new tokens asked, and the median is one of them.
TEST(Cli, BenchReportsEveryRunAndTheirMedian) {
  const CliRun r = run_cli("bench --model " + kTiny +
                           " --prompt-tokens 20 --new-tokens 6 --batch 2 --runs 3 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["batch"], 2);
  EXPECT_EQ(j["prompt_tokens"], 20);
  ASSERT_EQ(j["runs"].size(), 3U);
  std::vector<double> decode;
  for (const auto& run : j["runs"]) {
    EXPECT_GT(run["prefill_ms"].get<double>(), 0.0);
    EXPECT_GT(run["prefill_tokens_per_s"].get<double>(), 0.0);
    decode.push_back(run["decode_tokens_per_s"].get<double>());
  }
  std::sort(decode.begin(), decode.end());
  EXPECT_GT(decode[0], 0.0);
  EXPECT_EQ(j["median"]["decode_tokens_per_s"].get<double>(), decode[1]);
  EXPECT_GT(j["weight_bytes"].get<int64_t>(), 0);
  // Without --json: a table on stdout, a line per run on stderr.
  const CliRun table =
      run_cli("bench --model " + kTiny + " --prompt-tokens 8 --new-tokens 3 --runs 2");
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_NE(table.out.find("median of 2 runs"), std::string::npos) << table.out;
  EXPECT_NE(table.err.find("run 2: prefill"), std::string::npos) << table.err;
  // --profile: the ops of both runs (the tiny model's 3 layers; a prefill step and two decode
  // steps a run).
  const CliRun profiled =
      run_cli("bench --model " + kTiny + " --prompt-tokens 8 --new-tokens 3 --runs 2 --profile");
  ASSERT_EQ(profiled.code, 0) << profiled.err;
  std::map<std::string, double> phase_ms;
  auto calls = profile_calls(profiled.err, phase_ms);
  EXPECT_EQ(calls["prefill"]["attention"], 6) << profiled.err;
  EXPECT_EQ(calls["decode"]["attention"], 12) << profiled.err;
  // A cache too small for the batch at once: the report says the batch never ran together.
  const std::string staggered =
      "bench --model " + kTiny + " --prompt-tokens 8 --new-tokens 3 --runs 1 --batch 3";
  const CliRun small = run_cli(staggered + " --cache-tokens 16");
  ASSERT_EQ(small.code, 0) << small.err;
  EXPECT_NE(small.err.find("note: the batch never ran together: at most 1 of its 3 sequences"),
            std::string::npos)
      << small.err;
  EXPECT_EQ(run_cli(staggered).err.find("never ran together"), std::string::npos);
}

// `perplexity` on the default model: windows of --context tokens (the model starts each as it
// starts a text), every token after a window's first scored; the perplexity is exp(mean NLL) of
// the engine's prompt_logprobs over the same windows. One window of the whole summary prompt
// scores all its tokens but the first.
// A text file as `perplexity` cuts it: the text, what the model starts a text with (its BOS, if
// any), and the text's own tokens.
std::tuple<std::string, std::vector<int32_t>, std::vector<int32_t>> perplexity_tokens(
    const Tokenizer& tok, const std::string& file) {
  std::ifstream in(file);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<int32_t> start = tok.encode("", true), ids = tok.encode(text, false);
  return {std::move(text), std::move(start), std::move(ids)};
}

// Text prompts, id prompts and a prompts file's lines are generated for, and printed, in the
// order of the command line.
TEST(Cli, PromptsComeInCommandLineOrder) {
  const std::string model = test::default_model_path();
  if (model.empty()) GTEST_SKIP() << "default model not fetched (make model)";
  const std::string file = ::testing::TempDir() + "/nanoinfer_prompts.txt";
  std::ofstream(file) << "one two three four five six seven\n\nthe end\n";
  const CliRun r = run_cli(
      "generate --model " + model + " --prompt 'a b c' --prompt-ids 5 --prompts-file " + file +
      " --prompt-ids 7,8 --prompt x --prompts-file " + file + " --max-new-tokens 1 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EngineOptions opt;
  opt.model = model;
  const Engine engine(opt);
  const Tokenizer& tok = *engine.tokenizer();
  std::vector<size_t> expected;
  // (the file twice: its prompts each time, where it comes)
  for (const char* text : {"a b c", "", "one two three four five six seven", "the end", "", "x",
                           "one two three four five six seven", "the end"})
    expected.push_back(*text != 0 ? tok.encode(text, true).size() : 0);
  expected[1] = 1;  // the ids 5
  expected[4] = 2;  // the ids 7,8
  const nlohmann::json j = nlohmann::json::parse(r.out);
  std::vector<size_t> got;
  for (const auto& o : j["outputs"]) got.push_back(o["prompt_tokens"].get<size_t>());
  EXPECT_EQ(got, expected);
  // The same file saved on Windows (CRLF line ends, a UTF-8 byte order mark) gives the same
  // prompts.
  const std::string windows = ::testing::TempDir() + "/nanoinfer_prompts_crlf.txt";
  std::ofstream(windows) << "\xEF\xBB\xBFone two three four five six seven\r\n\r\nthe end\r\n";
  const std::string args =
      "generate --model " + model + " --max-new-tokens 4 --json --prompts-file ";
  const CliRun unix_file = run_cli(args + file), windows_file = run_cli(args + windows);
  ASSERT_EQ(unix_file.code, 0) << unix_file.err;
  ASSERT_EQ(windows_file.code, 0) << windows_file.err;
  EXPECT_EQ(nlohmann::json::parse(windows_file.out)["outputs"],
            nlohmann::json::parse(unix_file.out)["outputs"]);
  // "-" reads the prompts from standard input.
  const CliRun piped = run_cli(args + "-", "one two three four five six seven\n\nthe end\n");
  ASSERT_EQ(piped.code, 0) << piped.err;
  EXPECT_EQ(nlohmann::json::parse(piped.out)["outputs"],
            nlohmann::json::parse(unix_file.out)["outputs"]);
}

// Several prompts' plain output is each output's text, as --json gives it: a --stop string ends
// it and is not in it.
TEST(Cli, PlainOutputOfSeveralPromptsIsTheirText) {
  const std::string model = test::default_model_path();
  if (model.empty()) GTEST_SKIP() << "default model not fetched (make model)";
  const std::string args = "generate --model " + model +
                           " --prompt 'The capital of France is' --prompt 'Paris is' "
                           "--max-new-tokens 12 --stop answer";
  const CliRun plain = run_cli(args), json = run_cli(args + " --json");
  ASSERT_EQ(plain.code, 0) << plain.err;
  ASSERT_EQ(json.code, 0) << json.err;
  const nlohmann::json outs = nlohmann::json::parse(json.out)["outputs"];
  ASSERT_EQ(outs.size(), 2U);
  EXPECT_EQ(outs[0]["finish_reason"], "stop");  // (the greedy reply says "The answer")
  EXPECT_EQ(plain.out, "=== prompt 0 ===\n" + outs[0]["text"].get<std::string>() +
                           "\n=== prompt 1 ===\n" + outs[1]["text"].get<std::string>() + "\n");
}

// Text held back as the start of a stop string that never came, when an EOS ends the reply, is
// printed at the end (no on_token call carries it; it had been lost): the streamed reply is the
// output's text, in generate and in chat.
TEST(Cli, StreamedTextEndsWithWhatAStopStringHeldBack) {
  const std::string model = test::default_model_path();
  if (model.empty()) GTEST_SKIP() << "default model not fetched (make model)";
  const std::string prompt = "Say hello in one short sentence.";
  const std::string stops = " --stop '.ZZZ' --stop '!ZZZ' --max-new-tokens 40";
  const std::string generate = "generate --model " + model + " --chat --prompt '" + prompt + "'";
  const CliRun json = run_cli(generate + stops + " --json");
  ASSERT_EQ(json.code, 0) << json.err;
  const nlohmann::json out = nlohmann::json::parse(json.out)["outputs"][0];
  const std::string text = out["text"];
  // The greedy reply ends with "!" or "." and then EOS: held back as the start of a stop string.
  ASSERT_EQ(out["finish_reason"], "eos");
  ASSERT_TRUE(text.ends_with('!') || text.ends_with('.')) << text;
  const CliRun plain = run_cli(generate + stops);
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_EQ(plain.out, text + "\n");
  const CliRun chat = run_cli("chat --model " + model + stops, prompt + "\n");
  ASSERT_EQ(chat.code, 0) << chat.err;
  EXPECT_EQ(chat.out, text + "\n");
}

TEST(Cli, PerplexityIsTheMeanNllOfThePromptLogprobs) {
  const std::string model = test::default_model_path();
  if (model.empty()) GTEST_SKIP() << "default model not fetched (make model)";
  const std::string file = test::data_path("prompts/summary_prompt.txt");
  const CliRun r = run_cli("perplexity " + file + " --model " + model +
                           " --context 64 --max-windows 3 --batch 2 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_NE(r.err.find("[windows 3 / 3]"), std::string::npos) << r.err;

  EngineOptions opt;
  opt.model = model;
  Engine engine(opt);
  const Tokenizer& tok = *engine.tokenizer();
  const auto [text, start, ids] = perplexity_tokens(tok, file);
  const size_t per_window = 64 - start.size();
  double nll = 0;
  int64_t scored = 0;
  for (size_t w = 0; w < 3; ++w) {
    GenerationRequest req{start, {}};
    req.prompt_ids.insert(req.prompt_ids.end(), ids.begin() + w * per_window,
                          ids.begin() + (w + 1) * per_window);
    req.params.max_new_tokens = 1;
    req.params.prompt_logprobs = 0;
    const GenerationOutput out = engine.generate({req})[0];
    for (const TokenLogprobs& lp : out.prompt_logprobs) {
      nll -= lp.logprob;
      ++scored;
    }
  }
  EXPECT_EQ(scored, 3 * 63);
  EXPECT_EQ(j["tokens_scored"], scored);
  EXPECT_EQ(j["windows"], 3);
  EXPECT_NEAR(j["mean_nll"].get<double>(), nll / static_cast<double>(scored), 1e-5);
  EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(j["mean_nll"].get<double>()), 1e-9);

  const CliRun whole = run_cli("perplexity " + file + " --model " + model + " --context 1024");
  ASSERT_EQ(whole.code, 0) << whole.err;
  const std::string over = "over " + std::to_string(tok.encode(text, true).size() - 1) +
                           " tokens in 1 window of up to 1024";
  EXPECT_NE(whole.out.find(over), std::string::npos) << whole.out;
}

// --stride: windows start 16 text tokens apart and each scores only the text tokens no earlier
// window scored (HF's sliding-window perplexity). The test keeps its own record of which text
// token each entry scores, from the engine's prompt_logprobs over the same windows.
TEST(Cli, PerplexityStrideScoresEachTokenOnceWithMoreContext) {
  const std::string model = test::default_model_path();
  if (model.empty()) GTEST_SKIP() << "default model not fetched (make model)";
  const std::string file = test::data_path("prompts/summary_prompt.txt");
  const std::string base = "perplexity " + file + " --model " + model + " --context 64 ";
  const CliRun r = run_cli(base + "--stride 16 --max-windows 4 --batch 3 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);

  EngineOptions opt;
  opt.model = model;
  Engine engine(opt);
  const Tokenizer& tok = *engine.tokenizer();
  const auto [text, start, ids] = perplexity_tokens(tok, file);
  const size_t prefix = start.size(), per_window = 64 - prefix;
  std::vector<bool> done(ids.size(), false);
  double nll = 0;
  int64_t scored = 0;
  for (size_t w = 0; w < 4; ++w) {
    GenerationRequest req{start, {}};
    req.prompt_ids.insert(req.prompt_ids.end(), ids.begin() + w * 16,
                          ids.begin() + w * 16 + per_window);
    req.params.max_new_tokens = 1;
    req.params.prompt_logprobs = 0;
    const GenerationOutput out = engine.generate({req})[0];
    for (size_t i = 0; i < out.prompt_logprobs.size(); ++i) {
      if (i + 1 < prefix) continue;  // a prefix token
      const size_t t = w * 16 + i + 1 - prefix;
      if (done[t]) continue;
      done[t] = true;
      nll -= out.prompt_logprobs[i].logprob;
      ++scored;
    }
  }
  // Every text token up to the last window's end once, but the first one without a BOS before it.
  EXPECT_EQ(scored, static_cast<int64_t>(3 * 16 + per_window - (prefix == 0 ? 1 : 0)));
  EXPECT_EQ(j["tokens_scored"], scored);
  EXPECT_EQ(j["windows"], 4);
  EXPECT_EQ(j["stride"], 16);
  EXPECT_NEAR(j["mean_nll"].get<double>(), nll / static_cast<double>(scored), 1e-5);

  const CliRun same = run_cli(base + "--stride " + std::to_string(per_window) +
                              " --max-windows 3 --json");  // no overlap: the default
  const CliRun plain = run_cli(base + "--max-windows 3 --json");
  ASSERT_EQ(same.code, 0) << same.err;
  EXPECT_EQ(nlohmann::json::parse(same.out)["mean_nll"],
            nlohmann::json::parse(plain.out)["mean_nll"]);
  const CliRun skip = run_cli(base + "--stride " + std::to_string(per_window + 1));
  EXPECT_NE(skip.code, 0);
  EXPECT_NE(skip.err.find("skips text"), std::string::npos) << skip.err;
}

// chat skips blank lines, whitespace included, and a /word that is no command (it had been sent
// to the model); --system "" opens with an empty system message (not the template's default
// one); --stats names a sampled reply's seed.
TEST(Cli, ChatSkipsBlankLinesAndUnknownCommands) {
  const std::string model = test::default_model_path();
  if (model.empty()) GTEST_SKIP() << "default model not fetched (make model)";
  const CliRun r = run_cli("chat --model " + model +
                               " --max-new-tokens 3 --stats --temperature 0.7 --seed 5 --system ''",
                           "   \n/help\nHi\n");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;  // one reply
  EXPECT_NE(r.err.find("[not sent: /help is no command"), std::string::npos) << r.err;
  EngineOptions opt;
  opt.model = model;
  Engine engine(opt);
  const Tokenizer& tok = *engine.tokenizer();
  const std::vector<int32_t> ids =
      tok.encode(tok.apply_chat_template({{"system", ""}, {"user", "Hi"}}, true), false);
  EXPECT_NE(r.err.find("[prompt " + std::to_string(ids.size()) + " tokens"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("; seed 5]"), std::string::npos) << r.err;
}

// `chat` on the default model: each line is a turn; each reply is the model's greedy answer to
// the whole history through the chat template (the library's generate() on the same ids), and a
// turn takes the previous turns' blocks from the cache (--stats) without changing a token.
TEST(Cli, ChatRepliesToTheWholeConversation) {
  const std::string model = test::default_model_path();
  if (model.empty()) GTEST_SKIP() << "default model not fetched (make model)";
  const std::vector<std::string> turns = {"What is the capital of France?", "And of Germany?",
                                          "/reset", "Name a color."};
  std::string input;
  for (const std::string& t : turns) input += t + "\n";
  const std::string args = "chat --model " + model + " --max-new-tokens 24 --stats";
  const CliRun r = run_cli(args, input);
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<std::string> replies;
  std::istringstream out(r.out);
  for (std::string line; std::getline(out, line);) replies.push_back(line);
  ASSERT_EQ(replies.size(), 3U) << r.out;

  EngineOptions opt;
  opt.model = model;
  Engine engine(opt);
  const Tokenizer& tok = *engine.tokenizer();
  std::vector<ChatMessage> history;
  std::vector<int> prompt_tokens;
  size_t reply = 0;
  for (const std::string& t : turns) {
    if (t == "/reset") {
      history.clear();
      continue;
    }
    history.push_back({"user", t});
    GenerationRequest req{tok.encode(tok.apply_chat_template(history, true), false), {}};
    req.params.max_new_tokens = 24;
    const GenerationOutput want = engine.generate({req})[0];
    EXPECT_EQ(replies.at(reply++), want.text) << "turn: " << t;
    history.push_back({"assistant", want.text});
    prompt_tokens.push_back(static_cast<int>(req.prompt_ids.size()));
  }
  // One stats line a reply: the second turn takes the first's blocks (its prompt and reply); after
  // /reset the third starts over and takes only the template's opening blocks (the default
  // system prompt).
  std::vector<std::pair<int, int>> stats;  // (prompt tokens, from the cache)
  std::istringstream err(r.err);
  for (std::string line; std::getline(err, line);) {
    int prompt = 0, cached = 0;
    if (std::sscanf(line.c_str(), "[prompt %d tokens, %d of them from the cache", &prompt,
                    &cached) == 2)
      stats.emplace_back(prompt, cached);
  }
  ASSERT_EQ(stats.size(), 3U) << r.err;
  for (size_t i = 0; i < stats.size(); ++i) EXPECT_EQ(stats[i].first, prompt_tokens[i]);
  EXPECT_EQ(stats[0].second, 0);
  EXPECT_GE(stats[1].second, prompt_tokens[0] / 16 * 16);
  EXPECT_GT(stats[1].second, stats[2].second);
  EXPECT_GT(stats[2].second, 0);
  EXPECT_NE(r.err.find("[conversation cleared]"), std::string::npos);
  // Without prefix reuse: the same replies.
  EXPECT_EQ(run_cli(args + " --no-prefix-reuse", input).out, r.out);
}

// A history longer than the context loses its oldest turns; a message that cannot fit alone is
// not sent, and the conversation goes on.
TEST(Cli, ChatDropsTheOldestTurnsToFitTheContext) {
  const std::string model = test::default_model_path();
  if (model.empty()) GTEST_SKIP() << "default model not fetched (make model)";
  std::string too_long;  // over 100 tokens
  for (int i = 0; i < 60; ++i) too_long += " w" + std::to_string(i);
  const std::string input = "Hi!\nWhat is 2 + 2?\nAnd 3 + 3?\n" + too_long + "\nThanks.\n";
  const CliRun r =
      run_cli("chat --model " + model + " --max-new-tokens 16 --max-context 100", input);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 4) << r.out;  // four replies
  EXPECT_NE(r.err.find("[the oldest turn was dropped to fit the context]"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("[message not sent: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("leaves no room for a new token in the context of 100 positions"),
            std::string::npos)
      << r.err;
  // A cache smaller than the context: turns are dropped for the cache's sake, and it says so.
  const CliRun cache = run_cli(
      "chat --model " + model + " --max-new-tokens 16 --max-context 100 --cache-tokens 64", input);
  ASSERT_EQ(cache.code, 0) << cache.err;
  EXPECT_NE(cache.err.find("[the oldest turn was dropped to fit the KV cache]"), std::string::npos)
      << cache.err;
  // Settings under which no message fits fail at the start, not at every message.
  const std::string chat = "chat --model " + model + " ";
  for (const auto& [flags, message] :
       {std::pair<std::string, std::string>{
            "--max-new-tokens 90 --max-context 100",
            "--max-new-tokens 90 and the template's 31 tokens around a one-word message exceed "
            "the context of 100 positions (--max-context)"},
        {"--max-new-tokens 40 --cache-tokens 64",
         "--max-new-tokens 40 and the template's 31 tokens around a one-word message exceed the "
         "KV cache of 64 tokens (--cache-tokens)"}}) {
    const CliRun none = run_cli(chat + flags, input);
    EXPECT_EQ(none.code, 1) << flags;
    EXPECT_EQ(none.out, "") << flags;
    EXPECT_EQ(none.err, "nanoinfer: error: " + message + "\n");
  }
}

// Over a sink cache (--sink-tokens 4 --window 40, pre-RoPE keys implied) a reply runs past the
// context: each of three turns gets its 100 tokens (EOS banned) after a prompt that with them
// exceeds the 64-position context, and none is refused; an older turn that no longer fits the
// window is dropped. Over the full cache no message could run, and chat says so at the start. The
// model: the tiny one's shape with random weights and SmolLM2's vocabulary, its tokenizer and chat
// template.
TEST(Cli, ChatRunsPastTheContextOverASinkCache) {
  nlohmann::json config = nlohmann::json::parse(std::ifstream(kTiny + "/config.json"));
  config["vocab_size"] = 49152;
  const std::string path = ::testing::TempDir() + "/nanoinfer_cli_chat_config.json";
  std::ofstream(path) << config.dump();
  const std::string args = "chat --random-weights --config " + path + " --model " +
                           test::data_path("tokenizer/smollm2") +
                           " --max-context 64 --max-new-tokens 100 --logit-bias 2=-100 --stats";
  const std::string input = "Hi!\nTell me more.\nThanks.\n";
  const CliRun sink = run_cli(args + " --sink-tokens 4 --window 40", input);
  ASSERT_EQ(sink.code, 0) << sink.err;
  int replies = 0;
  std::istringstream err(sink.err);
  for (std::string line; std::getline(err, line);) {
    int prompt = 0, cached = 0, tokens = 0;
    if (std::sscanf(line.c_str(), "[prompt %d tokens, %d of them from the cache; %d tokens",
                    &prompt, &cached, &tokens) != 3)
      continue;
    ++replies;
    EXPECT_LE(prompt, 40) << line;  // the window holds the prompt
    EXPECT_EQ(tokens, 100) << line;
    EXPECT_GT(prompt + tokens, 64) << line;
  }
  EXPECT_EQ(replies, 3) << sink.err;
  EXPECT_EQ(sink.err.find("[message not sent"), std::string::npos) << sink.err;
  EXPECT_NE(sink.err.find("[the oldest turn was dropped to fit the window]"), std::string::npos)
      << sink.err;

  const CliRun full = run_cli(args, input);
  EXPECT_EQ(full.code, 1);
  EXPECT_EQ(full.out, "");
  EXPECT_EQ(full.err,
            "nanoinfer: error: --max-new-tokens 100 and the template's 31 tokens around a "
            "one-word message exceed the context of 64 positions (--max-context)\n");
  // What the engine refuses in every message fails at the start too, not message by message.
  const CliRun narrow = run_cli(args + " --sink-tokens 4 --window 16", input);
  EXPECT_EQ(narrow.code, 1);
  EXPECT_EQ(narrow.out, "");
  EXPECT_NE(narrow.err.find("nanoinfer: error: the prompt (31 tokens) does not fit the sink(4+16) "
                            "cache, which takes at most 16 new tokens a step"),
            std::string::npos)
      << narrow.err;
  const CliRun bias = run_cli(args + " --sink-tokens 4 --window 40 --logit-bias 49152=1", input);
  EXPECT_EQ(bias.code, 1);
  EXPECT_EQ(bias.err,
            "nanoinfer: error: logit_bias: id 49152 is outside the vocabulary of 49152\n");
}

}  // namespace
}  // namespace nanoinfer
