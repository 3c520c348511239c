// `nanoinfer generate`: tokenizes the prompts, runs them as one batch, prints the texts and the
// prefill / decode timings (or one JSON object with --json).
#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "dist/communicator.h"
#include "nanoinfer/engine.h"
#include "nanoinfer/tokenizer.h"
#include "util/error.h"
#include "util/str_cat.h"

namespace nanoinfer::cli {
namespace {

struct GenerateArgs {
  EngineOptions engine;
  std::vector<std::string> prompts;
  std::vector<std::string> prompt_ids;  // "1,2,3" each: prompts given as token ids
  std::vector<std::string> prompts_files;
  // The prompts in command-line order: 't' a --prompt, 'i' a --prompt-ids, 'f' the file's lines.
  std::string order;
  SamplingParams params;
  bool max_new_given = false;  // --max-new-tokens given (else: 128, or the room a prompt leaves)
  bool chat = false;
  std::optional<std::string> date_string;  // --date-string: the chat template's date_string
  bool json = false;
  bool stats = false;
  std::string memory_trace;
  std::string early_stopping = "false";
};

// One prompt a line; a file saved on Windows reads the same (no CR at the line ends, no UTF-8
// byte order mark at the start).
std::vector<std::string> read_prompts_file(const std::string& path) {
  std::string text = read_file(path, "the prompts file");
  if (text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);
  std::istringstream in(text);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (line.ends_with('\r')) line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  if (lines.empty()) fail(path + ": the prompts file has no prompts");
  return lines;
}

void run_generate(const GenerateArgs& a) {
  std::vector<std::vector<std::string>> file_prompts;  // (a file with none fails)
  if (std::ranges::count(a.prompts_files, "-") > 1)    // (the second read had found it empty)
    fail("--prompts-file -: standard input is read once, so give it once");
  for (const std::string& path : a.prompts_files) file_prompts.push_back(read_prompts_file(path));
  const bool texts = !a.prompts.empty() || !file_prompts.empty();
  require_model(a.engine);
  if (!texts && a.prompt_ids.empty())
    fail("no prompt given: use --prompt TEXT, --prompts-file FILE or --prompt-ids 1,2,3");
  a.params.validate();
  if (a.params.logprobs >= 0 && !a.json) fail("--logprobs: the log-probabilities come with --json");
  if (a.chat && !a.prompt_ids.empty())
    std::fprintf(stderr,
                 "nanoinfer: note: --chat: the chat template applies to text prompts only, not to "
                 "--prompt-ids\n");

  // Started by mpirun with several ranks: shard the model over them.
  EngineOptions options = a.engine;
  options.tensor_parallel = launched_world_size() > 1;
  check_positions(a.engine, {{"--max-context", a.engine.max_context}});
  Engine engine(options);
  const Tokenizer* tok = engine.tokenizer();
  if (tok == nullptr && texts)
    fail(a.engine.model.empty()
             ? "random weights without --model have no tokenizer (give --prompt-ids instead)"
             : a.engine.model +
                   ": the checkpoint has no tokenizer.json (give --prompt-ids instead)");
  std::vector<GenerationRequest> requests;  // (outputs come in the same order)
  auto add_text = [&](const std::string& p) {
    note_if_not_utf8(p, "prompt " + std::to_string(requests.size()));
    const std::string text =
        a.chat ? tok->apply_chat_template({{"user", p}}, true, false, a.date_string) : p;
    // A chat template already holds the special tokens it needs.
    requests.push_back({tok->encode(text, !a.chat), a.params});
  };
  size_t next_text = 0, next_ids = 0, next_file = 0;
  for (const char kind : a.order) {
    if (kind == 't') add_text(a.prompts.at(next_text++));
    if (kind == 'i')
      requests.push_back({parse_ids(a.prompt_ids.at(next_ids++), "--prompt-ids"), a.params});
    if (kind == 'f') {
      const std::vector<std::string>& lines = file_prompts.at(next_file++);
      std::for_each(lines.begin(), lines.end(), add_text);
    }
  }
  if (!a.max_new_given)
    for (GenerationRequest& r : requests) engine.fit_to_room(r);
  // A trace path that cannot be written fails now, not after the generation (rank 0 writes it);
  // an existing file is kept as it is until the trace replaces it.
  if (engine.is_leader() && !a.memory_trace.empty()) {
    const bool existed = std::filesystem::exists(a.memory_trace);
    if (!std::ofstream(a.memory_trace, std::ios::app))
      fail(a.memory_trace + ": cannot write the memory trace");
    if (!existed) std::filesystem::remove(a.memory_trace);
  }
  // One prompt, plain output: stream the text as it comes.
  const bool stream = !a.json && tok != nullptr && requests.size() == 1 && a.params.num_beams == 1;
  size_t printed = 0;
  TokenCallback print_piece = [&printed](size_t, int32_t, const std::string& piece) {
    std::fputs(piece.c_str(), stdout);
    std::fflush(stdout);
    printed += piece.size();
    return true;
  };
  const std::vector<GenerationOutput> outs =
      engine.generate(requests, stream ? print_piece : nullptr);
  if (!engine.is_leader()) return;  // rank 0 prints
  if (stream) {                     // (the streamed text's line ends before any report on stderr)
    // What was held back when an EOS ended it (a possible stop string's start), which no
    // on_token carries: the end of the output's text.
    if (outs[0].text.size() > printed) std::fputs(outs[0].text.c_str() + printed, stdout);
    std::printf("\n");
    std::fflush(stdout);
  }
  const GenerationStats& st = engine.last_stats();
  if (a.engine.profile) {
    const std::string report = engine.profile_report();
    std::fprintf(stderr, "%s", report.empty() ? "--profile: no op ran\n" : report.c_str());
  }
  if (!a.memory_trace.empty()) st.write_memory_csv(a.memory_trace);

  // The text, or the ids where the checkpoint has no tokenizer.
  const auto shown = [tok](const std::vector<int32_t>& ids) {
    if (tok != nullptr) return tok->decode(ids, true);
    std::string s;
    for (const int32_t id : ids) s += std::to_string(id) + " ";
    return s;
  };
  if (a.json) {
    nlohmann::ordered_json j;
    j["outputs"] = nlohmann::ordered_json::array();
    for (size_t i = 0; i < outs.size(); ++i) {
      nlohmann::ordered_json o = {{"text", outs[i].text},
                                  {"token_ids", outs[i].token_ids},
                                  {"prompt_tokens", requests[i].prompt_ids.size()},
                                  {"finish_reason", outs[i].finish_reason}};
      if (outs[i].seed) o["seed"] = *outs[i].seed;  // (a sampled prompt's, to sample it again)
      if (a.params.logprobs >= 0) {
        o["logprobs"] = nlohmann::ordered_json::array();
        for (size_t t = 0; t < outs[i].logprobs.size(); ++t) {
          nlohmann::ordered_json top = nlohmann::ordered_json::array();
          for (const auto& [id, lp] : outs[i].logprobs[t].top)
            top.push_back({{"id", id}, {"logprob", lp}});
          o["logprobs"].push_back({{"id", outs[i].token_ids[t]},
                                   {"logprob", outs[i].logprobs[t].logprob},
                                   {"top", top}});
        }
      }
      if (!outs[i].sequences.empty()) {
        o["beams"] = nlohmann::ordered_json::array();
        for (size_t b = 0; b < outs[i].sequences.size(); ++b)
          o["beams"].push_back(
              {{"text", tok != nullptr ? shown(outs[i].sequences[b]) : std::string()},
               {"token_ids", outs[i].sequences[b]},
               {"score", outs[i].scores[b]}});
      }
      j["outputs"].push_back(o);
    }
    j["timings"] = {{"load_s", engine.load_seconds()},
                    {"warmup_s", engine.warmup_seconds()},
                    {"weight_bytes", engine.weight_bytes()},
                    {"prefill_ms", st.prefill_ms},
                    {"decode_tokens_per_s", st.decode_tokens_per_s()},
                    {"prefill_tokens", st.prefill_tokens},
                    {"reused_prompt_tokens", st.reused_prompt_tokens},
                    {"decode_tokens", st.decode_tokens}};
    if (a.stats) {
      j["padded_static_batch_slots"] = st.padded_slots;
      j["graph_captures"] = st.graph_captures;
      j["steps"] = nlohmann::ordered_json::array();
      for (const StepStats& s : st.steps)
        j["steps"].push_back({{"ms", s.ms},
                              {"tokens", s.tokens},
                              {"sequences", s.sequences},
                              {"waiting", s.waiting},
                              {"cache_used", s.cache_used},
                              {"cache_allocated", s.cache_allocated}});
    }
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  for (size_t i = 0; i < outs.size() && !stream; ++i) {
    if (outs.size() > 1) std::printf("=== prompt %zu ===\n", i);
    if (outs[i].sequences.size() > 1) {
      for (size_t b = 0; b < outs[i].sequences.size(); ++b)
        std::printf("--- beam %zu (score %.4f) ---\n%s\n", b,
                    static_cast<double>(outs[i].scores[b]), shown(outs[i].sequences[b]).c_str());
    } else {
      // (the text is what the stream and --json give: a --stop string is not in it)
      std::printf("%s\n", (tok != nullptr ? outs[i].text : shown(outs[i].token_ids)).c_str());
    }
  }
  if (a.stats) {
    const auto pct = [](int64_t a, int64_t b) {
      return b > 0 ? 100.0 * static_cast<double>(a) / static_cast<double>(b) : 0.0;
    };
    for (size_t i = 0; i < st.steps.size(); ++i) {
      const StepStats& s = st.steps[i];
      std::fprintf(stderr,
                   "step %zu: %d tokens of %d sequences (%d waiting), %.2f ms, cache %lld used / "
                   "%lld allocated (%.1f%%), padded static batch: %.1f%% of %lld\n",
                   i, s.tokens, s.sequences, s.waiting, s.ms, static_cast<long long>(s.cache_used),
                   static_cast<long long>(s.cache_allocated), pct(s.cache_used, s.cache_allocated),
                   pct(s.cache_used, st.padded_slots), static_cast<long long>(st.padded_slots));
    }
    if (a.engine.backend == "cuda")
      std::fprintf(stderr, "CUDA graphs captured in this call: %d\n", st.graph_captures);
    for (size_t i = 0; i < outs.size(); ++i)  // (--seed with it samples the same tokens again)
      if (outs[i].seed)
        std::fprintf(stderr, "seed of prompt %zu: %llu\n", i,
                     static_cast<unsigned long long>(*outs[i].seed));
  }
  std::fprintf(stderr,
               "load: %.2f s (%.1f MB of weights, warm-up %.2f s), prefill: %.1f ms (%s), "
               "decode: %.1f tokens/s (%s)\n",
               engine.load_seconds(), static_cast<double>(engine.weight_bytes()) / 1e6,
               engine.warmup_seconds(), st.prefill_ms, count_of(st.prefill_tokens, "token").c_str(),
               st.decode_tokens_per_s(), count_of(st.decode_tokens, "token").c_str());
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text for one or more prompts (one batch)");
  auto a = std::make_shared<GenerateArgs>();
  SamplingParams& p = a->params;
  // One value per flag: a stray word after a prompt is an error, not a second prompt.
  const CLI::Option* text = cmd->add_option("--prompt", a->prompts, "a prompt (repeat for a batch)")
                                ->allow_extra_args(false)
                                ->expected(1)
                                ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  const CLI::Option* file = cmd->add_option("--prompts-file", a->prompts_files,
                                            "one prompt per line (-: standard input; repeat)")
                                ->allow_extra_args(false)
                                ->expected(1)
                                ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  const CLI::Option* ids = cmd->add_option("--prompt-ids", a->prompt_ids,
                                           "a prompt as comma-separated token ids (repeat)")
                               ->allow_extra_args(false)
                               ->expected(1)
                               ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  add_sampling_flags(
      *cmd, p, "tokens to generate per prompt (default 128, or what the context has room for)");
  cmd->add_option("--num-beams", p.num_beams, "beam search with this many beams (1 = off)");
  cmd->add_option("--length-penalty", p.length_penalty, "beam score = logprob / length^penalty");
  cmd->add_option("--early-stopping", a->early_stopping, "beam search: true | false | never")
      ->check(CLI::IsMember({"true", "false", "never"}));
  cmd->add_option("--num-return-sequences", p.num_return_sequences, "beams to return");
  cmd->add_option("--logprobs", p.logprobs,
                  "with --json: each token's log-probability and the N most likely (0-20)")
      ->check(whole_number(0, 20));
  cmd->add_flag("--ignore-eos", p.ignore_eos, "keep generating past EOS");
  CLI::Option* chat = cmd->add_flag("--chat", a->chat, "apply the model's chat template");
  add_date_string_flag(*cmd, a->date_string)->needs(chat);
  cmd->add_flag("--json", a->json, "print one JSON object");
  cmd->add_flag("--stats", a->stats,
                "per-step time and cache use; CUDA graphs captured (CUDA backend)");
  cmd->add_option("--memory-trace", a->memory_trace, "write memory in use per step to this CSV")
      ->check(non_empty());
  add_engine_flags(*cmd, a->engine,
                   "KV cache slots (0 = room for every prompt at once, up to 3/4 of the free "
                   "memory; fewer: prompts wait for room, continuous batching)");
  add_cache_policy_flags(*cmd, a->engine);
  cmd->add_flag("--no-rope", a->engine.no_rope, "ablation: run without rotary embeddings");
  cmd->add_flag("--profile", a->engine.profile,
                "print the time of each op kind, prefill and decode apart");
  cmd->callback([a, cmd, text, file, ids] {
    a->max_new_given = cmd->count("--max-new-tokens") > 0;
    for (const CLI::Option* o : cmd->parse_order()) {
      if (o == text) a->order += 't';
      if (o == ids) a->order += 'i';
      if (o == file) a->order += 'f';
    }
    a->params.early_stopping = a->early_stopping == "true"    ? EarlyStopping::kWhenFull
                               : a->early_stopping == "never" ? EarlyStopping::kNever
                                                              : EarlyStopping::kHeuristic;
    run_generate(*a);
  });
}

}  // namespace nanoinfer::cli
