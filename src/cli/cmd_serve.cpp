// `nanoinfer serve`: the OpenAI-compatible HTTP server (src/server/) over one engine, until
// SIGINT or SIGTERM.
#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "nanoinfer/engine.h"
#include "util/error.h"
#ifdef NANOINFER_HAVE_SERVER
#include "server/server.h"
#endif

namespace nanoinfer::cli {

namespace {

#ifdef NANOINFER_HAVE_SERVER
constexpr int kMaxHttpThreads = server::Server::kMaxHttpThreads;
#else
constexpr int kMaxHttpThreads = 1;  // (serve fails before it matters)
#endif

struct ServeArgs {
  EngineOptions engine;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string name;
  int http_threads = 0;  // 0: the server's default
  bool no_request_log = false;
  std::vector<std::string> origins;  // CORS: pages of these origins may call the API
};

#ifdef NANOINFER_HAVE_SERVER
// A server log line on stderr, after the UTC time.
void log_line(const std::string& line) {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::array<char, 32> stamp{};
  std::strftime(stamp.data(), stamp.size(), "%Y-%m-%dT%H:%M:%SZ", &utc);
  std::fprintf(stderr, "%s %s\n", stamp.data(), line.c_str());
}

// The name /v1/models lists, without --served-model-name: the checkpoint's (a GGUF file's name
// without .gguf, a directory's name), or with random weights "random-" and the config's (its
// directory's where the file is config.json).
std::string served_name(const ServeArgs& a) {
  namespace fs = std::filesystem;
  if (!a.name.empty()) return a.name;
  const bool random = a.engine.random_weights;
  fs::path p = fs::absolute(random                        ? a.engine.config
                            : a.engine.model == "default" ? default_model_path()
                                                          : a.engine.model)
                   .lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // (a directory given with a trailing /)
  if (random)
    return "random-" + (p.filename() == "config.json" ? p.parent_path().filename().string()
                                                      : p.stem().string());
  return p.extension() == ".gguf" ? p.stem().string() : p.filename().string();
}
#endif

void run_serve(ServeArgs& a) {
#ifdef NANOINFER_HAVE_SERVER
  // The signals go to one thread that stops the server; the others never see them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  require_model(a.engine);
  check_positions(a.engine, {{"--max-context", a.engine.max_context}});
  if (a.engine.cache_tokens == 0) {  // a server's cache cannot be sized by the requests it has:
    const int context = resolved_max_context(a.engine, read_model_config(a.engine));
    a.engine.cache_tokens = static_cast<int>(std::min<int64_t>(INT_MAX, 16 * int64_t{context}));
  }
  Engine engine(a.engine);
  const std::string name = served_name(a);
  server::Server srv(engine, name,
                     a.http_threads > 0 ? a.http_threads : server::Server::kHttpThreads,
                     a.no_request_log ? server::Server::Log() : log_line);
  srv.allow_origins(a.origins);
  const int port = srv.bind(a.host, a.port);
  std::fprintf(stderr,
               "nanoinfer: serving %s on http://%s:%d/v1 (KV cache of %d tokens, steps of at most "
               "%d; load %.2f s); Ctrl-C stops\n",
               name.c_str(), a.host.c_str(), port, a.engine.cache_tokens, engine.max_step_tokens(),
               engine.load_seconds());
  std::atomic<bool> served{false};
  // The first signal stops the server (requests in flight get a 503; a client still sending
  // holds its thread up to its read timeout, a step in progress finishes); a second ends the
  // process at once.
  std::thread stopper([&srv, &served, signals] {
    const timespec tick{0, 200'000'000};
    bool stopping = false;
    while (!served) {
      const int sig = sigtimedwait(&signals, nullptr, &tick);
      if (sig <= 0) continue;
      if (stopping) {
        std::fprintf(stderr, "nanoinfer: a second signal: exiting now\n");
        std::_Exit(128 + sig);
      }
      stopping = true;
      std::fprintf(stderr, "nanoinfer: stopping (a second Ctrl-C or SIGTERM exits at once)\n");
      srv.stop();
    }
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
  cmd->add_option("--host", a->host, "address to listen on (default 127.0.0.1)");
  cmd->add_option("--port", a->port, "port (default 8000; 0: any free one)")
      ->check(whole_number(0, 65535));
  cmd->add_option("--served-model-name", a->name,
                  "the name /v1/models lists (default: the checkpoint's file or directory name)")
      ->check(non_empty());
  cmd->add_option("--http-threads", a->http_threads,
                  "requests served at once, one HTTP thread each (default 512)")
      ->check(whole_number(1, kMaxHttpThreads));
  cmd->add_option("--allow-origin", a->origins,
                  "a web page's origin (https://ui.example:3000, or * for any) that may call the "
                  "API from a browser (CORS); repeatable; default: none")
      ->check(non_empty());
  cmd->add_flag("--no-request-log", a->no_request_log,
                "no line on stderr for each generation request and each refusal");
  add_engine_flags(*cmd, a->engine, "KV cache slots shared by the requests (0 = 16 full contexts)");
  add_cache_policy_flags(*cmd, a->engine);
  cmd->callback([a] { run_serve(*a); });
}

}  // namespace nanoinfer::cli
