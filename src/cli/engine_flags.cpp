// The flags of the engine's options and of sampling that several commands take.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <system_error>
#include <vector>

#include "cli/commands.h"
#include "util/error.h"

namespace nanoinfer::cli {

CLI::Validator non_empty() {
  return CLI::Validator(
      [](const std::string& v) { return v.empty() ? "must not be empty" : std::string(); }, "",
      "not empty");
}

CLI::Validator whole_number(unsigned long long lo, unsigned long long hi) {
  return CLI::Validator(
      [lo, hi](std::string& v) -> std::string {
        size_t used = 0;
        unsigned long long x = 0;
        try {
          if (!v.empty() && v[0] != '-') x = std::stoull(v, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used != 0 && used == v.size() && x >= lo && x <= hi) return "";
        return "expected a whole number from " + std::to_string(lo) + " to " + std::to_string(hi) +
               ", got '" + v + "'";
      },
      // Shown after the type in --help ("INT:>=1", "INT:0..20").
      hi >= INT32_MAX ? ">=" + std::to_string(lo) : std::to_string(lo) + ".." + std::to_string(hi));
}

namespace {

// libgomp's idle threads spin 300,000 times (about a millisecond) for the next parallel region
// before they sleep. On an idle machine that makes a decode step's hundreds of small regions
// cheap; where the cores are shared (another process, a compile, ctest -j) the spinning threads
// take the time the working ones need: the default model's decode fell from 72 to 2-18 tokens/s
// under two busy loops on 2 cores, against 30-33 with a spin of 1,000, which costs ~3 % on the
// idle machine (docs/notes.md). libgomp reads GOMP_SPINCOUNT once, before main(), so a command
// that runs the CPU backend starts again with it, unless the user chose GOMP_SPINCOUNT or
// OMP_WAIT_POLICY: the same pid, arguments and environment otherwise, before anything ran (about
// as long as the program's start, ~70 ms where the CUDA libraries load). Returns where exec
// failed (libgomp's default then) or was not needed.
void restart_with_short_omp_spin() {
  if (std::getenv("GOMP_SPINCOUNT") != nullptr || std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  for (std::string arg; std::getline(in, arg, '\0');) args.push_back(arg);
  if (args.empty()) return;
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  if (setenv("GOMP_SPINCOUNT", "1000", 1) != 0) return;
  // The file itself where it can: started as /proc/self/exe, the process would be named "exe"
  // (ps, top, pkill).
  std::error_code missing;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", missing).string();
  if (!missing) execv(self.c_str(), argv.data());
  execv("/proc/self/exe", argv.data());
  unsetenv("GOMP_SPINCOUNT");  // not in effect: nothing should say it is
}

}  // namespace

void add_cache_policy_flags(CLI::App& cmd, EngineOptions& e) {
  cmd.add_option("--rope-cache", e.rope_cache,
                 "post | pre: when keys are rotated (default post; pre with --sink-tokens)")
      ->check(CLI::IsMember({"post", "pre"}));
  cmd.add_option("--sink-tokens", e.sink_tokens,
                 "StreamingLLM cache: keep this many first tokens (0: a window alone; with "
                 "--window; keys pre-RoPE)")
      ->check(whole_number(0));
  cmd.add_option("--window", e.window,
                 "StreamingLLM cache: recent tokens kept (with --sink-tokens)")
      ->check(whole_number(1));
}

void require_model(const EngineOptions& e) {
  if (e.model.empty() && !e.random_weights)
    fail("no model given: use --model PATH|default, or --random-weights --config FILE");
}

void add_engine_flags(CLI::App& cmd, EngineOptions& e, const std::string& cache_help) {
  cmd.add_option("--model", e.model,
                 "HF directory, .gguf file or 'default' (with --random-weights: its tokenizer)");
  cmd.add_option("--backend", e.backend, "cpu | cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd.add_option("--dtype", e.dtype, "CUDA compute dtype: bf16 | f32")
      ->check(CLI::IsMember({"bf16", "f32"}));
  cmd.add_option("--max-context", e.max_context,
                 "positions per sequence (default 0: the model's, at most 4,096)")
      ->check(whole_number(0));
  cmd.add_option("--cache-tokens", e.cache_tokens, cache_help)->check(whole_number(0));
  cmd.add_option("--max-step-tokens", e.max_step_tokens,
                 "tokens a forward takes at most; longer prompts are prefilled in chunks "
                 "(default 16384 on CUDA, 512 on the CPU; 0 = no cap)")
      ->check(whole_number(0));
  cmd.add_flag(
      "--no-prefix-reuse", [&e](int64_t) { e.prefix_reuse = false; },
      "compute every prompt in full, even where running requests share its first blocks");
  cmd.add_flag(
      "--no-graph", [&e](int64_t) { e.cuda_graphs = false; },
      "run decode steps eagerly instead of replaying CUDA graphs");
  cmd.add_flag(
      "--keep-blocks", e.keep_blocks,
      "CUDA bf16: keep GGUF Q8_0/Q4_0/Q4_1/Q4_K/Q5_K/Q6_K matrices as blocks (about a "
      "third of the memory, faster decode up to 8 sequences; slower past 8 and at prefill)");
  cmd.add_flag(
      "--no-warmup", [&e](int64_t) { e.warmup = false; },
      "CUDA: skip the short run at load that takes the one-time costs off the first request");
  cmd.add_flag("--random-weights", e.random_weights,
               "random weights of --config's shape (--model then only supplies the tokenizer)");
  cmd.add_option("--config", e.config, "HF config.json for --random-weights");
  // The flags above that only the CUDA backend reads say so on another backend instead of
  // changing nothing in silence.
  cmd.parse_complete_callback([&cmd, &e] {
    if (e.backend == "cuda") return;
    restart_with_short_omp_spin();
    std::string named;
    for (const char* flag : {"--dtype", "--no-graph", "--keep-blocks", "--no-warmup"})
      if (cmd.count(flag) > 0) named += std::string(named.empty() ? "" : " ") + flag;
    if (!named.empty())
      std::cerr << "nanoinfer: note: " << named << ": CUDA backend only, ignored on --backend "
                << e.backend << "\n";
  });
}

CLI::Option* add_date_string_flag(CLI::App& cmd, std::optional<std::string>& date_string) {
  return cmd.add_option(
      "--date-string", date_string,
      "the date a Llama-3.1 or 3.2 chat template writes into its system turn (default: "
      "the template's, 26 Jul 2024 and today's date)");
}

void add_sampling_flags(CLI::App& cmd, SamplingParams& p, const std::string& max_new_help) {
  cmd.add_option("--max-new-tokens", p.max_new_tokens, max_new_help)->check(whole_number(1));
  cmd.add_option("--temperature", p.temperature, "default 0: greedy (so is below 1e-5)");
  cmd.add_option("--top-k", p.top_k, "keep the k most likely tokens (0 = off)");
  cmd.add_option("--top-p", p.top_p, "nucleus: smallest set with this much probability (1 = off)");
  cmd.add_option("--min-p", p.min_p, "drop tokens below min_p * the top probability (0 = off)");
  cmd.add_option("--repetition-penalty", p.repetition_penalty, "HF repetition penalty (1 = off)");
  cmd.add_option("--presence-penalty", p.presence_penalty, "OpenAI presence penalty, in [-2, 2]");
  cmd.add_option("--frequency-penalty", p.frequency_penalty,
                 "OpenAI frequency penalty, in [-2, 2]");
  cmd.add_option_function<uint64_t>(
         "--seed", [&p](uint64_t seed) { p.seed = seed; },
         "sampling seed (default: a fresh one each prompt, shown by --stats and generate's --json)")
      ->check(whole_number(0, UINT64_MAX));
  cmd.add_option("--stop", p.stop, "stop when this text appears (repeatable)")
      ->allow_extra_args(false)
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd.add_option_function<std::vector<std::string>>(
         "--logit-bias",
         [&p](const std::vector<std::string>& items) {
           for (const std::string& item : items) {
             const size_t eq = item.find('=');
             bool ok = eq != std::string::npos;
             int id = -1;
             float bias = 0;
             // (spaces around either number, as --prompt-ids takes them around its ids)
             auto whole = [](const std::string& s, size_t used) {
               return used > 0 && s.find_first_not_of(' ', used) == std::string::npos;
             };
             try {
               size_t used_id = 0, used_bias = 0;
               const std::string id_text = item.substr(0, eq), bias_text = item.substr(eq + 1);
               id = std::stoi(id_text, &used_id);
               bias = std::stof(bias_text, &used_bias);
               ok = ok && whole(id_text, used_id) && whole(bias_text, used_bias);
             } catch (const std::exception&) {
               ok = false;
             }
             if (!ok) fail("--logit-bias: expected ID=BIAS (e.g. 13=-100), got '" + item + "'");
             p.logit_bias.emplace_back(id, bias);
           }
         },
         "add BIAS to token ID's logit before sampling, ID=BIAS (repeatable; -100 bans)")
      ->allow_extra_args(false)
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

}  // namespace nanoinfer::cli
