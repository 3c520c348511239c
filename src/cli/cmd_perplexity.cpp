// `nanoinfer perplexity`: how well a model predicts a text. The text's tokens are cut into
// windows of --context tokens, each starting with what the tokenizer starts a text with (its BOS,
// if any); each window is one request whose prompt is scored (SamplingParams::prompt_logprobs),
// --batch windows to a generate() call. A window starts --stride text tokens after the one before
// (default: where it ended, so windows do not overlap) and scores the tokens no earlier window
// scored, each given all the window's tokens before it: a stride below the window gives every
// token after the first window more context (HF's sliding-window perplexity). The perplexity is
// exp of the mean negative log-likelihood over all scored tokens, printed as it goes (stderr)
// and at the end.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "cli/commands.h"
#include "nanoinfer/engine.h"
#include "nanoinfer/tokenizer.h"
#include "util/error.h"

namespace nanoinfer::cli {
namespace {

struct PerplexityArgs {
  EngineOptions engine;
  std::string file;
  int context = 512;
  int stride = 0;  // 0: the window's text length
  int batch = 8;
  int max_windows = 0;
  bool json = false;
};

struct Window {
  std::vector<int32_t> ids;  // prefix (BOS or nothing) + a run of the text's tokens
  size_t score_from = 0;     // its prompt_logprobs entries from here on are scored
};

// The text's windows: prefix + up to context - |prefix| text tokens each, starting `stride` text
// tokens apart; each scores the tokens after the previous window's end (all but its first token,
// for the first window).
std::vector<Window> windows(const Tokenizer& tok, const std::string& text, int context,
                            int stride) {
  const std::vector<int32_t> prefix = tok.encode("", true);
  const std::vector<int32_t> ids = tok.encode(text, false);
  if (static_cast<size_t>(context) < prefix.size() + 2)
    fail("--context " + std::to_string(context) + " leaves no token to score after the " +
         std::to_string(prefix.size()) + " the model starts a text with");
  const size_t per_window = static_cast<size_t>(context) - prefix.size();
  const size_t step = stride > 0 ? static_cast<size_t>(stride) : per_window;
  if (step > per_window)
    fail("--stride " + std::to_string(stride) + " skips text: a window holds " +
         std::to_string(per_window) + " text tokens");
  std::vector<Window> out;
  size_t scored_to = 0;  // text tokens before this are scored (or are the unscorable first)
  for (size_t begin = 0; begin < ids.size() && scored_to < ids.size(); begin += step) {
    const size_t end = std::min(ids.size(), begin + per_window);
    Window w{prefix, 0};
    w.ids.insert(w.ids.end(), ids.begin() + static_cast<std::ptrdiff_t>(begin),
                 ids.begin() + static_cast<std::ptrdiff_t>(end));
    // Entry i scores window token i + 1, which is text token begin + i + 1 - |prefix|: the
    // entries to score are those with that index >= scored_to.
    const auto from =
        static_cast<int64_t>(scored_to + prefix.size()) - 1 - static_cast<int64_t>(begin);
    w.score_from = static_cast<size_t>(std::max<int64_t>(0, from));
    if (w.ids.size() >= 2) out.push_back(std::move(w));
    scored_to = end;
  }
  return out;
}

void run_perplexity(const PerplexityArgs& a) {
  if (a.engine.model.empty() && !a.engine.random_weights)
    fail("no model given: use --model PATH|default");
  const std::string text = read_file(a.file, "the text");
  check_positions(a.engine, {{"--context", a.context}, {"--max-context", a.engine.max_context}});
  EngineOptions options = a.engine;
  // The engine scores a window's tokens while it generates one token after them.
  if (options.max_context == 0) options.max_context = a.context + 1;
  if (options.max_context <= a.context)
    fail("--context " + std::to_string(a.context) + " needs --max-context " +
         std::to_string(a.context + 1) + " or more (a window and the token generated after it)");
  Engine engine(options);
  if (engine.tokenizer() == nullptr) fail("perplexity needs a model with a tokenizer");
  std::vector<Window> all = windows(*engine.tokenizer(), text, a.context, a.stride);
  if (a.max_windows > 0 && all.size() > static_cast<size_t>(a.max_windows))
    all.resize(static_cast<size_t>(a.max_windows));
  if (all.empty()) fail(a.file + ": the text has no token to score");
  // (the engine's own refusal would speak of new tokens and beams, which perplexity has none of)
  size_t longest = 0;
  for (const Window& w : all) longest = std::max(longest, w.ids.size());
  if (engine.request_limit() > 0 && std::cmp_greater(longest + 1, engine.request_limit()))
    fail("a window of " + std::to_string(longest) +
         " tokens and the token generated after it exceed the KV cache of " +
         std::to_string(engine.request_limit()) + " tokens (--cache-tokens)");

  double nll = 0;
  int64_t scored = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t first = 0; first < all.size(); first += static_cast<size_t>(a.batch)) {
    std::vector<GenerationRequest> requests;
    for (size_t w = first; w < std::min(all.size(), first + static_cast<size_t>(a.batch)); ++w) {
      GenerationRequest r{all[w].ids, {}};
      r.params.max_new_tokens = 1;
      r.params.prompt_logprobs = 0;
      requests.push_back(std::move(r));
    }
    const std::vector<GenerationOutput> outs = engine.generate(requests);
    for (size_t i = 0; i < outs.size(); ++i) {
      const auto& lps = outs[i].prompt_logprobs;
      for (size_t e = all[first + i].score_from; e < lps.size(); ++e) {
        nll -= lps[e].logprob;
        ++scored;
      }
    }
    std::fprintf(stderr, "[windows %zu / %zu] perplexity so far %.4f\n", first + requests.size(),
                 all.size(), std::exp(nll / static_cast<double>(scored)));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double mean = nll / static_cast<double>(scored);
  if (a.json) {
    const nlohmann::ordered_json j = {{"model", a.engine.model}, {"file", a.file},
                                      {"context", a.context},    {"stride", a.stride},
                                      {"windows", all.size()},   {"tokens_scored", scored},
                                      {"mean_nll", mean},        {"perplexity", std::exp(mean)},
                                      {"seconds", seconds}};
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf(
      "perplexity %.4f (mean NLL %.4f) over %lld tokens in %zu window%s of up to %d, %.1f s "
      "(%.0f tokens/s)\n",
      std::exp(mean), mean, static_cast<long long>(scored), all.size(), all.size() == 1 ? "" : "s",
      a.context, seconds, static_cast<double>(scored) / seconds);
}

}  // namespace

void add_perplexity_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "perplexity", "Score a text: the perplexity of the model on it, window by window");
  auto a = std::make_shared<PerplexityArgs>();
  cmd->add_option("file", a->file, "the text (UTF-8; -: standard input)")->required();
  cmd->add_option("--context", a->context,
                  "tokens per window, the model's BOS included (default 512)")
      ->check(whole_number(2));
  cmd->add_option("--stride", a->stride,
                  "text tokens from one window's start to the next; below the window, later "
                  "tokens are scored with more context (default 0: the window, no overlap)")
      ->check(whole_number(0));
  cmd->add_option("--batch", a->batch, "windows computed together (default 8)")
      ->check(whole_number(1));
  cmd->add_option("--max-windows", a->max_windows, "score only the first N windows (0 = all)")
      ->check(whole_number(0));
  cmd->add_flag("--json", a->json, "print one JSON object");
  add_engine_flags(
      *cmd, a->engine,
      "KV cache slots (0 = room for a batch of windows, up to 3/4 of the free memory)");
  cmd->callback([a] { run_perplexity(*a); });
}

}  // namespace nanoinfer::cli
