#include "engine/scheduler.h"

#include <algorithm>
#include <climits>
#include <string>

#include "util/error.h"
#include "util/str_cat.h"

namespace nanoinfer {

Scheduler::Scheduler(int64_t cache_blocks, int block_size, int max_step_tokens, size_t first_id)
    : cache_blocks_(cache_blocks),
      block_size_(block_size),
      max_step_tokens_(max_step_tokens),
      next_id_(first_id) {
  if (max_step_tokens < 0) fail("max_step_tokens must be >= 0 (0: no cap)");
}

size_t Scheduler::add(int64_t blocks, const std::string& who) {
  if (blocks > cache_blocks_)  // (in the options' unit too: cache_tokens are slots)
    fail((who.empty() ? "the request" : who) + " needs up to " + std::to_string(blocks) +
         " KV blocks of " + count_of(block_size_, "token") + " (" +
         std::to_string(blocks * block_size_) +
         " slots: its prompt + max new tokens, beam forks included), more than the cache's " +
         std::to_string(cache_blocks_) + " (" + std::to_string(cache_blocks_ * block_size_) +
         " slots): raise cache_tokens or lower max_new_tokens");
  waiting_.emplace_back(next_id_, blocks);
  return next_id_++;
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
  if (waiting_.empty() || left_ == 0 || reserved_ + waiting_.front().second > cache_blocks_)
    return -1;
  const auto [id, blocks] = waiting_.front();
  waiting_.pop_front();
  reserved_ += blocks;
  running_.emplace(id, blocks);
  return static_cast<int64_t>(id);
}

bool Scheduler::drop(size_t request) {
  const auto it = std::find_if(waiting_.begin(), waiting_.end(),
                               [request](const auto& w) { return w.first == request; });
  if (it == waiting_.end()) return false;
  waiting_.erase(it);
  return true;
}

void Scheduler::finish(size_t request) {
  const auto it = running_.find(request);
  NI_ASSERT(it != running_.end());
  reserved_ -= it->second;
  running_.erase(it);
}

}  // namespace nanoinfer
