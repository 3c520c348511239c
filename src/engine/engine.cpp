#include "nanoinfer/engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <new>
#include <string>
#include <thread>

#include "dist/watchdog.h"
#include "engine/batch_builder.h"
#include "engine/requests.h"
#include "engine/run.h"
#include "engine/step_message.h"
#include "kv/kv_cache.h"
#include "loader/model_loader.h"
#include "model/llama.h"
#include "nanoinfer/tokenizer.h"
#include "util/error.h"
#include "util/fork_guard.h"
#include "util/scoped_flag.h"

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

std::string resolve_model_path(const std::string& model) {
  if (model != "default") return model;
  std::string path = default_model_path();
  if (!std::filesystem::exists(path))
    fail("the default model is not in the cache (" + path +
         "): `make model` in nanoinfer's source tree fetches it (scripts/fetch_model.sh), or "
         "NANOINFER_MODEL names another file");
  return path;
}

namespace {

// For the length of a call that runs or changes the engine: the engine is this thread's. A call
// from a callback (the same thread) passes, for the re-entry checks to name; another thread's
// call meanwhile throws Error instead of racing this one.
class CallScope {
 public:
  CallScope(std::atomic<std::thread::id>& caller, const char* call) : caller_(caller) {
    std::thread::id held;
    held_ = caller.compare_exchange_strong(held, std::this_thread::get_id());
    if (!held_ && held != std::this_thread::get_id())
      fail(std::string(call) +
           " while another thread's call runs on this engine: an Engine serves one call at a "
           "time (serialise the calls, or make an engine per thread)");
  }
  ~CallScope() {
    if (held_) caller_.store(std::thread::id());
  }
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;

 private:
  std::atomic<std::thread::id>& caller_;
  bool held_;
};

}  // namespace

struct Engine::Impl {
  EngineOptions options;
  LoadedModel loaded;
  std::unique_ptr<Communicator> comm;  // null: a single rank
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
  GenerationStats stats;
  bool generating = false;  // in generate(): its callbacks may not generate, submit or release
  std::atomic<std::thread::id> caller{};  // the thread whose call runs (none: id())
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
  RunContext run_context();
  KvCacheOptions cache_options(int64_t need_blocks) const;
  // A sink cache's entries (sink tokens + window); 0 for a cache that keeps every token.
  int64_t sink_size() const {
    return options.sink_tokens >= 0 ? int64_t{options.sink_tokens} + options.window : 0;
  }
  std::vector<GenerationOutput> lead(const std::vector<GenerationRequest>& requests,
                                     const StepCallback& go_on, const TokenCallback& on_token);
  // The run that submit() feeds and step() advances, over the kept cache (dropped by generate()
  // and release_cache()).
  std::unique_ptr<RunContext> online_ctx;
  std::unique_ptr<Run> online;
  GenerationStats online_stats;
  size_t submitted = 0;  // ids given so far
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
  out.close();  // (a full disk shows when the buffer is written)
  if (!out) fail(path + ": write failed");
}

namespace {

constexpr uint64_t kRandomWeightSeed = 20261125;

// A GGUF always carries its tokenizer; a HF directory may lack tokenizer.json (test models).
std::unique_ptr<Tokenizer> maybe_tokenizer(const std::string& path) {
  if (std::filesystem::is_directory(path) &&
      !std::filesystem::exists(std::filesystem::path(path) / "tokenizer.json"))
    return nullptr;
  return load_tokenizer_for_model(path);
}

// The cache's RoPE policy: the one asked for, else pre-RoPE keys for a sink cache (which renumbers
// what it keeps) and post-RoPE ones otherwise.
std::string rope_policy(const EngineOptions& o) {
  if (!o.rope_cache.empty()) return o.rope_cache;
  return o.sink_tokens >= 0 ? "pre" : "post";
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

void EngineOptions::validate() const {
  auto at_least = [](const char* name, int value, int least) {
    if (value < least)
      fail(std::string(name) + " must be >= " + std::to_string(least) + ", got " +
           std::to_string(value));
  };
  auto one_of = [](const char* name, const std::string& value, const char* a, const char* b) {
    if (value != a && value != b)
      fail("unknown " + std::string(name) + " '" + value + "' (expected " + a + " or " + b + ")");
  };
  one_of("backend", backend, "cpu", "cuda");
  one_of("CUDA dtype", dtype, "bf16", "f32");
  if (!rope_cache.empty()) one_of("rope_cache", rope_cache, "post", "pre");
  at_least("max_context", max_context, 0);
  at_least("cache_tokens", cache_tokens, 0);
  at_least("block_size", block_size, 1);
  at_least("max_step_tokens", max_step_tokens, -1);
  at_least("sink_tokens", sink_tokens, -1);
  at_least("window", window, 0);
  // A cache policy that no cache takes fails here, not at the first request (a server would
  // otherwise start and refuse every one).
  KvCacheOptions kv;
  kv.rope = rope_policy(*this);
  kv.sink_tokens = sink_tokens;
  kv.window = window;
  make_cache_policy(kv);
  if (random_weights && config.empty())
    fail("random_weights (--random-weights) needs config (--config FILE, a HF config.json)");
  if (!random_weights && !config.empty())
    fail(
        "config (--config FILE) is read with random_weights (--random-weights) only (a checkpoint "
        "brings its own config)");
}

// (a function-try-block: host memory that runs out while the engine is made, a max_context of a
// billion positions say, is an Error as every other user-caused failure is)
Engine::Engine(const EngineOptions& options) try : impl_(std::make_unique<Impl>()) {
  const auto t0 = std::chrono::steady_clock::now();
  arm_fork_guard();  // (a process forked from this one could not start OpenMP's threads)
  options.validate();
  impl_->options = options;
  // GGUF tensors as stored: the CPU backend multiplies the blocks directly (5-6x fewer bytes per
  // decoded token); the CUDA backend keeps the formats it multiplies as blocks and widens the
  // others as it uploads them (no f32 copy of the whole model on the host).
  LoadOptions load;
  load.dequantize = false;
  if (options.random_weights) {
    impl_->loaded.config = parse_hf_config(options.config);
    impl_->loaded.source = options.config + " (random weights)";
    if (!options.model.empty())
      impl_->tokenizer = maybe_tokenizer(resolve_model_path(options.model));
  } else {
    const std::string path = resolve_model_path(options.model);
    impl_->loaded = load_model(path, load);
    impl_->tokenizer = maybe_tokenizer(path);
  }
  if (options.backend == "cpu") {
    impl_->backend = make_cpu_backend();
    if (options.tensor_parallel) impl_->comm = make_mpi_communicator();
  } else {  // cuda
    // One GPU per rank of a host.
    impl_->backend =
        make_cuda_backend(options.dtype == "f32" ? DType::F32 : DType::BF16,
                          options.tensor_parallel ? local_rank() : 0, options.keep_blocks);
    if (!impl_->backend) fail("the CUDA backend is not available (no GPU, or built without CUDA)");
    if (options.tensor_parallel) impl_->comm = make_nccl_communicator(*impl_->backend);
  }
  if (options.max_step_tokens < 0) impl_->options.max_step_tokens = impl_->backend->step_tokens();
  const ModelConfig& c = impl_->loaded.config;
  const int max_ctx = resolved_max_context(options, c);
  impl_->options.max_context = max_ctx;
  // A sink cache's positions stay below its size however long the text runs (it renumbers what
  // it keeps), so that size must fit the context's positions.
  if (impl_->sink_size() > max_ctx)
    fail("sink_tokens + window (" + std::to_string(impl_->sink_size()) + ") exceed max_context (" +
         std::to_string(max_ctx) + ")");
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
} catch (const std::bad_alloc&) {
  throw Error("out of memory making the engine: with " +
              (options.max_context > 0 ? "max_context " + std::to_string(options.max_context)
                                       : std::string("the default max_context")) +
              ", its model, RoPE tables and buffers did not fit in host memory");
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
  const int64_t blocks = options.cache_tokens > 0 ? blocks_of(options.cache_tokens, bs) : INT_MAX;
  auto fits = [&](int tokens) { return tokens <= max_ctx && blocks_of(tokens, bs) <= blocks; };
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
  const int batch = static_cast<int>(std::min<int64_t>(16, blocks / blocks_of(2, bs)));
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
const GenerationStats& Engine::online_stats() const {
  return impl_->online_stats;
}

ModelConfig read_model_config(const EngineOptions& options) {
  return options.random_weights ? parse_hf_config(options.config)
                                : load_model_config(resolve_model_path(options.model));
}

int resolved_max_context(const EngineOptions& options, const ModelConfig& config) {
  return options.max_context > 0 ? options.max_context
                                 : std::min(config.max_position_embeddings, 4096);
}

const ModelConfig& Engine::config() const {
  return impl_->loaded.config;
}
void check_positions(const EngineOptions& options,
                     std::initializer_list<std::pair<const char*, int>> asked) {
  if (std::all_of(asked.begin(), asked.end(), [](const auto& a) { return a.second <= 0; })) return;
  options.validate();  // (its messages first: e.g. random weights without a config)
  const int most = read_model_config(options).max_position_embeddings;
  for (const auto& [name, positions] : asked)
    if (positions > most)
      fail(std::string(name) + " " + std::to_string(positions) + " exceeds the model's " +
           std::to_string(most) + " positions");
}

int Engine::max_context() const {
  return impl_->options.max_context;
}
int Engine::max_step_tokens() const {
  return impl_->options.max_step_tokens;
}
int Engine::request_limit() const {
  const EngineOptions& o = impl_->options;
  if (impl_->sink_size() > 0) return 0;
  if (o.cache_tokens <= 0) return o.max_context;
  return static_cast<int>(
      std::min<int64_t>(o.max_context, blocks_of(o.cache_tokens, o.block_size) * o.block_size));
}

void Engine::fit_to_room(GenerationRequest& r) const {
  const int64_t limit = request_limit(), room = limit - static_cast<int64_t>(r.prompt_ids.size());
  if (limit > 0 && room >= 1 && room < r.params.max_new_tokens)
    r.params.max_new_tokens = static_cast<int>(room);
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
  const CallScope call(impl_->caller, "release_cache()");
  if (impl_->generating) fail("release_cache() from a callback of generate()");
  // (the run and its cache are under the step: a last on_done sees no request active)
  if (impl_->online && impl_->online->stepping()) fail("release_cache() from a callback of step()");
  if (impl_->online && impl_->online->active() > 0)
    fail("release_cache() while submitted requests run");
  impl_->online.reset();
  impl_->cache.reset();
}

std::vector<GenerationOutput> Engine::generate(const std::vector<GenerationRequest>& requests,
                                               const TokenCallback& on_token,
                                               const StepCallback& go_on) {
  const CallScope call(impl_->caller, "generate()");
  if (!is_leader()) {
    impl_->follow();
    return {};
  }
  if (impl_->generating) fail("generate() from a callback of generate()");
  if (impl_->online && impl_->online->stepping()) fail("generate() from a callback of step()");
  const ScopedFlag generating(impl_->generating);
  try {
    return impl_->lead(requests, go_on, on_token);
  } catch (const std::exception& e) {  // (a callback's may be of any kind)
    impl_->send(StepMessage::abort(e.what()));
    throw;
  } catch (...) {
    impl_->send(StepMessage::abort("an exception that is not a std::exception"));
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

RunContext Engine::Impl::run_context() {
  return {loaded.config,
          *backend,
          *model,
          tokenizer.get(),
          options.max_context,
          static_cast<int>(sink_size()),  // (at most max_context: checked at construction)
          options.max_step_tokens,
          options.pick_on_device,
          options.prefix_reuse && options.sink_tokens < 0,  // an evicting cache shares no blocks
          group(),
          [this](const StepMessage& m) { send(m); }};
}

std::vector<GenerationOutput> Engine::Impl::lead(const std::vector<GenerationRequest>& requests,
                                                 const StepCallback& go_on,
                                                 const TokenCallback& on_token) {
  if (online && online->active() > 0)
    fail("generate() while submitted requests run: step() until they finish first");
  online.reset();          // its cache is about to be cleared or replaced
  if (requests.empty()) {  // nothing to run: no outputs, empty stats (the other ranks end too)
    stats = GenerationStats{};
    send(StepMessage::end());
    return {};
  }
  const RunContext ctx = run_context();
  // Blocks: every sequence at full length (a sink cache's: its size at most), beams twice over
  // (reordering).
  int64_t need = 0, largest = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& r = requests[i];
    check_request(ctx, r, "request " + std::to_string(i));
    const int64_t blocks = lifetime_blocks(r, ctx.evicting_capacity, options.block_size);
    need += blocks;
    largest = std::max(largest, blocks);
  }
  // Within the memory free, the kept cache's own counted (it is given back before a larger one
  // is made).
  if (options.cache_tokens <= 0 && !(cache && cache->can_hold(cache_options(need)))) {
    const int64_t free = backend->free_memory();
    need = blocks_within_memory(
        need, largest, free < 0 ? free : free + (cache ? cache->bytes() : 0),
        KvCache::slot_bytes(model->shard_config(), backend->compute_dtype()) * options.block_size);
  }
  const KvCacheOptions kv = cache_options(need);
  KvCache& cache = cache_for(kv);
  stats = GenerationStats{};
  Run run(ctx, cache, stats, true);
  std::vector<GenerationOutput> out(requests.size());
  for (size_t i = 0; i < requests.size(); ++i)
    run.add(
        requests[i], on_token, [&out](size_t id, GenerationOutput&& o) { out[id] = std::move(o); },
        "request " + std::to_string(i));
  size_t longest = 0;
  int most_new = 0;
  for (const GenerationRequest& r : requests) {
    longest = std::max(longest, r.prompt_ids.size());
    most_new = std::max(most_new, r.params.max_new_tokens);
  }
  stats.padded_slots =
      static_cast<int64_t>(requests.size()) * (static_cast<int64_t>(longest) + most_new);
  send(StepMessage::begin(kv));
  const int64_t captures_before = backend->graph_captures();
  while (run.step())
    if (go_on && !go_on())
      for (size_t i = 0; i < requests.size(); ++i) run.cancel(i);  // (finished ones: no-ops)
  stats.graph_captures = static_cast<int>(backend->graph_captures() - captures_before);
  send(StepMessage::end());
  return out;
}

KvCacheOptions Engine::Impl::cache_options(int64_t need_blocks) const {
  const int bs = options.block_size;
  KvCacheOptions kv;
  kv.block_size = bs;
  kv.num_blocks = static_cast<int>(options.cache_tokens > 0 ? blocks_of(options.cache_tokens, bs)
                                                            : need_blocks);
  kv.rope = rope_policy(options);
  kv.sink_tokens = options.sink_tokens;
  kv.window = options.window;
  return kv;
}

void Engine::start_online() {
  Impl& m = *impl_;
  const CallScope call(m.caller, "start_online()");
  if (m.group().size() > 1) fail("submit(): not under tensor parallelism (use generate())");
  if (m.generating) fail("submit() from a callback of generate()");
  if (m.online) return;
  // A cache that stays: cache_tokens slots, or 16 sequences of the full context.
  const int64_t slots =
      m.options.cache_tokens > 0 ? m.options.cache_tokens : 16 * int64_t{m.options.max_context};
  KvCache& cache = m.cache_for(m.cache_options(blocks_of(slots, m.options.block_size)));
  m.online_stats = GenerationStats{};
  m.online_ctx = std::make_unique<RunContext>(m.run_context());
  m.online = std::make_unique<Run>(*m.online_ctx, cache, m.online_stats, false, m.submitted);
}

size_t Engine::submit(const GenerationRequest& request, TokenCallback on_token,
                      DoneCallback on_done) {
  Impl& m = *impl_;
  const CallScope call(m.caller, "submit()");
  start_online();
  const size_t id = m.online->add(request, std::move(on_token), std::move(on_done), "");
  m.submitted = id + 1;
  return id;
}

bool Engine::step() {
  const CallScope call(impl_->caller, "step()");
  return impl_->online && impl_->online->step();
}

bool Engine::cancel(size_t id) {
  const CallScope call(impl_->caller, "cancel()");
  return impl_->online && impl_->online->cancel(id);
}

size_t Engine::active() const {
  return impl_->online ? impl_->online->active() : 0;
}

const GenerationOutput* Engine::progress(size_t id) const {
  return impl_->online ? impl_->online->progress(id) : nullptr;
}

}  // namespace nanoinfer
