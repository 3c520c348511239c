#include "kv/kv_cache.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "util/error.h"

namespace nanoinfer {

std::unique_ptr<RopePolicy> make_rope_policy(const std::string& name) {
  if (name == "post") return std::make_unique<PostRope>();
  if (name == "pre") return std::make_unique<PreRope>();
  fail("unknown RoPE cache policy '" + name + "' (expected 'post' or 'pre')");
}

std::unique_ptr<CachePolicy> make_cache_policy(const KvCacheOptions& o) {
  if (o.sink_tokens >= 0) {
    if (o.window <= 0) fail("a sink cache needs a window of at least one token");
    if (o.rope != "pre")
      fail(
          "a sink cache renumbers positions after eviction, so keys must be rotated on read: "
          "use the pre-RoPE cache");
    return std::make_unique<SinkCache>(o.sink_tokens, o.window);
  }
  if (o.window > 0)
    fail(
        "a window of recent tokens is kept only by the sink cache: give it sink tokens (0 for "
        "the window alone) and the pre-RoPE cache; without it every token is kept");
  return std::make_unique<FullCache>();
}

KvCache::KvCache(Backend& backend, const ModelConfig& config, const KvCacheOptions& options)
    : backend_(backend),
      asked_(options),
      options_(options),
      rope_(make_rope_policy(options.rope)),
      policy_(make_cache_policy(options)) {
  if (options_.block_size <= 0 || options_.num_blocks <= 0)
    fail("KV cache needs a positive block size and block count");
  if (options_.sink_tokens >= 0) {
    // Entries are dropped one at a time from the middle of a sequence: one slot per block.
    options_.num_blocks *= options_.block_size;
    options_.block_size = 1;
  }
  const int64_t slots = capacity_slots();
  Tensor slot_pos = backend_.alloc({slots}, DType::I32);
  backend_.fill_i32(slot_pos, 0);
  // One allocation for every layer's K and V (on the CPU large enough for 2 MB pages).
  std::vector<int64_t> shape = {2 * int64_t{config.num_layers}, slots, config.num_kv_heads,
                                config.head_dim};
  if (backend_.kv_heads_outer()) std::swap(shape[1], shape[2]);
  const Tensor kv = backend_.alloc(std::move(shape), backend_.compute_dtype());
  layers_.resize(static_cast<size_t>(config.num_layers));
  for (size_t i = 0; i < layers_.size(); ++i) {
    KvLayer& l = layers_[i];
    l.k = kv.row(static_cast<int64_t>(2 * i));
    l.v = kv.row(static_cast<int64_t>(2 * i + 1));
    l.slot_pos = slot_pos;
    l.block_size = options_.block_size;
  }
  bytes_ = slots * slot_bytes(config, backend_.compute_dtype());
  clear();
}

bool KvCache::can_hold(const KvCacheOptions& o) const {
  return o.block_size == asked_.block_size && o.rope == asked_.rope &&
         o.sink_tokens == asked_.sink_tokens && o.window == asked_.window &&
         o.num_blocks <= asked_.num_blocks;
}

void KvCache::clear() {
  seqs_.clear();
  ops_.clear();
  next_id_ = 0;
  shared_ = 0;
  free_.clear();
  free_at_.resize(static_cast<size_t>(options_.num_blocks));
  for (int b = 0; b < options_.num_blocks; ++b)
    free_at_[static_cast<size_t>(b)] = free_.insert(free_.end(), b);
  holders_.assign(static_cast<size_t>(options_.num_blocks), 0);
  findable_.clear();
  published_.assign(static_cast<size_t>(options_.num_blocks), Published{});
}

int KvCache::create_sequence() {
  seqs_[next_id_] = Seq{};
  return next_id_++;
}

void KvCache::release(int seq) {
  auto it = seqs_.find(seq);
  NI_ASSERT(it != seqs_.end());
  const std::vector<int32_t>& blocks = it->second.blocks;
  for (size_t i = blocks.size(); i-- > 0;) drop_block(blocks[i]);  // its first block last
  seqs_.erase(it);
}

int32_t KvCache::take_block() {
  if (free_.empty())
    fail("KV cache is full (" + std::to_string(capacity_slots()) +
         " slots): lower the batch size or max new tokens, or give a larger max_context "
         "(--max-context)");
  const int32_t b = free_.front();
  free_.pop_front();
  unpublish(b);  // its entries are about to be overwritten
  holders_[static_cast<size_t>(b)] = 1;
  return b;
}

void KvCache::drop_block(int32_t b) {
  int32_t& n = holders_[static_cast<size_t>(b)];
  NI_ASSERT(n > 0);
  if (--n > 0) {
    --shared_;
    return;
  }
  free_at_[static_cast<size_t>(b)] = free_.insert(free_.end(), b);  // still findable
}

void KvCache::unpublish(int32_t b) {
  Published& p = published_[static_cast<size_t>(b)];
  if (p.tokens.empty()) return;
  const auto [first, last] =
      findable_.equal_range(prefix_key(p.index, p.tokens.data(), options_.block_size));
  for (auto it = first; it != last; ++it)
    if (it->second == b) {
      findable_.erase(it);
      break;
    }
  p = Published{};
}

uint64_t KvCache::prefix_key(int index, const int32_t* tokens, int n) {
  uint64_t h = 1469598103934665603ULL ^ static_cast<uint32_t>(index);  // FNV-1a over the ids
  for (int i = 0; i < n; ++i) {
    h ^= static_cast<uint32_t>(tokens[i]);
    h *= 1099511628211ULL;
  }
  return h;
}

void KvCache::publish_prefix(int seq, const std::vector<int32_t>& tokens, int computed) {
  Seq& s = seqs_.at(seq);
  if (policy_->capacity() > 0) return;  // an evicting cache moves entries
  const int bs = options_.block_size;
  const int full = std::min({computed, s.length, static_cast<int>(tokens.size())}) / bs;
  for (; s.published < full; ++s.published) {
    const auto j = static_cast<size_t>(s.published);
    const int32_t b = s.blocks[j];
    Published& p = published_[static_cast<size_t>(b)];
    if (!p.tokens.empty()) continue;  // attached: published by its first holder
    p.parent = j > 0 ? s.blocks[j - 1] : -1;
    p.index = s.published;
    p.tokens.assign(tokens.begin() + static_cast<std::ptrdiff_t>(j * bs),
                    tokens.begin() + static_cast<std::ptrdiff_t>((j + 1) * bs));
    findable_.emplace(prefix_key(p.index, p.tokens.data(), bs), b);
  }
}

int KvCache::attach_prefix(int seq, const std::vector<int32_t>& tokens) {
  Seq& s = seqs_.at(seq);
  NI_ASSERT(s.blocks.empty() && s.length == 0);
  if (policy_->capacity() > 0) return 0;
  const int bs = options_.block_size;
  // Level j: every published block that holds the prompt's block j after a block of level j - 1
  // (requests admitted together each compute the same prefix: parallel chains, some shorter).
  // Whole blocks, and at least one token left to feed.
  std::vector<int32_t> level = {-1};  // level "-1": before the first block
  for (size_t j = 0; (j + 1) * static_cast<size_t>(bs) < tokens.size(); ++j) {
    const int32_t* t = tokens.data() + j * bs;
    std::vector<int32_t> next;
    const auto [first, last] = findable_.equal_range(prefix_key(static_cast<int>(j), t, bs));
    for (auto it = first; it != last; ++it) {
      const Published& p = published_[static_cast<size_t>(it->second)];
      if (std::find(level.begin(), level.end(), p.parent) != level.end() &&
          std::equal(p.tokens.begin(), p.tokens.end(), t))
        next.push_back(it->second);
    }
    if (next.empty()) break;
    level = std::move(next);
  }
  // One chain of the deepest level, back to its first block; released blocks are held again.
  for (int32_t b = level.front(); b >= 0; b = published_[static_cast<size_t>(b)].parent) {
    s.blocks.insert(s.blocks.begin(), b);
    int32_t& n = holders_[static_cast<size_t>(b)];
    if (n == 0)
      free_.erase(free_at_[static_cast<size_t>(b)]);
    else
      ++shared_;
    ++n;
    s.length += bs;
  }
  s.published = static_cast<int>(s.blocks.size());
  return s.length;
}

void KvCache::copy_sequence(int src, int dst) {
  const Seq& s = seqs_.at(src);
  Seq& d = seqs_.at(dst);
  NI_ASSERT(d.blocks.empty() && d.length == 0);
  const int bs = options_.block_size;
  // An evicting cache drops entries from the middle of a sequence and renumbers the rest, so
  // its blocks are never shared.
  const int shared = policy_->capacity() > 0 ? 0 : s.length / bs;
  for (int i = 0; i < shared; ++i) {
    const int32_t b = s.blocks[static_cast<size_t>(i)];
    d.blocks.push_back(b);
    ++holders_[static_cast<size_t>(b)];
    ++shared_;
  }
  while (d.blocks.size() < s.blocks.size()) d.blocks.push_back(take_block());
  std::vector<int32_t> from, to;
  for (int j = shared * bs; j < s.length; ++j) {
    from.push_back(slot_of(s.blocks, j));
    to.push_back(slot_of(d.blocks, j));
  }
  d.length = s.length;
  if (!from.empty()) run({CacheOp::Kind::CopySlots, std::move(from), std::move(to)});
}

void KvCache::apply(const CacheOp& op) {
  if (op.kind == CacheOp::Kind::CopySlots)
    backend_.copy_slots(layers_, op.slots, op.values);
  else
    backend_.write_i32(layers_[0].slot_pos, op.slots, op.values);
}

void KvCache::run(CacheOp op) {
  apply(op);
  ops_.push_back(std::move(op));
}

void KvCache::evict(Seq& s, int count) {
  // Block size is 1 here (see the constructor): dropping entries = dropping blocks.
  const auto first = s.blocks.begin() + policy_->evict_first();
  for (auto b = first; b != first + count; ++b) drop_block(*b);
  s.blocks.erase(first, first + count);
  s.length -= count;
  if (!policy_->renumbers()) return;
  std::vector<int32_t> slots, pos;
  for (int j = policy_->evict_first(); j < s.length; ++j) {
    slots.push_back(s.blocks[static_cast<size_t>(j)]);
    pos.push_back(policy_->position(j, 0));
  }
  if (!slots.empty()) run({CacheOp::Kind::SetPositions, std::move(slots), std::move(pos)});
}

int KvCache::step_capacity() const {
  const int cap = policy_->capacity();
  return cap > 0 ? cap - policy_->evict_first() : 0;
}

Placement KvCache::append(int seq, const std::vector<int32_t>& positions) {
  Seq& s = seqs_.at(seq);
  const int n_new = static_cast<int>(positions.size());
  if (const int most = step_capacity(); most > 0 && n_new > most)
    fail(std::to_string(n_new) + " new tokens in one step do not fit the " + policy_->name() +
         " cache: feed them in smaller chunks");
  if (const int drop = policy_->evict_count(s.length, n_new); drop > 0) evict(s, drop);
  const int bs = options_.block_size;
  Placement p;
  for (int32_t pos : positions) {
    const int j = s.length++;
    if (static_cast<size_t>(j / bs) >= s.blocks.size()) s.blocks.push_back(take_block());
    p.slots.push_back(slot_of(s.blocks, j));
    p.q_index.push_back(j);
    p.positions.push_back(policy_->position(j, pos));
  }
  return p;
}

int64_t KvCache::used_slots() const {
  int64_t n = 0;
  for (const auto& [id, s] : seqs_) n += s.length;
  return n - shared_ * options_.block_size;  // shared blocks are full ones
}

int64_t KvCache::allocated_slots() const {
  return (options_.num_blocks - static_cast<int64_t>(free_.size())) * options_.block_size;
}

}  // namespace nanoinfer
