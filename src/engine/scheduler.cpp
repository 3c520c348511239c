#include "engine/scheduler.h"

#include <algorithm>
#include <climits>
#include <string>

#include "util/error.h"

namespace nanoinfer {

Scheduler::Scheduler(int64_t cache_blocks, int max_step_tokens)
    : cache_blocks_(cache_blocks), max_step_tokens_(max_step_tokens) {
  if (max_step_tokens < 0) fail("max_step_tokens must be >= 0 (0: no cap)");
}

size_t Scheduler::add(int64_t blocks) {
  const size_t i = blocks_.size();
  if (blocks > cache_blocks_)
    fail("request " + std::to_string(i) + " needs up to " + std::to_string(blocks) +
         " KV blocks (its prompt + max new tokens, beam forks included), more than the cache's " +
         std::to_string(cache_blocks_) + ": raise cache_tokens or lower max_new_tokens");
  blocks_.push_back(blocks);
  running_.push_back(0);
  return i;
}

void Scheduler::begin_step() {
  left_ = max_step_tokens_ > 0 ? max_step_tokens_ : INT64_MAX;
}

int Scheduler::take(int tokens) {
  const auto n = static_cast<int>(std::min<int64_t>(tokens, left_));
  left_ -= n;
  return n;
}

bool Scheduler::take_all(int tokens) {
  if (tokens > left_) return false;
  left_ -= tokens;
  return true;
}

int64_t Scheduler::admit() {
  if (next_ == blocks_.size() || left_ == 0 || reserved_ + blocks_[next_] > cache_blocks_)
    return -1;
  reserved_ += blocks_[next_];
  running_[next_] = 1;
  return static_cast<int64_t>(next_++);
}

void Scheduler::finish(size_t request) {
  NI_ASSERT(request < next_ && running_[request] != 0);
  running_[request] = 0;
  reserved_ -= blocks_[request];
}

}  // namespace nanoinfer
