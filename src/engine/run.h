// One run of the generation loop (continuous batching): requests join at any time, start as the
// scheduler finds room for them, and every step() is one forward over the sequences that run.
// Engine::generate() adds its requests and steps until all have finished; Engine::submit() /
// step() keep one run going across calls (a server's loop).
#pragma once

#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <list>
#include <map>
#include <vector>

#include "engine/requests.h"
#include "engine/scheduler.h"
#include "engine/step_message.h"
#include "model/llama.h"
#include "sampling/sampler.h"

namespace nanoinfer {

// What a run uses of its engine.
struct RunContext {
  const ModelConfig& config;
  Backend& backend;
  LlamaModel& model;
  const Tokenizer* tokenizer;  // null: a model without one
  int max_context;
  int evicting_capacity;  // a sink cache's entries (at most max_context); 0: every token kept
  int max_step_tokens;
  bool pick_on_device;
  bool prefix_reuse;
  // Tensor parallelism: the group and a way to tell the other ranks each step (size 1: alone).
  Communicator& group;
  std::function<void(const StepMessage&)> send;
};

// Throws Error when a request cannot run: parameters, ids outside the vocabulary, an empty
// prompt, stop strings without a tokenizer, beams the vocabulary cannot feed, or prompt + max new
// tokens beyond the context (where the cache keeps every token: a sink cache's positions stay
// below its size however long the text). The message starts with `who` ("request 3" among a call's
// requests; empty for a request submitted alone).
void check_request(const RunContext& ctx, const GenerationRequest& r, const std::string& who);

// Blocks of block_size that hold `tokens` entries.
inline int64_t blocks_of(int64_t tokens, int block_size) {
  return (tokens + block_size - 1) / block_size;
}
// Blocks a request reserves for its whole life: prompt + max new tokens (at most `capacity`
// entries where the cache evicts, 0: no cap), beams twice over plus the prompt (forks).
int64_t lifetime_blocks(const GenerationRequest& r, int64_t capacity, int block_size);
// The blocks of a cache that generate() sizes itself (cache_tokens 0): `need`, room for every
// request at once, where those take at most 3/4 of `free_bytes` (the rest is left for the steps'
// activations; -1: unknown, no bound); else as many as fit in that share, and the requests take
// turns as in a cache of cache_tokens; never fewer than `largest`, the most one request needs.
int64_t blocks_within_memory(int64_t need, int64_t largest, int64_t free_bytes,
                             int64_t block_bytes);

class Run {
 public:
  // keep_steps: record every step in stats.steps (a generate() call); off, only the totals.
  // Request ids count from first_id.
  Run(const RunContext& ctx, KvCache& cache, GenerationStats& stats, bool keep_steps,
      size_t first_id = 0);

  // Queues a request (checked first: throws Error, naming it `who` as check_request does, and
  // queues nothing); returns its id (first_id, first_id + 1, ...), which the callbacks are given.
  // on_token sees each token of a sampled request (false: stop it); on_done gets the output
  // once the request has finished.
  size_t add(const GenerationRequest& r, TokenCallback on_token, DoneCallback on_done,
             const std::string& who);
  // One forward over the sequences that run; false when nothing ran (none runs or waits). A
  // callback that throws ends its request (on_token's: finish_reason "cancelled"); the first
  // exception is rethrown once the step is whole, and the run goes on at the next step.
  bool step();
  bool stepping() const { return stepping_; }  // in step(): one of its callbacks runs
  // Ends request `id` between steps (not from a callback of step(): Error): waiting, it leaves
  // the queue; running, it gives its blocks back. Its on_done gets what it has, finish_reason
  // "cancelled". False: no such request.
  bool cancel(size_t id);
  // Requests added and not finished (running or waiting).
  size_t active() const { return requests_.size(); }
  // A running sampled request's output so far, or null.
  const GenerationOutput* progress(size_t id) const {
    for (const SampledRequest& s : sampled_)
      if (s.seq.request == id) return &s.out;
    return nullptr;
  }

 private:
  // Gives running request `id`'s cache sequences back; false when it is not running.
  bool release_sequences(size_t id);
  // Takes request `id` out of the run (running: its sequences given back already) and hands its
  // output to its on_done, with finish_reason `reason` (null: the output's own); an exception
  // from on_done is kept in `thrown` unless one is there.
  void end(size_t id, const char* reason, std::exception_ptr& thrown);
  // Whether waiting request `id` shares whole prompt blocks with a prompt under way that has not
  // computed them yet (prefix reuse: it starts once they are, and takes them).
  bool waits_for_prefix(int64_t id) const;
  struct Entry {
    GenerationRequest request;
    TokenCallback on_token;
    DoneCallback on_done;
  };
  const RunContext& ctx_;
  KvCache& cache_;
  GenerationStats& stats_;
  bool keep_steps_;
  Scheduler sched_;
  std::map<size_t, Entry> requests_;   // by id, not finished (stable addresses)
  std::list<SampledRequest> sampled_;  // started, in the order they started
  std::list<BeamRequest> beamed_;
  std::chrono::steady_clock::time_point start_;
  sampling::Sampler sampler_;
  std::vector<float> logits_;
  std::vector<int32_t> tokens_;
  bool stepping_ = false;  // in step(): its callbacks may not cancel() or step()
};

}  // namespace nanoinfer
