#include "nanoinfer/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "engine/batch_builder.h"
#include "loader/model_loader.h"
#include "model/llama.h"
#include "util/error.h"

namespace nanoinfer {

std::string default_model_path() {
  const char* env = std::getenv("NANOINFER_MODEL");
  if (env != nullptr && *env != '\0') return env;
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  const std::string cache =
      xdg != nullptr ? std::string(xdg) : std::string(home != nullptr ? home : "/tmp") + "/.cache";
  return cache + "/nanoinfer/SmolLM2-135M-Instruct.Q4_1.gguf";
}

struct Engine::Impl {
  EngineOptions options;
  LoadedModel loaded;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
  GenerationStats stats;
};

void GenerationStats::write_memory_csv(const std::string& path) const {
  std::ofstream out(path);
  if (!out) fail(path + ": cannot write the memory trace");
  out << "time_ms,step_ms,tokens,weights_bytes,kv_bytes,kv_reserved_bytes,activation_bytes,"
         "cache_used,cache_allocated\n";
  for (const StepStats& s : steps)
    out << s.start_ms << ',' << s.ms << ',' << s.tokens << ',' << s.weight_bytes << ',' << s.kv_bytes
        << ',' << s.kv_reserved_bytes << ',' << s.activation_bytes << ',' << s.cache_used << ','
        << s.cache_allocated << '\n';
  if (!out) fail(path + ": write failed");
}

namespace {

std::string resolve_model(const std::string& m) {
  if (m != "default") return m;
  const std::string path = default_model_path();
  if (!std::filesystem::exists(path))
    fail("the default model is not in the cache (" + path + "): run `make model` first");
  return path;
}

int32_t argmax(const float* row, int V) {
  return static_cast<int32_t>(std::max_element(row, row + V) - row);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Engine::Engine(const EngineOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
  impl_->loaded = load_model(resolve_model(options.model));
  if (options.backend == "cpu") {
    impl_->backend = make_cpu_backend();
  } else if (options.backend == "cuda") {
    impl_->backend = make_cuda_backend(DType::BF16);
    if (!impl_->backend) fail("the CUDA backend is not available (no GPU, or built without CUDA)");
  } else {
    fail("unknown backend '" + options.backend + "' (expected cpu or cuda)");
  }
  const ModelConfig& c = impl_->loaded.config;
  int max_ctx = options.max_context > 0 ? options.max_context : std::min(c.max_position_embeddings, 4096);
  impl_->options.max_context = max_ctx;
  impl_->model = std::make_unique<LlamaModel>(impl_->loaded, *impl_->backend, max_ctx, options.no_rope);
}

Engine::~Engine() = default;

const GenerationStats& Engine::last_stats() const { return impl_->stats; }
const ModelConfig& Engine::config() const { return impl_->loaded.config; }

std::vector<GenerationOutput> Engine::generate(const std::vector<GenerationRequest>& requests,
                                               const TokenCallback& on_token) {
  Impl& im = *impl_;
  const ModelConfig& c = im.loaded.config;
  const int max_ctx = im.options.max_context;
  int64_t need = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& r = requests[i];
    r.params.validate();
    if (r.prompt_ids.empty()) fail("request " + std::to_string(i) + ": the prompt is empty");
    const int64_t total = static_cast<int64_t>(r.prompt_ids.size()) + r.params.max_new_tokens;
    if (total > max_ctx)
      fail("request " + std::to_string(i) + ": prompt (" + std::to_string(r.prompt_ids.size()) +
           " tokens) + max new tokens (" + std::to_string(r.params.max_new_tokens) +
           ") exceeds the context of " + std::to_string(max_ctx) + " positions");
    need += (total + im.options.block_size - 1) / im.options.block_size;
  }
  KvCacheOptions kv;
  kv.block_size = im.options.block_size;
  kv.num_blocks = static_cast<int>(
      im.options.cache_tokens > 0 ? (im.options.cache_tokens + kv.block_size - 1) / kv.block_size : need);
  kv.rope = im.options.rope_cache;
  kv.sink_tokens = im.options.sink_tokens;
  kv.window = im.options.window;
  KvCache cache(*im.backend, c, kv);

  std::vector<GenerationOutput> out(requests.size());
  std::vector<SeqState> seqs;
  for (size_t i = 0; i < requests.size(); ++i)
    seqs.emplace_back(i, cache.create_sequence(), requests[i].prompt_ids);

  im.stats = GenerationStats{};
  const auto run_start = std::chrono::steady_clock::now();
  std::vector<float> logits;
  bool prefill = true;
  while (true) {
    std::vector<SeqState*> live;
    for (SeqState& s : seqs)
      if (!s.done) live.push_back(&s);
    if (live.empty()) break;
    const auto t0 = std::chrono::steady_clock::now();
    const Batch batch = build_batch(live, cache);
    const Tensor& dev_logits = im.model->forward(batch, cache);
    im.backend->to_host_f32(dev_logits, logits);
    StepStats step;
    step.tokens = batch.num_tokens();
    for (size_t r = 0; r < live.size(); ++r) {
      SeqState& s = *live[r];
      const GenerationRequest& req = requests[s.request];
      const int32_t tok = argmax(logits.data() + r * static_cast<size_t>(c.vocab_size), c.vocab_size);
      GenerationOutput& o = out[s.request];
      const bool is_eos = !req.params.ignore_eos &&
                          std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), tok) !=
                              c.eos_token_ids.end();
      if (is_eos) {
        o.finish_reason = "eos";
      } else {
        o.token_ids.push_back(tok);
        if (on_token && !on_token(s.request, tok)) o.finish_reason = "stop";
        if (static_cast<int>(o.token_ids.size()) >= req.params.max_new_tokens) o.finish_reason = "length";
      }
      s.pending = {tok};
      if (!o.finish_reason.empty()) {
        s.done = true;
        cache.release(s.cache_id);
      }
    }
    step.cache_used = cache.used_slots();
    step.cache_allocated = cache.allocated_slots();
    step.ms = ms_since(t0);
    step.start_ms = std::chrono::duration<double, std::milli>(t0 - run_start).count();
    step.weight_bytes = im.model->weight_bytes();
    step.kv_reserved_bytes = cache.bytes();
    step.kv_bytes = cache.capacity_slots() > 0 ? cache.bytes() / cache.capacity_slots() * step.cache_allocated : 0;
    step.activation_bytes = im.model->activation_bytes(step.tokens, static_cast<int>(batch.logit_rows.size()));
    if (prefill) {
      im.stats.prefill_ms += step.ms;
      im.stats.prefill_tokens += step.tokens;
    } else {
      im.stats.decode_ms += step.ms;
      im.stats.decode_tokens += static_cast<int64_t>(live.size());
    }
    im.stats.steps.push_back(step);
    prefill = false;
  }
  return out;
}

}  // namespace nanoinfer
