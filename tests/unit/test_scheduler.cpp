// The continuous-batching scheduler's rules alone: requests start in order while their blocks
// fit, finished ones give their blocks back, a step's token budget is shared out in order.
#include <gtest/gtest.h>

#include <string>

#include "engine/run.h"
#include "engine/scheduler.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

TEST(Scheduler, StartsInOrderWhileBlocksFit) {
  Scheduler s(10, 16, 0);
  size_t id = 0;
  for (const int64_t b : {4, 5, 3, 2}) {
    EXPECT_EQ(s.add(b, ""), id);
    ++id;
  }
  s.begin_step();
  EXPECT_EQ(s.admit(), 0);
  EXPECT_EQ(s.admit(), 1);
  EXPECT_EQ(s.admit(), -1);  // request 2 (3 blocks) does not fit beside 9; 3 (2) waits behind it
  EXPECT_EQ(s.waiting(), 2U);
  EXPECT_EQ(s.reserved_blocks(), 9);
  s.finish(1);  // its 5 blocks return: both waiting requests fit now (4 + 3 + 2)
  EXPECT_EQ(s.admit(), 2);
  EXPECT_EQ(s.admit(), 3);
  EXPECT_EQ(s.waiting(), 0U);
  EXPECT_EQ(s.reserved_blocks(), 9);
  EXPECT_EQ(s.admit(), -1);
  s.finish(0);
  EXPECT_EQ(s.reserved_blocks(), 5);
}

TEST(Scheduler, StepBudgetIsSharedInOrder) {
  Scheduler s(100, 16, 10);
  s.add(1, "");
  s.add(1, "");
  s.begin_step();
  EXPECT_EQ(s.take(1), 1);
  EXPECT_FALSE(s.take_all(10));  // beams run all together or not at all
  EXPECT_TRUE(s.take_all(3));
  EXPECT_EQ(s.take(25), 6);  // a prompt chunk: what is left
  EXPECT_EQ(s.take(1), 0);
  EXPECT_EQ(s.admit(), -1);  // nothing starts in a spent step
  s.begin_step();
  EXPECT_EQ(s.admit(), 0);
  EXPECT_EQ(s.take(25), 10);
  Scheduler uncapped(100, 16, 0);
  uncapped.begin_step();
  EXPECT_EQ(uncapped.take(1 << 30), 1 << 30);
}

TEST(Scheduler, IdsCountFromTheFirstGiven) {
  Scheduler s(4, 16, 0, 7);
  EXPECT_EQ(s.add(1, ""), 7U);
  EXPECT_EQ(s.add(1, ""), 8U);
  s.begin_step();
  EXPECT_EQ(s.admit(), 7);
}

// The refusal names the request as the caller does ("the request" when it names none).
TEST(Scheduler, RefusesWhatCanNeverFit) {
  Scheduler s(8, 16, 0);
  s.add(8, "");
  for (const std::string who : {"request 1", ""}) {
    std::string what;
    try {
      s.add(9, who);
    } catch (const Error& e) {
      what = e.what();
    }
    EXPECT_EQ(what, (who.empty() ? "the request" : who) +
                        " needs up to 9 KV blocks of 16 tokens (144 slots: its prompt + max new "
                        "tokens, beam forks included), more than the cache's 8 (128 slots): raise "
                        "cache_tokens or lower max_new_tokens");
  }
  EXPECT_EQ(s.waiting(), 1U);
  EXPECT_THROW(Scheduler(8, 16, -1), Error);
}

// generate()'s own cache (cache_tokens 0): every request at once while that is within 3/4 of the
// memory free, else what fits there (the requests then take turns), but never too small for the
// largest request.
TEST(GenerateCache, EveryRequestAtOnceWithinThreeQuartersOfFreeMemory) {
  constexpr int64_t kBlock = 1000;                                     // bytes a block
  EXPECT_EQ(blocks_within_memory(50, 4, 100 * kBlock, kBlock), 50);    // 50 <= 75
  EXPECT_EQ(blocks_within_memory(75, 4, 100 * kBlock, kBlock), 75);    // just fits
  EXPECT_EQ(blocks_within_memory(500, 4, 100 * kBlock, kBlock), 75);   // the requests take turns
  EXPECT_EQ(blocks_within_memory(500, 90, 100 * kBlock, kBlock), 90);  // the largest must run
  EXPECT_EQ(blocks_within_memory(500, 4, -1, kBlock), 500);            // free memory unknown
}

}  // namespace
}  // namespace nanoinfer
