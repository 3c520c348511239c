#include "dist/shard.h"

#include <algorithm>

#include "util/error.h"

namespace nanoinfer {

Range split_range(int64_t n, int parts, int index, int64_t unit) {
  const int64_t units = (n + unit - 1) / unit;
  const int64_t base = units / parts, extra = units % parts;
  const int64_t first = index * base + (index < extra ? index : extra);
  const int64_t count = base + (index < extra ? 1 : 0);
  return {std::min(n, first * unit), std::min(n, (first + count) * unit)};
}

Range vocab_range(int64_t vocab, int world, int rank) {
  const int64_t block = (vocab + world - 1) / world;
  return {std::min(vocab, rank * block), std::min(vocab, (rank + 1) * block)};
}

Shard Shard::plan(const ModelConfig& c, int rank, int world, int64_t ffn_align) {
  NI_ASSERT(world >= 1 && rank >= 0 && rank < world && ffn_align >= 1);
  const std::string who = "tensor parallelism over " + std::to_string(world) + " ranks: ";
  Shard s;
  s.rank = rank;
  s.world = world;
  const int group = c.num_heads / c.num_kv_heads;
  if (world <= c.num_kv_heads) {
    s.kv_heads = split_range(c.num_kv_heads, world, rank);
    s.q_heads = {s.kv_heads.begin * group, s.kv_heads.end * group};
  } else {
    if (world % c.num_kv_heads != 0)
      fail(who + "with more ranks than the " + std::to_string(c.num_kv_heads) +
           " KV heads, the ranks must be a multiple of the KV heads");
    const int per_head = world / c.num_kv_heads;
    if (per_head > group)
      fail(who + std::to_string(per_head) + " ranks would share each KV head, but its group has " +
           "only " + std::to_string(group) + " query heads");
    const int kv = rank / per_head;
    s.kv_heads = {kv, kv + 1};
    const Range q = split_range(group, per_head, rank % per_head);
    s.q_heads = {kv * group + q.begin, kv * group + q.end};
  }
  const int64_t ffn_units = (c.intermediate_size + ffn_align - 1) / ffn_align;
  if (ffn_units < world)
    fail(who + "the MLP has only " + std::to_string(ffn_units) + " units of " +
         std::to_string(ffn_align) + " features to split");
  s.ffn = split_range(c.intermediate_size, world, rank, ffn_align);
  s.vocab_block = (c.vocab_size + world - 1) / world;
  s.vocab = vocab_range(c.vocab_size, world, rank);
  if (s.vocab.size() == 0) fail(who + "the vocabulary is too small to split");
  return s;
}

ModelConfig Shard::local(const ModelConfig& c) const {
  ModelConfig l = c;
  l.num_heads = static_cast<int>(q_heads.size());
  l.num_kv_heads = static_cast<int>(kv_heads.size());
  l.intermediate_size = static_cast<int>(ffn.size());
  l.vocab_size = static_cast<int>(vocab.size());
  return l;
}

std::string Shard::describe() const {
  auto r = [](const Range& x) {
    return "[" + std::to_string(x.begin) + ", " + std::to_string(x.end) + ")";
  };
  return "rank " + std::to_string(rank) + "/" + std::to_string(world) + ": query heads " +
         r(q_heads) + ", KV heads " + r(kv_heads) + ", MLP features " + r(ffn) + ", vocabulary " +
         r(vocab);
}

}  // namespace nanoinfer
