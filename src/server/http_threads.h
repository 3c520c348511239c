// The server's HTTP threads: cpp-httplib's task queue, with every thread started up front. One
// that cannot start (the process limit, the address space) stops those that did and fails with a
// message; cpp-httplib's own ThreadPool hangs there, its started threads still waiting.
#pragma once

#include <httplib.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "util/error.h"

namespace nanoinfer::server {

class HttpThreads : public httplib::TaskQueue {
  // (enqueue returns void in older cpp-httplib, bool, "queued", in newer)
  using Queued = decltype(std::declval<httplib::TaskQueue&>().enqueue({}));

 public:
  explicit HttpThreads(int n) {
    try {
      for (int i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
    } catch (const std::system_error& e) {
      const size_t started = threads_.size();
      shutdown();
      fail("cannot start the server's " + std::to_string(n) + " HTTP threads (" +
           std::to_string(started) + " started: " + e.what() + "); ask for fewer (--http-threads)");
    }
  }
  HttpThreads(const HttpThreads&) = delete;
  HttpThreads& operator=(const HttpThreads&) = delete;
  ~HttpThreads() override { shutdown(); }

  Queued enqueue(std::function<void()> fn) override {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      jobs_.push_back(std::move(fn));
    }
    wake_.notify_one();
    return static_cast<Queued>(true);  // (a void expression where enqueue returns void)
  }

  // The threads finish the jobs queued, then end.
  void shutdown() override {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : threads_)
      if (t.joinable()) t.join();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace nanoinfer::server
