#include "nanoinfer/engine.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include "dist/watchdog.h"
#include "engine/batch_builder.h"
#include "engine/requests.h"
#include "engine/scheduler.h"
#include "engine/step_message.h"
#include "loader/model_loader.h"
#include "model/llama.h"
#include "nanoinfer/tokenizer.h"
#include "sampling/backend_pick.h"
#include "sampling/sampler.h"
#include "util/error.h"

namespace nanoinfer {

std::string default_model_path() {
  const char* env = std::getenv("NANOINFER_MODEL");
  if (env != nullptr && *env != '\0') return env;
  // Unset or empty variables fall through, as the XDG spec and scripts/fetch_model.sh have it.
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  const std::string cache =
      xdg != nullptr && *xdg != '\0'
          ? std::string(xdg)
          : std::string(home != nullptr && *home != '\0' ? home : "/tmp") + "/.cache";
  return cache + "/nanoinfer/SmolLM2-135M-Instruct.Q4_1.gguf";
}

struct Engine::Impl {
  EngineOptions options;
  LoadedModel loaded;
  std::unique_ptr<Communicator> comm;  // null: a single rank
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
  GenerationStats stats;
  double load_seconds = 0;
  double warmup_seconds = 0;
  // The last generate()'s KV cache, kept: a call whose cache fits in it clears and reuses it, so
  // no device memory is allocated and the decode steps' CUDA graphs captured over it stay valid
  // (an allocation drops them all).
  std::unique_ptr<KvCache> cache;

  Communicator& group() const { return comm ? *comm : single_rank(); }
  // Rank 0 tells the other ranks what to run (nothing to tell when alone).
  void send(const StepMessage& m) const {
    if (group().size() == 1) return;
    std::vector<uint8_t> bytes = encode(m);
    group().broadcast(bytes);
  }
  void check_same_model() const;
  KvCache& cache_for(const KvCacheOptions& kv);
  void warm_up(Engine& engine);
  void follow();
  std::vector<GenerationOutput> lead(const std::vector<GenerationRequest>& requests,
                                     const TokenCallback& on_token);
};

void GenerationStats::write_memory_csv(const std::string& path) const {
  std::ofstream out(path);
  if (!out) fail(path + ": cannot write the memory trace");
  out << "time_ms,step_ms,tokens,weights_bytes,kv_bytes,kv_reserved_bytes,activation_bytes,"
         "cache_used,cache_allocated\n";
  for (const StepStats& s : steps)
    out << s.start_ms << ',' << s.ms << ',' << s.tokens << ',' << s.weight_bytes << ','
        << s.kv_bytes << ',' << s.kv_reserved_bytes << ',' << s.activation_bytes << ','
        << s.cache_used << ',' << s.cache_allocated << '\n';
  if (!out) fail(path + ": write failed");
}

namespace {

constexpr uint64_t kRandomWeightSeed = 20261125;

std::string resolve_model(const std::string& m) {
  if (m != "default") return m;
  std::string path = default_model_path();
  if (!std::filesystem::exists(path))
    fail("the default model is not in the cache (" + path + "): run `make model` first");
  return path;
}

// A GGUF always carries its tokenizer; a HF directory may lack tokenizer.json (test models).
std::unique_ptr<Tokenizer> maybe_tokenizer(const std::string& path) {
  if (std::filesystem::is_directory(path) &&
      !std::filesystem::exists(std::filesystem::path(path) / "tokenizer.json"))
    return nullptr;
  return load_tokenizer_for_model(path);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Engine::Engine(const EngineOptions& options) : impl_(std::make_unique<Impl>()) {
  const auto t0 = std::chrono::steady_clock::now();
  impl_->options = options;
  // GGUF tensors as stored: the CPU backend multiplies the blocks directly (5-6x fewer bytes per
  // decoded token), the CUDA backend widens each tensor as it uploads it (no f32 copy of the
  // whole model on the host).
  LoadOptions load;
  load.dequantize = false;
  if (options.random_weights) {
    if (options.config.empty()) fail("--random-weights needs --config FILE (a HF config.json)");
    impl_->loaded.config = parse_hf_config(options.config);
    impl_->loaded.source = options.config + " (random weights)";
    if (!options.model.empty()) impl_->tokenizer = maybe_tokenizer(resolve_model(options.model));
  } else {
    const std::string path = resolve_model(options.model);
    impl_->loaded = load_model(path, load);
    impl_->tokenizer = maybe_tokenizer(path);
  }
  if (options.backend == "cpu") {
    impl_->backend = make_cpu_backend();
    if (options.tensor_parallel) impl_->comm = make_mpi_communicator();
  } else if (options.backend == "cuda") {
    if (options.dtype != "bf16" && options.dtype != "f32")
      fail("unknown CUDA dtype '" + options.dtype + "' (expected bf16 or f32)");
    // One GPU per rank of a host.
    impl_->backend = make_cuda_backend(options.dtype == "f32" ? DType::F32 : DType::BF16,
                                       options.tensor_parallel ? local_rank() : 0);
    if (!impl_->backend) fail("the CUDA backend is not available (no GPU, or built without CUDA)");
    if (options.tensor_parallel) impl_->comm = make_nccl_communicator(*impl_->backend);
  } else {
    fail("unknown backend '" + options.backend + "' (expected cpu or cuda)");
  }
  const ModelConfig& c = impl_->loaded.config;
  int max_ctx =
      options.max_context > 0 ? options.max_context : std::min(c.max_position_embeddings, 4096);
  impl_->options.max_context = max_ctx;
  impl_->check_same_model();
  Communicator& group = impl_->group();
  if (options.random_weights)
    impl_->model =
        std::make_unique<LlamaModel>(c, *impl_->backend, max_ctx, kRandomWeightSeed, group);
  else
    impl_->model = std::make_unique<LlamaModel>(impl_->loaded, *impl_->backend, max_ctx,
                                                options.no_rope, group);
  impl_->model->set_graph_capture(options.cuda_graphs);
  if (options.warmup) impl_->warm_up(*this);
  impl_->backend->set_profiling(options.profile);
  impl_->load_seconds = ms_since(t0) / 1000.0;
}

// Takes the backend's one-time costs at load: a prompt of each length it names (GEMM algorithms
// per bucket of rows), a batch of one-token prompts, then one request with two decode steps (run
// eagerly, then captured) over the largest cache so far, which later calls that fit in it reuse
// (cache_for), graph and all. Stats are dropped. Every rank runs it (rank 0 leads, the others
// follow), before profiling starts.
void Engine::Impl::warm_up(Engine& engine) {
  const std::vector<int> lengths = backend->warmup_lengths();
  if (lengths.empty()) return;
  const auto w0 = std::chrono::steady_clock::now();
  const int max_ctx = options.max_context, bs = options.block_size;
  const int blocks = options.cache_tokens > 0 ? options.cache_tokens / bs : INT_MAX;
  auto fits = [&](int tokens) { return tokens <= max_ctx && (tokens + bs - 1) / bs <= blocks; };
  auto request = [](int prompt, int new_tokens) {
    GenerationRequest r;
    r.prompt_ids.assign(static_cast<size_t>(prompt), 0);
    r.params.max_new_tokens = new_tokens;
    r.params.ignore_eos = true;
    return r;
  };
  for (const int len : lengths) {
    // (A sink cache prefills at most `window` tokens a step.)
    const int n = options.sink_tokens >= 0 ? std::min(len, options.window) : len;
    if (n < 1 || !fits(n + 1)) break;
    engine.generate({request(n, 1)});
    if (n < len) break;
  }
  // One-token prompts: the LM head of several rows (the prompts above give it one), whose first
  // product costs 40-65 ms (8B shapes, H200). As many as a fixed cache holds (each needs the
  // blocks of 2 tokens: two when a block holds one).
  const int per_request = (2 + bs - 1) / bs;
  const int batch = std::min(16, blocks / per_request);
  if (batch > 1 && fits(2))
    engine.generate(std::vector<GenerationRequest>(static_cast<size_t>(batch), request(1, 1)));
  if (fits(3)) engine.generate({request(1, 3)});
  stats = GenerationStats{};
  warmup_seconds = ms_since(w0) / 1000.0;
}

KvCache& Engine::Impl::cache_for(const KvCacheOptions& kv) {
  if (cache && cache->can_hold(kv)) {
    cache->clear();
  } else {
    cache.reset();  // its memory is given back before the new cache asks for more
    cache = std::make_unique<KvCache>(*backend, model->shard_config(), kv);
  }
  return *cache;
}

// Every rank must shard the same model the same way: rank 0's description against each rank's.
void Engine::Impl::check_same_model() const {
  if (group().size() == 1) return;
  const ModelConfig& c = loaded.config;
  const std::string mine =
      c.architecture + " vocab " + std::to_string(c.vocab_size) + ", hidden " +
      std::to_string(c.hidden_size) + ", mlp " + std::to_string(c.intermediate_size) + ", " +
      std::to_string(c.num_layers) + " layers, heads " + std::to_string(c.num_heads) + "/" +
      std::to_string(c.num_kv_heads) + " x " + std::to_string(c.head_dim) + ", weights " +
      (options.random_weights ? std::string("random") : loaded.weight_format) + " (" +
      std::to_string(loaded.file_bytes) + " bytes), backend " + options.backend +
      (options.backend == "cuda" ? " " + options.dtype : "") + ", context " +
      std::to_string(options.max_context);
  std::vector<uint8_t> bytes(mine.begin(), mine.end());
  group().broadcast(bytes);
  const std::string first(bytes.begin(), bytes.end());
  if (group().all_true(first == mine)) return;
  if (first != mine)
    fail("rank " + std::to_string(group().rank()) + " loaded another model than rank 0: " + mine +
         "; rank 0: " + first);
  fail("the ranks of this job loaded different models (the rank that differs names both)");
}

std::string Engine::profile_report() const {
  return impl_->backend->profile_report();
}

Engine::~Engine() = default;

const GenerationStats& Engine::last_stats() const {
  return impl_->stats;
}
const ModelConfig& Engine::config() const {
  return impl_->loaded.config;
}
const Tokenizer* Engine::tokenizer() const {
  return impl_->tokenizer.get();
}

double Engine::load_seconds() const {
  return impl_->load_seconds;
}
double Engine::warmup_seconds() const {
  return impl_->warmup_seconds;
}
int64_t Engine::weight_bytes() const {
  return impl_->model->weight_bytes();
}
bool Engine::is_leader() const {
  return impl_->group().rank() == 0;
}
int64_t Engine::cache_bytes() const {
  return impl_->cache ? impl_->cache->bytes() : 0;
}
void Engine::release_cache() {
  impl_->cache.reset();
}

std::vector<GenerationOutput> Engine::generate(const std::vector<GenerationRequest>& requests,
                                               const TokenCallback& on_token) {
  if (!is_leader()) {
    impl_->follow();
    return {};
  }
  try {
    return impl_->lead(requests, on_token);
  } catch (const Error& e) {
    impl_->send(StepMessage::abort(e.what()));
    throw;
  }
}

// A rank other than 0: run the steps rank 0 sends, on this rank's shard, until its generate()
// ends.
void Engine::Impl::follow() {
  KvCache* cache = nullptr;
  while (true) {
    std::vector<uint8_t> bytes;
    group().broadcast(bytes);
    StepMessage m = decode(bytes);
    switch (m.kind) {
      case StepMessage::Kind::Begin:
        cache = &cache_for(m.cache);
        break;
      case StepMessage::Kind::Step: {
        NI_ASSERT(cache != nullptr);
        for (const CacheOp& op : m.ops) cache->apply(op);
        const WaitScope wait(group().rank(), "a forward step");
        model->forward(m.batch, *cache);
        backend->synchronize();
        break;
      }
      case StepMessage::Kind::End:
        return;
      case StepMessage::Kind::Abort:
        fail("rank 0 stopped: " + m.error);
    }
  }
}

std::vector<GenerationOutput> Engine::Impl::lead(const std::vector<GenerationRequest>& requests,
                                                 const TokenCallback& on_token) {
  if (requests.empty()) {  // nothing to run: no outputs, empty stats (the other ranks end too)
    stats = GenerationStats{};
    send(StepMessage::end());
    return {};
  }
  const ModelConfig& c = loaded.config;
  const int max_ctx = options.max_context;
  const int bs = options.block_size;
  int64_t need = 0;  // blocks: every sequence at full length, beams twice over (reordering)
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& r = requests[i];
    r.params.validate();
    if (r.prompt_ids.empty()) fail("request " + std::to_string(i) + ": the prompt is empty");
    for (int32_t id : r.prompt_ids)
      if (id < 0 || id >= c.vocab_size)
        fail("request " + std::to_string(i) + ": token id " + std::to_string(id) +
             " is outside the vocabulary (" + std::to_string(c.vocab_size) + " ids)");
    if (!r.params.stop.empty() && !tokenizer)
      fail("request " + std::to_string(i) + ": stop strings need a model with a tokenizer");
    if (r.params.num_beams > 1) {
      const std::string e = sampling::BeamSearch(r.params, eos_for(r, c.eos_token_ids))
                                .vocabulary_error(c.vocab_size);
      if (!e.empty()) fail("request " + std::to_string(i) + ": beam search: " + e);
    }
    const int64_t total = static_cast<int64_t>(r.prompt_ids.size()) + r.params.max_new_tokens;
    if (total > max_ctx)
      fail("request " + std::to_string(i) + ": prompt (" + std::to_string(r.prompt_ids.size()) +
           " tokens) + max new tokens (" + std::to_string(r.params.max_new_tokens) +
           ") exceeds the context of " + std::to_string(max_ctx) + " positions");
    need += (total + bs - 1) / bs * (r.params.num_beams > 1 ? 2 * r.params.num_beams + 1 : 1);
  }
  KvCacheOptions kv;
  kv.block_size = bs;
  kv.num_blocks =
      static_cast<int>(options.cache_tokens > 0 ? (options.cache_tokens + bs - 1) / bs : need);
  kv.rope = options.rope_cache;
  kv.sink_tokens = options.sink_tokens;
  kv.window = options.window;
  KvCache& cache = cache_for(kv);
  if (const int most = cache.step_capacity(); most > 0)  // e.g. a sink cache's window
    for (size_t i = 0; i < requests.size(); ++i)
      if (requests[i].prompt_ids.size() > static_cast<size_t>(most))
        fail("request " + std::to_string(i) + ": its prompt (" +
             std::to_string(requests[i].prompt_ids.size()) + " tokens) does not fit the " +
             cache.policy().name() + " cache, which takes at most " + std::to_string(most) +
             " new tokens a step: a sink cache takes a prompt in one step (fed in chunks, "
             "the later ones would evict the first)");

  // Continuous batching: each request reserves the blocks of its whole life, in the cache's own
  // blocks (at most a sink cache's entries), and starts when they fit beside the running ones'.
  const int cbs = cache.block_size();
  const int64_t most_entries = cache.policy().capacity();
  Scheduler sched(cache.capacity_slots() / cbs, options.max_step_tokens);
  for (const GenerationRequest& r : requests) {
    int64_t len = static_cast<int64_t>(r.prompt_ids.size()) + r.params.max_new_tokens;
    if (most_entries > 0) len = std::min(len, most_entries);
    sched.add((len + cbs - 1) / cbs * (r.params.num_beams > 1 ? 2 * r.params.num_beams + 1 : 1));
  }
  send(StepMessage::begin(kv));
  // Requests in the order they start; reserved so that the pointers to them stay valid.
  std::vector<SampledRequest> sampled;
  std::vector<BeamRequest> beamed;
  sampled.reserve(requests.size());
  beamed.reserve(requests.size());

  stats = GenerationStats{};
  const int64_t captures_before = backend->graph_captures();
  size_t longest = 0;
  int most_new = 0;
  for (const GenerationRequest& r : requests) {
    longest = std::max(longest, r.prompt_ids.size());
    most_new = std::max(most_new, r.params.max_new_tokens);
  }
  stats.padded_slots =
      static_cast<int64_t>(requests.size()) * (static_cast<int64_t>(longest) + most_new);
  const auto run_start = std::chrono::steady_clock::now();
  std::vector<float> logits;
  std::vector<int32_t> tokens;
  const sampling::Sampler sampler;
  const size_t V = static_cast<size_t>(c.vocab_size);
  while (true) {
    // This step's sequences: the running ones that decode, then the prompts under way, then
    // those of requests starting now, as the token budget allows. Rows in the batch: sampled
    // ones (one block for the sampler), beams, then prompt chunks that are not the last (their
    // logits are not used).
    sched.begin_step();
    std::vector<SeqState*> chunks;
    std::vector<SampledRequest*> live_sampled;
    std::vector<sampling::RowInput> rows;
    std::vector<BeamRequest*> live_beams;
    size_t beam_rows_n = 0;
    int64_t prompt_tokens = 0;
    auto run_sampled = [&](SampledRequest& r) {
      const bool prompt = r.out.token_ids.empty();
      const auto pending = static_cast<int>(r.seq.pending.size());
      r.seq.chunk = sched.take(pending);
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
        if (!sched.take_all(static_cast<int>(r.beams.size()))) return;
      } else {
        SeqState& s = r.beams.front();
        const auto pending = static_cast<int>(s.pending.size());
        s.chunk = sched.take(pending);
        prompt_tokens += s.chunk;
        if (s.chunk < pending) {
          if (s.chunk > 0) chunks.push_back(&s);
          return;
        }
      }
      live_beams.push_back(&r);
      beam_rows_n += r.beams.size();
    };
    for (SampledRequest& r : sampled)
      if (!r.seq.done && !r.out.token_ids.empty()) run_sampled(r);
    for (BeamRequest& r : beamed)
      if (!r.beams.empty() && r.prefilled) run_beams(r);
    for (SampledRequest& r : sampled)
      if (!r.seq.done && r.out.token_ids.empty()) run_sampled(r);
    for (BeamRequest& r : beamed)
      if (!r.beams.empty() && !r.prefilled) run_beams(r);
    for (int64_t i = sched.admit(); i >= 0; i = sched.admit()) {
      const GenerationRequest& req = requests[static_cast<size_t>(i)];
      if (req.params.num_beams > 1) {
        beamed.emplace_back(static_cast<size_t>(i), req, cache, c.eos_token_ids);
        run_beams(beamed.back());
      } else {
        sampled.emplace_back(static_cast<size_t>(i), req, cache, c.eos_token_ids, tokenizer.get());
        run_sampled(sampled.back());
      }
    }
    std::vector<SeqState*> live;
    live.reserve(live_sampled.size() + beam_rows_n + chunks.size());
    for (SampledRequest* r : live_sampled) live.push_back(&r->seq);
    for (BeamRequest* r : live_beams)
      for (SeqState* s : r->live()) live.push_back(s);
    live.insert(live.end(), chunks.begin(), chunks.end());
    if (live.empty()) {  // every request has finished (one alone always fits: Scheduler::add)
      NI_ASSERT(sched.waiting() == 0);
      break;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const Batch batch = build_batch(live, cache);
    bool on_device = false;  // sampled rows picked and beam rows summarised by the backend
    std::vector<BeamRow> beam_rows;
    {
      // The other ranks get the batch and the cache ops made since the last step; alone, the
      // ops are only drained (no message is built). Device collectives complete in the copy to
      // the host, so the watchdog covers it.
      std::vector<CacheOp> ops = cache.take_ops();
      std::optional<WaitScope> wait;
      if (group().size() > 1) {
        wait.emplace(0, "a forward step");
        send(StepMessage::step(std::move(ops), batch));
      }
      const Tensor& step_logits = model->forward(batch, cache);
      // The backend picks the sampled rows where the logits are, as the host sampler would (the
      // penalties and suppressed tokens as edits of the logits they touch), and summarises the
      // beam rows for their searches: ids and a few best tokens come back instead of R x V
      // floats and the host's passes over each row. Beams first: the picks' edits rewrite the
      // logits, which the host path must then not see.
      std::vector<RowPick> picks;
      std::vector<LogitEdit> edits;
      const auto sampled_rows = static_cast<int64_t>(rows.size());
      size_t beam_n = 0;
      for (const BeamRequest* r : live_beams) beam_n = std::max(beam_n, r->search.tokens_per_row());
      on_device =
          options.pick_on_device &&
          std::all_of(rows.begin(), rows.end(),
                      [&](const sampling::RowInput& r) {
                        const std::optional<RowPick> p = sampling::backend_pick(
                            r, static_cast<int32_t>(picks.size()), c.vocab_size, edits);
                        if (p) picks.push_back(*p);
                        return p.has_value();
                      }) &&
          (live_beams.empty() ||
           backend->beam_rows_to_host(
               step_logits.rows(sampled_rows, sampled_rows + static_cast<int64_t>(beam_rows_n)),
               static_cast<int>(beam_n), beam_rows)) &&
          (rows.empty() ||
           backend->pick_to_host(step_logits.rows(0, sampled_rows), picks, edits, tokens));
      if (!on_device) backend->to_host_f32(step_logits, logits);
    }
    // Cache use as this step's forward saw it (sequences that end now release their blocks).
    StepStats step;
    step.cache_used = cache.used_slots();
    step.cache_allocated = cache.allocated_slots();
    if (!rows.empty()) {
      if (!on_device) {
        sampling::LogitsView view(std::span<float>(logits.data(), rows.size() * V),
                                  static_cast<int>(rows.size()), c.vocab_size);
        tokens = sampler.sample(view, rows);
      }
      for (size_t r = 0; r < live_sampled.size(); ++r)
        if (!live_sampled[r]->accept(tokens[r], cache, on_token))
          sched.finish(live_sampled[r]->seq.request);
    }
    size_t row = 0;  // of the beam rows
    for (BeamRequest* r : live_beams) {
      const size_t n = r->beams.size();
      if (!on_device) {
        for (size_t i = 0; i < n; ++i)
          beam_rows.push_back(sampling::summarise_row(
              std::span<const float>(logits.data() + (rows.size() + row + i) * V, V),
              r->search.tokens_per_row()));
      }
      if (!r->step(std::span<const BeamRow>(beam_rows).subspan(row, n), c.vocab_size, cache,
                   tokenizer.get()))
        sched.finish(r->index);
      row += n;
    }
    step.tokens = batch.num_tokens();
    step.sequences = static_cast<int>(live.size());
    step.waiting = static_cast<int>(sched.waiting());
    step.ms = ms_since(t0);
    step.start_ms = std::chrono::duration<double, std::milli>(t0 - run_start).count();
    step.weight_bytes = model->weight_bytes();
    step.kv_reserved_bytes = cache.bytes();
    step.kv_bytes = cache.capacity_slots() > 0
                        ? cache.bytes() / cache.capacity_slots() * step.cache_allocated
                        : 0;
    step.activation_bytes =
        model->activation_bytes(step.tokens, static_cast<int>(batch.logit_rows.size()));
    if (prompt_tokens > 0) {  // a step with prompt tokens counts as prefill (decode rows too)
      stats.prefill_ms += step.ms;
      stats.prefill_tokens += prompt_tokens;
    } else {
      stats.decode_ms += step.ms;
      stats.decode_tokens += static_cast<int64_t>(batch.logit_rows.size());
    }
    stats.steps.push_back(step);
  }
  stats.graph_captures = static_cast<int>(backend->graph_captures() - captures_before);
  send(StepMessage::end());
  std::vector<GenerationOutput> out(requests.size());
  for (SampledRequest& r : sampled) out[r.seq.request] = std::move(r.out);
  for (BeamRequest& r : beamed) out[r.index] = std::move(r.out);
  return out;
}

}  // namespace nanoinfer
