// Continuous batching's bookkeeping: which requests may start and how many tokens a step takes.
// A request starts, in the order given, when the KV blocks of its whole life (prompt + max new
// tokens, beam forks included) fit beside those reserved by the requests running; its blocks
// return when it finishes, and the next waiting ones start at the next step. So no running
// sequence ever finds the cache full (nothing is preempted), and a finished request's room is
// taken at once. A step's tokens may be capped: running sequences go first (a decode row is one
// token), then the prompts of requests starting, cut into chunks that fit (chunked prefill).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>

namespace nanoinfer {

class Scheduler {
 public:
  // The cache's blocks of block_size slots; max_step_tokens 0: no cap. Ids count from first_id.
  Scheduler(int64_t cache_blocks, int block_size, int max_step_tokens, size_t first_id = 0);

  // Queues a request that holds at most `blocks` blocks; returns its id (first_id, first_id + 1,
  // ... in the order added). Throws Error, naming the request `who` (empty: "the
  // request"), when it could never fit the cache.
  size_t add(int64_t blocks, const std::string& who);
  // Starts a step with the whole token budget.
  void begin_step();
  // How many of a sequence's `tokens` pending tokens this step takes (all, fewer, or 0 once the
  // budget is spent), taken from the budget.
  int take(int tokens);
  // Takes `tokens` only if all of them fit (the beams of one request run together).
  bool take_all(int tokens);
  // The next waiting request, started now, or -1 when none waits, its blocks do not fit yet, or
  // this step's budget is spent.
  int64_t admit();
  // The id of the request admit() would consider next (-1: none waits).
  int64_t next_waiting() const {
    return waiting_.empty() ? -1 : static_cast<int64_t>(waiting_.front().first);
  }
  // Its blocks return to the pool.
  void finish(size_t request);
  // A waiting request leaves the queue (false: it does not wait).
  bool drop(size_t request);

  size_t waiting() const { return waiting_.size(); }
  int64_t reserved_blocks() const { return reserved_; }

 private:
  int64_t cache_blocks_;
  int block_size_;
  int max_step_tokens_;
  std::deque<std::pair<size_t, int64_t>> waiting_;  // (id, blocks) in order
  std::unordered_map<size_t, int64_t> running_;     // id -> blocks
  size_t next_id_ = 0;
  int64_t reserved_ = 0;
  int64_t left_ = 0;  // this step's budget
};

}  // namespace nanoinfer
