// The engine: loads a model onto a backend and generates for requests, one packed forward per
// step over every running sequence (prompts, in chunks under a step cap, beside decode rows),
// starting waiting requests as the KV cache frees up (continuous batching), on one device or
// sharded over the ranks of an MPI job. generate() runs a batch of requests to the end;
// submit() / step() take requests while others run (a server's loop).
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nanoinfer/error.h"
#include "nanoinfer/model_config.h"
#include "nanoinfer/sampling_params.h"

namespace nanoinfer {

struct EngineOptions {
  std::string model;            // HF directory, .gguf file, or "default"
  std::string backend = "cpu";  // "cpu" | "cuda"
  // Positions per sequence; 0 = min(model maximum, 4096). More than the model's positions is
  // taken (RoPE's table is computed to any length; tests run tiny models so); the CLI and Python
  // refuse it (check_positions).
  int max_context = 0;
  // KV cache slots in all; 0 = enough for every request of a call at once, up to 3/4 of the
  // memory free when the call makes its cache (the backend's: host or GPU; where all of them need
  // more, they take turns as below, and the largest always fits). Smaller: continuous batching,
  // requests start in order as the blocks of their whole life (prompt + max new tokens) free up,
  // and finished ones give theirs back at once.
  int cache_tokens = 0;
  int block_size = 16;
  // Tokens one forward takes at most (0 = no cap; -1 = the backend's: 16,384 on CUDA, 512 on the
  // CPU): decode rows first, then prompts cut into chunks that fit (chunked prefill), so a step's
  // activations stay bounded (8B shapes: ~2 GB at 16,384 tokens) and running sequences are not
  // held up long by a long prompt. W2 on an H200 ran 1.2 % slower under 16,384 than in one
  // prefill step; on the CPU, steps of 512 prefilled as fast as one step (docs/perf.md).
  int max_step_tokens = -1;
  // "post" | "pre"; empty: "pre" with a sink cache (the only policy it works with), else "post".
  std::string rope_cache;
  // >= 0: StreamingLLM sink cache (pre-RoPE keys; rope_cache "post" is refused), which keeps the
  // first sink_tokens and the last `window` tokens of a sequence: sink_tokens + window <=
  // max_context, and a request's prompt + max new tokens may go past max_context (its positions
  // stay below the cache's size).
  int sink_tokens = -1;
  int window = 0;
  bool no_rope = false;
  std::string dtype = "bf16";  // CUDA compute dtype: "bf16" | "f32" (the parity mode)
  bool cuda_graphs = true;     // replay decode steps as CUDA graphs (--no-graph: off)
  // CUDA bf16 (--keep-blocks): GGUF matrices in Q8_0, Q4_0, Q4_1, Q4_K, Q5_K or Q6_K stay blocks
  // on the GPU and are multiplied as blocks (an 8B Q4_K_M holds 5.5 GB instead of 16, and decodes
  // one sequence 33 % faster and up to 8 about as fast; 16 or more sequences and prefill are
  // slower: docs/perf.md);
  // other formats, and fused q|k|v or gate|up whose parts differ in format, are widened. Off:
  // every matrix widened to bf16 at load, the weights an HF bf16 model of the GGUF holds.
  bool keep_blocks = false;
  // On backends with one-time costs (CUDA: kernels loaded at their first launch, GEMM plans, the
  // first graph capture), short requests run at load (one prompt per GEMM bucket of 16 to 1,024
  // tokens, a batch of 16 one-token prompts, one request of two decode steps), so that the first
  // real requests do not pay them; part of load_seconds() (--no-warmup: off). The KV cache is
  // kept between generate() calls and reused by every call it holds (with cache_tokens 0: up to
  // the largest call so far; Engine::release_cache() gives it back), with the decode graphs
  // captured over it.
  bool warmup = true;
  bool profile = false;  // time per op kind (--profile): CUDA events, the CPU's clock
  // Every row is handled by the backend where the logits are (CUDA: greedy or sampled rows
  // picked, penalties and suppressed tokens included, the same tokens as the host sampler; beam
  // rows summarised to their best tokens for the search; off: all logits copied to the host).
  bool pick_on_device = true;
  // A prompt whose leading blocks hold the same tokens as blocks that earlier requests computed
  // (their prompts, and once they finish their generated tokens too: a chat's next turn) takes
  // those blocks instead of computing them again, while they are in the cache (held by a
  // running request, or released and not yet taken for other tokens; each generate() call
  // starts from an empty cache, submit()'s run keeps its cache). A request that would share
  // blocks a prompt under way is still computing waits for them. A full cache only;
  // --no-prefix-reuse: off. Outputs are unchanged where the backend is batch-invariant (the
  // CPU); the CUDA backend's rounding may differ by the batch that computed a block.
  bool prefix_reuse = true;
  bool random_weights = false;  // a model of `config`'s shape with random weights
  std::string config;           // HF config.json for random_weights
  // This process is one rank of an MPI job (mpirun -np N): the model is sharded over the job's
  // ranks (tensor parallelism; CPU ranks talk over MPI, GPU ranks over NCCL, one GPU each).
  // Rank 0 tokenizes, schedules and samples; every rank calls generate() the same number of
  // times, and on the others it serves rank 0's steps and returns nothing.
  bool tensor_parallel = false;

  // Throws Error naming the first option out of its range or not one of its names (the Engine
  // checks its options so before it loads anything).
  void validate() const;
};

struct GenerationRequest {
  std::vector<int32_t> prompt_ids;
  SamplingParams params;
};

// A generated token's log-probability and those of the most likely tokens at its step, best
// first (SamplingParams::logprobs).
struct TokenLogprobs {
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
  bool operator==(const TokenLogprobs&) const = default;
};

struct GenerationOutput {
  std::vector<int32_t> token_ids;  // generated ids only; an EOS that ended it is the last (as HF)
  std::string text;                // their text, special tokens skipped (empty without tokenizer)
  // "eos" | "length" | "stop" | "cancelled" (Engine::cancel) | "error" (its step failed)
  std::string finish_reason;
  // Beam search: the num_return_sequences best hypotheses, best first (EOS included, as HF
  // returns them), with their length-penalised scores; token_ids is the first.
  std::vector<std::vector<int32_t>> sequences;
  std::vector<float> scores;
  // Leading prompt tokens whose KV entries were taken from the cache instead of being computed
  // (prefix reuse; OpenAI's usage.prompt_tokens_details.cached_tokens).
  int reused_prompt_tokens = 0;
  std::vector<TokenLogprobs> logprobs;  // one per token of token_ids, with params.logprobs >= 0
  // With params.prompt_logprobs >= 0: one per prompt token after the first, in order (entry i
  // scores prompt token i + 1); exp(-mean logprob) is the prompt's perplexity.
  std::vector<TokenLogprobs> prompt_logprobs;
  // The seed it sampled with: params.seed, or the one drawn for it; unset for a request that
  // does not sample and was given none.
  std::optional<uint64_t> seed;
  bool operator==(const GenerationOutput&) const = default;
};

struct StepStats {
  double start_ms = 0;  // since generate() began
  double ms = 0;
  int tokens = 0;                 // tokens in this step's forward
  int sequences = 0;              // sequences in it
  int waiting = 0;                // requests not started yet (no room in the cache or in the step)
  int64_t cache_used = 0;         // cache entries held by live sequences
  int64_t cache_allocated = 0;    // slots in the blocks they hold
  int64_t weight_bytes = 0;       // device memory held by the weights
  int64_t kv_bytes = 0;           // KV memory in the blocks live sequences hold
  int64_t kv_reserved_bytes = 0;  // the whole KV cache allocation
  int64_t activation_bytes = 0;   // activations this step's forward needs
};

struct GenerationStats {
  // A step that feeds prompt tokens is a prefill step (with continuous batching it may carry
  // decode rows too); the others are decode steps.
  double prefill_ms = 0;
  double decode_ms = 0;
  int64_t prefill_tokens = 0;        // prompt tokens computed
  int64_t reused_prompt_tokens = 0;  // prompt tokens taken from other requests' blocks
  int64_t decode_tokens = 0;  // tokens produced by decode steps (the first token is prefill's)
  int64_t decode_steps = 0;   // each reads the weights once
  // Decode steps recorded during the call (CUDA graphs captured, one per batch-size bucket first
  // seen since the engine's device memory last changed; 0 where nothing is recorded).
  int graph_captures = 0;
  std::vector<StepStats> steps;
  // Slots a padded static batch would reserve for the same requests: B * (longest prompt +
  // largest max_new_tokens), the denominator of its utilisation.
  int64_t padded_slots = 0;
  // Writes steps as CSV (time, memory by kind, cache utilisation) for tools/plot_memory.py.
  void write_memory_csv(const std::string& path) const;
  double decode_tokens_per_s() const {
    return decode_ms > 0 ? 1000.0 * static_cast<double>(decode_tokens) / decode_ms : 0;
  }
};

// Called for every token a sampling request generates but an EOS that ends it (which the output's
// token_ids hold; a beam search has none: its hypotheses are known when it ends, in the output's
// sequences): (request index, token id, text that may be shown now: complete UTF-8, stop
// strings held back). Text still held back when an EOS ends the request (the start of a stop
// string that never came) is in no call: it ends the output's text, past the bytes the calls
// gave (a streaming front end prints output.text.substr(bytes shown) at the end). Return false
// to stop that request. A callback that throws ends its request (on_token's: finish_reason
// "cancelled"; on_done still comes), and its exception comes out of generate() or step() once
// the step is whole: the engine stays usable. Out of generate() it ends the whole call (the
// other requests' outputs are not returned); out of step() the other requests run on. From a
// callback, generate() and release_cache() (within either), submit() within generate(), or step()
// and cancel() within step(), throw Error; destroying the engine there is undefined.
using TokenCallback = std::function<bool(size_t, int32_t, const std::string&)>;
// Called once a submitted request has finished: (its id, its output).
using DoneCallback = std::function<void(size_t, GenerationOutput&&)>;
// Called by generate() after each step; false cancels every request not finished (finish_reason
// "cancelled", their tokens so far): a stop heard between steps, within a prefill's chunks
// (max_step_tokens) that produce no token to call on_token for.
using StepCallback = std::function<bool()>;

class Tokenizer;

// One call at a time: an Engine is not safe to call from two threads at once (serialise the calls;
// the Python module holds a lock). generate(), submit(), step(), cancel(), start_online() and
// release_cache() throw Error when another thread's call of them is under way (the reads, such as
// config() or progress(), are not checked). Separate engines run in parallel.
class Engine {
 public:
  explicit Engine(const EngineOptions& options);
  // Requests still submitted are dropped: their callbacks are destroyed, never called (as an
  // event loop's pending handlers are), so that none runs after its caller's loop has ended; a
  // std::promise that only a callback held reports broken_promise. cancel() them first for
  // their on_done.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // One output per request, in order (none for no requests). Every request is checked before
  // anything runs (its ids, parameters, length against the context and the cache policy); one that
  // fails throws Error naming it.
  std::vector<GenerationOutput> generate(const std::vector<GenerationRequest>& requests,
                                         const TokenCallback& on_token = nullptr,
                                         const StepCallback& go_on = nullptr);
  // The last generate() call's stats; online_stats(): the submit() / step() run's totals since
  // its cache was made (no per-step records).
  const GenerationStats& last_stats() const;
  const GenerationStats& online_stats() const;

  // Online use (a server's loop; one thread calls all three): submit() checks a request and
  // queues it, whatever runs already (throws Error and queues nothing when it cannot run), and
  // returns its id (0, 1, ... over the engine's life), which its callbacks are given; step()
  // runs one forward over what runs, starting waiting requests as room frees up, and returns
  // false when nothing runs or waits. The requests share a KV cache of cache_tokens slots (0: 16
  // sequences of max_context) that lasts while any runs; generate() and release_cache() refuse
  // to run then. Not under tensor parallelism. A step whose forward fails (a device error:
  // out of memory, a fault) ends the requests it ran, their on_done getting finish_reason
  // "error" and their tokens so far, and throws; the others run on at the next step.
  size_t submit(const GenerationRequest& request, TokenCallback on_token, DoneCallback on_done);
  bool step();
  // Allocates the online run's KV cache now, which the first submit() would otherwise do (a
  // server calls it before it serves, so that a cache too large fails at the start, with an
  // Error naming the bytes). Does nothing once the run has started.
  void start_online();
  // Ends a submitted request now (between steps, on the same thread): one still waiting never
  // runs, one running gives its cache blocks back; its on_done gets the output so far with
  // finish_reason "cancelled". False when it has finished already (or never was).
  bool cancel(size_t id);
  size_t active() const;  // submitted requests not finished
  // A submitted sampling request's output so far (from its on_token callback: up to and with the
  // token being announced, its logprobs entry included); null when it is not running.
  const GenerationOutput* progress(size_t id) const;
  const ModelConfig& config() const;
  int max_context() const;      // positions per sequence (the option, or its default)
  int max_step_tokens() const;  // tokens a step takes at most (the option, or its default)
  // Tokens a (sampled) request's prompt and new tokens may take together: max_context(), or the
  // KV cache's cache_tokens (in whole blocks) where that is less; 0 (no bound) over a sink cache,
  // whose positions and entries stay below its own size however long a request runs.
  int request_limit() const;
  // Cuts r's max_new_tokens to the room its prompt leaves below request_limit(): what the front
  // ends do to a request whose user left max_new_tokens unset, which then runs to the end of the
  // context instead of being refused. Unchanged where there is no bound, or no room (the engine's
  // refusal then says why).
  void fit_to_room(GenerationRequest& r) const;
  // Time per op kind, prefill and decode apart, since the engine was made (with profile on).
  std::string profile_report() const;
  // The model's tokenizer; null for a checkpoint without tokenizer files.
  const Tokenizer* tokenizer() const;
  // What making the engine took: seconds from reading the checkpoint to the engine being ready
  // (this rank's shard of the weights on the backend, the warm-up run), the warm-up's share, and
  // the bytes the weights take on the backend.
  double load_seconds() const;
  double warmup_seconds() const;
  int64_t weight_bytes() const;
  // False on the ranks of a tensor-parallel job other than rank 0 (they produce no output).
  bool is_leader() const;
  // The device bytes of the KV cache kept between generate() calls (0 before any call, the
  // warm-up's included, and after release_cache()), and a way to give them back: the next call
  // allocates a new cache and captures its decode graphs again. In a tensor-parallel job every rank
  // calls it, as it calls generate().
  int64_t cache_bytes() const;
  void release_cache();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The config of the model that `options` name (with random_weights: their config file), read
// without the weights: options can be checked against it before an Engine is built.
ModelConfig read_model_config(const EngineOptions& options);
// The context an Engine of these options on this model gets: max_context, or where that is 0
// the model's positions up to 4,096.
int resolved_max_context(const EngineOptions& options, const ModelConfig& config);

// The path of the default model in the user cache (fetched by scripts/fetch_model.sh).
std::string default_model_path();
// A model path as given, or for "default" default_model_path(), which must exist (Error: how to
// fetch it).
std::string resolve_model_path(const std::string& model);

// Throws Error "NAME N exceeds the model's P positions" for the first (name, N) asked for (N 0:
// none) beyond the positions of the model that `options` name (a flag's name in the CLI, a
// keyword's in Python). Called before the Engine is built, so a context too long is refused
// before the weights load (and before a RoPE table of its size).
void check_positions(const EngineOptions& options,
                     std::initializer_list<std::pair<const char*, int>> asked);

}  // namespace nanoinfer
