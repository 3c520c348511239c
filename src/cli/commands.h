// The CLI's subcommands; each lives in its own cmd_*.cpp and registers itself on the app.
// A command's callback throws nanoinfer::Error for anything the user got wrong; main() prints
// the message on one line and exits non-zero.
#pragma once

#include <CLI/CLI.hpp>
#include <climits>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nanoinfer/engine.h"

namespace nanoinfer::cli {

void add_generate_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_perplexity_command(CLI::App& app);

// Whole numbers in [lo, hi]: CLI11's own checks print ranges of doubles and accept "-5" for an
// unsigned seed.
CLI::Validator whole_number(unsigned long long lo, unsigned long long hi = INT32_MAX);

// A value that is not the empty string ("--flag ''" would be taken as not given).
CLI::Validator non_empty();

// The engine's flags that generate and serve share (model, backend, dtype, context, cache, step
// cap, prefix reuse, graphs, warm-up, random weights); cache_help says what --cache-tokens 0 does.
// CUDA-only flags given with another backend are named in a note on stderr after parsing.
void add_engine_flags(CLI::App& cmd, EngineOptions& e, const std::string& cache_help);

// Throws Error "no model given: ..." when `e` names neither a model nor random weights.
void require_model(const EngineOptions& e);

// The KV cache's policies that generate, serve and chat share: --rope-cache (when keys are
// rotated), --sink-tokens and --window (a StreamingLLM sink cache).
void add_cache_policy_flags(CLI::App& cmd, EngineOptions& e);

// The sampling flags that generate and chat share (max new tokens, temperature, top-k/p, min-p,
// penalties, seed, stop strings); max_new_help says what --max-new-tokens counts.
void add_sampling_flags(CLI::App& cmd, SamplingParams& p, const std::string& max_new_help);

// --date-string, which generate --chat and chat share: the date the Llama-3.1 and 3.2 chat
// templates write into their system turn (unset: theirs, 26 Jul 2024 and today's date).
CLI::Option* add_date_string_flag(CLI::App& cmd, std::optional<std::string>& date_string);

// A note on stderr where `text` (`what`: "prompt 2", "--text") is not valid UTF-8: its bytes go
// to the tokenizer as they are, which drops a byte its vocabulary has no token for, as HF's
// tokenizers do (SmolLM2's lacks 0xFF, say, which no UTF-8 text holds).
void note_if_not_utf8(std::string_view text, const std::string& what);

// "1,2,3" -> ids; throws Error naming `flag` on anything else.
std::vector<int32_t> parse_ids(const std::string& list, const std::string& flag);

// A file's bytes ("-": standard input's); throws Error "PATH: cannot read WHAT" (missing, a
// directory, unreadable).
std::string read_file(const std::string& path, const std::string& what);

}  // namespace nanoinfer::cli
