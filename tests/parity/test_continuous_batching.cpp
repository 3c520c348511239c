// Continuous batching through the engine (fp32 CPU, tiny models): with a KV cache too small for
// every request at once and a cap on a step's tokens, requests wait, start as others finish, and
// have their prompts cut into chunks; every output is still, token for token, that of the request
// run alone, and no step goes over either limit.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <future>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "nanoinfer/engine.h"
#include "test_paths.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

struct Limits {
  int cache_tokens;     // 0: every request at once
  int max_step_tokens;  // 0: no cap
};

class ContinuousBatching : public ::testing::TestWithParam<Limits> {};

std::vector<GenerationRequest> mixed_requests(int vocab) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> len(1, 90), id(0, vocab - 1), news(1, 12);
  std::vector<GenerationRequest> reqs(12);
  for (GenerationRequest& r : reqs) {
    r.prompt_ids.resize(static_cast<size_t>(len(rng)));
    for (int32_t& t : r.prompt_ids) t = id(rng);
    r.params.max_new_tokens = news(rng);  // they finish at different steps
    r.params.ignore_eos = true;
  }
  reqs[3].params.temperature = 0.8F;  // a sampled row: its draws depend on its own state only
  reqs[3].params.top_p = 0.9F;
  reqs[3].params.seed = 5;
  return reqs;
}

TEST_P(ContinuousBatching, EveryRequestAsIfAlone) {
  const Limits lim = GetParam();
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_context = 128;
  opt.cache_tokens = lim.cache_tokens;
  opt.max_step_tokens = lim.max_step_tokens;
  Engine engine(opt);
  EngineOptions alone_opt = opt;
  alone_opt.cache_tokens = 0;
  alone_opt.max_step_tokens = 0;
  Engine alone(alone_opt);
  const std::vector<GenerationRequest> reqs = mixed_requests(engine.config().vocab_size);
  const std::vector<GenerationOutput> out = engine.generate(reqs);
  const GenerationStats st = engine.last_stats();
  ASSERT_EQ(out.size(), reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(out[i].token_ids, alone.generate({reqs[i]})[0].token_ids) << "request " << i;
    EXPECT_EQ(out[i].finish_reason, "length");
  }
  int64_t prompt_tokens = 0, new_tokens = 0;
  for (const GenerationRequest& r : reqs) {
    prompt_tokens += static_cast<int64_t>(r.prompt_ids.size());
    new_tokens += r.params.max_new_tokens;
  }
  // Every prompt token is fed once; every token after each request's first is a decode row.
  EXPECT_EQ(st.prefill_tokens, prompt_tokens);
  int64_t fed = 0, most_allocated = 0;
  bool waited = false;
  for (const StepStats& s : st.steps) {
    fed += s.tokens;
    if (lim.max_step_tokens > 0) {
      EXPECT_LE(s.tokens, lim.max_step_tokens);
    }
    if (lim.cache_tokens > 0) {
      EXPECT_LE(s.cache_allocated, lim.cache_tokens);
    }
    most_allocated = std::max(most_allocated, s.cache_allocated);
    waited = waited || s.waiting > 0;
  }
  // Every prompt token and every generated token but the last of each request is fed once.
  EXPECT_EQ(fed, prompt_tokens + new_tokens - static_cast<int64_t>(reqs.size()));
  // A small cache or a step cap below the prompts' tokens makes requests wait; else all start.
  EXPECT_EQ(waited, lim.cache_tokens > 0 || lim.max_step_tokens > 0);
  EXPECT_GT(most_allocated, 0);
}

INSTANTIATE_TEST_SUITE_P(Limits, ContinuousBatching,
                         ::testing::Values(Limits{0, 0}, Limits{0, 40}, Limits{256, 0},
                                           Limits{160, 17}, Limits{112, 1}),
                         [](const auto& info) {
                           return "cache" + std::to_string(info.param.cache_tokens) + "_step" +
                                  std::to_string(info.param.max_step_tokens);
                         });

// A chunked prompt takes as many steps as its chunks, the decode rows of running requests first.
TEST(ContinuousBatchingSteps, ChunksAndDecodeRowsShareSteps) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_step_tokens = 10;
  Engine engine(opt);
  GenerationRequest a, b;
  a.prompt_ids.assign(4, 7);
  a.params.max_new_tokens = 8;
  a.params.ignore_eos = true;
  b.prompt_ids.assign(25, 9);
  b.params.max_new_tokens = 2;
  b.params.ignore_eos = true;
  engine.generate({a, b});
  const std::vector<StepStats>& s = engine.last_stats().steps;
  // Step 0: a's prompt (4) + b's first 6 tokens; steps 1-2: a's row + 9 of b's; step 3: a's row +
  // b's last token (its first row); step 4: both rows (b's last); a's rows alone after that.
  std::vector<int> tokens(s.size());
  std::transform(s.begin(), s.end(), tokens.begin(), [](const StepStats& x) { return x.tokens; });
  EXPECT_EQ(tokens, (std::vector<int>{10, 10, 10, 2, 2, 1, 1, 1}));
  EXPECT_EQ(engine.last_stats().prefill_tokens, 29);
  EXPECT_EQ(engine.last_stats().decode_tokens, 5);  // rows of the steps without prompt tokens
}

// generate()'s step callback: false after a step cancels every request left, running (a's, with
// its tokens so far), mid-prompt (b's, none) or beam search alike; the engine runs on after it.
TEST(ContinuousBatchingSteps, AStepCallbackThatSaysStopCancelsTheRest) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_step_tokens = 10;
  Engine engine(opt);
  GenerationRequest a, b, beams;
  a.prompt_ids.assign(4, 7);
  a.params.max_new_tokens = 8;
  a.params.ignore_eos = true;
  b.prompt_ids.assign(40, 9);
  b.params.max_new_tokens = 2;
  beams.prompt_ids.assign(3, 5);
  beams.params.num_beams = 2;
  beams.params.max_new_tokens = 6;
  int steps = 0;
  const std::vector<GenerationOutput> out =
      engine.generate({a, b, beams}, nullptr, [&steps] { return ++steps < 2; });
  EXPECT_EQ(engine.last_stats().steps.size(), 2U);
  for (const GenerationOutput& o : out) EXPECT_EQ(o.finish_reason, "cancelled");
  EXPECT_EQ(out[0].token_ids.size(), 2U);  // a's first token, then one decode row
  EXPECT_TRUE(out[1].token_ids.empty());   // b's prompt was still being fed
  EXPECT_EQ(engine.generate({a})[0].token_ids.size(), 8U);
}

// Beam requests wait for the blocks of all their forks and run every beam in one step.
TEST(ContinuousBatchingSteps, BeamRequestsQueueBehindOthers) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  Engine alone(opt);
  opt.cache_tokens = 16 * 16;
  opt.max_step_tokens = 9;
  Engine engine(opt);
  std::vector<GenerationRequest> reqs(3);
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].prompt_ids.assign(20 + 5 * i, static_cast<int32_t>(3 + i));
    reqs[i].params.max_new_tokens = 6;
    reqs[i].params.ignore_eos = true;
  }
  // Blocks of 16 reserved: 2, then 2 x 7 for three beams (forks), so the third request (3 blocks)
  // waits for the first to finish.
  reqs[1].params.num_beams = 3;
  reqs[1].params.ignore_eos = false;
  const std::vector<GenerationOutput> out = engine.generate(reqs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    const GenerationOutput want = alone.generate({reqs[i]})[0];
    EXPECT_EQ(out[i].token_ids, want.token_ids) << "request " << i;
    EXPECT_EQ(out[i].sequences, want.sequences) << "request " << i;
  }
  const std::vector<StepStats>& steps = engine.last_stats().steps;
  EXPECT_TRUE(std::any_of(steps.begin(), steps.end(), [](const StepStats& s) {
    return s.waiting == 1 && s.tokens < 9;  // the third request waits for room, not for the step
  }));
}

// A request whose whole life cannot fit the cache is refused before anything runs, by index.
TEST(ContinuousBatchingSteps, RequestLargerThanTheCacheIsRefused) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.cache_tokens = 64;
  Engine engine(opt);
  GenerationRequest small, big;
  small.prompt_ids.assign(10, 1);
  small.params.max_new_tokens = 4;
  big.prompt_ids.assign(60, 1);
  big.params.max_new_tokens = 10;
  try {
    engine.generate({small, big});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    // (in slots as well as blocks: the option counts slots)
    EXPECT_NE(std::string(e.what()).find("request 1 needs up to 5 KV blocks of 16 tokens (80 "
                                         "slots: its prompt + max new tokens, beam forks "
                                         "included), more than the cache's 4 (64 slots)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(engine.generate({small})[0].token_ids.size(), 4U);
}

// Every beam decodes in each step: more beams than the step cap takes could never run (an
// internal error once its prompt was in: found by fuzzing), so such a request is refused.
TEST(ContinuousBatchingSteps, MoreBeamsThanTheStepCapAreRefused) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_step_tokens = 3;
  Engine engine(opt);
  GenerationRequest r;
  r.prompt_ids = {5, 6, 7, 8, 9};
  r.params.max_new_tokens = 4;
  r.params.num_beams = 4;
  try {
    engine.generate({r});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("request 0: num_beams (4) exceeds the tokens a step "
                                         "takes (max_step_tokens 3)"),
              std::string::npos)
        << e.what();
  }
  r.params.num_beams = 3;
  EXPECT_EQ(engine.generate({r})[0].sequences.size(), 1U);
}

// A beam request's beams decode in one step or none: left out of a step (the sampled requests
// that decode first left fewer tokens than beams), they go first at the next, rather than wait
// for every sampled request to finish.
TEST(ContinuousBatchingSteps, BeamsLeftOutOfAStepGoFirstAtTheNext) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_step_tokens = 4;
  Engine engine(opt);
  GenerationRequest beams;
  beams.prompt_ids = {5, 6, 7};
  beams.params.max_new_tokens = 3;
  beams.params.num_beams = 4;
  GenerationRequest sampled;  // decodes at every step from the second: 1 token, 3 left
  sampled.prompt_ids = {9, 8};
  sampled.params.max_new_tokens = 40;
  sampled.params.ignore_eos = true;
  const GenerationOutput alone = engine.generate({beams})[0];
  std::vector<size_t> order;
  GenerationOutput beam_out;
  const DoneCallback done = [&](size_t id, GenerationOutput&& o) {
    order.push_back(id);
    if (!o.sequences.empty()) beam_out = std::move(o);
  };
  const size_t s = engine.submit(sampled, nullptr, done);
  const size_t b = engine.submit(beams, nullptr, done);
  while (engine.step()) {
  }
  EXPECT_EQ(order, (std::vector<size_t>{b, s}));
  EXPECT_EQ(beam_out.sequences, alone.sequences);
}

}  // namespace
}  // namespace nanoinfer

namespace nanoinfer {
namespace {

GenerationRequest greedy_request(size_t len, int32_t first, int new_tokens) {
  GenerationRequest r;
  for (size_t t = 0; t < len; ++t) r.prompt_ids.push_back(first + static_cast<int32_t>(t % 50));
  r.params.max_new_tokens = new_tokens;
  r.params.ignore_eos = true;
  return r;
}

// Prefix reuse: requests that share a long system prompt (and one that repeats another whole)
// compute its blocks once, those that arrive together too; each output is still the request's
// alone (the CPU backend computes a row the same in any batch), and the prompt tokens computed
// plus those reused add up to all.
TEST(PrefixReuse, ASharedPrefixIsComputedOnce) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_context = 256;
  opt.max_step_tokens = 40;  // the requests start over several steps
  Engine engine(opt);
  opt.prefix_reuse = false;
  Engine without(opt);
  std::vector<GenerationRequest> reqs;
  const GenerationRequest system = greedy_request(70, 11, 0);
  for (size_t i = 0; i < 5; ++i) {
    GenerationRequest r = greedy_request(5 + 4 * i, 90 + static_cast<int32_t>(i), 6);
    r.prompt_ids.insert(r.prompt_ids.begin(), system.prompt_ids.begin(), system.prompt_ids.end());
    reqs.push_back(r);
  }
  reqs.push_back(reqs[2]);
  const std::vector<GenerationOutput> shared = engine.generate(reqs);
  const GenerationStats with_stats = engine.last_stats();
  const std::vector<GenerationOutput> computed = without.generate(reqs);
  const GenerationStats without_stats = without.last_stats();
  for (size_t i = 0; i < reqs.size(); ++i) {
    const std::vector<int32_t> alone = without.generate({reqs[i]})[0].token_ids;
    EXPECT_EQ(shared[i].token_ids, alone) << "request " << i;
    EXPECT_EQ(computed[i].token_ids, alone) << "request " << i;
  }
  EXPECT_EQ(without_stats.reused_prompt_tokens, 0);
  // The first request computes the system prompt (two steps: 40 tokens a step) while the
  // others wait for it; then four take its four whole blocks, and the repeat of request 2 waits a
  // step more for request 2's fifth block (83 tokens: five whole blocks, three left to feed).
  EXPECT_EQ(with_stats.reused_prompt_tokens, 64 * 4 + 80);
  EXPECT_EQ(with_stats.prefill_tokens + with_stats.reused_prompt_tokens,
            without_stats.prefill_tokens);
}

// A cache with room for one request at a time: each request starts after the one before has
// finished and released its blocks, and still takes the system prompt's blocks it left (released
// blocks stay findable until taken for other tokens).
TEST(PrefixReuse, ReleasedBlocksServeTheRequestsThatFollow) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_context = 256;
  opt.cache_tokens = 16 * 7;  // each request below needs six or seven blocks
  Engine engine(opt);
  opt.cache_tokens = 0;
  Engine alone(opt);
  const GenerationRequest system = greedy_request(70, 11, 0);
  std::vector<GenerationRequest> reqs;
  for (size_t i = 0; i < 4; ++i) {
    GenerationRequest r = greedy_request(3 + 2 * i, 40 + static_cast<int32_t>(i), 6);
    r.prompt_ids.insert(r.prompt_ids.begin(), system.prompt_ids.begin(), system.prompt_ids.end());
    reqs.push_back(r);
  }
  const std::vector<GenerationOutput> out = engine.generate(reqs);
  const GenerationStats& st = engine.last_stats();
  for (const StepStats& step : st.steps) EXPECT_LE(step.sequences, 1);  // one at a time
  EXPECT_EQ(st.reused_prompt_tokens, 3 * 64);  // the system prompt's four whole blocks, 3 times
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(out[i].reused_prompt_tokens, i == 0 ? 0 : 64) << "request " << i;
    EXPECT_EQ(out[i].token_ids, alone.generate({reqs[i]})[0].token_ids) << "request " << i;
  }
}

// A conversation's next turn starts with the last turn's prompt and reply. Once that request has
// finished, the blocks its generated tokens filled are found as its prompt's are, by a request
// submitted later to the same run (a chat, a server); the output is still the turn's alone.
TEST(PrefixReuse, AFinishedRequestsReplyServesTheNextTurn) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_context = 256;
  Engine alone(opt);
  opt.cache_tokens = 16 * 12;
  Engine engine(opt);
  opt.prefix_reuse = false;
  Engine cold(opt);
  auto run = [](Engine& e, const GenerationRequest& r) {
    GenerationOutput out;
    e.submit(r, nullptr, [&out](size_t, GenerationOutput&& o) { out = std::move(o); });
    while (e.step()) {
    }
    return out;
  };
  GenerationRequest turn = greedy_request(37, 5, 20);
  for (int t = 0; t < 3; ++t) {
    const GenerationOutput reply = run(engine, turn);
    const GenerationOutput reply_cold = run(cold, turn);
    EXPECT_EQ(reply.token_ids, alone.generate({turn})[0].token_ids) << "turn " << t;
    EXPECT_EQ(reply.token_ids, reply_cold.token_ids) << "turn " << t;
    EXPECT_EQ(reply_cold.reused_prompt_tokens, 0);
    // The turn before fed its prompt and all its tokens but the last: its whole blocks are
    // taken (37 + 19 = 56 tokens: 3 blocks; then 37 + 20 + 9 + 19 = 85: 5 blocks; the first
    // turn finds nothing).
    EXPECT_EQ(reply.reused_prompt_tokens, t == 0 ? 0 : t == 1 ? 48 : 80) << "turn " << t;
    turn.prompt_ids.insert(turn.prompt_ids.end(), reply.token_ids.begin(), reply.token_ids.end());
    const GenerationRequest message = greedy_request(9, 60 + t, 0);
    turn.prompt_ids.insert(turn.prompt_ids.end(), message.prompt_ids.begin(),
                           message.prompt_ids.end());
  }
}

// Online use: requests submitted while others run join the running batch; each one's streamed
// tokens and output are those it gives alone; a request stopped by its callback gives its room
// to a waiting one; bad requests are refused without disturbing the run.
TEST(OnlineRun, RequestsJoinWhileOthersRun) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_context = 128;
  Engine alone(opt);
  opt.cache_tokens = 16 * 12;  // room for about three of the requests below at once
  opt.max_step_tokens = 24;
  Engine engine(opt);
  std::vector<GenerationRequest> reqs;
  for (size_t i = 0; i < 6; ++i) reqs.push_back(greedy_request(10 + 13 * i, 3 + 7 * i, 9 + i));
  std::vector<GenerationOutput> done(reqs.size());
  std::vector<std::vector<int32_t>> streamed(reqs.size());
  std::vector<int> done_calls(reqs.size(), 0);
  auto on_token = [&](size_t id, int32_t token, const std::string&) {
    streamed.at(id).push_back(token);
    return true;
  };
  auto on_done = [&](size_t id, GenerationOutput&& o) {
    ++done_calls.at(id);
    done.at(id) = std::move(o);
  };
  EXPECT_FALSE(engine.step());  // nothing submitted yet
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(engine.submit(reqs[i], on_token, on_done), i);
  EXPECT_EQ(engine.active(), 3U);
  for (int s = 0; s < 4; ++s) EXPECT_TRUE(engine.step());
  // Refused without touching the run: a token outside the vocabulary, a request too long for
  // the cache.
  GenerationRequest bad = reqs[0];
  bad.prompt_ids[0] = engine.config().vocab_size;
  EXPECT_THROW(engine.submit(bad, on_token, on_done), Error);
  EXPECT_THROW(engine.submit(greedy_request(100, 1, 120), on_token, on_done), Error);
  EXPECT_THROW(engine.generate({reqs[0]}), Error);  // the cache is in use
  for (size_t i = 3; i < reqs.size(); ++i) EXPECT_EQ(engine.submit(reqs[i], on_token, on_done), i);
  int steps = 4;
  while (engine.step()) ++steps;
  EXPECT_EQ(engine.active(), 0U);
  for (size_t i = 0; i < reqs.size(); ++i) {
    const GenerationOutput want = alone.generate({reqs[i]})[0];
    EXPECT_EQ(done[i].token_ids, want.token_ids) << "request " << i;
    EXPECT_EQ(streamed[i], want.token_ids) << "request " << i;
    EXPECT_EQ(done_calls[i], 1) << "request " << i;
    EXPECT_EQ(done[i].finish_reason, "length");
  }
  EXPECT_GT(steps, 20);
  // Afterwards generate() runs as usual, and a new submit continues the ids.
  EXPECT_EQ(engine.generate({reqs[1]})[0].token_ids, done[1].token_ids);
  EXPECT_EQ(engine.submit(reqs[2], nullptr, on_done), reqs.size());
  done_calls.push_back(0);
  done.emplace_back();
  streamed.emplace_back();
  while (engine.step()) {
  }
  EXPECT_EQ(done.back().token_ids, done[2].token_ids);
}

TEST(OnlineRun, AStoppedRequestGivesItsRoomToTheNext) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_context = 128;
  opt.cache_tokens = 16 * 4;  // one request of 64 entries at a time
  Engine engine(opt);
  const GenerationRequest a = greedy_request(20, 5, 44), b = greedy_request(30, 9, 20);
  std::vector<GenerationOutput> out(2);
  auto on_done = [&](size_t id, GenerationOutput&& o) { out.at(id) = std::move(o); };
  engine.submit(
      a, [](size_t, int32_t, const std::string&) { return false; }, on_done);  // stop at once
  engine.submit(b, nullptr, on_done);
  EXPECT_TRUE(engine.step());  // a's prompt; its first token stops it
  EXPECT_EQ(engine.active(), 1U);
  EXPECT_TRUE(engine.step());  // b starts: a's blocks are back
  while (engine.step()) {
  }
  EXPECT_EQ(out[0].token_ids.size(), 1U);
  EXPECT_EQ(out[0].finish_reason, "stop");
  EXPECT_EQ(out[1].token_ids.size(), 20U);
}

// cancel(): a waiting request never runs and a running one (mid-prompt or decoding) gives its
// blocks back at once; each gets its output so far, "cancelled"; the others run as if alone.
TEST(OnlineRun, ACancelledRequestEndsWaitingOrRunning) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_context = 128;
  Engine alone(opt);
  opt.cache_tokens = 16 * 4;  // one request of 64 entries at a time
  opt.max_step_tokens = 16;   // a 40-token prompt takes three steps
  Engine engine(opt);
  const std::vector<GenerationRequest> reqs = {greedy_request(40, 1, 20), greedy_request(20, 2, 30),
                                               greedy_request(30, 3, 20),
                                               greedy_request(20, 4, 30)};
  std::vector<GenerationOutput> out(reqs.size());
  std::vector<int> started(reqs.size(), 0), done_calls(reqs.size(), 0);
  auto on_token = [&](size_t id, int32_t, const std::string&) {
    ++started.at(id);
    return true;
  };
  auto on_done = [&](size_t id, GenerationOutput&& o) {
    ++done_calls.at(id);
    out.at(id) = std::move(o);
  };
  for (const GenerationRequest& r : reqs) engine.submit(r, on_token, on_done);
  EXPECT_TRUE(engine.step());     // request 0's first chunk; 1, 2 and 3 wait
  EXPECT_TRUE(engine.cancel(1));  // waiting
  EXPECT_TRUE(engine.cancel(0));  // mid-prompt: its blocks go back, and 2 starts next step
  EXPECT_FALSE(engine.cancel(0));
  EXPECT_EQ(engine.active(), 2U);
  for (int s = 0; s < 4; ++s) EXPECT_TRUE(engine.step());  // 2's prompt (2 chunks), 3 tokens
  EXPECT_TRUE(engine.cancel(2));                           // decoding
  while (engine.step()) {
  }
  for (const size_t id : {size_t{0}, size_t{1}, size_t{2}}) {
    EXPECT_EQ(done_calls[id], 1) << id;
    EXPECT_EQ(out[id].finish_reason, "cancelled") << id;
  }
  EXPECT_TRUE(out[0].token_ids.empty());
  EXPECT_EQ(started[1], 0);
  EXPECT_TRUE(out[1].token_ids.empty());
  const std::vector<int32_t> whole = alone.generate({reqs[2]})[0].token_ids;
  EXPECT_EQ(out[2].token_ids, std::vector<int32_t>(whole.begin(), whole.begin() + 3));
  EXPECT_EQ(out[3].token_ids, alone.generate({reqs[3]})[0].token_ids);
  EXPECT_EQ(out[3].finish_reason, "length");
  EXPECT_FALSE(engine.cancel(3));   // finished
  EXPECT_FALSE(engine.cancel(99));  // never submitted
}

// A callback that throws ends its own request and nothing else: the exception comes out of step()
// once the step is whole (an on_token's request "cancelled", its on_done still called), and the
// run goes on, the others' tokens as if alone; the same with generate(). Calls into the run from
// its callbacks that would corrupt it are refused. Before, the next step() failed an assertion
// (on_token), or every later one threw map::at (on_done of a step that ended two requests).
TEST(OnlineRun, ACallbackThatThrowsEndsItsRequestOnly) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_context = 128;
  Engine alone(opt);
  Engine engine(opt);
  const std::vector<GenerationRequest> reqs = {greedy_request(12, 1, 6), greedy_request(12, 2, 6),
                                               greedy_request(12, 3, 6)};
  std::vector<GenerationOutput> out(reqs.size());
  std::vector<int> done_calls(reqs.size(), 0);
  auto on_done = [&](size_t id, GenerationOutput&& o) {
    ++done_calls.at(id);
    out.at(id) = std::move(o);
  };
  const auto throws_at_2 = [n = 0](size_t, int32_t, const std::string&) mutable -> bool {
    if (++n == 2) throw std::runtime_error("on_token failed");
    return true;
  };
  engine.submit(reqs[0], throws_at_2, on_done);
  engine.submit(reqs[1], nullptr, on_done);
  engine.submit(reqs[2], nullptr, [&](size_t id, GenerationOutput&& o) {
    on_done(id, std::move(o));
    throw std::runtime_error("on_done failed");
  });
  EXPECT_TRUE(engine.step());  // the prompts and first tokens
  try {
    engine.step();
    ADD_FAILURE() << "the callback's exception did not come out of step()";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "on_token failed");
  }
  EXPECT_EQ(done_calls[0], 1);
  EXPECT_EQ(out[0].finish_reason, "cancelled");
  EXPECT_EQ(out[0].token_ids.size(), 2U);
  EXPECT_EQ(engine.active(), 2U);
  int thrown = 0;
  while (true) {
    try {
      if (!engine.step()) break;
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "on_done failed");
      ++thrown;
    }
  }
  EXPECT_EQ(thrown, 1);
  EXPECT_EQ(engine.active(), 0U);
  for (const size_t id : {size_t{1}, size_t{2}}) {
    EXPECT_EQ(done_calls[id], 1) << id;
    EXPECT_EQ(out[id].token_ids, alone.generate({reqs[id]})[0].token_ids) << id;
  }
  // The online run's totals: three prompts of 12 tokens; 6 + 6 + 2 tokens, the first of each
  // from its prompt's step.
  EXPECT_EQ(engine.online_stats().prefill_tokens, 36);
  EXPECT_EQ(engine.online_stats().decode_tokens, 11);
  // generate(): the exception comes out, and the engine runs the next call as usual.
  EXPECT_THROW(engine.generate({reqs[0], reqs[1]}, throws_at_2), std::runtime_error);
  EXPECT_EQ(engine.generate({reqs[1]})[0].token_ids, out[1].token_ids);

  // From callbacks: cancel() and step() within step(), generate(), submit() and release_cache()
  // within generate() are refused (Error, which the call then rethrows).
  std::vector<std::string> refused;
  auto refuse = [&](const std::function<void()>& call) {
    try {
      call();
    } catch (const Error& e) {
      refused.emplace_back(e.what());
    }
  };
  engine.submit(
      reqs[0],
      [&](size_t, int32_t, const std::string&) {
        refuse([&] { engine.cancel(0); });
        refuse([&] { engine.step(); });
        return false;
      },
      nullptr);
  while (engine.step()) {
  }
  // The last on_done of a step sees no request active, but its run and cache are under the step
  // (they had been destroyed under it).
  engine.submit(reqs[1], nullptr, [&](size_t, GenerationOutput&&) {
    refuse([&] { engine.generate({reqs[0]}); });
    refuse([&] { engine.release_cache(); });
  });
  while (engine.step()) {
  }
  engine.generate({reqs[1]}, [&](size_t, int32_t, const std::string&) {
    refuse([&] { engine.generate({reqs[0]}); });
    refuse([&] { engine.submit(reqs[0], nullptr, nullptr); });
    refuse([&] { engine.release_cache(); });
    return false;
  });
  const std::string cancel_refused =
      "cancel() from a callback of a running step: return false from the request's on_token to "
      "stop it";
  EXPECT_EQ(
      refused,
      (std::vector<std::string>{
          cancel_refused, "step() from a callback of a running step",
          "generate() from a callback of step()", "release_cache() from a callback of step()",
          "generate() from a callback of generate()", "submit() from a callback of generate()",
          "release_cache() from a callback of generate()"}));
  EXPECT_EQ(engine.generate({reqs[2]})[0].token_ids, out[2].token_ids);
}

// Another thread's call while one runs is refused, naming the call (before, it raced the running
// call, or read as a call from a callback); the running call goes on, and the engine serves the
// next call after it.
TEST(OnlineRun, AnotherThreadsCallWhileOneRunsIsRefused) {
  EngineOptions opt;
  opt.model = test::data_path("models/gqa");
  opt.max_context = 128;
  Engine engine(opt);
  const GenerationRequest req = greedy_request(12, 1, 6);
  std::promise<void> in_call, tried;
  std::future<void> go_on = tried.get_future();
  std::vector<GenerationOutput> outs;
  std::thread runner([&] {
    outs = engine.generate({req}, [&, first = true](size_t, int32_t, const std::string&) mutable {
      if (first) {  // the call holds the engine until the other thread has tried every call
        first = false;
        in_call.set_value();
        go_on.wait();
      }
      return true;
    });
  });
  in_call.get_future().wait();
  std::vector<std::string> refused;
  for (const auto& [name, call] : std::vector<std::pair<std::string, std::function<void()>>>{
           {"generate()", [&] { engine.generate({req}); }},
           {"submit()", [&] { engine.submit(req, nullptr, nullptr); }},
           {"step()", [&] { engine.step(); }},
           {"cancel()", [&] { engine.cancel(0); }},
           {"start_online()", [&] { engine.start_online(); }},
           {"release_cache()", [&] { engine.release_cache(); }}}) {
    try {
      call();
      refused.push_back(name + " ran");
    } catch (const Error& e) {
      refused.emplace_back(e.what());
    }
    EXPECT_EQ(refused.back(), name +
                                  " while another thread's call runs on this engine: an Engine "
                                  "serves one call at a time (serialise the calls, or make an "
                                  "engine per thread)");
  }
  tried.set_value();
  runner.join();
  ASSERT_EQ(outs.size(), 1U);
  EXPECT_EQ(outs[0].token_ids.size(), 6U);
  EXPECT_EQ(engine.generate({req})[0].token_ids, outs[0].token_ids);
}

}  // namespace
}  // namespace nanoinfer
