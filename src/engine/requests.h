// Per-request state of a generation: a sampled request owns one sequence, its stop checker and
// detokenizer; a beam-search request owns num_beams sequences and the search. The engine runs
// all their sequences in one forward per step and hands each request its rows of logits.
#pragma once

#include <exception>
#include <memory>
#include <span>
#include <vector>

#include "engine/batch_builder.h"
#include "nanoinfer/engine.h"
#include "nanoinfer/tokenizer.h"
#include "sampling/beam_search.h"
#include "sampling/stop_checker.h"

namespace nanoinfer {

// A request may name its own end tokens (HF generate's eos_token_id); else the model's.
std::vector<int32_t> eos_for(const GenerationRequest& req, const std::vector<int32_t>& model_eos);

struct SampledRequest {
  SampledRequest(size_t index, const GenerationRequest& req, KvCache& cache,
                 const std::vector<int32_t>& eos, const Tokenizer* tok);
  // Takes the sampled token; returns false when the request has finished, its blocks given back
  // to the cache (with `publish`, findable by their tokens, prompt and generated ones). An
  // on_token that throws ends the request ("cancelled"); its exception is kept in `thrown`.
  bool accept(int32_t token, KvCache& cache, const TokenCallback& on_token, bool publish);

  const GenerationRequest* request;
  SeqState seq;
  sampling::StopChecker stop;
  std::unique_ptr<IncrementalDetokenizer> detok;
  GenerationOutput out;
  std::exception_ptr thrown;
};

struct BeamRequest {
  BeamRequest(size_t index, const GenerationRequest& req, KvCache& cache,
              const std::vector<int32_t>& eos);
  // The sequences that run this step: the prompt alone first, then every beam.
  std::vector<SeqState*> live();
  // Consumes this request's rows (one a live sequence, BeamRow summaries of their logits);
  // returns false when the search has ended.
  bool step(std::span<const BeamRow> rows, int vocab, KvCache& cache, const Tokenizer* tok);

  size_t index;
  const GenerationRequest* request;
  sampling::BeamSearch search;
  std::vector<int32_t> eos_ids;
  std::vector<SeqState> beams;
  bool prefilled = false;
  // Its beams were left out of the last step (fewer tokens left than beams): they go first at the
  // next, before the sampled requests that decode (which would otherwise starve them).
  bool left_out = false;
  GenerationOutput out;
};

}  // namespace nanoinfer
