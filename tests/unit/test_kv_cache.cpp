// KvCache forks (beam search): in a full cache a fork shares the source's full blocks and copies
// only the entries of its partial last block; blocks return to the free list when their last
// holder lets go; an evicting (sink) cache copies every entry into blocks of its own. A cache
// cleared for reuse (the engine's next generate()) is as good as new on the same memory.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "backend/backend.h"
#include "kv/kv_cache.h"

namespace nanoinfer {
namespace {

constexpr int kBlock = 4, kBlocks = 16, kRow = 2 * 4;  // 2 kv heads x head_dim 4

// Value e of a slot's row of K or V (head e / 4), in the CPU's layout: [kv_head][slot][D].
float& at(const Tensor& t, int32_t slot, int e) {
  return t.as<float>()[(e / 4 * t.dim(1) + slot) * 4 + e % 4];
}

struct Fixture {
  std::unique_ptr<Backend> be = make_cpu_backend();
  ModelConfig c = [] {
    ModelConfig m;
    m.num_layers = 2;
    m.num_kv_heads = 2;
    m.head_dim = 4;
    return m;
  }();

  // A sequence of n entries whose K and V rows in every layer hold seed + slot.
  static int filled(KvCache& cache, int n, float seed) {
    const int seq = cache.create_sequence();
    std::vector<int32_t> pos(static_cast<size_t>(n));
    std::iota(pos.begin(), pos.end(), 0);
    const Placement p = cache.append(seq, pos);
    for (int l = 0; l < 2; ++l)
      for (const int32_t slot : p.slots)
        for (int e = 0; e < kRow; ++e) {
          at(cache.layer(l).k, slot, e) = seed + static_cast<float>(slot);
          at(cache.layer(l).v, slot, e) = -seed - static_cast<float>(slot);
        }
    return seq;
  }
  static int32_t slot(const KvCache& cache, int seq, int j) {
    return cache.blocks(seq)[static_cast<size_t>(j / cache.block_size())] * cache.block_size() +
           j % cache.block_size();
  }
  // Entry j of b holds what entry j of a holds, in every layer.
  static void expect_same_entries(KvCache& cache, int a, int b) {
    ASSERT_EQ(cache.length(a), cache.length(b));
    for (int l = 0; l < 2; ++l)
      for (int j = 0; j < cache.length(a); ++j)
        for (int e = 0; e < kRow; ++e) {
          EXPECT_EQ(at(cache.layer(l).k, slot(cache, a, j), e),
                    at(cache.layer(l).k, slot(cache, b, j), e));
          EXPECT_EQ(at(cache.layer(l).v, slot(cache, a, j), e),
                    at(cache.layer(l).v, slot(cache, b, j), e));
        }
  }
};

TEST(KvCacheFork, SharesFullBlocksAndCopiesThePartialOne) {
  Fixture f;
  KvCache cache(*f.be, f.c, {kBlock, kBlocks, "post"});
  const int a = Fixture::filled(cache, 10, 100.0F);  // blocks of 4, 4, 2 entries
  const int b = cache.create_sequence();
  cache.copy_sequence(a, b);
  const auto& ba = cache.blocks(a);
  const auto& bb = cache.blocks(b);
  ASSERT_EQ(bb.size(), 3U);
  EXPECT_EQ(bb[0], ba[0]);
  EXPECT_EQ(bb[1], ba[1]);
  EXPECT_NE(bb[2], ba[2]);
  Fixture::expect_same_entries(cache, a, b);
  EXPECT_EQ(cache.free_blocks(), kBlocks - 4);
  EXPECT_EQ(cache.shared_blocks(), 2);
  EXPECT_EQ(cache.used_slots(), 10 + 2);
  EXPECT_EQ(cache.allocated_slots(), 4 * kBlock);

  // The fork's next entry goes into its own block; the source's entries stay as they were.
  const Placement p = cache.append(b, {10});
  EXPECT_EQ(p.slots, std::vector<int32_t>{bb[2] * kBlock + 2});

  cache.release(a);  // a's own block is freed, the shared ones stay with b
  EXPECT_EQ(cache.free_blocks(), kBlocks - 3);
  EXPECT_EQ(cache.shared_blocks(), 0);
  EXPECT_EQ(cache.used_slots(), 11);
  const int32_t first = Fixture::slot(cache, b, 0);  // a's first entry, now b's alone
  EXPECT_EQ(at(cache.layer(0).k, first, 0), 100.0F + static_cast<float>(first));
  cache.release(b);
  EXPECT_EQ(cache.free_blocks(), kBlocks);
  EXPECT_EQ(cache.used_slots(), 0);
}

TEST(KvCacheFork, AtABlockBoundaryEveryBlockIsShared) {
  Fixture f;
  KvCache cache(*f.be, f.c, {kBlock, kBlocks, "post"});
  const int a = Fixture::filled(cache, 8, 7.0F);
  const int b = cache.create_sequence();
  const int c = cache.create_sequence();
  cache.copy_sequence(a, b);
  cache.copy_sequence(b, c);
  EXPECT_EQ(cache.blocks(b), cache.blocks(a));
  EXPECT_EQ(cache.blocks(c), cache.blocks(a));
  EXPECT_EQ(cache.free_blocks(), kBlocks - 2);
  EXPECT_EQ(cache.shared_blocks(), 4);
  EXPECT_EQ(cache.used_slots(), 8);
  // Each one's next entry takes a block of its own.
  const int32_t next_a = cache.append(a, {8}).slots[0], next_b = cache.append(b, {8}).slots[0];
  EXPECT_NE(next_a / kBlock, next_b / kBlock);
  EXPECT_EQ(cache.free_blocks(), kBlocks - 4);
  cache.release(b);
  cache.release(a);
  EXPECT_EQ(cache.free_blocks(), kBlocks - 2);  // c still holds the two shared blocks
  cache.release(c);
  EXPECT_EQ(cache.free_blocks(), kBlocks);
}

TEST(KvCacheFork, ASinkCacheCopiesEveryEntry) {
  Fixture f;
  KvCacheOptions o{kBlock, kBlocks, "pre"};
  o.sink_tokens = 2;
  o.window = 6;
  KvCache cache(*f.be, f.c, o);  // one slot a block
  const int a = Fixture::filled(cache, 6, 50.0F);
  const int b = cache.create_sequence();
  cache.copy_sequence(a, b);
  for (const int32_t blk : cache.blocks(b))
    EXPECT_EQ(std::count(cache.blocks(a).begin(), cache.blocks(a).end(), blk), 0);
  Fixture::expect_same_entries(cache, a, b);
  EXPECT_EQ(cache.shared_blocks(), 0);
  EXPECT_EQ(cache.used_slots(), 12);
}

// Prefix reuse: the published full blocks of one sequence's tokens are found by a later one with
// the same leading tokens (whole blocks only, one token always left out), shared rather than
// copied; a token that differs ends the match at its block; blocks are findable only while held.
TEST(KvCachePrefix, PublishedBlocksAreSharedByTheSameLeadingTokens) {
  Fixture f;
  KvCache cache(*f.be, f.c, {kBlock, kBlocks, "post"});
  std::vector<int32_t> tokens(11);
  std::iota(tokens.begin(), tokens.end(), 100);
  const int a = Fixture::filled(cache, 11, 1.0F);  // blocks of 4: two full, one of 3
  cache.publish_prefix(a, tokens, 11);
  const int free_before = cache.free_blocks();
  const int b = cache.create_sequence();
  EXPECT_EQ(cache.attach_prefix(b, tokens), 8);  // the two full blocks
  EXPECT_EQ(cache.blocks(b),
            std::vector<int32_t>(cache.blocks(a).begin(), cache.blocks(a).begin() + 2));
  EXPECT_EQ(cache.free_blocks(), free_before);  // shared, not taken
  EXPECT_EQ(cache.shared_blocks(), 2);
  // The same 8 tokens alone: one token must stay to be fed, so only the first block.
  const int c = cache.create_sequence();
  EXPECT_EQ(cache.attach_prefix(c, std::vector<int32_t>(tokens.begin(), tokens.begin() + 8)), 4);
  // A token that differs in the second block: the first block only.
  std::vector<int32_t> other = tokens;
  other[6] = 7;
  const int d = cache.create_sequence();
  EXPECT_EQ(cache.attach_prefix(d, other), 4);
  // Not what was computed yet: publishing 5 computed tokens makes one block findable.
  KvCache fresh(*f.be, f.c, {kBlock, kBlocks, "post"});
  const int e = Fixture::filled(fresh, 11, 2.0F);
  fresh.publish_prefix(e, tokens, 5);
  const int g = fresh.create_sequence();
  EXPECT_EQ(fresh.attach_prefix(g, tokens), 4);
}

// Released blocks stay findable until they are taken for other tokens, the blocks released
// longest ago first and a prompt's first block last: a later prompt takes what is left of it.
TEST(KvCachePrefix, ReleasedBlocksStayFindableUntilTaken) {
  Fixture f;
  KvCache cache(*f.be, f.c, {kBlock, kBlocks, "post"});
  std::vector<int32_t> tokens(13);
  std::iota(tokens.begin(), tokens.end(), 100);
  const int a = Fixture::filled(cache, 12, 1.0F);  // three full blocks
  cache.publish_prefix(a, tokens, 12);
  const std::vector<int32_t> chain = cache.blocks(a);
  cache.release(a);
  EXPECT_EQ(cache.free_blocks(), kBlocks);
  const int b = cache.create_sequence();
  EXPECT_EQ(cache.attach_prefix(b, tokens), 12);  // held again, not shared
  EXPECT_EQ(cache.blocks(b), chain);
  EXPECT_EQ(cache.free_blocks(), kBlocks - 3);
  EXPECT_EQ(cache.shared_blocks(), 0);
  cache.release(b);
  // Every other block is taken first; then the chain from its last block.
  const int other = Fixture::filled(cache, (kBlocks - 3) * kBlock, 2.0F);
  const int probe = cache.create_sequence();
  EXPECT_EQ(cache.attach_prefix(probe, tokens), 12);
  cache.release(probe);
  const int one_more = Fixture::filled(cache, 1, 3.0F);
  EXPECT_EQ(cache.blocks(one_more), std::vector<int32_t>{chain[2]});
  const int c = cache.create_sequence();
  EXPECT_EQ(cache.attach_prefix(c, tokens), 8);
  cache.release(c);
  const int two_more = Fixture::filled(cache, 2 * kBlock, 4.0F);
  EXPECT_EQ(cache.blocks(two_more), (std::vector<int32_t>{chain[1], chain[0]}));
  const int d = cache.create_sequence();
  EXPECT_EQ(cache.attach_prefix(d, tokens), 0);
  for (const int s : {other, one_more, two_more, d}) cache.release(s);
  EXPECT_EQ(cache.free_blocks(), kBlocks);
}

// Requests that start together each compute the same prefix: parallel copies, one of them
// shorter (a prompt still in chunks). A later prompt takes the longest copy, whichever copy its
// first block is found in, in either order of publishing.
TEST(KvCachePrefix, TheLongestOfParallelCopiesIsTaken) {
  Fixture f;
  std::vector<int32_t> tokens(13);
  std::iota(tokens.begin(), tokens.end(), 100);
  for (const bool short_first : {true, false}) {
    KvCache cache(*f.be, f.c, {kBlock, kBlocks, "post"});
    const int whole = Fixture::filled(cache, 12, 1.0F);  // three full blocks
    const int part = Fixture::filled(cache, 12, 2.0F);
    if (short_first) cache.publish_prefix(part, tokens, 4);  // one block computed so far
    cache.publish_prefix(whole, tokens, 12);
    if (!short_first) cache.publish_prefix(part, tokens, 4);
    const int c = cache.create_sequence();
    EXPECT_EQ(cache.attach_prefix(c, tokens), 12) << "short copy first: " << short_first;
    EXPECT_EQ(cache.blocks(c), cache.blocks(whole));
    // The shorter copy goes on with a block of other tokens: the next prompt follows it there.
    std::vector<int32_t> other = tokens;
    other[5] = 7;
    cache.publish_prefix(part, other, 8);
    const int d = cache.create_sequence();
    EXPECT_EQ(cache.attach_prefix(d, other), 8);
    EXPECT_EQ(cache.blocks(d),
              std::vector<int32_t>(cache.blocks(part).begin(), cache.blocks(part).begin() + 2));
  }
}

TEST(KvCacheReuse, ClearedIsAsNewOnTheSameMemory) {
  Fixture f;
  const KvCacheOptions o{kBlock, kBlocks, "post"};
  KvCache cache(*f.be, f.c, o);
  const void* k0 = cache.layer(0).k.data();
  const int a = Fixture::filled(cache, 9, 1.0F);
  const int b = cache.create_sequence();
  cache.copy_sequence(a, b);  // a shared block, a pending copy
  ASSERT_GT(cache.shared_blocks(), 0);
  cache.clear();
  EXPECT_EQ(cache.free_blocks(), kBlocks);
  EXPECT_EQ(cache.shared_blocks(), 0);
  EXPECT_EQ(cache.used_slots(), 0);
  EXPECT_TRUE(cache.take_ops().empty());
  EXPECT_EQ(cache.layer(0).k.data(), k0);
  // The same ids and blocks as a new cache's, in the same order.
  KvCache again(*f.be, f.c, o);
  const int x = cache.create_sequence(), y = again.create_sequence();
  EXPECT_EQ(x, y);
  EXPECT_EQ(cache.append(x, {0, 1, 2, 3, 4}).slots, again.append(y, {0, 1, 2, 3, 4}).slots);
}

TEST(KvCacheReuse, HoldsTheSameLayoutWithNoMoreBlocks) {
  Fixture f;
  KvCacheOptions o{kBlock, kBlocks, "pre"};
  const KvCache cache(*f.be, f.c, o);
  EXPECT_TRUE(cache.can_hold(o));
  o.num_blocks = kBlocks - 1;
  EXPECT_TRUE(cache.can_hold(o));
  o.num_blocks = kBlocks + 1;
  EXPECT_FALSE(cache.can_hold(o));
  o.num_blocks = kBlocks;
  for (auto change :
       {+[](KvCacheOptions& p) { p.block_size = 8; }, +[](KvCacheOptions& p) { p.rope = "post"; },
        +[](KvCacheOptions& p) { p.sink_tokens = 2, p.window = 6; }}) {
    KvCacheOptions other = o;
    change(other);
    EXPECT_FALSE(cache.can_hold(other));
  }
  // A sink cache compares what it was asked for, not the one-slot blocks it turned them into.
  KvCacheOptions sink = o;
  sink.sink_tokens = 2;
  sink.window = 6;
  const KvCache sinks(*f.be, f.c, sink);
  EXPECT_TRUE(sinks.can_hold(sink));
  sink.window = 7;
  EXPECT_FALSE(sinks.can_hold(sink));
}

}  // namespace
}  // namespace nanoinfer
