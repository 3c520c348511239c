#include "dist/watchdog.h"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

namespace nanoinfer {
namespace {

using Clock = std::chrono::steady_clock;

class Watchdog {
 public:
  static Watchdog& get() {
    static Watchdog* w = new Watchdog();  // never destroyed: its thread outlives static teardown
    return *w;
  }
  void arm(int rank, const char* what) {
    const std::lock_guard<std::mutex> lock(mu_);
    ++depth_;
    rank_ = rank;
    what_ = what;
    deadline_ = Clock::now() + std::chrono::seconds(timeout_s_);
    cv_.notify_one();
  }
  void disarm() {
    const std::lock_guard<std::mutex> lock(mu_);
    --depth_;
  }

 private:
  Watchdog() : timeout_s_(wait_timeout_s()) {
    std::thread([this] { watch(); }).detach();
  }
  void watch() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      if (depth_ == 0) {
        cv_.wait(lock);
        continue;
      }
      if (cv_.wait_until(lock, deadline_) == std::cv_status::timeout && depth_ > 0 &&
          Clock::now() >= deadline_) {
        std::fprintf(stderr,
                     "nanoinfer: rank %d: no answer from the other ranks for %d s (in %s): one of "
                     "them died or hung; exiting\n",
                     rank_, timeout_s_, what_);
        std::fflush(stderr);
        std::_Exit(3);
      }
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  int depth_ = 0, rank_ = 0, timeout_s_;
  const char* what_ = "";
  Clock::time_point deadline_;
};

}  // namespace

int wait_timeout_s() {
  const char* env = std::getenv("NANOINFER_TP_TIMEOUT");
  if (env == nullptr || *env == '\0') return 300;
  const int s = std::atoi(env);
  return s > 0 ? s : 300;
}

WaitScope::WaitScope(int rank, const char* what) {
  Watchdog::get().arm(rank, what);
}

WaitScope::~WaitScope() {
  Watchdog::get().disarm();
}

}  // namespace nanoinfer
