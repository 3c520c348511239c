// An OpenAI-compatible HTTP server over one Engine: POST /v1/completions and
// /v1/chat/completions (whole responses or server-sent events), GET /v1/models and /health.
// HTTP threads parse requests and wait on their own channel; one engine thread submits what
// arrives into the engine's running batch (continuous batching: Engine::submit / step) and
// hands each request its tokens as they come. A client that goes away stops its request.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "nanoinfer/engine.h"

namespace httplib {
class Server;
class TaskQueue;
}  // namespace httplib

namespace nanoinfer::server {

struct Job;

class Server {
 public:
  // model_name: what /v1/models lists and responses name. http_threads: requests served at
  // once (each waits for its tokens on an HTTP thread; more wait for a thread), 1 to
  // kMaxHttpThreads: the pool starts them all at once, and tens of thousands of threads exhaust
  // a machine's process limit (65,536 asked hung a 2-core machine at 31,403).
  // log: given one line for each request served (who asked what, the status, and for a
  // generation its tokens, finish reasons and seconds; for an error its message), from the HTTP
  // threads, several at once; none: silent.
  using Log = std::function<void(const std::string&)>;
  Server(Engine& engine, std::string model_name, int http_threads = kHttpThreads, Log log = {});
  static constexpr int kHttpThreads = 512;
  static constexpr int kMaxHttpThreads = 4096;
  // A request body nested deeper is refused (a 400), as it is read.
  static constexpr int kMaxJsonDepth = 128;
  // A request body larger is refused (a 413) unread: 16 MiB hold millions of tokens, text or
  // ids, while a body of any size would be held in memory whole.
  static constexpr size_t kMaxBodyBytes = size_t{16} << 20U;
  ~Server();  // stops
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Web pages of these origins ("https://ui.example:3000", or "*" for any) may call the API from
  // a browser (CORS): their preflights are answered and every response names the origin. None
  // (the default): no cross-origin headers, so browsers keep other origins' pages out. Before
  // run().
  void allow_origins(std::vector<std::string> origins) { origins_ = std::move(origins); }
  // Binds host:port (0: any free port) and returns the port; throws Error when it cannot.
  int bind(const std::string& host, int port);
  // Serves until stop() (from another thread or a signal handler's thread).
  void run();
  void stop();
  // Requests stopped early because their client went away.
  uint64_t stopped_by_client() const { return stopped_by_client_; }
  // The most requests the engine held at once (running or waiting for room).
  size_t peak_requests() const { return peak_requests_; }

 private:
  void engine_loop();
  void submit(const std::shared_ptr<Job>& job);
  // A line to the log: `who` (the client's address and the request line), then `what` (the
  // status first, "-" where the client went away before one was sent).
  void note(const std::string& who, const std::string& what) const;

  Engine& engine_;
  std::string model_name_;
  Log log_;
  std::vector<std::string> origins_;
  std::unique_ptr<httplib::Server> http_;
  std::unique_ptr<httplib::TaskQueue> http_threads_;  // started here; run() hands them to http_
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> inbox_;
  bool stopping_ = false;
  // stop() waits for these: the engine loop has failed what it held, and no stream is being
  // written (the HTTP loop, once stopped, would cut a stream short of its last events).
  std::condition_variable drained_;
  bool engine_done_ = false;
  int streams_ = 0;
  int listen_fd_ = -1;                  // the listening socket
  std::atomic<bool> listening_{false};  // run() is in (or about to enter) the HTTP loop
  std::string broken_;             // set when a step failed: every later request gets this error
  std::atomic<uint64_t> next_id_;  // from a random start: ids differ across restarts
  std::atomic<uint64_t> stopped_by_client_{0};
  std::atomic<size_t> peak_requests_{0};
  std::thread engine_thread_;
};

}  // namespace nanoinfer::server
