// `nanoinfer serve`: the OpenAI-compatible HTTP server (src/server/) over one engine, until
// SIGINT or SIGTERM.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "cli/commands.h"
#include "nanoinfer/engine.h"
#include "util/error.h"
#ifdef NANOINFER_HAVE_SERVER
#include "server/server.h"
#endif

namespace nanoinfer::cli {

namespace {

struct ServeArgs {
  EngineOptions engine;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string name;
};

void run_serve(ServeArgs& a) {
#ifdef NANOINFER_HAVE_SERVER
  // The signals go to one thread that stops the server; the others never see them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  if (a.engine.cache_tokens == 0)  // a server's cache cannot be sized by the requests it has
    a.engine.cache_tokens = 16 * (a.engine.max_context > 0 ? a.engine.max_context : 4096);
  Engine engine(a.engine);
  const std::string name = !a.name.empty() ? a.name
                           : a.engine.model == "default"
                               ? std::string("SmolLM2-135M-Instruct")
                               : std::filesystem::path(a.engine.model).filename().string();
  server::Server srv(engine, name);
  const int port = srv.bind(a.host, a.port);
  std::fprintf(stderr,
               "nanoinfer: serving %s on http://%s:%d/v1 (KV cache of %d tokens, steps of at most "
               "%d; load %.2f s); Ctrl-C stops\n",
               name.c_str(), a.host.c_str(), port, a.engine.cache_tokens, a.engine.max_step_tokens,
               engine.load_seconds());
  std::atomic<bool> served{false};
  std::thread stopper([&srv, &served, signals] {
    const timespec tick{0, 200'000'000};
    while (!served)
      if (sigtimedwait(&signals, nullptr, &tick) > 0) return srv.stop();
  });
  srv.run();  // until a signal stops it (or listening fails)
  served = true;
  stopper.join();
#else
  (void)a;
  fail("this nanoinfer was built without the server (cpp-httplib was not found)");
#endif
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("serve", "Serve an OpenAI-compatible HTTP API (continuous batching)");
  auto a = std::make_shared<ServeArgs>();
  cmd->add_option("--model", a->engine.model,
                  "HF directory, .gguf file or 'default' (with --random-weights: its tokenizer)");
  cmd->add_option("--host", a->host, "address to listen on (default 127.0.0.1)");
  cmd->add_option("--port", a->port, "port (default 8000; 0: any free one)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--served-model-name", a->name, "the name /v1/models lists");
  cmd->add_option("--backend", a->engine.backend, "cpu | cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--dtype", a->engine.dtype, "CUDA compute dtype: bf16 | f32")
      ->check(CLI::IsMember({"bf16", "f32"}));
  cmd->add_option("--max-context", a->engine.max_context, "positions per sequence (0 = auto)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--cache-tokens", a->engine.cache_tokens,
                  "KV cache slots shared by the requests (0 = 16 full contexts)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-step-tokens", a->engine.max_step_tokens,
                  "tokens a forward takes at most (default 16384; 0 = no cap)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag(
      "--no-prefix-reuse", [a](int64_t) { a->engine.prefix_reuse = false; },
      "compute every prompt in full, even where running requests share its first blocks");
  cmd->add_flag(
      "--no-graph", [a](int64_t) { a->engine.cuda_graphs = false; },
      "run decode steps eagerly instead of replaying CUDA graphs");
  cmd->add_flag(
      "--no-warmup", [a](int64_t) { a->engine.warmup = false; },
      "CUDA: skip the short run at load that takes the one-time costs off the first request");
  cmd->add_flag("--random-weights", a->engine.random_weights,
                "random weights of --config's shape (--model then only supplies the tokenizer)");
  cmd->add_option("--config", a->engine.config, "HF config.json for --random-weights");
  cmd->callback([a] { run_serve(*a); });
}

}  // namespace nanoinfer::cli
