// `nanoinfer bench`: how fast a model runs here. Each run generates for a batch of prompts of
// random token ids (seeded, a new draw each run) with EOS ignored, so every run computes the
// same number of tokens; prints prefill and decode speed per run and their median (one JSON
// object with --json). The engine's one-time costs are taken at load (its warm-up), not in a run.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "dist/communicator.h"
#include "nanoinfer/engine.h"
#include "util/error.h"

namespace nanoinfer::cli {
namespace {

struct BenchArgs {
  EngineOptions engine;
  int prompt_tokens = 512;
  int new_tokens = 128;
  int batch = 1;
  int runs = 3;
  bool json = false;
};

struct RunResult {
  double prefill_ms = 0, prefill_tps = 0, decode_tps = 0, weights_gbps = 0;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void run_bench(const BenchArgs& a) {
  require_model(a.engine);
  EngineOptions options = a.engine;  // under mpirun: the model sharded over the ranks
  options.tensor_parallel = launched_world_size() > 1;
  check_positions(a.engine, {{"--max-context", a.engine.max_context}});
  Engine engine(options);
  const int vocab = engine.config().vocab_size;
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> id(0, vocab - 1);
  std::vector<RunResult> results;
  int most_together = 0;  // sequences in a step at most (fewer than the batch: staggered)
  for (int run = 0; run < a.runs; ++run) {
    std::vector<GenerationRequest> requests(static_cast<size_t>(a.batch));
    for (GenerationRequest& r : requests) {
      r.prompt_ids.resize(static_cast<size_t>(a.prompt_tokens));
      for (int32_t& t : r.prompt_ids) t = id(rng);
      r.params.max_new_tokens = a.new_tokens;
      r.params.ignore_eos = true;
    }
    engine.generate(requests);
    if (!engine.is_leader()) continue;  // rank 0 reports
    const GenerationStats& st = engine.last_stats();
    for (const StepStats& s : st.steps) most_together = std::max(most_together, s.sequences);
    RunResult r;
    r.prefill_ms = st.prefill_ms;
    r.prefill_tps =
        st.prefill_ms > 0 ? 1000.0 * static_cast<double>(st.prefill_tokens) / st.prefill_ms : 0;
    r.decode_tps = st.decode_tokens_per_s();
    // Every decode step reads all the weights once (the KV cache comes on top), whatever number
    // of sequences it holds (fewer than the batch where a step cap or a small cache staggers them).
    r.weights_gbps = st.decode_ms > 0
                         ? static_cast<double>(st.decode_steps) *
                               static_cast<double>(engine.weight_bytes()) / (st.decode_ms * 1e6)
                         : 0;
    results.push_back(r);
    if (!a.json)
      std::fprintf(stderr,
                   "run %d: prefill %.1f ms (%.0f tokens/s), decode %.1f tokens/s (weights read at "
                   "%.1f GB/s)\n",
                   run + 1, r.prefill_ms, r.prefill_tps, r.decode_tps, r.weights_gbps);
  }
  if (!engine.is_leader()) return;
  if (most_together < a.batch)
    std::fprintf(
        stderr,
        "nanoinfer: note: the batch never ran together: at most %d of its %d sequences "
        "a step (a small --cache-tokens, or prompts prefilled in chunks of --max-step-tokens "
        "finishing apart); decode tokens/s is theirs\n",
        most_together, a.batch);
  if (a.engine.profile) std::fputs(engine.profile_report().c_str(), stderr);
  auto med = [&results](double RunResult::*field) {
    std::vector<double> v(results.size());
    std::transform(results.begin(), results.end(), v.begin(),
                   [field](const RunResult& r) { return r.*field; });
    return median(v);
  };
  const std::string model =
      a.engine.random_weights ? "random weights of " + a.engine.config : a.engine.model;
  // The CPU's threads and how its idle ones wait (engine_flags.cpp), which decide its numbers
  // where the cores are shared.
  std::string omp_wait;
  for (const char* var : {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"})
    if (const char* v = std::getenv(var))
      omp_wait += (omp_wait.empty() ? "" : " ") + std::string(var) + "=" + v;
  if (omp_wait.empty()) omp_wait = "libgomp's default spin";
  const std::string cpu_setup = std::to_string(omp_get_max_threads()) + " threads, " + omp_wait;
  if (a.json) {
    nlohmann::ordered_json runs = nlohmann::ordered_json::array();
    for (const RunResult& r : results)
      runs.push_back({{"prefill_ms", r.prefill_ms},
                      {"prefill_tokens_per_s", r.prefill_tps},
                      {"decode_tokens_per_s", r.decode_tps},
                      {"weights_gb_per_s", r.weights_gbps}});
    const nlohmann::ordered_json j = {
        {"model", model},
        {"backend", a.engine.backend},
        {"dtype", a.engine.backend == "cuda" ? a.engine.dtype : "f32"},
        {"cpu_threads", omp_get_max_threads()},
        {"omp_wait", omp_wait},
        {"batch", a.batch},
        {"prompt_tokens", a.prompt_tokens},
        {"new_tokens", a.new_tokens},
        {"load_s", engine.load_seconds()},
        {"weight_bytes", engine.weight_bytes()},
        {"runs", runs},
        {"median",
         {{"prefill_ms", med(&RunResult::prefill_ms)},
          {"prefill_tokens_per_s", med(&RunResult::prefill_tps)},
          {"decode_tokens_per_s", med(&RunResult::decode_tps)},
          {"weights_gb_per_s", med(&RunResult::weights_gbps)}}}};
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf(
      "%s on %s%s: batch %d x (%d prompt + %d new tokens), median of %d runs\n"
      "  prefill  %.1f ms  (%.0f tokens/s)\n"
      "  decode   %.1f tokens/s  (weights read at %.1f GB/s)\n"
      "  load     %.2f s  (%.1f MB of weights)\n",
      model.c_str(), a.engine.backend.c_str(),
      (a.engine.backend == "cuda" ? " " + a.engine.dtype : " (" + cpu_setup + ")").c_str(), a.batch,
      a.prompt_tokens, a.new_tokens, a.runs, med(&RunResult::prefill_ms),
      med(&RunResult::prefill_tps), med(&RunResult::decode_tps), med(&RunResult::weights_gbps),
      engine.load_seconds(), static_cast<double>(engine.weight_bytes()) / 1e6);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "bench", "Measure prefill and decode speed on prompts of random token ids (EOS ignored)");
  auto a = std::make_shared<BenchArgs>();
  cmd->add_option("--prompt-tokens", a->prompt_tokens, "tokens in each prompt (default 512)")
      ->check(whole_number(1));
  cmd->add_option("--new-tokens", a->new_tokens, "tokens generated for each (default 128)")
      ->check(whole_number(2));
  cmd->add_option("--batch", a->batch, "prompts run together (default 1)")->check(whole_number(1));
  cmd->add_option("--runs", a->runs, "runs; the median is reported (default 3)")
      ->check(whole_number(1));
  cmd->add_flag("--json", a->json, "print one JSON object (every run and the median)");
  cmd->add_flag("--profile", a->engine.profile,
                "print the time of each op kind over all runs, prefill and decode apart, on stderr "
                "(CUDA: steps then run without graphs)");
  add_engine_flags(*cmd, a->engine,
                   "KV cache slots (0 = room for the whole batch, up to 3/4 of the free memory)");
  cmd->callback([a] { run_bench(*a); });
}

}  // namespace nanoinfer::cli
