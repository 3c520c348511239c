#include "engine/run.h"

#include <algorithm>
#include <exception>
#include <optional>
#include <random>
#include <string>

#include "dist/watchdog.h"
#include "engine/batch_builder.h"
#include "sampling/backend_pick.h"
#include "sampling/logprobs.h"
#include "sampling/stages.h"
#include "util/error.h"
#include "util/scoped_flag.h"
#include "util/str_cat.h"

namespace nanoinfer {

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Scored prompts (prompt_logprobs) take at most this many tokens a step, all of them together:
// each token's row of logits is held on the device for the step ([n, V] f32: 1 GB for Llama-3's
// vocabulary).
constexpr int kScoredStepTokens = 2048;

// A prompt chunk scored this step: the request, its position in the batch and the prompt
// position of its first token.
struct ScoredChunk {
  SampledRequest* request;
  size_t seq;
  int32_t first;
};

bool scores_prompt(const SampledRequest& r) {
  return r.request->params.prompt_logprobs >= 0 && r.out.token_ids.empty();
}

// Asks the batch for the logits of every token of each scored chunk, after all the batch's own
// rows (so row r stays sequence r's last token; the chunk's last token is asked for twice, which
// keeps its rows in one block). Returns the first of each chunk's rows.
std::vector<int64_t> add_scored_rows(Batch& batch, const std::vector<ScoredChunk>& scored) {
  std::vector<int64_t> first;
  for (const ScoredChunk& c : scored) {
    first.push_back(static_cast<int64_t>(batch.logit_rows.size()));
    for (int32_t t = batch.cu_seqlens[c.seq]; t < batch.cu_seqlens[c.seq + 1]; ++t)
      batch.logit_rows.push_back(t);
  }
  return first;
}

// The log-probabilities of tokens[i] under rows [first, first + count) of the step's logits:
// summarised where the logits are when the backend can (the rows' maximum, log-sum-exp and best
// tokens, then each token's logit, come to the host instead of the rows), else from a copy.
void score_rows(Backend& be, const Tensor& logits, int64_t first, int64_t count,
                const int32_t* tokens, int n, std::vector<TokenLogprobs>& out) {
  const Tensor block = logits.rows(first, first + count);
  const int64_t V = logits.dim(1);
  std::vector<BeamRow> summaries;
  if (be.beam_rows_to_host(block, std::max(n, 1), summaries)) {
    std::vector<int32_t> at;  // (a chunk's rows: well within int32)
    for (int64_t r = 0; r < count; ++r) at.push_back(static_cast<int32_t>(r * V + tokens[r]));
    std::vector<float> logit;
    be.gather_to_host(block, at, logit);
    for (int64_t r = 0; r < count; ++r)
      out.push_back(sampling::token_logprobs(summaries[static_cast<size_t>(r)],
                                             logit[static_cast<size_t>(r)], n));
    return;
  }
  std::vector<float> rows;
  be.to_host_f32(block, rows);
  for (int64_t r = 0; r < count; ++r)
    out.push_back(sampling::token_logprobs(
        std::span<const float>(rows).subspan(static_cast<size_t>(r * V), static_cast<size_t>(V)),
        tokens[r], n));
}

// Each token of a scored chunk gives the log-probability of the prompt token after it (the last
// prompt token's row is the first generated token's: not a prompt score).
void score_chunk(Backend& be, const Tensor& logits, const Batch& batch, const ScoredChunk& c,
                 int64_t rows) {
  const std::vector<int32_t>& prompt = c.request->request->prompt_ids;
  const int32_t len = batch.cu_seqlens[c.seq + 1] - batch.cu_seqlens[c.seq];
  const int32_t scored = std::min(len, static_cast<int32_t>(prompt.size()) - 1 - c.first);
  if (scored > 0)  // row i scores prompt token first + i + 1
    score_rows(be, logits, rows, scored, prompt.data() + c.first + 1,
               c.request->request->params.prompt_logprobs, c.request->out.prompt_logprobs);
}

// A seed for a sampled request that was given none: 64 bits from the system's entropy.
uint64_t fresh_seed() {
  std::random_device rd;
  return (uint64_t{rd()} << 32U) ^ rd();
}

// What a refusal's message starts with: "request 3: ", or nothing for a request named by none.
std::string lead(const std::string& who) {
  return who.empty() ? "" : who + ": ";
}

}  // namespace

void check_request(const RunContext& ctx, const GenerationRequest& r, const std::string& who) {
  const ModelConfig& c = ctx.config;
  const std::string head = lead(who);
  try {
    r.params.validate();
  } catch (const Error& e) {
    fail(head + e.what());
  }
  if (r.prompt_ids.empty()) fail(head + "the prompt is empty");
  for (int32_t id : r.prompt_ids)
    if (id < 0 || id >= c.vocab_size)
      fail(head + "token id " + std::to_string(id) + " is outside the vocabulary (" +
           std::to_string(c.vocab_size) + " ids)");
  // Ids the sampler reads, checked now rather than at a step, which would fail the whole batch.
  try {
    sampling::check_token_ids(r.params, c.vocab_size);
  } catch (const Error& e) {
    fail(head + e.what());
  }
  for (int32_t id : r.params.eos_token_ids)  // (an EOS beyond the vocabulary could never end it)
    if (id >= c.vocab_size)
      fail(head + "eos_token_ids: id " + std::to_string(id) + " is outside the vocabulary of " +
           std::to_string(c.vocab_size));
  std::vector<int32_t> suppressed = r.params.suppress_tokens;
  std::sort(suppressed.begin(), suppressed.end());
  if (std::unique(suppressed.begin(), suppressed.end()) - suppressed.begin() == c.vocab_size)
    fail(head + "suppress_tokens: every token of the vocabulary is suppressed");
  if (!r.params.stop.empty() && ctx.tokenizer == nullptr)
    fail(head + "stop strings need a model with a tokenizer");
  if (r.params.num_beams > 1) {
    const std::string e =
        sampling::BeamSearch(r.params, eos_for(r, c.eos_token_ids)).vocabulary_error(c.vocab_size);
    if (!e.empty()) fail(head + "beam search: " + e);
    // Its beams decode in one step or none (they waited forever: found by fuzzing).
    if (ctx.max_step_tokens > 0 && r.params.num_beams > ctx.max_step_tokens)
      fail(head + "num_beams (" + std::to_string(r.params.num_beams) +
           ") exceeds the tokens a step takes (max_step_tokens " +
           std::to_string(ctx.max_step_tokens) + "): every beam decodes in each step");
  }
  const int64_t total = static_cast<int64_t>(r.prompt_ids.size()) + r.params.max_new_tokens;
  if (ctx.evicting_capacity == 0 && std::ssize(r.prompt_ids) >= ctx.max_context)
    fail(head + "prompt (" + count_of(std::ssize(r.prompt_ids), "token") +
         ") leaves no room for a new token in the context of " + std::to_string(ctx.max_context) +
         " positions (max_context)");
  if (ctx.evicting_capacity == 0 && total > ctx.max_context)
    fail(head + "prompt (" + count_of(std::ssize(r.prompt_ids), "token") + ") + max new tokens (" +
         std::to_string(r.params.max_new_tokens) + ") exceeds the context of " +
         std::to_string(ctx.max_context) + " positions (max_context)");
}

Run::Run(const RunContext& ctx, KvCache& cache, GenerationStats& stats, bool keep_steps,
         size_t first_id)
    : ctx_(ctx),
      cache_(cache),
      stats_(stats),
      keep_steps_(keep_steps),
      sched_(cache.capacity_slots() / cache.block_size(), cache.block_size(), ctx.max_step_tokens,
             first_id),
      start_(std::chrono::steady_clock::now()) {}

size_t Run::add(const GenerationRequest& r, TokenCallback on_token, DoneCallback on_done,
                const std::string& who) {
  check_request(ctx_, r, who);
  if (const int most = cache_.step_capacity();
      most > 0 && r.prompt_ids.size() > static_cast<size_t>(most))  // e.g. a sink cache's window
    fail(lead(who) + "the prompt (" + count_of(std::ssize(r.prompt_ids), "token") +
         ") does not fit the " + cache_.policy().name() + " cache, which takes at most " +
         count_of(most, "new token") +
         " a step: a longer prompt would evict its own first tokens before its last ones were "
         "read");
  const size_t id =
      sched_.add(lifetime_blocks(r, cache_.policy().capacity(), cache_.block_size()), who);
  Entry e{r, std::move(on_token), std::move(on_done)};
  if (r.params.samples() && !r.params.seed) e.request.params.seed = fresh_seed();
  requests_.emplace(id, std::move(e));
  return id;
}

int64_t lifetime_blocks(const GenerationRequest& r, int64_t capacity, int block_size) {
  int64_t len = static_cast<int64_t>(r.prompt_ids.size()) + r.params.max_new_tokens;
  if (capacity > 0) len = std::min(len, capacity);
  return blocks_of(len, block_size) * (r.params.num_beams > 1 ? 2 * r.params.num_beams + 1 : 1);
}

int64_t blocks_within_memory(int64_t need, int64_t largest, int64_t free_bytes,
                             int64_t block_bytes) {
  if (free_bytes < 0) return need;
  return std::max(largest, std::min(need, free_bytes / 4 * 3 / block_bytes));
}

bool Run::waits_for_prefix(int64_t id) const {
  if (!ctx_.prefix_reuse || id < 0) return false;
  const GenerationRequest& req = requests_.at(static_cast<size_t>(id)).request;
  // Beams and scored prompts take no published blocks.
  if (req.params.num_beams > 1 || req.params.prompt_logprobs >= 0) return false;
  const std::vector<int32_t>& p = req.prompt_ids;
  const int bs = cache_.block_size();
  for (const SampledRequest& r : sampled_) {
    if (!r.out.token_ids.empty()) continue;  // its prompt is computed and published
    const std::vector<int32_t>& q = r.request->prompt_ids;
    // Whole blocks in common, one token of p always left to feed.
    const size_t n = std::min(p.size() - 1, q.size());
    const auto common =
        static_cast<int>(std::mismatch(p.begin(), p.begin() + n, q.begin()).first - p.begin());
    if (common >= bs && r.seq.fed < common / bs * bs) return true;
  }
  return false;
}

bool Run::cancel(size_t id) {
  if (stepping_)
    fail(
        "cancel() from a callback of a running step: return false from the request's on_token "
        "to stop it");
  if (!requests_.contains(id)) return false;
  if (!release_sequences(id)) {
    const bool waited = sched_.drop(id);
    NI_ASSERT(waited);
  }
  std::exception_ptr thrown;
  end(id, "cancelled", thrown);
  if (thrown) std::rethrow_exception(thrown);
  return true;
}

bool Run::release_sequences(size_t id) {
  for (const SampledRequest& r : sampled_)
    if (r.seq.request == id) {
      cache_.release(r.seq.cache_id);
      return true;
    }
  for (const BeamRequest& r : beamed_)
    if (r.index == id) {
      for (const SeqState& beam : r.beams) cache_.release(beam.cache_id);
      return true;
    }
  return false;
}

void Run::end(size_t id, const char* reason, std::exception_ptr& thrown) {
  GenerationOutput out;
  const auto s = std::find_if(sampled_.begin(), sampled_.end(),
                              [id](const SampledRequest& r) { return r.seq.request == id; });
  const auto b = std::find_if(beamed_.begin(), beamed_.end(),
                              [id](const BeamRequest& r) { return r.index == id; });
  if (s != sampled_.end()) {
    out = std::move(s->out);
    sampled_.erase(s);
    sched_.finish(id);
  } else if (b != beamed_.end()) {
    out = std::move(b->out);
    beamed_.erase(b);
    sched_.finish(id);
  }
  if (reason != nullptr) out.finish_reason = reason;
  const auto e = requests_.find(id);
  out.seed = e->second.request.params.seed;
  const DoneCallback done = std::move(e->second.on_done);
  requests_.erase(e);
  try {
    if (done) done(id, std::move(out));
  } catch (...) {
    if (!thrown) thrown = std::current_exception();
  }
}

bool Run::step() {
  if (stepping_) fail("step() from a callback of a running step");
  const ScopedFlag stepping(stepping_);
  // A callback that throws ends its request (its on_done still comes); the first exception is
  // rethrown once the step is whole, so that the run stays usable.
  std::exception_ptr thrown;
  const ModelConfig& c = ctx_.config;
  const size_t V = static_cast<size_t>(c.vocab_size);
  // This step's sequences: the running ones that decode (beams left out of the last step first),
  // then the prompts under way, then those of requests starting now, as the token budget allows.
  // Rows in the batch: sampled ones (one block for the sampler), beams, then prompt chunks that
  // are not the last (their logits are not used).
  sched_.begin_step();
  std::vector<SeqState*> chunks;
  std::vector<SampledRequest*> live_sampled;
  std::vector<sampling::RowInput> rows;
  std::vector<BeamRequest*> live_beams;
  size_t beam_rows_n = 0;
  int64_t prompt_tokens = 0;
  int scored_left = kScoredStepTokens;
  auto run_sampled = [&](SampledRequest& r) {
    const bool prompt = r.out.token_ids.empty();
    const auto pending = static_cast<int>(r.seq.pending.size());
    if (scores_prompt(r)) {
      r.seq.chunk = scored_left > 0 ? sched_.take(std::min(pending, scored_left)) : 0;
      scored_left -= r.seq.chunk;
    } else {
      r.seq.chunk = sched_.take(pending);
    }
    if (prompt) prompt_tokens += r.seq.chunk;
    if (r.seq.chunk == pending) {
      live_sampled.push_back(&r);
      rows.push_back({&r.request->params, r.request->prompt_ids, r.out.token_ids});
    } else if (r.seq.chunk > 0) {
      chunks.push_back(&r.seq);
    }
  };
  auto run_beams = [&](BeamRequest& r) {
    if (r.prefilled) {  // every beam, or none this step
      r.left_out = !sched_.take_all(static_cast<int>(r.beams.size()));
      if (r.left_out) return;
    } else {
      SeqState& s = r.beams.front();
      const auto pending = static_cast<int>(s.pending.size());
      s.chunk = sched_.take(pending);
      prompt_tokens += s.chunk;
      if (s.chunk < pending) {
        if (s.chunk > 0) chunks.push_back(&s);
        return;
      }
    }
    live_beams.push_back(&r);
    beam_rows_n += r.beams.size();
  };
  std::vector<BeamRequest*> decoding_beams, left_out_last_step;
  for (BeamRequest& r : beamed_)
    if (r.prefilled) (r.left_out ? left_out_last_step : decoding_beams).push_back(&r);
  for (BeamRequest* r : left_out_last_step) run_beams(*r);
  for (SampledRequest& r : sampled_)
    if (!r.out.token_ids.empty()) run_sampled(r);
  for (BeamRequest* r : decoding_beams) run_beams(*r);
  for (SampledRequest& r : sampled_)
    if (r.out.token_ids.empty()) run_sampled(r);
  for (BeamRequest& r : beamed_)
    if (!r.prefilled) run_beams(r);
  // Requests start in order; one whose leading prompt blocks a prompt under way is computing
  // waits (with those behind it) for the step after, and takes them then.
  while (!waits_for_prefix(sched_.next_waiting())) {
    const int64_t i = sched_.admit();
    if (i < 0) break;
    const auto id = static_cast<size_t>(i);
    const GenerationRequest& req = requests_.at(id).request;
    if (req.params.num_beams > 1) {
      beamed_.emplace_back(id, req, cache_, c.eos_token_ids);
      run_beams(beamed_.back());
    } else {
      sampled_.emplace_back(id, req, cache_, c.eos_token_ids, ctx_.tokenizer);
      SeqState& s = sampled_.back().seq;
      if (ctx_.prefix_reuse && req.params.prompt_logprobs < 0) {  // blocks computed by others
        const int reused = cache_.attach_prefix(s.cache_id, req.prompt_ids);
        s.pending.erase(s.pending.begin(), s.pending.begin() + reused);
        s.fed = reused;
        sampled_.back().out.reused_prompt_tokens = reused;
        stats_.reused_prompt_tokens += reused;
      }
      run_sampled(sampled_.back());
    }
  }
  std::vector<SeqState*> live;
  live.reserve(live_sampled.size() + beam_rows_n + chunks.size());
  for (SampledRequest* r : live_sampled) live.push_back(&r->seq);
  for (BeamRequest* r : live_beams)
    for (SeqState* s : r->live()) live.push_back(s);
  live.insert(live.end(), chunks.begin(), chunks.end());
  if (live.empty()) {  // nothing runs or waits (a request alone always fits: Scheduler::add)
    NI_ASSERT(sched_.waiting() == 0 && requests_.empty());
    return false;
  }

  std::vector<ScoredChunk> scored;
  for (SampledRequest& r : sampled_)
    if (scores_prompt(r) && r.seq.chunk > 0)
      scored.push_back(
          {&r, static_cast<size_t>(std::find(live.begin(), live.end(), &r.seq) - live.begin()),
           r.seq.fed});

  const auto t0 = std::chrono::steady_clock::now();
  Batch batch;
  bool on_device = false;  // sampled rows picked and beam rows summarised by the backend
  std::vector<std::vector<float>> raw;  // logits of the rows that return logprobs (if any)
  std::vector<BeamRow> beam_rows;
  try {
    batch = build_batch(live, cache_);
    batch.prompt = prompt_tokens > 0;
    const std::vector<int64_t> scored_rows = add_scored_rows(batch, scored);
    // The other ranks get the batch and the cache ops made since the last step; alone, the ops
    // are only drained (no message is built). Device collectives complete in the copy to the
    // host, so the watchdog covers it.
    std::vector<CacheOp> ops = cache_.take_ops();
    std::optional<WaitScope> wait;
    if (ctx_.group.size() > 1) {
      wait.emplace(0, "a forward step");
      ctx_.send(StepMessage::step(std::move(ops), batch));
    }
    const Tensor& step_logits = ctx_.model.forward(batch, cache_);
    for (size_t i = 0; i < scored.size(); ++i)
      score_chunk(ctx_.backend, step_logits, batch, scored[i], scored_rows[i]);
    // Rows that return logprobs: their logits as the model gave them, on the host, before the
    // picks' edits or the host processors rewrite them (a row's copy, whoever picks).
    for (size_t r = 0; r < rows.size(); ++r) {
      if (rows[r].params->logprobs < 0) continue;
      raw.resize(rows.size());
      ctx_.backend.to_host_f32(
          step_logits.rows(static_cast<int64_t>(r), static_cast<int64_t>(r) + 1), raw[r]);
    }
    // The backend picks the sampled rows where the logits are, as the host sampler would (the
    // penalties and suppressed tokens as edits of the logits they touch), and summarises the beam
    // rows for their searches: ids and a few best tokens come back instead of R x V floats and
    // the host's passes over each row. Beams first: the picks' edits rewrite the logits, which
    // the host path must then not see.
    std::vector<RowPick> picks;
    std::vector<LogitEdit> edits;
    const auto sampled_rows = static_cast<int64_t>(rows.size());
    size_t beam_n = 0;
    for (const BeamRequest* r : live_beams) beam_n = std::max(beam_n, r->search.tokens_per_row());
    on_device =
        ctx_.pick_on_device &&
        std::all_of(rows.begin(), rows.end(),
                    [&](const sampling::RowInput& r) {
                      const std::optional<RowPick> p = sampling::backend_pick(
                          r, static_cast<int32_t>(picks.size()), c.vocab_size, edits);
                      if (p) picks.push_back(*p);
                      return p.has_value();
                    }) &&
        (live_beams.empty() ||
         ctx_.backend.beam_rows_to_host(
             step_logits.rows(sampled_rows, sampled_rows + static_cast<int64_t>(beam_rows_n)),
             static_cast<int>(beam_n), beam_rows)) &&
        (rows.empty() ||
         ctx_.backend.pick_to_host(step_logits.rows(0, sampled_rows), picks, edits, tokens_));
    if (!on_device) ctx_.backend.to_host_f32(step_logits, logits_);
    // The prompt blocks this step completed, for requests that follow: once the forward is
    // seen through (a device's failure surfaces in the copies above; a step of prompt chunks
    // alone copied nothing and waits for it here).
    if (ctx_.prefix_reuse) {
      if (on_device && rows.empty() && live_beams.empty()) ctx_.backend.synchronize();
      for (const SampledRequest& r : sampled_)
        if (r.seq.fed <= static_cast<int32_t>(r.request->prompt_ids.size()))
          cache_.publish_prefix(r.seq.cache_id, r.request->prompt_ids, r.seq.fed);
    }
  } catch (...) {
    // The batch's sequences are part-written (fed and cache entries advanced, their KV not all
    // computed): their requests end ("error", on_done called, blocks given back) and the
    // exception comes out; the others, running or waiting, go on at the next step.
    std::vector<size_t> ids;
    for (const SeqState* q : live)
      if (std::find(ids.begin(), ids.end(), q->request) == ids.end()) ids.push_back(q->request);
    std::exception_ptr ignored;  // (an on_done's exception: the step's own is the one thrown)
    for (const size_t id : ids) {
      release_sequences(id);
      end(id, "error", ignored);
    }
    throw;
  }
  // Cache use as this step's forward saw it (sequences that end now release their blocks).
  StepStats step;
  step.cache_used = cache_.used_slots();
  step.cache_allocated = cache_.allocated_slots();
  std::vector<size_t> finished;
  if (!rows.empty()) {
    if (!on_device) {
      sampling::LogitsView view(std::span<float>(logits_.data(), rows.size() * V),
                                static_cast<int>(rows.size()), c.vocab_size);
      tokens_ = sampler_.sample(view, rows);
    }
    for (size_t r = 0; r < live_sampled.size(); ++r) {
      SampledRequest& s = *live_sampled[r];
      if (r < raw.size() && !raw[r].empty())
        s.out.logprobs.push_back(
            sampling::token_logprobs(raw[r], tokens_[r], s.request->params.logprobs));
      if (!s.accept(tokens_[r], cache_, requests_.at(s.seq.request).on_token, ctx_.prefix_reuse))
        finished.push_back(s.seq.request);
      if (s.thrown && !thrown) thrown = s.thrown;
    }
  }
  size_t row = 0;  // of the beam rows
  for (BeamRequest* r : live_beams) {
    const size_t n = r->beams.size();
    if (!on_device) {
      for (size_t i = 0; i < n; ++i)
        beam_rows.push_back(sampling::summarise_row(
            std::span<const float>(logits_.data() + (rows.size() + row + i) * V, V),
            r->search.tokens_per_row()));
    }
    if (!r->step(std::span<const BeamRow>(beam_rows).subspan(row, n), c.vocab_size, cache_,
                 ctx_.tokenizer))
      finished.push_back(r->index);
    row += n;
  }
  // Finished requests (their blocks given back) leave the run; their outputs go to the caller.
  for (const size_t id : finished) end(id, nullptr, thrown);
  step.tokens = batch.num_tokens();
  step.sequences = static_cast<int>(live.size());
  step.waiting = static_cast<int>(sched_.waiting());
  step.ms = ms_since(t0);
  step.start_ms = std::chrono::duration<double, std::milli>(t0 - start_).count();
  step.weight_bytes = ctx_.model.weight_bytes();
  step.kv_reserved_bytes = cache_.bytes();
  step.kv_bytes = cache_.capacity_slots() > 0
                      ? cache_.bytes() / cache_.capacity_slots() * step.cache_allocated
                      : 0;
  step.activation_bytes =
      ctx_.model.activation_bytes(step.tokens, static_cast<int>(batch.logit_rows.size()));
  if (prompt_tokens > 0) {  // a step with prompt tokens counts as prefill (decode rows too)
    stats_.prefill_ms += step.ms;
    stats_.prefill_tokens += prompt_tokens;
  } else {
    stats_.decode_ms += step.ms;
    stats_.decode_tokens += static_cast<int64_t>(batch.logit_rows.size());
    ++stats_.decode_steps;
  }
  if (keep_steps_) stats_.steps.push_back(step);
  if (thrown) std::rethrow_exception(thrown);
  return true;
}

}  // namespace nanoinfer
