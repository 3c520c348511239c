#include "server/server.h"

#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include "server/http_threads.h"
#include "server/openai.h"
#include "util/error.h"

namespace nanoinfer::server {

using json = nlohmann::ordered_json;  // (openai.h's: keys in the order written)

// The lock and wake-up that the choices of one HTTP request share: its thread waits on them
// together (a stream of several choices writes whichever has tokens).
struct Signal {
  std::mutex m;
  std::condition_variable cv;
};

// One choice's channel between its HTTP thread and the engine thread.
struct Job {
  ApiRequest api;
  ResponseId id;
  std::shared_ptr<Signal> signal;
  struct Piece {
    std::string text;
    std::vector<int32_t> ids;
    std::vector<TokenLogprobs> logprobs;  // the ids' entries, when asked for
  };
  std::deque<Piece> pieces;  // streamed tokens not yet written
  // Tokens whose text has not come yet (held for a possible stop string, or bytes of one UTF-8
  // character): written with the next text, or with the last chunk, which leaves out the entries
  // of a stop string's tokens.
  Piece held;
  size_t streamed = 0;      // bytes of text written (the output's text may hold more at the end)
  size_t streamed_ids = 0;  // tokens written (an ending EOS comes with the last chunk)
  size_t token_offset = 0;  // completions' logprobs: characters of token text written
  bool first_chunk = true;  // no chunk written yet (a chat choice's first carries the role)
  bool ended = false;       // its last chunk is written
  bool accepted = false;    // the engine took it (its checks passed)
  bool finished = false;
  GenerationOutput out;
  std::string error;  // set instead of finishing when the engine failed it
  int status = 400;   // the error's HTTP status
  std::atomic<bool> cancelled{false};

  void fail_with(const std::string& e, int http_status = 400) {
    const std::lock_guard<std::mutex> lock(signal->m);
    error = e;
    status = http_status;
    signal->cv.notify_all();
  }
};

namespace {

// JSON text; invalid UTF-8 (a message quoting a body's bytes) reads U+FFFD.
std::string text(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void reply_error(httplib::Response& res, int status, const std::string& message,
                 const std::string& type, const std::string& code = "",
                 const std::string& param = "") {
  res.status = status;
  res.set_content(text(error_body(message, type, code, param)), "application/json");
}

// A job's error: the request's own fault (400), or the server's (the engine failed: 500; it is
// stopping: 503).
const char* error_type(int status) {
  return status < 500 ? "invalid_request_error" : "server_error";
}

// "ADDRESS \"METHOD PATH\"": who asked what, as the log names a request.
std::string who(const httplib::Request& req) {
  return req.remote_addr + " \"" + req.method + " " + req.path + "\"";
}

// "S.mmm s" since t0.
std::string since(std::chrono::steady_clock::time_point t0) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  return std::to_string(ms.count() / 1000) + "." +
         std::to_string(1000 + ms.count() % 1000).substr(1) + " s";
}

std::string sse(const json& j) {
  return "data: " + text(j) + "\n\n";
}

// "host port" of a socket's address, as cpp-httplib gives a request's.
std::string endpoint(const sockaddr_storage& a, socklen_t len) {
  std::array<char, NI_MAXHOST> host{};
  std::array<char, NI_MAXSERV> port{};
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&a), len, host.data(), host.size(), port.data(),
                  port.size(), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return "";
  return std::string(host.data()) + " " + port.data();
}

// The socket of a request's connection, -1 if none is found: cpp-httplib 0.11 gives a handler
// no socket, so it is the open one whose two ends are the request's addresses.
int connection_socket(const httplib::Request& req) {
  const std::string local = req.local_addr + " " + std::to_string(req.local_port);
  const std::string peer = req.remote_addr + " " + std::to_string(req.remote_port);
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    const int fd = std::atoi(entry.path().filename().c_str());
    sockaddr_storage a{}, b{};
    socklen_t la = sizeof(a), lb = sizeof(b);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &la) == 0 &&
        getpeername(fd, reinterpret_cast<sockaddr*>(&b), &lb) == 0 && endpoint(a, la) == local &&
        endpoint(b, lb) == peer)
      return fd;
  }
  return -1;
}

// "; fields ignored: a, b" for the body's fields the server does not read, else "".
std::string ignored(const ApiRequest& r) {
  std::string s;
  for (const std::string& key : r.ignored) s += (s.empty() ? "; fields ignored: " : ", ") + key;
  return s;
}

// Whether a request has a body: a length or chunks (RFC 9112, 6.3: else none). cpp-httplib 0.11
// would wait 5 s for one and answer a generic 400.
bool has_body(const httplib::Request& req) {
  return req.has_header("Content-Length") || req.has_header("Transfer-Encoding");
}

// Whether the client hung up (its end of the connection is closed).
bool hung_up(int fd) {
  pollfd p{fd, POLLRDHUP, 0};
  return fd >= 0 && poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

}  // namespace

Server::Server(Engine& engine, std::string model_name, int http_threads, Log log)
    : engine_(engine),
      model_name_(std::move(model_name)),
      log_(std::move(log)),
      http_(std::make_unique<httplib::Server>()),
      next_id_(uint64_t{std::random_device()()} << 16U) {
  if (http_threads < 1 || http_threads > kMaxHttpThreads)
    fail("the server's HTTP threads must be 1 to " + std::to_string(kMaxHttpThreads) + ", not " +
         std::to_string(http_threads));
  // The KV cache now: one too large for the machine fails here, not at the first request.
  engine_.start_online();
  // cpp-httplib's default pool (cores - 1, at least 8) would cap the requests in the running
  // batch at that many. Started here, so that a machine that cannot run them all fails before
  // the server says it serves.
  http_threads_ = std::make_unique<HttpThreads>(http_threads);
  http_->new_task_queue = [this] { return http_threads_.release(); };
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, with which a second server on a
  // port in use would start and share it instead of failing.
  http_->set_socket_options([this](int sock) {
    const int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_fd_ = sock;
  });
  http_->set_payload_max_length(kMaxBodyBytes);  // (a body with its length; chunked ones below)
  http_->Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("{\"status\":\"ok\"}", "application/json");
  });
  const json model = {{"id", model_name_},
                      {"object", "model"},
                      {"created", std::chrono::duration_cast<std::chrono::seconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count()},  // (loaded when the server starts)
                      {"owned_by", "nanoinfer"}};
  http_->Get("/v1/models", [model](const httplib::Request&, httplib::Response& res) {
    res.set_content(json{{"object", "list"}, {"data", json::array({model})}}.dump(),
                    "application/json");
  });
  http_->Get("/v1/models/(.+)", [model](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] != model["id"].get<std::string>())
      return reply_error(res, 404,
                         "no model '" + req.matches[1].str() + "' (this server serves '" +
                             model["id"].get<std::string>() + "')",
                         "invalid_request_error");
    res.set_content(model.dump(), "application/json");
  });
  // The body is read here, whatever its Content-Type: cpp-httplib caps a form-urlencoded one
  // (curl -d's default) at 8,192 bytes where it reads the body for the handler.
  auto generate = [this](bool chat) {
    return [this, chat](const httplib::Request& req, httplib::Response& res,
                        const httplib::ContentReader& read) {
      const auto t0 = std::chrono::steady_clock::now();
      if (!has_body(req))
        return reply_error(res, 400, "the request has no body: send a JSON object",
                           "invalid_request_error");
      std::string raw;
      bool over = false;
      if (!read([&raw, &over](const char* data, size_t n) {
            over = raw.size() + n > kMaxBodyBytes;
            if (!over) raw.append(data, n);
            return !over;
          })) {
        if (over) res.status = 413;  // (cpp-httplib says 400 for a chunked one)
        return;                      // (cpp-httplib set the status)
      }
      std::vector<ApiRequest> choices;
      try {
        // Nesting far beyond any field's is refused as it is read: a value nested 100,000 deep
        // (200 KB) overflowed the stack where it was copied or quoted in a message.
        const json body = json::parse(raw, [](int depth, json::parse_event_t, const json&) {
          if (depth > kMaxJsonDepth)
            fail("the body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
          return true;
        });
        choices = parse_request(body, chat, engine_);
      } catch (const json::exception& e) {
        return reply_error(res, 400, "the body is not JSON: " + json_words(e),
                           "invalid_request_error");
      } catch (const ApiError& e) {
        return reply_error(res, 400, e.what(), "invalid_request_error", e.code, e.param);
      } catch (const Error& e) {
        return reply_error(res, 400, e.what(), "invalid_request_error");
      }
      const ResponseId id{(chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++), model_name_,
                          std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count()};
      // A job a choice (a prompt's n choices: the first computes the prompt, the others take
      // its blocks), all on one signal.
      std::vector<std::shared_ptr<Job>> jobs;
      const auto signal = std::make_shared<Signal>();
      for (ApiRequest& c : choices) {
        jobs.push_back(std::make_shared<Job>());
        jobs.back()->api = std::move(c);
        jobs.back()->id = id;
        jobs.back()->signal = signal;
      }
      const std::string asked = who(req);
      // A connection reset while the request waited for an HTTP thread has no peer address left
      // (cpp-httplib could not read it): its client is gone, and nothing is computed for it.
      if (req.remote_addr.empty())
        return note(asked, "- " + id.id + ": the client went away before it was served");
      // A stream counts from before its jobs go in until its response is gone, so that a stop
      // cannot end the HTTP loop between the two (the stream would get an empty, unterminated
      // body, neither the error event nor [DONE]).
      std::shared_ptr<Server> stream_counted;
      if (jobs.front()->api.stream) {
        const std::lock_guard<std::mutex> lock(mutex_);
        ++streams_;
        stream_counted = std::shared_ptr<Server>(this, [](Server* s) {
          const std::lock_guard<std::mutex> lock(s->mutex_);
          --s->streams_;
          s->drained_.notify_all();
        });
      }
      for (const auto& j : jobs) submit(j);
      auto cancel_all = [jobs] {
        for (const auto& j : jobs) j->cancelled = true;
      };
      auto went_away = [&] {
        cancel_all();
        note(asked, "- " + id.id + ": the client went away after " + since(t0));
      };
      // Waiting, the connection is looked at every 100 ms: a client that hung up stops its
      // requests. Nothing is answered before the engine has taken every choice: what it refuses
      // (too long for the context or the cache) is a 400 at once, for a stream (whose status goes
      // with its first bytes) and for a whole response (whose other prompts would have run for
      // nothing).
      const int sock = connection_socket(req);
      {
        std::unique_lock<std::mutex> lock(signal->m);
        const Job* failed = nullptr;
        const auto settled = [&] {
          const auto f = std::find_if(jobs.begin(), jobs.end(),
                                      [](const auto& j) { return !j->error.empty(); });
          failed = f != jobs.end() ? f->get() : nullptr;
          return failed != nullptr ||
                 std::all_of(jobs.begin(), jobs.end(), [](const auto& j) { return j->accepted; });
        };
        while (!signal->cv.wait_for(lock, std::chrono::milliseconds(100), settled))
          if (hung_up(sock)) return went_away();
        if (failed != nullptr) {
          cancel_all();
          return reply_error(res, failed->status, failed->error, error_type(failed->status));
        }
      }
      if (!jobs.front()->api.stream) {
        std::vector<GenerationOutput> outs;
        std::vector<ApiRequest> reqs;
        for (const auto& j : jobs) {
          std::unique_lock<std::mutex> lock(signal->m);
          while (!signal->cv.wait_for(lock, std::chrono::milliseconds(100),
                                      [&] { return j->finished || !j->error.empty(); }))
            if (hung_up(sock)) return went_away();
          if (!j->error.empty()) {
            cancel_all();
            return reply_error(res, j->status, j->error, error_type(j->status));
          }
          outs.push_back(std::move(j->out));
          reqs.push_back(std::move(j->api));
        }
        res.set_content(response(reqs, id, outs, engine_.tokenizer()).dump(), "application/json");
        return note(asked, "200 " + id.id + ": " + summary(reqs, outs) + ", " + since(t0) +
                               ignored(reqs[0]));
      }
      res.set_chunked_content_provider(
          "text/event-stream",
          [this, jobs, signal, cancel_all, asked, t0, sock, tok = engine_.tokenizer()](
              size_t, httplib::DataSink& sink) {
            const auto went_away = [&] {  // stop generating for it
              cancel_all();
              note(asked, "200 " + jobs.front()->id.id + " (stream): the client went away after " +
                              since(t0));
              return false;
            };
            std::unique_lock<std::mutex> lock(signal->m);
            // (looking at the connection every 100 ms: a stream that waits for room in the cache
            // has nothing to write that would find its client gone)
            while (!signal->cv.wait_for(lock, std::chrono::milliseconds(100), [&] {
              return std::any_of(jobs.begin(), jobs.end(), [](const auto& j) {
                return !j->pieces.empty() || (j->finished && !j->ended) || !j->error.empty();
              });
            }))
              if (hung_up(sock)) {
                lock.unlock();
                return went_away();
              }
            std::string out;
            bool failed = false;
            for (size_t i = 0; i < jobs.size(); ++i) {
              Job& job = *jobs[i];
              if (!job.error.empty()) {  // (the engine failed, or the server is stopping)
                out += sse(error_body(job.error, error_type(job.status)));
                note(asked, "200 " + job.id.id + " (stream): ended by an error after " + since(t0) +
                                ": " + job.error);
                failed = true;
                break;
              }
              for (const Job::Piece& p : job.pieces) {
                Job::Piece& h = job.held;
                h.ids.insert(h.ids.end(), p.ids.begin(), p.ids.end());
                h.logprobs.insert(h.logprobs.end(), p.logprobs.begin(), p.logprobs.end());
                if (p.text.empty()) continue;
                out += sse(chunk(job.api, job.id, i, p.text, h.ids, h.logprobs, "", job.first_chunk,
                                 tok, job.token_offset));
                job.streamed += p.text.size();
                job.streamed_ids += h.ids.size();
                job.first_chunk = false;
                h = {};
              }
              job.pieces.clear();
              // The choice's last chunk: text the detokenizer held until the end, the tokens no
              // piece carried (an EOS ends a request without a token callback), and why it ended.
              if (job.finished && !job.ended) {
                const GenerationOutput& o = job.out;
                const size_t from = std::min(job.streamed_ids, o.token_ids.size());
                const std::span<const int32_t> rest(o.token_ids.begin() + from, o.token_ids.end());
                // (no logprobs asked for: the list is empty, and so is its tail)
                const size_t scored = std::min(scored_tokens(o, tok), o.logprobs.size());
                const auto rest_lp = std::span<const TokenLogprobs>(o.logprobs)
                                         .subspan(std::min(from, scored))
                                         .first(scored - std::min(from, scored));
                out += sse(chunk(
                    job.api, job.id, i,
                    o.text.size() > job.streamed ? o.text.substr(job.streamed) : std::string(),
                    rest, rest_lp, o.finish_reason, job.first_chunk, tok, job.token_offset));
                job.ended = true;
              }
            }
            const bool end = failed || std::all_of(jobs.begin(), jobs.end(),
                                                   [](const auto& j) { return j->ended; });
            std::vector<ApiRequest> reqs;
            std::vector<GenerationOutput> outs;
            if (end && !failed)
              for (const auto& j : jobs) {
                reqs.push_back(j->api);
                outs.push_back(j->out);
              }
            if (end && !failed && jobs.front()->api.stream_usage)
              out += sse(usage_chunk(reqs, jobs.front()->id, outs));
            lock.unlock();
            const std::string& rid = jobs.front()->id.id;
            if (failed) cancel_all();  // (one choice failed: the stream ends for all)
            // (nothing to write when every new token is held: cpp-httplib would take a write of
            // no bytes for the end of the stream)
            if (!out.empty() && !sink.write(out.data(), out.size())) return went_away();
            if (end && !failed)
              note(asked, "200 " + rid + " (stream): " + summary(reqs, outs) + ", " + since(t0) +
                              ignored(reqs[0]));
            if (end) {
              const std::string done = "data: [DONE]\n\n";
              sink.write(done.data(), done.size());
              sink.done();
            }
            return true;
          },
          [cancel_all, stream_counted](bool success) {
            if (!success) cancel_all();
          });
    };
  };
  http_->Post("/v1/completions", generate(false));
  http_->Post("/v1/chat/completions", generate(true));
  // Any other POST (PUT, PATCH, DELETE): the error handler's 404 (405 for a known path), its
  // body read and dropped.
  const auto elsewhere = [](const httplib::Request& req, httplib::Response& res,
                            const httplib::ContentReader& read) {
    if (has_body(req) && !read([](const char*, size_t) { return true; })) return;
    res.status = 404;
  };
  http_->Post(".*", elsewhere);
  http_->Put(".*", elsewhere);
  http_->Patch(".*", elsewhere);
  http_->Delete(".*", elsewhere);
  // CORS: a preflight is answered (204) on any path; the headers an allowed origin needs are
  // added to every response, errors and streams included.
  http_->Options(".*", [this](const httplib::Request& req, httplib::Response& res) {
    res.status = 204;
    if (origins_.empty()) return;
    res.set_header("Access-Control-Allow-Methods", "GET, POST");
    if (req.has_header("Access-Control-Request-Headers"))  // (Authorization, Content-Type)
      res.set_header("Access-Control-Allow-Headers",
                     req.get_header_value("Access-Control-Request-Headers"));
    res.set_header("Access-Control-Max-Age", "600");
  });
  http_->set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const std::string origin = req.get_header_value("Origin");
    const bool any = std::find(origins_.begin(), origins_.end(), "*") != origins_.end();
    if (origin.empty() ||
        (!any && std::find(origins_.begin(), origins_.end(), origin) == origins_.end()))
      return;
    res.set_header("Access-Control-Allow-Origin", any ? "*" : origin);
    if (!any) res.set_header("Vary", "Origin");
  });
  // What cpp-httplib answers itself (no such path, a body it could not read) gets a JSON error
  // too; a known path asked with another method, a 405.
  http_->set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    // A body refused for its size is left unread: the connection closes after the reply, where
    // the rest would have been read as the next request (whose reply a client that kept the
    // connection then took for its own).
    if (res.status == 413) res.set_header("Connection", "close");
    const auto logged = [&] {
      note(who(req), std::to_string(res.status) + " " +
                         json::parse(res.body, nullptr, false)
                             .value("/error/message"_json_pointer, std::string()));
    };
    if (!res.body.empty()) return logged();  // (a handler's refusal: its message)
    static const std::map<std::string, std::string> methods = {{"/health", "GET"},
                                                               {"/v1/models", "GET"},
                                                               {"/v1/completions", "POST"},
                                                               {"/v1/chat/completions", "POST"}};
    const auto known = methods.find(req.path);
    if (res.status == 404 && known != methods.end()) {
      res.set_header("Allow", known->second);
      reply_error(res, 405, req.path + " takes " + known->second + " only",
                  "invalid_request_error");
      return logged();
    }
    reply_error(res, res.status,
                res.status == 404 ? "no endpoint " + req.method + " " + req.path
                : res.status == 413
                    ? "the body is larger than this server takes (" +
                          std::to_string(kMaxBodyBytes >> 20U) + " MiB)"
                    : "the request could not be served (HTTP " + std::to_string(res.status) + ")",
                "invalid_request_error");
    logged();
  });
  engine_thread_ = std::thread([this] { engine_loop(); });
}

Server::~Server() {
  stop();
  engine_thread_.join();
}

int Server::bind(const std::string& host, int port) {
  const std::string where =
      host + (port == 0 ? std::string(" (any free port)") : ":" + std::to_string(port));
  errno = 0;
  const bool ok =
      port == 0 ? (port = http_->bind_to_any_port(host)) > 0 : http_->bind_to_port(host, port);
  if (!ok) {  // (bind's errno: cpp-httplib says nothing, and closing the socket leaves errno be)
    const int bind_errno = errno;  // (before the lookup below sets its own)
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    addrinfo* found = nullptr;
    const int unresolved = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
    if (found != nullptr) ::freeaddrinfo(found);
    fail("cannot listen on " + where +
         (unresolved != 0   ? std::string(": ") + ::gai_strerror(unresolved)
          : bind_errno != 0 ? std::string(" (") + std::strerror(bind_errno) + ")"
                            : std::string()));
  }
  // cpp-httplib listens with a backlog of 5: of many clients connecting at once, the others
  // would lose their connection.
  if (::listen(listen_fd_, SOMAXCONN) != 0) fail("cannot listen on " + host);
  return port;
}

void Server::run() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    listening_ = true;
  }
  http_->listen_after_bind();
  listening_ = false;
}

void Server::stop() {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    stopping_ = true;
    wake_.notify_all();
    // Requests in flight end with a 503 first, a stream with its error event and [DONE]
    // (a few seconds at most: a client that reads nothing must not hold the stop).
    drained_.wait_for(lock, std::chrono::seconds(5),
                      [this] { return engine_done_ && streams_ == 0; });
  }
  // cpp-httplib ignores a stop that comes before its loop has started: wait for the loop (or for
  // run() to have returned).
  while (listening_ && !http_->is_running())
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  http_->stop();
}

void Server::note(const std::string& who, const std::string& what) const {
  if (log_) log_(who + " " + what);
}

void Server::submit(const std::shared_ptr<Job>& job) {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) return job->fail_with("the server is stopping", 503);
  if (!broken_.empty()) return job->fail_with(broken_, 500);
  inbox_.push_back(job);
  wake_.notify_all();
}

// The only thread that touches the engine: it submits what arrived, then runs one step, until
// stopped; it sleeps while nothing runs or waits.
void Server::engine_loop() {
  std::map<size_t, std::shared_ptr<Job>> live;
  while (true) {
    std::deque<std::shared_ptr<Job>> arrived;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !inbox_.empty() || !live.empty(); });
      if (stopping_) break;
      arrived.swap(inbox_);
    }
    for (const std::shared_ptr<Job>& job : arrived) {
      try {
        const size_t id = engine_.submit(
            job->api.request,
            [this, job](size_t id, int32_t token, const std::string& text) {
              Job::Piece piece{text, {token}, {}};
              if (job->api.stream && job->api.request.params.logprobs >= 0) {
                const GenerationOutput* so_far = engine_.progress(id);  // this token's entry
                NI_ASSERT(so_far != nullptr && so_far->logprobs.size() == so_far->token_ids.size());
                piece.logprobs.push_back(so_far->logprobs.back());
              }
              {
                const std::lock_guard<std::mutex> lock(job->signal->m);
                if (job->api.stream) job->pieces.push_back(std::move(piece));
                job->signal->cv.notify_all();
              }
              return !job->cancelled;
            },
            [this, job, &live](size_t id, GenerationOutput&& out) {
              if (out.finish_reason == "error") return;  // (the failed step's catch answers it)
              if (job->cancelled) ++stopped_by_client_;
              {
                const std::lock_guard<std::mutex> lock(job->signal->m);
                job->out = std::move(out);
                job->finished = true;
                job->signal->cv.notify_all();
              }
              live.erase(id);
            });
        live.emplace(id, job);
        const std::lock_guard<std::mutex> lock(job->signal->m);
        job->accepted = true;
        job->signal->cv.notify_all();
      } catch (const Error& e) {
        job->fail_with(e.what());
      } catch (const std::exception& e) {  // (e.g. bad_alloc: the request could not be queued)
        job->fail_with(std::string("the engine could not take the request: ") + e.what(), 500);
      }
    }
    // The requests of clients that went away end now, waiting or running (a prompt still queued
    // would otherwise be computed in full before its first token could stop it).
    std::vector<size_t> gone;
    for (const auto& [id, job] : live)
      if (job->cancelled) gone.push_back(id);
    for (const size_t id : gone) engine_.cancel(id);  // (on_done takes it out of `live`)
    if (live.empty()) continue;
    peak_requests_ = std::max<size_t>(peak_requests_, live.size());
    try {
      engine_.step();
    } catch (const std::exception& e) {
      // The run cannot go on: its requests and every later one get the error.
      const std::string why = std::string("the engine failed: ") + e.what();
      {
        const std::lock_guard<std::mutex> lock(mutex_);
        broken_ = why;
      }
      for (auto& [id, job] : live) job->fail_with(why, 500);
      live.clear();
    }
  }
  for (auto& [id, job] : live) job->fail_with("the server is stopping", 503);
  const std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& job : inbox_) job->fail_with("the server is stopping", 503);
  engine_done_ = true;
  drained_.notify_all();
}

}  // namespace nanoinfer::server
