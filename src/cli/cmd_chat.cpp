// `nanoinfer chat`: a conversation on the terminal. Each line read is the user's next message;
// the whole history goes through the model's chat template and the reply streams to stdout. The
// turns run on the engine's submit() / step() loop, whose KV cache lasts, so a turn takes the
// blocks that the previous turns' prompts and replies filled (prefix reuse) and computes only
// what is new. The oldest turns are dropped when the history no longer fits the context (over a
// sink cache, --sink-tokens / --window: the window; a reply may then run past the context).
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "dist/communicator.h"
#include "nanoinfer/engine.h"
#include "nanoinfer/tokenizer.h"
#include "util/error.h"
#include "util/str_cat.h"

namespace nanoinfer::cli {
namespace {

struct ChatArgs {
  EngineOptions engine;
  SamplingParams params;
  std::string system;
  bool system_given = false;  // --system, even empty (which drops a template's default one)
  std::optional<std::string> date_string;  // --date-string: the chat template's date_string
  bool stats = false;
};

// Ctrl-C while a reply streams ends that reply (the conversation goes on); at the prompt it ends
// the program as usual.
volatile std::sig_atomic_t interrupted = 0;
extern "C" void on_interrupt(int /*signal*/) {
  interrupted = 1;
}

double ms_between(std::chrono::steady_clock::time_point a,
                  std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Runs one turn to its end, printing the reply as it comes; nullopt (and why in `refused`) when
// the engine refuses the request (the history too long for the context or the cache).
std::optional<GenerationOutput> reply(Engine& engine, const GenerationRequest& request, bool stats,
                                      std::string& refused) {
  GenerationOutput out;
  bool done = false;
  const auto t0 = std::chrono::steady_clock::now();
  auto first = t0;
  size_t tokens = 0, shown = 0;
  TokenCallback on_token = [&](size_t, int32_t, const std::string& piece) {
    if (tokens++ == 0) first = std::chrono::steady_clock::now();
    std::fputs(piece.c_str(), stdout);
    std::fflush(stdout);
    shown += piece.size();
    return interrupted == 0;
  };
  DoneCallback on_done = [&](size_t, GenerationOutput&& o) {
    out = std::move(o);
    done = true;
  };
  try {
    engine.submit(request, on_token, on_done);
  } catch (const Error& e) {
    refused = e.what();
    return std::nullopt;
  }
  interrupted = 0;
  std::signal(SIGINT, on_interrupt);
  while (!done && engine.step()) {
  }
  std::signal(SIGINT, SIG_DFL);
  // What was held back when an EOS ended the reply (a possible stop string's start), which no
  // on_token carries: the end of the output's text.
  if (out.text.size() > shown) std::fputs(out.text.c_str() + shown, stdout);
  std::printf("\n");
  std::fflush(stdout);
  if (stats) {
    const auto end = std::chrono::steady_clock::now();
    const double decode_ms = ms_between(first, end);
    std::fprintf(
        stderr,
        "[prompt %s, %d of them from the cache; %s; first token %.0f ms; "
        "%.1f tokens/s after it%s]\n",
        count_of(std::ssize(request.prompt_ids), "token").c_str(), out.reused_prompt_tokens,
        count_of(std::ssize(out.token_ids), "token").c_str(), ms_between(t0, first),
        tokens > 1 && decode_ms > 0 ? 1000.0 * static_cast<double>(tokens - 1) / decode_ms : 0.0,
        out.seed ? ("; seed " + std::to_string(*out.seed)).c_str() : "");
  }
  if (interrupted != 0) std::fprintf(stderr, "[reply stopped]\n");
  return out;
}

void run_chat(const ChatArgs& a) {
  require_model(a.engine);
  if (launched_world_size() > 1)
    fail("chat runs on one process; under mpirun use generate (tensor parallelism)");
  a.params.validate();
  // One conversation: a cache of one context (the engine's submit() would size it for 16).
  EngineOptions options = a.engine;
  check_positions(a.engine, {{"--max-context", a.engine.max_context}});
  if (options.cache_tokens == 0)
    options.cache_tokens = resolved_max_context(options, read_model_config(options));
  Engine engine(options);
  const Tokenizer* tok = engine.tokenizer();
  if (tok == nullptr) fail("chat needs a model with a tokenizer (tokenizer.json or a GGUF's)");
  std::vector<ChatMessage> base;
  if (a.system_given) base.push_back({"system", a.system});
  std::vector<ChatMessage> history = base;
  {
    std::vector<ChatMessage> probe = base;  // a model without a known template fails now
    probe.push_back({"user", "hi"});
    // ... and so do settings under which no message fits: the template around a one-word
    // message and a reply's room beyond the context or the cache.
    const GenerationRequest r{
        tok->encode(tok->apply_chat_template(probe, true, false, a.date_string), false), a.params};
    const auto framed = static_cast<int64_t>(r.prompt_ids.size());
    const int64_t need = framed + a.params.max_new_tokens;
    const std::string what = "--max-new-tokens " + std::to_string(a.params.max_new_tokens) +
                             " and the template's " + std::to_string(framed) +
                             " tokens around a one-word message exceed ";
    if (engine.request_limit() > 0 && need > engine.request_limit())
      fail(what + (need > engine.max_context()
                       ? "the context of " + std::to_string(engine.max_context()) +
                             " positions (--max-context)"
                       : "the KV cache of " + std::to_string(options.cache_tokens) +
                             " tokens (--cache-tokens)"));
    // ... and what the engine refuses in any message (sampler ids outside the vocabulary, a
    // template longer than a sink cache's window): the probe is queued, then dropped unrun.
    engine.cancel(engine.submit(r, nullptr, nullptr));
  }
  const bool terminal = isatty(STDIN_FILENO) != 0;
  if (terminal)
    std::fprintf(stderr,
                 "nanoinfer chat: one line a message; /reset starts over, /exit or Ctrl-D ends, "
                 "Ctrl-C stops a reply\n");
  std::string line;
  while (true) {
    if (terminal) std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line)) break;
    if (line.ends_with('\r')) line.pop_back();  // (a line ended the Windows way)
    if (line.find_first_not_of(" \t") == std::string::npos) continue;  // (blank)
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      history = base;
      std::fprintf(stderr, "[conversation cleared]\n");
      continue;
    }
    if (line.starts_with('/') && line.find_first_of(" \t") == std::string::npos) {
      std::fprintf(stderr,
                   "[not sent: %s is no command (the commands: /reset, /exit, /quit; a message "
                   "that starts with / needs a space)]\n",
                   line.c_str());
      continue;
    }
    note_if_not_utf8(line, "the message");
    history.push_back({"user", line});
    // The history through the template; turns are dropped from the oldest while the engine
    // refuses it (the context or the cache too small for it and the reply).
    while (true) {
      const std::vector<int32_t> ids =
          tok->encode(tok->apply_chat_template(history, true, false, a.date_string), false);
      std::string refused;
      if (const std::optional<GenerationOutput> out =
              reply(engine, {ids, a.params}, a.stats, refused)) {
        history.push_back({"assistant", out->text});
        break;
      }
      if (history.size() < base.size() + 3) {  // only this message left: it cannot run
        std::fprintf(stderr, "[message not sent: %s]\n", refused.c_str());
        history.pop_back();
        break;
      }
      history.erase(history.begin() + static_cast<std::ptrdiff_t>(base.size()),
                    history.begin() + static_cast<std::ptrdiff_t>(base.size()) + 2);
      const bool context =
          static_cast<int64_t>(ids.size()) + a.params.max_new_tokens > engine.max_context();
      std::fprintf(stderr, "[the oldest turn was dropped to fit the %s]\n",
                   options.sink_tokens >= 0 ? "window"
                   : context                ? "context"
                                            : "KV cache");
    }
  }
}

}  // namespace

void add_chat_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "chat",
      "Chat on the terminal: each line read is a message, replies stream (greedy unless "
      "--temperature)");
  auto a = std::make_shared<ChatArgs>();
  a->params.max_new_tokens = 512;
  cmd->add_option("--system", a->system,
                  "a system message that opens the conversation (\"\": an empty one, where the "
                  "template would put its own)");
  add_date_string_flag(*cmd, a->date_string);
  add_sampling_flags(*cmd, a->params, "tokens a reply takes at most (default 512)");
  cmd->add_flag("--stats", a->stats,
                "after each reply: prompt tokens and those taken from the cache, time to the "
                "first token, tokens/s");
  add_engine_flags(*cmd, a->engine,
                   "KV cache slots (0 = one context: --max-context, or the model's positions, "
                   "at most 4096); a turn reuses "
                   "the blocks of the turns before it while they are in the cache (not over a "
                   "sink cache, which shares none)");
  add_cache_policy_flags(*cmd, a->engine);
  cmd->callback([a, cmd] {
    a->system_given = cmd->count("--system") > 0;
    run_chat(*a);
  });
}

}  // namespace nanoinfer::cli
