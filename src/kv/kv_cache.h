// The KV cache: per-layer K/V storage in blocks of block_size slots, a free list of blocks, and
// for each sequence its block table (logical index j -> slot). It assigns each new token its slot,
// logical index and RoPE position, and owns the RopePolicy that decides when keys are rotated.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "kv/cache_policy.h"
#include "kv/rope_policy.h"
#include "nanoinfer/model_config.h"

namespace nanoinfer {

struct KvCacheOptions {
  int block_size = 16;
  int num_blocks = 0;         // total capacity = num_blocks * block_size slots
  std::string rope = "post";  // "post" | "pre"
  int sink_tokens = -1;       // >= 0: StreamingLLM sink cache of sink_tokens + window entries
  int window = 0;
};

// The cache policy the options ask for: a sink cache (sink_tokens >= 0) or the full cache. Fails
// on options that no policy takes (a sink cache without a window or over keys rotated as they are
// stored; a window without sink tokens), so that an engine can refuse them before any request.
std::unique_ptr<CachePolicy> make_cache_policy(const KvCacheOptions& o);

// Where the new tokens of one sequence go, as the batch builder needs it.
struct Placement {
  std::vector<int32_t> slots, q_index, positions;
};

// A change the cache makes to its device memory outside a forward: beam forks copy slots, a sink
// cache renumbers the positions of kept keys. The other ranks of a tensor-parallel group replay
// rank 0's ops on their own shard of the cache, whose bookkeeping only rank 0 keeps.
struct CacheOp {
  enum class Kind : uint8_t { CopySlots, SetPositions };
  Kind kind = Kind::CopySlots;
  std::vector<int32_t> slots;   // CopySlots: source slots; SetPositions: slots
  std::vector<int32_t> values;  // CopySlots: destination slots; SetPositions: their positions
};

class KvCache {
 public:
  KvCache(Backend& backend, const ModelConfig& config, const KvCacheOptions& options);

  // Whether this cache's device memory can serve a cache made with `options`: the same layout
  // and at least as many slots. clear() then makes it as good as new (no sequence, every block
  // free, no pending op) and keeps the memory, whose old entries no sequence reads before it
  // writes them.
  bool can_hold(const KvCacheOptions& options) const;
  void clear();

  int create_sequence();
  void release(int seq);
  // dst (a new, empty sequence) becomes a copy of src: beam search forks. In a full cache dst
  // shares src's full blocks (appends only ever write a sequence's last, partial block) and gets
  // its own copy of the partial one; an evicting cache copies every entry.
  void copy_sequence(int src, int dst);
  // Reserves room for tokens at the given text positions (evicting first when the cache policy
  // says so) and returns where they go and the positions the policy assigns them; throws Error
  // when the cache is full.
  Placement append(int seq, const std::vector<int32_t>& positions);
  // The most tokens one append may add to a sequence (0: no bound): an evicting cache keeps its
  // window for them, its sink tokens aside.
  int step_capacity() const;
  // Prefix reuse (a cache that never evicts). publish_prefix makes the full blocks of `seq` that
  // hold its first `computed` tokens (tokens[0..computed), at positions 0, 1, ...) findable by
  // those tokens; attach_prefix gives an empty sequence the published blocks that hold the
  // longest prefix of `tokens` (whole blocks, at least one token left out for the step that
  // gives the logits), shared as beam forks share, and returns the tokens they hold. A block is
  // findable while a sequence holds it and, once released, until it is taken for other tokens
  // (the blocks released longest ago are taken first). Matches are exact: a block is found by its
  // own tokens and a parent found before it; of several copies of a prefix (computed by requests
  // that started together) the longest chain is taken.
  void publish_prefix(int seq, const std::vector<int32_t>& tokens, int computed);
  int attach_prefix(int seq, const std::vector<int32_t>& tokens);
  // Runs an op on the device memory only (a follower rank replaying rank 0's op).
  void apply(const CacheOp& op);
  // The ops this cache ran since the last call (rank 0 sends them with the next step).
  std::vector<CacheOp> take_ops() { return std::exchange(ops_, {}); }
  int length(int seq) const { return seqs_.at(seq).length; }
  const std::vector<int32_t>& blocks(int seq) const { return seqs_.at(seq).blocks; }
  // The slot of a sequence's entry j (its index in the sequence).
  int32_t slot(int seq, int j) const { return slot_of(seqs_.at(seq).blocks, j); }

  KvLayer& layer(int i) { return layers_[static_cast<size_t>(i)]; }
  const RopePolicy& rope() const { return *rope_; }
  const CachePolicy& policy() const { return *policy_; }
  int block_size() const { return options_.block_size; }
  int free_blocks() const { return static_cast<int>(free_.size()); }
  // Blocks held by more than one sequence, counted once per extra holder.
  int64_t shared_blocks() const { return shared_; }
  int64_t capacity_slots() const { return int64_t{options_.num_blocks} * options_.block_size; }
  int64_t used_slots() const;       // entries held by live sequences (a shared one once)
  int64_t allocated_slots() const;  // slots in blocks handed to live sequences
  int64_t bytes() const { return bytes_; }
  // Bytes of keys and values that one slot holds over every layer, in `dtype` (bytes() per slot).
  static int64_t slot_bytes(const ModelConfig& config, DType dtype) {
    return static_cast<int64_t>(dtype_nbytes(
        dtype, 2 * int64_t{config.num_layers} * config.num_kv_heads * config.head_dim));
  }

 private:
  struct Seq {
    std::vector<int32_t> blocks;
    int length = 0;
    int published = 0;  // leading blocks findable by their tokens
  };
  // A published block: its tokens, its place in its sequence and the block before it there
  // (-1: the first). Found by its place and tokens, kept if its parent was found before it.
  struct Published {
    std::vector<int32_t> tokens;
    int index = 0;
    int32_t parent = -1;
  };
  static uint64_t prefix_key(int index, const int32_t* tokens, int n);
  // The slot of entry j of a sequence holding these blocks.
  int32_t slot_of(const std::vector<int32_t>& blocks, int j) const {
    const int bs = options_.block_size;
    return blocks[static_cast<size_t>(j / bs)] * bs + j % bs;
  }
  int32_t take_block();
  void drop_block(int32_t b);
  void unpublish(int32_t b);
  void evict(Seq& s, int count);
  void run(CacheOp op);

  Backend& backend_;
  KvCacheOptions asked_;  // as made (options_ is what a sink cache turns them into)
  KvCacheOptions options_;
  std::unique_ptr<RopePolicy> rope_;
  std::unique_ptr<CachePolicy> policy_;
  std::vector<KvLayer> layers_;
  // Blocks no sequence holds, the one released longest ago first; a published one stays
  // findable here until it is taken. A sequence holds its blocks' parents too and releases its
  // last block first, so a block is always taken before its parent is.
  std::list<int32_t> free_;
  std::vector<std::list<int32_t>::iterator> free_at_;  // per block: its place in free_ if free
  std::vector<int32_t> holders_;                       // per block: the sequences holding it
  int64_t shared_ = 0;                                 // sum over blocks of (holders - 1)
  std::map<int, Seq> seqs_;
  std::unordered_multimap<uint64_t, int32_t> findable_;  // key -> block
  std::vector<Published> published_;                     // per block (tokens empty: not)
  std::vector<CacheOp> ops_;
  int next_id_ = 0;
  int64_t bytes_ = 0;
};

}  // namespace nanoinfer
