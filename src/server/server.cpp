#include "server/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <utility>
#include <vector>

#include "server/openai.h"
#include "util/error.h"

namespace nanoinfer::server {

using nlohmann::json;

// One request's channel between its HTTP thread and the engine thread.
struct Job {
  ApiRequest api;
  ResponseId id;
  std::mutex m;
  std::condition_variable cv;
  struct Piece {
    std::string text;
    std::vector<int32_t> ids;
    std::vector<TokenLogprobs> logprobs;  // the ids' entries, when asked for
  };
  std::deque<Piece> pieces;  // streamed tokens not yet written
  size_t streamed = 0;       // bytes of text written (the output's text may hold more at the end)
  size_t streamed_ids = 0;   // tokens written (an ending EOS comes with the last chunk)
  size_t token_offset = 0;   // completions' logprobs: bytes of token text written
  bool finished = false;
  GenerationOutput out;
  std::string error;  // set instead of finishing when the engine failed it
  std::atomic<bool> cancelled{false};

  void fail_with(const std::string& e) {
    const std::lock_guard<std::mutex> lock(m);
    error = e;
    cv.notify_all();
  }
};

namespace {

void reply_error(httplib::Response& res, int status, const std::string& message,
                 const std::string& type) {
  res.status = status;
  res.set_content(error_body(message, type).dump(), "application/json");
}

std::string sse(const json& j) {
  return "data: " + j.dump() + "\n\n";
}

}  // namespace

Server::Server(Engine& engine, std::string model_name, int http_threads)
    : engine_(engine),
      model_name_(std::move(model_name)),
      http_(std::make_unique<httplib::Server>()) {
  if (http_threads < 1) fail("the server needs at least one HTTP thread");
  // cpp-httplib's default pool (cores - 1, at least 8) would cap the requests in the running
  // batch at that many.
  http_->new_task_queue = [http_threads] {
    return new httplib::ThreadPool(static_cast<size_t>(http_threads));
  };
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, with which a second server on a
  // port in use would start and share it instead of failing.
  http_->set_socket_options([this](int sock) {
    const int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_fd_ = sock;
  });
  http_->Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("{\"status\":\"ok\"}", "application/json");
  });
  http_->Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    const json models = {{"object", "list"},
                         {"data", json::array({{{"id", model_name_},
                                                {"object", "model"},
                                                {"created", 0},
                                                {"owned_by", "nanoinfer"}}})}};
    res.set_content(models.dump(), "application/json");
  });
  auto generate = [this](bool chat) {
    return [this, chat](const httplib::Request& req, httplib::Response& res) {
      std::vector<ApiRequest> choices;
      try {
        const json body = json::parse(req.body);
        choices = parse_request(body, chat, engine_.tokenizer(), engine_.config().vocab_size,
                                engine_.max_context());
      } catch (const json::exception& e) {
        return reply_error(res, 400, std::string("the body is not JSON: ") + e.what(),
                           "invalid_request_error");
      } catch (const Error& e) {
        return reply_error(res, 400, e.what(), "invalid_request_error");
      }
      const ResponseId id{(chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++), model_name_,
                          std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count()};
      if (!choices.front().stream) {
        // A job a choice (a prompt's n choices: the first computes the prompt, the others take
        // its blocks).
        std::vector<std::shared_ptr<Job>> jobs;
        for (ApiRequest& c : choices) {
          jobs.push_back(std::make_shared<Job>());
          jobs.back()->api = std::move(c);
          jobs.back()->id = id;
        }
        for (const auto& j : jobs) submit(j);
        std::vector<GenerationOutput> outs;
        std::vector<ApiRequest> reqs;
        for (const auto& j : jobs) {
          std::unique_lock<std::mutex> lock(j->m);
          j->cv.wait(lock, [&] { return j->finished || !j->error.empty(); });
          if (!j->error.empty()) {
            for (const auto& other : jobs) other->cancelled = true;
            return reply_error(res, 400, j->error, "invalid_request_error");
          }
          outs.push_back(std::move(j->out));
          reqs.push_back(std::move(j->api));
        }
        res.set_content(response(reqs, id, outs, engine_.tokenizer()).dump(), "application/json");
        return;
      }
      auto job = std::make_shared<Job>();  // streamed: one choice
      job->api = std::move(choices.front());
      job->id = id;
      submit(job);
      // Streamed: the status is sent with the first bytes, so an error the engine finds when
      // the request is submitted (too long for the cache...) comes as an error event.
      res.set_chunked_content_provider(
          "text/event-stream",
          [job, tok = engine_.tokenizer(), first = true](size_t, httplib::DataSink& sink) mutable {
            std::unique_lock<std::mutex> lock(job->m);
            job->cv.wait(
                lock, [&] { return !job->pieces.empty() || job->finished || !job->error.empty(); });
            std::string out;
            if (!job->error.empty()) {
              out = sse(error_body(job->error, "invalid_request_error"));
            } else {
              for (const Job::Piece& p : job->pieces) {
                out += sse(chunk(job->api, job->id, p.text, p.ids, p.logprobs, "", first, tok,
                                 job->token_offset));
                job->streamed += p.text.size();
                job->streamed_ids += p.ids.size();
                first = false;
              }
              job->pieces.clear();
              // The last chunk: text the detokenizer held until the end, the tokens no piece
              // carried (an EOS ends a request without a token callback), and why it ended.
              if (job->finished) {
                const GenerationOutput& o = job->out;
                const size_t from = std::min(job->streamed_ids, o.token_ids.size());
                const std::span<const int32_t> rest(o.token_ids.begin() + from, o.token_ids.end());
                // (no logprobs asked for: the list is empty, and so is its tail)
                const auto rest_lp = std::span<const TokenLogprobs>(o.logprobs)
                                         .subspan(std::min(from, o.logprobs.size()));
                out += sse(chunk(
                    job->api, job->id,
                    o.text.size() > job->streamed ? o.text.substr(job->streamed) : std::string(),
                    rest, rest_lp, o.finish_reason, first, tok, job->token_offset));
              }
              if (job->finished && job->api.stream_usage)
                out += sse(usage_chunk(job->api, job->id, job->out));
            }
            const bool end = job->finished || !job->error.empty();
            lock.unlock();
            if (!sink.write(out.data(), out.size())) {
              job->cancelled = true;  // the client went away: stop generating for it
              return false;
            }
            if (end) {
              const std::string done = "data: [DONE]\n\n";
              sink.write(done.data(), done.size());
              sink.done();
            }
            return true;
          },
          [job](bool success) {
            if (!success) job->cancelled = true;
          });
    };
  };
  http_->Post("/v1/completions", generate(false));
  http_->Post("/v1/chat/completions", generate(true));
  engine_thread_ = std::thread([this] { engine_loop(); });
}

Server::~Server() {
  stop();
  engine_thread_.join();
}

int Server::bind(const std::string& host, int port) {
  const bool ok =
      port == 0 ? (port = http_->bind_to_any_port(host)) > 0 : http_->bind_to_port(host, port);
  if (!ok) fail("cannot listen on " + host + ":" + std::to_string(port));
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
    const std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    wake_.notify_all();
  }
  // cpp-httplib ignores a stop that comes before its loop has started: wait for the loop (or for
  // run() to have returned).
  while (listening_ && !http_->is_running())
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  http_->stop();
}

void Server::submit(const std::shared_ptr<Job>& job) {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (!broken_.empty()) return job->fail_with(broken_);
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
                const std::lock_guard<std::mutex> lock(job->m);
                if (job->api.stream) job->pieces.push_back(std::move(piece));
                job->cv.notify_all();
              }
              return !job->cancelled;
            },
            [this, job, &live](size_t id, GenerationOutput&& out) {
              if (job->cancelled) ++stopped_by_client_;
              {
                const std::lock_guard<std::mutex> lock(job->m);
                job->out = std::move(out);
                job->finished = true;
                job->cv.notify_all();
              }
              live.erase(id);
            });
        live.emplace(id, job);
      } catch (const Error& e) {
        job->fail_with(e.what());
      }
    }
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
      for (auto& [id, job] : live) job->fail_with(why);
      live.clear();
    }
  }
  for (auto& [id, job] : live) job->fail_with("the server is stopping");
}

}  // namespace nanoinfer::server
