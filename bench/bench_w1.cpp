// GPU benchmarks of the CUDA backend on random weights of a real config (BENCHMARKS.md):
//   W1  one prompt of 512 random ids, 256 greedy new tokens (EOS ignored): TTFT, decode tok/s
//       with and without CUDA graphs, bytes read per decode token / time as GB/s and as a % of
//       a 2 GiB device-to-device copy measured in the same run;
//   W2  offline throughput: 256 requests submitted at once, prompts of 100-1,024 random ids
//       (seeded), 256 new tokens each (EOS ignored), run by continuous batching (steps of at most
//       16,384 tokens; a cache with room for all of them, then for about half): output and total
//       tokens/s end to end, peak KV blocks, steps, most requests waiting (nothing is preempted);
//   prefix  64 requests whose prompts share a 1,024-token system prompt (+ 64 tokens of their
//       own, 32 new tokens each), with and without prefix reuse: wall time, prefill time,
//       prompt tokens computed and reused;
//   W3  prefill of one 4,096-token prompt and of 8 at once (prompt tokens/s);
//   attn the decode attention kernel alone at contexts 640 (W1's), 4k and 16k, batch 1/2/8/32 and
//        a pre-RoPE cache at batch 1/8/32 (% of copy), next to a kernel that only reads the same
//        bytes; post-RoPE, also each call after the RoPE kernel that feeds it, as in the engine
//        (attention's share: that pair's time less the RoPE calls' alone);
//   gemv the decode products alone on the config's matrices, GEMV kernel and cuBLASLt, 1-8 rows
//        (% of the copy bandwidth);
//   fused the fused elementwise kernels alone (add + RMSNorm, RoPE + KV write, SiLU * mul) at 1,
//        512 and 4,096 tokens (% of the copy bandwidth);
//   step W1's decode step as the engine runs it (the token picked and read back, then the next
//        step built) against the same steps queued without reading the token: the host's gap;
//   sampled W1 with temperature 0.6 and top-p 0.9, without and with penalties, the token picked
//        on the device against the logits sampled on the host (decode tok/s, and whether both
//        drew the same tokens);
//   sample the device pick alone per filter, 1 and 32 rows, on spread and on peaked logits;
//   beams  W1's prompt with 4 beams, the rows summarised on the device against on the host;
//   sink   W1-like decode on a post-RoPE, a pre-RoPE and a sink cache (evicting every step once
//          its window is full), steps before and after the evictions start;
//   batch  batched greedy decode at 1-32 sequences on one engine with a fixed cache: each
//          size's first two decode steps (kernels first launched, the step run eagerly, then
//          captured), its steady step and tok/s, and the graphs each call captured;
// plus a per-op profile of a W1 decode and a W3 prefill. Prints a table; --json FILE writes all.
// Under mpirun -np N (one rank per GPU) it runs W1 with the model sharded over the N GPUs
// (tensor parallelism) and rates the bandwidth against the N GPUs' copy bandwidth together.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_args.h"
#include "nanoinfer/engine.h"

#ifdef NANOINFER_HAVE_CUDA
#include <cuda_runtime.h>

#include "backend/backend.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/lt_gemm.h"
#include "dist/communicator.h"
#include "engine/batch_builder.h"
#include "kv/kv_cache.h"
#include "loader/model_loader.h"
#include "model/llama.h"

namespace {

using nanoinfer::DType;
using nlohmann::json;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// Bytes read + written per second by cudaMemcpy of 2 GiB device to device (median of 10).
double copy_bandwidth_gbs() {
  const size_t bytes = size_t{2} << 30;
  void *a = nullptr, *b = nullptr;
  check(cudaMalloc(&a, bytes), "cudaMalloc");
  check(cudaMalloc(&b, bytes), "cudaMalloc");
  check(cudaMemset(a, 1, bytes), "cudaMemset");
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<float> ms;
  for (int i = 0; i < 12; ++i) {
    cudaEventRecord(e0);
    check(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice), "copy");
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float t = 0;
    cudaEventElapsedTime(&t, e0, e1);
    if (i >= 2) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (ms[ms.size() / 2] * 1e-3) / 1e9;
}

std::vector<int32_t> random_prompt(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (auto& t : p) t = d(rng);
  return p;
}

struct Args {
  std::string config = "bench/configs/llama-3.1-8b.json";
  std::string json_path;
  std::string
      only;  // w1 step sampled sample beams batch sink w2 prefix w3 attn gemv fused profile (all)
  int prompt = 512, new_tokens = 256;
};

nanoinfer::EngineOptions engine_options(const Args& a, int max_context, bool graphs) {
  nanoinfer::EngineOptions o;
  o.backend = "cuda";
  o.random_weights = true;
  o.config = a.config;
  o.max_context = max_context;
  o.cuda_graphs = graphs;
  o.tensor_parallel = nanoinfer::launched_world_size() > 1;
  return o;
}

// Weights streamed per decode token (every matrix once, one embedding row) plus the K and V of
// the average context of the run.
double decode_bytes_per_token(const nanoinfer::ModelConfig& c, double avg_context) {
  const double H = c.hidden_size, F = c.intermediate_size, L = c.num_layers, D = c.head_dim;
  const double q = c.num_heads * D, kv = c.num_kv_heads * D;
  const double per_layer = H * (q + 2 * kv) + q * H + 2 * F * H + F * H + 2 * H;
  const double weights = L * per_layer + c.vocab_size * H + H + H;
  const double cache = avg_context * L * 2 * kv;
  return 2.0 * (weights + cache);  // bf16
}

json run_w1(const Args& a, double copy_gbs) {
  json out;
  const nanoinfer::ModelConfig c = nanoinfer::parse_hf_config(a.config);
  const std::vector<int32_t> prompt = random_prompt(a.prompt, c.vocab_size, 1);
  nanoinfer::GenerationRequest req{prompt, {}};
  req.params.max_new_tokens = a.new_tokens;
  req.params.ignore_eos = true;
  const double bytes = decode_bytes_per_token(c, a.prompt + a.new_tokens / 2.0);
  out["bytes_per_decode_token"] = bytes;
  for (const bool graphs : {true, false}) {
    nanoinfer::Engine engine(engine_options(a, a.prompt + a.new_tokens + 16, graphs));
    nanoinfer::GenerationRequest warm = req;
    warm.params.max_new_tokens = 8;
    engine.generate({warm});
    std::vector<double> tps, ttft;
    int captures = 0;  // by the timed runs (the engine keeps its cache and graphs: none)
    for (int rep = 0; rep < 3; ++rep) {
      engine.generate({req});
      const auto& st = engine.last_stats();
      tps.push_back(st.decode_tokens_per_s());
      ttft.push_back(st.prefill_ms);
      captures += st.graph_captures;
    }
    if (!engine.is_leader()) continue;
    std::sort(tps.begin(), tps.end());
    std::sort(ttft.begin(), ttft.end());
    const double t = tps[1], gbs = bytes * t / 1e9;
    const std::string k = graphs ? "graph" : "no_graph";
    out[k] = {{"decode_tok_s", t},
              {"decode_tok_s_all", tps},
              {"ttft_ms", ttft[1]},
              {"gb_s", gbs},
              {"pct_copy_bw", 100.0 * gbs / copy_gbs},
              {"graph_captures", captures}};
    std::printf(
        "W1 %-8s prefill(%d) %7.2f ms   decode %7.1f tok/s   %6.0f GB/s = %5.1f%% of copy   "
        "(%d graphs captured in the timed runs)\n",
        k.c_str(), a.prompt, ttft[1], t, gbs, 100.0 * gbs / copy_gbs, captures);
    std::fflush(stdout);
  }
  out["roofline_tok_s_at_copy_bw"] = copy_gbs * 1e9 / bytes;
  return out;
}

// One request on an engine (graphs on) with the backend's picks on or off
// (EngineOptions::pick_on_device): a warm-up of 8 tokens, then three runs. Their decode rows/s,
// sorted, and the last run's output.
struct PathRuns {
  std::vector<double> tok_s;
  nanoinfer::GenerationOutput out;
};
PathRuns run_path(const Args& a, const nanoinfer::GenerationRequest& req, bool on_device) {
  nanoinfer::EngineOptions o = engine_options(a, a.prompt + req.params.max_new_tokens + 16, true);
  o.pick_on_device = on_device;
  nanoinfer::Engine engine(o);
  nanoinfer::GenerationRequest warm = req;
  warm.params.max_new_tokens = 8;
  engine.generate({warm});
  PathRuns r;
  for (int rep = 0; rep < 3; ++rep) {
    r.out = engine.generate({req})[0];
    r.tok_s.push_back(engine.last_stats().decode_tokens_per_s());
  }
  std::sort(r.tok_s.begin(), r.tok_s.end());
  return r;
}

// W1 sampled as Llama-3-Instruct's generation config asks (temperature 0.6, top-p 0.9, a seed),
// then with a repetition penalty of 1.1 and a frequency penalty of 0.2 on top (over the whole
// prompt and the tokens generated: edits of ~700 logits a step), graphs on: the token picked on
// the device (the engine's default) against the logits copied to the host and sampled there
// (EngineOptions::pick_on_device off). Same tokens either way.
json run_w1_sampled(const Args& a) {
  json out;
  const nanoinfer::ModelConfig c = nanoinfer::parse_hf_config(a.config);
  for (const bool penalties : {false, true}) {
    nanoinfer::GenerationRequest req{random_prompt(a.prompt, c.vocab_size, 1), {}};
    req.params.max_new_tokens = a.new_tokens;
    req.params.ignore_eos = true;
    req.params.temperature = 0.6F;
    req.params.top_p = 0.9F;
    req.params.seed = 7;
    if (penalties) {
      req.params.repetition_penalty = 1.1F;
      req.params.frequency_penalty = 0.2F;
    }
    const char* name = penalties ? "T 0.6, top-p 0.9, penalties" : "T 0.6, top-p 0.9";
    json& o = out[penalties ? "top_p_penalties" : "top_p"];
    std::vector<int32_t> tokens[2];
    for (const bool device : {true, false}) {
      const PathRuns r = run_path(a, req, device);
      tokens[device ? 0 : 1] = r.out.token_ids;
      const std::string k = device ? "picked_on_device" : "sampled_on_host";
      o[k] = {{"decode_tok_s", r.tok_s[1]}, {"decode_tok_s_all", r.tok_s}};
      std::printf("W1 sampled (%s), %-16s decode %7.1f tok/s\n", name, k.c_str(), r.tok_s[1]);
      std::fflush(stdout);
    }
    o["same_tokens"] = tokens[0] == tokens[1];
    std::printf("W1 sampled (%s): the two paths drew %s tokens\n", name,
                tokens[0] == tokens[1] ? "the same" : "DIFFERENT");
  }
  return out;
}

// StreamingLLM on the GPU: one prompt of 200 random ids, 256 greedy new tokens, graphs on, on
// the default post-RoPE cache, a pre-RoPE cache, and a sink cache (pre-RoPE, 4 sink tokens and a
// window of 252: from the 57th new token on, every step evicts an entry and renumbers the
// window's positions on the device). Median step of the first 48 decode steps (nothing evicted)
// and of the last 128, best run of three.
json run_sink(const Args& a) {
  json out;
  const nanoinfer::ModelConfig c = nanoinfer::parse_hf_config(a.config);
  constexpr int kPrompt = 200, kNew = 256;
  nanoinfer::GenerationRequest req{random_prompt(kPrompt, c.vocab_size, 7), {}};
  req.params.max_new_tokens = kNew;
  req.params.ignore_eos = true;
  for (const std::string kind : {"post", "pre", "sink"}) {
    nanoinfer::EngineOptions o = engine_options(a, kPrompt + kNew + 16, true);
    o.rope_cache = kind == "post" ? "post" : "pre";
    if (kind == "sink") o.sink_tokens = 4, o.window = 252;
    nanoinfer::Engine engine(o);
    engine.generate({req});
    double early = 1e9, late = 1e9, tok_s = 0;
    for (int rep = 0; rep < 3; ++rep) {
      engine.generate({req});
      const auto& st = engine.last_stats();
      auto median_ms = [&](size_t from, size_t to) {
        std::vector<double> v;
        for (size_t i = from; i < to && i < st.steps.size(); ++i) v.push_back(st.steps[i].ms);
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
      };
      early = std::min(early, median_ms(1, 49));
      late = std::min(late, median_ms(st.steps.size() - 128, st.steps.size()));
      tok_s = std::max(tok_s, st.decode_tokens_per_s());
    }
    out[kind] = {{"step_ms_first_48", early}, {"step_ms_last_128", late}, {"decode_tok_s", tok_s}};
    std::printf(
        "sink     %-4s cache: decode %6.1f tok/s, step %.3f ms (first 48) / %.3f ms (last 128)\n",
        kind.c_str(), tok_s, early, late);
    std::fflush(stdout);
  }
  return out;
}

// W1's prompt with beam search (4 beams, 64 new tokens, EOS ignored), graphs on: each step's
// beam rows summarised on the device (the engine's default) against the logits copied to the
// host and summarised there. Same sequences either way; ms a step (4 rows).
json run_w1_beams(const Args& a) {
  json out;
  const nanoinfer::ModelConfig c = nanoinfer::parse_hf_config(a.config);
  nanoinfer::GenerationRequest req{random_prompt(a.prompt, c.vocab_size, 1), {}};
  req.params.max_new_tokens = 64;
  req.params.ignore_eos = true;
  req.params.num_beams = 4;
  std::vector<std::vector<int32_t>> seqs[2];
  for (const bool device : {true, false}) {
    const PathRuns r = run_path(a, req, device);
    seqs[device ? 0 : 1] = r.out.sequences;
    std::vector<double> ms;  // a step is num_beams decode rows; slowest first
    for (const double t : r.tok_s) ms.push_back(1e3 * req.params.num_beams / t);
    const std::string k = device ? "rows_on_device" : "rows_on_host";
    out[k] = {{"step_ms", ms[1]}, {"step_ms_all", ms}};
    std::printf("W1 beams (4), %-14s %.3f ms a step\n", k.c_str(), ms[1]);
    std::fflush(stdout);
  }
  out["same_sequences"] = seqs[0] == seqs[1];
  std::printf("W1 beams: the two paths found %s sequences\n",
              seqs[0] == seqs[1] ? "the same" : "DIFFERENT");
  return out;
}

// Batched greedy decode on one engine (graphs and warm-up on, one fixed cache for every size):
// B prompts of 128 random ids, 24 new tokens each, for B = 1 ... 32, in three passes. The first
// pass meets each size for the first time (and grows the activations with each larger prefill,
// which drops the graphs); the second captures each bucket again over memory that no longer
// grows; the third should capture nothing. steps[0] is the prefill, steps[1] and [2] the first
// decode steps, the rest steady.
json run_batch(const Args& a) {
  json out = json::array();
  const nanoinfer::ModelConfig c = nanoinfer::parse_hf_config(a.config);
  constexpr int kPrompt = 128, kNew = 24, kMost = 32;
  nanoinfer::EngineOptions o = engine_options(a, kPrompt + kNew, true);
  o.cache_tokens = kMost * (kPrompt + kNew + 15) / 16 * 16;  // whole blocks of 16
  nanoinfer::Engine engine(o);
  std::printf("batch: load %.2f s (warm-up %.2f s)\n", engine.load_seconds(),
              engine.warmup_seconds());
  for (const int pass : {0, 1, 2}) {
    for (const int B : {1, 2, 3, 4, 6, 8, 12, 16, 24, kMost}) {
      std::vector<nanoinfer::GenerationRequest> reqs;
      for (int i = 0; i < B; ++i) {
        nanoinfer::GenerationRequest r{random_prompt(kPrompt, c.vocab_size, 100 + i), {}};
        r.params.max_new_tokens = kNew;
        r.params.ignore_eos = true;
        reqs.push_back(r);
      }
      engine.generate(reqs);
      const nanoinfer::GenerationStats& st = engine.last_stats();
      std::vector<double> steady;
      for (size_t i = 3; i < st.steps.size(); ++i) steady.push_back(st.steps[i].ms);
      std::sort(steady.begin(), steady.end());
      const double step = steady[steady.size() / 2];
      out.push_back({{"pass", pass},
                     {"seqs", B},
                     {"prefill_ms", st.steps[0].ms},
                     {"first_steps_ms", {st.steps[1].ms, st.steps[2].ms}},
                     {"step_ms", step},
                     {"tok_s", 1e3 * B / step},
                     {"graph_captures", st.graph_captures}});
      std::printf(
          "batch %2d pass %d: prefill %7.2f ms, first decode steps %6.2f / %6.2f ms, then "
          "%6.3f ms a step = %7.1f tok/s; %d graph(s) captured\n",
          B, pass, st.steps[0].ms, st.steps[1].ms, st.steps[2].ms, step, 1e3 * B / step,
          st.graph_captures);
      std::fflush(stdout);
    }
  }
  return out;
}

json run_w2(const Args& a) {
  json out;
  const nanoinfer::ModelConfig c = nanoinfer::parse_hf_config(a.config);
  std::mt19937 rng(2);
  std::uniform_int_distribution<int> len(100, 1024);
  std::vector<nanoinfer::GenerationRequest> reqs;
  int64_t prompt_tokens = 0;
  for (int i = 0; i < 256; ++i) {
    nanoinfer::GenerationRequest r{random_prompt(len(rng), c.vocab_size, 1000 + i), {}};
    r.params.max_new_tokens = 256;
    r.params.ignore_eos = true;
    prompt_tokens += static_cast<int64_t>(r.prompt_ids.size());
    reqs.push_back(r);
  }
  int64_t all_blocks = 0;  // what a cache for every request at once holds
  for (const auto& r : reqs)
    all_blocks += (static_cast<int64_t>(r.prompt_ids.size()) + 256 + 15) / 16;
  // (cache tokens, step cap): room for all at once, then for about half of them
  const std::pair<int64_t, int> runs[] = {{0, 16384}, {all_blocks * 16 / 2, 16384}};
  for (const auto& [cache_tokens, step_cap] : runs) {
    nanoinfer::EngineOptions o = engine_options(a, 1024 + 256 + 16, true);
    o.cache_tokens = static_cast<int>(cache_tokens);
    o.max_step_tokens = step_cap;
    nanoinfer::Engine engine(o);
    const std::string key = cache_tokens == 0 ? "all_at_once" : "half_cache";
    for (int rep = 0; rep < 2; ++rep) {  // the first run pays first-time costs (plans, graphs)
      const auto t0 = std::chrono::steady_clock::now();
      const std::vector<nanoinfer::GenerationOutput> outs = engine.generate(reqs);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const auto& st = engine.last_stats();
      int64_t out_tokens = 0, peak = 0;
      int most_waiting = 0, most_seqs = 0;
      for (const auto& g : outs) out_tokens += static_cast<int64_t>(g.token_ids.size());
      for (const auto& x : st.steps) {
        peak = std::max(peak, x.cache_allocated / 16);
        most_waiting = std::max(most_waiting, x.waiting);
        most_seqs = std::max(most_seqs, x.sequences);
      }
      const json r = {{"seconds", s},
                      {"output_tok_s", static_cast<double>(out_tokens) / s},
                      {"total_tok_s", static_cast<double>(out_tokens + prompt_tokens) / s},
                      {"output_tokens", out_tokens},
                      {"prompt_tokens", prompt_tokens},
                      {"cache_blocks", cache_tokens > 0 ? cache_tokens / 16 : all_blocks},
                      {"peak_kv_blocks", peak},
                      {"preemptions", 0},
                      {"steps", st.steps.size()},
                      {"most_waiting", most_waiting},
                      {"most_sequences_a_step", most_seqs},
                      {"max_step_tokens", step_cap},
                      {"graph_captures", st.graph_captures},
                      {"prefill_step_ms", st.prefill_ms},
                      {"decode_step_ms", st.decode_ms}};
      out[key].push_back(r);
      std::printf(
          "W2 %-11s run %d: %6.2f s, %7.0f output tok/s, %7.0f total tok/s; %zu steps (%d graphs "
          "captured), peak %lld of %lld KV blocks, at most %d sequences a step and %d requests "
          "waiting, 0 preempted\n",
          key.c_str(), rep, s, r["output_tok_s"].get<double>(), r["total_tok_s"].get<double>(),
          st.steps.size(), st.graph_captures, static_cast<long long>(peak),
          static_cast<long long>(r["cache_blocks"].get<int64_t>()), most_seqs, most_waiting);
      std::fflush(stdout);
    }
  }
  return out;
}

json run_prefix(const Args& a) {
  json out;
  const nanoinfer::ModelConfig c = nanoinfer::parse_hf_config(a.config);
  const std::vector<int32_t> system = random_prompt(1024, c.vocab_size, 7);
  std::vector<nanoinfer::GenerationRequest> reqs;
  for (int i = 0; i < 64; ++i) {
    nanoinfer::GenerationRequest r{system, {}};
    const std::vector<int32_t> own = random_prompt(64, c.vocab_size, 500 + i);
    r.prompt_ids.insert(r.prompt_ids.end(), own.begin(), own.end());
    r.params.max_new_tokens = 32;
    r.params.ignore_eos = true;
    reqs.push_back(r);
  }
  for (const bool reuse : {false, true}) {
    nanoinfer::EngineOptions o = engine_options(a, 1024 + 64 + 32 + 16, true);
    o.prefix_reuse = reuse;
    nanoinfer::Engine engine(o);
    for (int rep = 0; rep < 2; ++rep) {  // the first run pays first-time costs
      const auto t0 = std::chrono::steady_clock::now();
      engine.generate(reqs);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const auto& st = engine.last_stats();
      out[reuse ? "reuse" : "no_reuse"].push_back(
          {{"seconds", s},
           {"prefill_step_ms", st.prefill_ms},
           {"prompt_tokens_computed", st.prefill_tokens},
           {"prompt_tokens_reused", st.reused_prompt_tokens},
           {"steps", st.steps.size()}});
      std::printf(
          "prefix %-8s run %d: %6.3f s, prefill steps %7.1f ms, prompt tokens computed %lld, "
          "reused %lld, %zu steps\n",
          reuse ? "reuse" : "no_reuse", rep, s, st.prefill_ms,
          static_cast<long long>(st.prefill_tokens),
          static_cast<long long>(st.reused_prompt_tokens), st.steps.size());
      std::fflush(stdout);
    }
  }
  return out;
}

json run_w3(const Args& a) {
  json out;
  const nanoinfer::ModelConfig c = nanoinfer::parse_hf_config(a.config);
  nanoinfer::Engine engine(engine_options(a, 4096 + 32, true));
  for (const int n : {1, 8}) {
    std::vector<nanoinfer::GenerationRequest> reqs;
    for (int i = 0; i < n; ++i) {
      nanoinfer::GenerationRequest r{random_prompt(4096, c.vocab_size, 100 + i), {}};
      r.params.max_new_tokens = 1;
      r.params.ignore_eos = true;
      reqs.push_back(r);
    }
    engine.generate(reqs);  // warm-up (plans, buffers)
    std::vector<double> tps;
    for (int rep = 0; rep < 2; ++rep) {
      engine.generate(reqs);
      const auto& st = engine.last_stats();
      tps.push_back(1000.0 * static_cast<double>(st.prefill_tokens) / st.prefill_ms);
    }
    const double best = *std::max_element(tps.begin(), tps.end());
    out[n == 1 ? "a_1x4096" : "b_8x4096"] = {{"prefill_tok_s", best}, {"all", tps}};
    std::printf("W3 %d x 4096 prefill %8.0f tok/s\n", n, best);
    std::fflush(stdout);
  }
  return out;
}

// Microseconds a call of call(0), ..., call(launches - 1) captured in one graph on s (the
// median of five replays after a warm-up; call(0) runs once first, outside the capture, for any
// one-time setup).
template <class Call>
double graph_us(cudaStream_t s, int launches, const Call& call) {
  call(0);
  cudaGraph_t g = nullptr;
  cudaGraphExec_t ge = nullptr;
  check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  for (int i = 0; i < launches; ++i) call(i);
  check(cudaStreamEndCapture(s, &g), "cudaStreamEndCapture");
  check(cudaGraphInstantiate(&ge, g, 0), "cudaGraphInstantiate");
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "cudaEventCreate");
  check(cudaEventCreate(&e1), "cudaEventCreate");
  std::vector<float> ms;
  for (int rep = 0; rep < 6; ++rep) {  // the first replay warms up
    check(cudaEventRecord(e0, s), "cudaEventRecord");
    check(cudaGraphLaunch(ge, s), "cudaGraphLaunch");
    check(cudaEventRecord(e1, s), "cudaEventRecord");
    check(cudaEventSynchronize(e1), "cudaEventSynchronize");
    float t = 0;
    check(cudaEventElapsedTime(&t, e0, e1), "cudaEventElapsedTime");
    if (rep > 0) ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  check(cudaGraphExecDestroy(ge), "cudaGraphExecDestroy");
  check(cudaGraphDestroy(g), "cudaGraphDestroy");
  std::sort(ms.begin(), ms.end());
  return 1e3 * ms[ms.size() / 2] / launches;
}

// The decode attention op alone, the config's heads, at batch 1, 8 and 32 (how the fixed part of
// a call weighs as the bytes it moves grow). Enough layers of cache are cycled that the entries
// come from device memory, not the 50 MB L2, and the calls (at least 16, the layers cycled) are
// replayed as one CUDA graph so launch overhead is not timed. Next to each, the same bytes read
// by a kernel that does nothing else (read_two), the same calls in one graph (timed by events:
// graph_us's median replay, where the attention's time is the mean of its replays): what any
// kernel could do.
json run_attention(const Args& a, double copy_gbs) {
  json out;
  nanoinfer::ModelConfig c = nanoinfer::parse_hf_config(a.config);
  // Keys stored rotated (post-RoPE, the engine's default) at 1, 2, 8 and 32 sequences; rotated
  // as they are read (pre-RoPE) at 1, 8 and 32.
  const std::pair<int, bool> runs[] = {{1, false}, {2, false}, {8, false}, {32, false},
                                       {1, true},  {8, true},  {32, true}};
  for (const auto& run : runs) {
    const int seqs = run.first;
    const bool pre = run.second;  // (a plain name: the lambdas below capture it)
    for (const int ctx : {640, 4096, 16384}) {
      const double bytes =
          static_cast<double>(seqs) * ctx * 2.0 * c.num_kv_heads * c.head_dim * 2.0;
      c.num_layers = std::max(1, static_cast<int>(std::ceil(512e6 / bytes)));
      auto be = nanoinfer::make_cuda_backend(DType::BF16);
      be->upload_rope(nanoinfer::RopeTable::build(c, ctx + 8));
      nanoinfer::KvCache cache(*be, c, {16, seqs * (ctx / 16 + 2), pre ? "pre" : "post"});
      std::vector<nanoinfer::SeqState> st;
      st.reserve(static_cast<size_t>(seqs));
      for (int s = 0; s < seqs; ++s)
        st.emplace_back(s, cache.create_sequence(), std::vector<int32_t>(ctx - 1, 1));
      std::vector<nanoinfer::SeqState*> live;
      live.reserve(st.size());
      for (auto& s : st) live.push_back(&s);
      build_batch(live, cache);  // fill the cache's bookkeeping up to ctx - 1 entries
      for (auto& s : st) s.pending = {1};
      const nanoinfer::Batch b = build_batch(live, cache);
      const nanoinfer::DeviceBatch db = be->upload_batch(b);
      if (pre) {  // each entry at the position of its index, as the engine's RoPE kernel leaves it
        std::vector<int32_t> slots, positions;
        for (const auto& s : st)
          for (int i = 0; i < ctx; ++i) {
            slots.push_back(cache.slot(s.cache_id, i));
            positions.push_back(i);
          }
        be->write_i32(cache.layer(0).slot_pos, slots, positions);
      }
      const int W = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
      nanoinfer::Tensor qkv = be->alloc({db.num_tokens, W}, DType::BF16);
      nanoinfer::Tensor outt =
          be->alloc({db.num_tokens, int64_t{c.num_heads} * c.head_dim}, DType::BF16);
      be->random_normal(qkv, 1.0F, 3);
      for (int l = 0; l < c.num_layers; ++l) {
        be->random_normal(cache.layer(l).k, 1.0F, 4 + 2 * l);
        be->random_normal(cache.layer(l).v, 1.0F, 5 + 2 * l);
      }
      const int calls = std::max(16, c.num_layers);  // so the gap between replays is spread thin
      auto all_layers = [&] {
        for (int l = 0; l < calls; ++l)
          be->attention(qkv, c.num_heads, c.num_kv_heads, db, cache.layer(l % c.num_layers), pre,
                        outt);
      };
      const int reps = std::max(5, 2000 / calls);
      // µs a call of `calls`, replayed as the graph of key (one a body)
      auto timed = [&](int key, const std::function<void()>& body) {
        for (int i = 0; i < 3; ++i) be->run_step(key, body);  // eager, capture, replay
        be->synchronize();
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < reps; ++i) be->run_step(key, body);
        be->synchronize();
        return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                   .count() /
               (reps * calls);
      };
      const double us = timed(1, all_layers);
      const double gbs = bytes / (us * 1e-6) / 1e9;
      // As the engine runs it: the RoPE kernel that writes Q and the newest entry in front of
      // each call (the attention's blocks may start copying while it runs), against the RoPE
      // calls alone; attention's share is the difference.
      double pair_us = 0.0, rope_us = 0.0;
      if (!pre) {
        pair_us = timed(2, [&] {
          for (int l = 0; l < calls; ++l) {
            nanoinfer::KvLayer& kv = cache.layer(l % c.num_layers);
            be->rope_store_kv(qkv, c.num_heads, c.num_kv_heads, db, kv, true);
            be->attention(qkv, c.num_heads, c.num_kv_heads, db, kv, false, outt);
          }
        });
        rope_us = timed(3, [&] {
          for (int l = 0; l < calls; ++l)
            be->rope_store_kv(qkv, c.num_heads, c.num_kv_heads, db, cache.layer(l % c.num_layers),
                              true);
        });
      }
      // The ceiling: a kernel that only reads the same K and V bytes, the same layers cycled.
      unsigned* sink = nullptr;
      cudaStream_t rs = nullptr;
      check(cudaMalloc(&sink, sizeof(unsigned)), "cudaMalloc");
      check(cudaStreamCreateWithFlags(&rs, cudaStreamNonBlocking), "cudaStreamCreate");
      const double read_us = graph_us(rs, calls, [&](int l) {
        const nanoinfer::KvLayer& kv = cache.layer(l % c.num_layers);
        nanoinfer::cuda::read_two(kv.k.data(), kv.v.data(), static_cast<int64_t>(bytes / 2), sink,
                                  rs);
      });
      check(cudaStreamDestroy(rs), "cudaStreamDestroy");
      check(cudaFree(sink), "cudaFree");
      const double read_gbs = bytes / (read_us * 1e-6) / 1e9;
      const std::string k =
          "b" + std::to_string(seqs) + (pre ? "_pre" : "") + "_ctx" + std::to_string(ctx);
      out[k] = {{"us", us},
                {"gb_s", gbs},
                {"pct_copy_bw", 100.0 * gbs / copy_gbs},
                {"layers_cycled", c.num_layers},
                {"read_only_us", read_us},
                {"read_only_pct_copy_bw", 100.0 * read_gbs / copy_gbs}};
      std::printf(
          "decode attention B=%d%s ctx %5d: %8.1f us  %6.0f GB/s = %5.1f%% of copy (%d layers); "
          "reading the same bytes alone: %6.1f us = %5.1f%%\n",
          seqs, pre ? " pre-RoPE" : "", ctx, us, gbs, 100.0 * gbs / copy_gbs, c.num_layers, read_us,
          100.0 * read_gbs / copy_gbs);
      std::fflush(stdout);
      if (!pre) {
        const double share = pair_us - rope_us;
        const double pct = 100.0 * bytes / (share * 1e-6) / 1e9 / copy_gbs;
        out[k]["after_rope"] = {{"pair_us", pair_us},
                                {"rope_us", rope_us},
                                {"attention_us", share},
                                {"pct_copy_bw", pct}};
        std::printf(
            "  after RoPE: RoPE + attention %8.1f us, RoPE alone %5.1f us: attention's share %8.1f "
            "us = %5.1f%% of copy\n",
            pair_us, rope_us, share, pct);
      }
    }
  }
  return out;
}

// W1's decode step (graphs, one sequence after a 512-token prompt) as the engine runs it: the
// greedy token picked on the device and read back, then the next step built from it; against
// the same steps queued back to back without reading a token (the host stays at most a step
// ahead, so that is the GPU's time). The difference is the host's share of a step.
json run_step(const Args& a) {
  json out;
  const nanoinfer::ModelConfig c = nanoinfer::parse_hf_config(a.config);
  auto be = nanoinfer::make_cuda_backend(DType::BF16);
  const int ctx = a.prompt + 2 * a.new_tokens + 16;
  nanoinfer::LlamaModel model(c, *be, ctx, 1, nanoinfer::single_rank());
  using Clock = std::chrono::steady_clock;
  auto ms_since = [](Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };
  std::vector<double> picked, queued;
  for (int rep = 0; rep < 3; ++rep) {
    nanoinfer::KvCache cache(*be, c, {16, (ctx + 15) / 16, "post"});
    nanoinfer::SeqState s(0, cache.create_sequence(), random_prompt(a.prompt, c.vocab_size, 1));
    std::vector<int32_t> ids;
    const std::vector<nanoinfer::RowPick> greedy(1);
    auto step = [&] { return model.forward(nanoinfer::build_batch({&s}, cache), cache); };
    be->pick_to_host(step(), greedy, {}, ids);
    s.pending = ids;
    auto t0 = Clock::now();
    for (int i = 0; i < a.new_tokens; ++i) {
      be->pick_to_host(step(), greedy, {}, ids);
      s.pending = ids;
    }
    picked.push_back(ms_since(t0) / a.new_tokens);
    t0 = Clock::now();
    for (int i = 0; i < a.new_tokens; ++i) {
      step();
      s.pending = ids;  // the last token read back, fed again at every step
    }
    be->synchronize();
    queued.push_back(ms_since(t0) / a.new_tokens);
  }
  std::sort(picked.begin(), picked.end());
  std::sort(queued.begin(), queued.end());
  const double p = picked[1], q = queued[1];
  out = {{"step_ms_token_read", p}, {"step_ms_queued", q}, {"host_gap_us", 1e3 * (p - q)}};
  std::printf(
      "W1 step   token read back %.3f ms (%.1f tok/s), queued %.3f ms (%.1f tok/s): "
      "host gap %.1f us a step\n",
      p, 1e3 / p, q, 1e3 / q, 1e3 * (p - q));
  std::fflush(stdout);
  return out;
}

// The device pick alone (Backend::pick_to_host: the kernel, 32 bytes of parameters a row up and
// R ids back), at the config's vocabulary, 1 and 32 rows, for each filter: on logits spread like a
// random-weight model's (normal, sd 1.28: many tokens near the maximum, the kernel's whole-row
// path) and peaked like a trained model's (sd 1, 30 tokens 15 higher: its candidates' path).
json run_sample(const Args& a) {
  json out;
  const nanoinfer::ModelConfig c = nanoinfer::parse_hf_config(a.config);
  auto be = nanoinfer::make_cuda_backend(DType::BF16);
  const int V = c.vocab_size;
  struct Kind {
    const char* name;
    nanoinfer::RowPick pick;
  };
  const Kind kinds[] = {{"greedy", {}},
                        {"temperature", {0.6F, 0, 1.0F, 0.0F, 1, 0}},
                        {"top_k_50", {0.6F, 50, 1.0F, 0.0F, 1, 0}},
                        {"top_p_0.9", {0.6F, 0, 0.9F, 0.0F, 1, 0}},
                        {"min_p_0.05", {0.6F, 0, 1.0F, 0.05F, 1, 0}},
                        {"all", {0.6F, 50, 0.9F, 0.05F, 1, 0}}};
  std::mt19937 rng(3);
  for (const bool peaked : {false, true}) {
    for (const int R : {1, 32}) {
      nanoinfer::Tensor host = nanoinfer::Tensor::zeros(DType::F32, {R, V});
      std::normal_distribution<float> nd(0.0F, peaked ? 1.0F : 1.28F);
      float* h = host.as<float>();
      for (int64_t i = 0; i < host.numel(); ++i) h[i] = nd(rng);
      if (peaked)
        for (int r = 0; r < R; ++r)
          for (int j = 0; j < 30; ++j) h[int64_t{r} * V + rng() % V] += 15.0F;
      const nanoinfer::Tensor logits = be->upload(host, DType::F32);
      for (const Kind& k : kinds) {
        std::vector<nanoinfer::RowPick> picks(R, k.pick);
        std::vector<int32_t> ids;
        be->pick_to_host(logits, picks, {}, ids);  // warm-up (buffers)
        const int reps = 20;
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < reps; ++i) {
          for (auto& p : picks) p.counter = static_cast<uint64_t>(i);
          be->pick_to_host(logits, picks, {}, ids);
        }
        const double us =
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                .count() /
            reps;
        const std::string key =
            std::string(peaked ? "peaked" : "spread") + "_R" + std::to_string(R) + "_" + k.name;
        out[key] = us;
        std::printf("pick %-6s R=%-2d %-12s %8.1f us a call\n", peaked ? "peaked" : "spread", R,
                    k.name, us);
      }
    }
  }
  std::fflush(stdout);
  return out;
}

// The decode products alone on the config's matrices (y = x w^T) at 1 to kGemmRows rows: the GEMV
// kernel at the rows it takes, cuBLASLt (the backend's plan: its bucket's algorithm) at all, so
// that the rows where one beats the other show. Each shape cycles through copies of its weights,
// 256 MB or more in all, so that no launch finds its matrix in the L2; a captured graph of
// back-to-back launches is timed (no host launch cost).
constexpr int kGemmRows = 8;
json run_gemv(const Args& a, double copy_gbs) {
  json out;
  const nanoinfer::ModelConfig c = nanoinfer::parse_hf_config(a.config);
  const int H = c.hidden_size, F = c.intermediate_size;
  const int q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  struct Shape {
    const char* name;
    int n, k;
    DType y;  // the logits are f32
  };
  const Shape shapes[] = {{"qkv", q + 2 * kv, H, DType::BF16},
                          {"o", H, q, DType::BF16},
                          {"gate_up", 2 * F, H, DType::BF16},
                          {"down", H, F, DType::BF16},
                          {"lm_head", c.vocab_size, H, DType::F32}};
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  nanoinfer::cuda::LtGemm lt;
  for (const Shape& sh : shapes) {
    const size_t w_bytes = size_t{2} * sh.n * sh.k;
    const int copies =
        static_cast<int>(std::max<size_t>(1, ((size_t{256} << 20) + w_bytes - 1) / w_bytes));
    const int T = kGemmRows;
    char *w = nullptr, *x = nullptr, *y = nullptr;
    check(cudaMalloc(&w, w_bytes * copies), "cudaMalloc");
    check(cudaMalloc(&x, size_t{2} * T * sh.k), "cudaMalloc");
    check(cudaMalloc(&y, size_t{4} * T * sh.n), "cudaMalloc");
    nanoinfer::cuda::random_normal(DType::BF16, w, int64_t{sh.n} * sh.k * copies, 0.02F, 1, s);
    nanoinfer::cuda::random_normal(DType::BF16, x, int64_t{T} * sh.k, 1.0F, 2, s);
    const int launches = copies * ((100 + copies - 1) / copies);
    for (int tokens = 1; tokens <= T; ++tokens) {
      const double y_size = sh.y == DType::F32 ? 4.0 : 2.0;
      const double bytes =
          static_cast<double>(w_bytes) + 2.0 * tokens * sh.k + y_size * tokens * sh.n;
      auto report = [&](const char* kind, double us) {
        const double gbs = bytes / (us * 1e-6) / 1e9;
        const std::string k = std::string(kind) + "_" + sh.name + "_t" + std::to_string(tokens);
        out[k] = {{"n", sh.n}, {"k", sh.k},   {"tokens", tokens},
                  {"us", us},  {"gb_s", gbs}, {"pct_copy_bw", 100.0 * gbs / copy_gbs}};
        std::printf("%-7s %-7s %6d x %5d tok %d: %8.2f us  %6.0f GB/s = %5.1f%% of copy\n", kind,
                    sh.name, sh.n, sh.k, tokens, us, gbs, 100.0 * gbs / copy_gbs);
        std::fflush(stdout);
      };
      if (tokens <= nanoinfer::cuda::kGemvMaxTokens)
        report("gemv", graph_us(s, launches, [&](int i) {
                 nanoinfer::cuda::gemv_bf16(x, w + (i % copies) * w_bytes, sh.y, y, tokens, sh.k,
                                            sh.n, s);
               }));
      report("cublas", graph_us(s, launches, [&](int i) {
               lt.run(DType::BF16, sh.y, x, w + (i % copies) * w_bytes, y, tokens, sh.k, sh.n, s);
             }));
    }
    check(cudaFree(w), "cudaFree");
    check(cudaFree(x), "cudaFree");
    check(cudaFree(y), "cudaFree");
  }
  cudaStreamDestroy(s);
  return out;
}

// The fused elementwise kernels alone (BENCHMARKS.md: every fused kernel, its bytes over its time
// against the copy bandwidth) at one token (decode) and at 512 and 4,096 (prefill): add + RMSNorm
// of the hidden rows, RoPE + KV write of the qkv rows, SiLU * mul of the gate/up rows. Each call
// works on its own region of a pool of 256 MB or more, cycled, so that the rows come from device
// memory rather than the L2 (one token's rows fit in it whatever is done); a graph of back-to-back
// launches is timed.
json run_fused(const Args& a, double copy_gbs) {
  json out;
  const nanoinfer::ModelConfig c = nanoinfer::parse_hf_config(a.config);
  const int64_t H = c.hidden_size, F = c.intermediate_size, D = c.head_dim, Q = c.num_heads,
                KV = c.num_kv_heads;
  constexpr int kMaxTokens = 4096;
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  char *norm_w = nullptr, *cos_sin = nullptr, *index = nullptr;
  check(cudaMalloc(&norm_w, size_t{2} * H), "cudaMalloc");
  check(cudaMalloc(&cos_sin, sizeof(float) * kMaxTokens * D), "cudaMalloc");
  check(cudaMalloc(&index, sizeof(int32_t) * kMaxTokens), "cudaMalloc");
  nanoinfer::cuda::fill_f32_value(DType::BF16, norm_w, H, 1.0F, s);
  nanoinfer::cuda::random_normal(DType::F32, cos_sin, kMaxTokens * D, 0.5F, 3, s);
  std::vector<int32_t> iota(kMaxTokens);
  for (int i = 0; i < kMaxTokens; ++i) iota[static_cast<size_t>(i)] = i;
  check(cudaMemcpy(index, iota.data(), sizeof(int32_t) * kMaxTokens, cudaMemcpyHostToDevice),
        "cudaMemcpy");
  const auto* pos = reinterpret_cast<const int32_t*>(index);  // positions and slots: 0, 1, ...
  struct Kernel {
    const char* name;
    int64_t region;  // bytes of one call's buffers
    double bytes;    // bytes the call reads and writes
    std::function<void(char*)> call;
  };
  for (const int T : {1, 512, kMaxTokens}) {
    const Kernel kernels[] = {
        {"add_rmsnorm", 6 * T * H, 8.0 * T * H + 2.0 * H,
         [&](char* r) {  // residual += x; out = rmsnorm(residual) * w
           nanoinfer::cuda::add_rmsnorm(DType::BF16, r, r + 2 * T * H, norm_w, 1e-5F, r + 4 * T * H,
                                        T, static_cast<int>(H), s);
         }},
        {"rope_store_kv", 2 * T * ((Q + 4 * KV) * D + 2),
         // q: read + write; k: read, write, cache; v: read, cache; cos/sin (f32), slot_pos
         2.0 * T * D * (2 * Q + 5 * KV) + 4.0 * T * D + 4.0 * T,
         [&](char* r) {
           nanoinfer::cuda::RopeKvArgs ra{};
           ra.dt = DType::BF16;
           ra.qkv = r;
           ra.tokens = T;
           ra.heads = static_cast<int>(Q);
           ra.kv_heads = static_cast<int>(KV);
           ra.head_dim = static_cast<int>(D);
           ra.positions = pos;
           ra.slots = pos;
           ra.cos_sin = reinterpret_cast<const float*>(cos_sin);
           ra.k_cache = r + 2 * T * (Q + 2 * KV) * D;
           ra.v_cache = r + 2 * T * (Q + 3 * KV) * D;
           ra.slot_pos = reinterpret_cast<int32_t*>(r + 2 * T * (Q + 4 * KV) * D);
           ra.rotate_k = true;
           nanoinfer::cuda::rope_store_kv(ra, s);
         }},
        {"silu_mul", 6 * T * F, 6.0 * T * F, [&](char* r) {
           nanoinfer::cuda::silu_mul(DType::BF16, r, r + 4 * T * F, T, static_cast<int>(F), s);
         }}};
    for (const Kernel& k : kernels) {
      const int64_t region = (k.region + 255) / 256 * 256;
      const int64_t copies = std::min<int64_t>(1024, std::max<int64_t>(1, (256 << 20) / region));
      char* pool = nullptr;
      check(cudaMalloc(&pool, static_cast<size_t>(region * copies)), "cudaMalloc");
      nanoinfer::cuda::random_normal(DType::BF16, pool, region * copies / 2, 1.0F, 4, s);
      const int launches = static_cast<int>(copies * ((100 + copies - 1) / copies));
      const double us = graph_us(s, launches, [&](int i) { k.call(pool + (i % copies) * region); });
      check(cudaFree(pool), "cudaFree");
      const double gbs = k.bytes / (us * 1e-6) / 1e9;
      const std::string key = std::string(k.name) + "_t" + std::to_string(T);
      out[key] = {
          {"tokens", T}, {"us", us}, {"gb_s", gbs}, {"pct_copy_bw", 100.0 * gbs / copy_gbs}};
      std::printf("fused %-13s tok %4d: %9.2f us  %6.0f GB/s = %5.1f%% of copy\n", k.name, T, us,
                  gbs, 100.0 * gbs / copy_gbs);
      std::fflush(stdout);
    }
  }
  check(cudaFree(norm_w), "cudaFree");
  check(cudaFree(cos_sin), "cudaFree");
  check(cudaFree(index), "cudaFree");
  cudaStreamDestroy(s);
  return out;
}

json run_profile(const Args& a) {
  json out;
  const nanoinfer::ModelConfig c = nanoinfer::parse_hf_config(a.config);
  nanoinfer::EngineOptions o = engine_options(a, 4096 + 32, true);
  o.profile = true;
  nanoinfer::Engine engine(o);
  nanoinfer::GenerationRequest w1{random_prompt(a.prompt, c.vocab_size, 1), {}};
  w1.params.max_new_tokens = 64;
  w1.params.ignore_eos = true;
  nanoinfer::GenerationRequest w3{random_prompt(4096, c.vocab_size, 100), {}};
  w3.params.max_new_tokens = 1;
  engine.generate({w1});
  engine.generate({w3});
  const std::string report = engine.profile_report();
  std::printf(
      "profile (eager, events around every op): W1 prefill(512) + 63 decode steps, then a "
      "W3 prefill of 4096\n%s",
      report.c_str());
  out["report"] = report;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i += 2) {
    const std::string k = argv[i];
    if (i + 1 == argc) {  // a trailing option without its value, or a flag this benchmark lacks
      std::fprintf(
          stderr,
          "option %s needs a value (options: --config --json --only --prompt --new-tokens)\n",
          k.c_str());
      return 2;
    }
    const std::string v = argv[i + 1];
    if (k == "--config")
      a.config = v;
    else if (k == "--json")
      a.json_path = v;
    else if (k == "--only")
      a.only = v;
    else if (k == "--prompt")
      a.prompt = nanoinfer::bench::whole_number("--prompt", v.c_str(), 1);
    else if (k == "--new-tokens")
      a.new_tokens = nanoinfer::bench::whole_number("--new-tokens", v.c_str(), 1);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  try {
    const int world = nanoinfer::launched_world_size();
    if (world > 1 && !a.only.empty() && a.only != "w1") {
      std::fprintf(stderr, "bench_w1: under mpirun only W1 runs (tensor parallel)\n");
      return 2;
    }
    if (world > 1) a.only = "w1";
    const bool leader = nanoinfer::launched_rank() == 0;
    if (!leader && std::freopen("/dev/null", "w", stdout) == nullptr) return 1;  // rank 0 reports
    check(cudaSetDevice(nanoinfer::local_rank()), "cudaSetDevice");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, nanoinfer::local_rank()), "cudaGetDeviceProperties");
    json j;
    j["device"] = prop.name;
    j["config"] = a.config;
    j["tensor_parallel_ranks"] = world;
    // The ranks' GPUs together: rank 0's copy bandwidth times the ranks (same cards).
    const double copy = copy_bandwidth_gbs() * world;
    j["copy_bandwidth_gb_s"] = copy;
    std::printf("%s x %d: device-to-device copy %.0f GB/s (2 GiB, read + write)\n", prop.name,
                world, copy);
    if (a.only.empty() || a.only == "w1") j["w1"] = run_w1(a, copy);
    if (world == 1 && (a.only.empty() || a.only == "step")) j["step"] = run_step(a);
    if (world == 1 && (a.only.empty() || a.only == "sampled")) j["w1_sampled"] = run_w1_sampled(a);
    if (world == 1 && (a.only.empty() || a.only == "sample")) j["sample"] = run_sample(a);
    if (world == 1 && (a.only.empty() || a.only == "beams")) j["w1_beams"] = run_w1_beams(a);
    if (world == 1 && (a.only.empty() || a.only == "batch")) j["batch"] = run_batch(a);
    if (world == 1 && (a.only.empty() || a.only == "sink")) j["sink"] = run_sink(a);
    if (a.only.empty() || a.only == "attn") j["attention"] = run_attention(a, copy);
    if (a.only.empty() || a.only == "gemv") j["gemv"] = run_gemv(a, copy);
    if (a.only.empty() || a.only == "fused") j["fused"] = run_fused(a, copy);
    if (world == 1 && (a.only.empty() || a.only == "w2")) j["w2"] = run_w2(a);
    if (world == 1 && (a.only.empty() || a.only == "prefix")) j["prefix"] = run_prefix(a);
    if (a.only.empty() || a.only == "w3") j["w3"] = run_w3(a);
    if (a.only.empty() || a.only == "profile") j["profile"] = run_profile(a);
    if (leader && !a.json_path.empty()) std::ofstream(a.json_path) << j.dump(2) << "\n";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_w1: %s\n", e.what());
    return 1;
  }
  return 0;
}

#else

int main() {
  std::printf("bench_w1: built without the CUDA backend\n");
  return 0;
}

#endif
