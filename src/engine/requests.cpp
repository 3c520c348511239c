#include "engine/requests.h"

#include <algorithm>
#include <vector>

#include "util/error.h"

namespace nanoinfer {

std::vector<int32_t> eos_for(const GenerationRequest& req, const std::vector<int32_t>& model_eos) {
  return req.params.eos_token_ids.empty() ? model_eos : req.params.eos_token_ids;
}

SampledRequest::SampledRequest(size_t index, const GenerationRequest& req, KvCache& cache,
                               const std::vector<int32_t>& eos, const Tokenizer* tok)
    : request(&req),
      seq(index, cache.create_sequence(), req.prompt_ids),
      stop(eos_for(req, eos), req.params.stop, req.params.max_new_tokens, req.params.ignore_eos) {
  if (tok != nullptr) detok = std::make_unique<IncrementalDetokenizer>(*tok, true);
}

bool SampledRequest::accept(int32_t token, KvCache& cache, const TokenCallback& on_token,
                            bool publish) {
  const std::string piece = detok ? detok->push(token) : std::string();
  sampling::StopDecision d = stop.on_token(token, piece);
  out.token_ids.push_back(token);  // an ending EOS too, as HF generate() returns it
  if (d.stop() && d.reason != sampling::StopReason::kStopString && detok) d.emit += detok->flush();
  out.text += d.emit;
  bool go_on = true;
  if (on_token && d.reason != sampling::StopReason::kEos) {
    try {
      go_on = on_token(seq.request, token, d.emit);
    } catch (...) {  // (the run rethrows it once the step is whole)
      thrown = std::current_exception();
      go_on = false;
    }
  }
  if (!go_on && !d.stop()) d.reason = sampling::StopReason::kStopString;  // the caller's stop
  seq.pending = {token};
  if (!d.stop()) return true;
  out.finish_reason = thrown                                         ? "cancelled"
                      : d.reason == sampling::StopReason::kEos       ? "eos"
                      : d.reason == sampling::StopReason::kMaxTokens ? "length"
                                                                     : "stop";
  seq.done = true;
  if (publish) {  // the cache holds every token fed: the prompt and all samples but this last one
    std::vector<int32_t> fed = request->prompt_ids;
    fed.insert(fed.end(), out.token_ids.begin(), out.token_ids.end() - 1);
    cache.publish_prefix(seq.cache_id, fed, seq.fed);
  }
  cache.release(seq.cache_id);
  return false;
}

BeamRequest::BeamRequest(size_t index, const GenerationRequest& req, KvCache& cache,
                         const std::vector<int32_t>& eos)
    : index(index),
      request(&req),
      search(req.params, eos_for(req, eos)),
      eos_ids(eos_for(req, eos)) {
  beams.emplace_back(index, cache.create_sequence(), req.prompt_ids);
}

std::vector<SeqState*> BeamRequest::live() {
  std::vector<SeqState*> v;
  for (SeqState& b : beams) v.push_back(&b);
  return v;
}

bool BeamRequest::step(std::span<const BeamRow> rows, int vocab, KvCache& cache,
                       const Tokenizer* tok) {
  NI_ASSERT(rows.size() == beams.size());
  std::vector<sampling::BeamChoice> choices;
  const bool first = !prefilled;
  if (first) {  // every beam starts from the prompt's logits (only row 0 is expanded)
    const std::vector<BeamRow> prompt(static_cast<size_t>(search.num_beams()), rows[0]);
    choices = search.step(prompt, vocab);
    prefilled = true;
  } else {
    choices = search.step(rows, vocab);
  }
  if (search.done()) {
    for (SeqState& b : beams) cache.release(b.cache_id);
    beams.clear();
    for (const sampling::BeamHypothesis& h : search.results()) {
      out.sequences.push_back(h.tokens);
      out.scores.push_back(h.score);
    }
    out.token_ids = out.sequences.empty() ? std::vector<int32_t>{} : out.sequences[0];
    if (tok != nullptr) out.text = tok->decode(out.token_ids, true);
    // (under ignore_eos an eos id is an ordinary token: the search ran to its length)
    const bool ended =
        !request->params.ignore_eos && !out.token_ids.empty() &&
        std::find(eos_ids.begin(), eos_ids.end(), out.token_ids.back()) != eos_ids.end();
    out.finish_reason = ended ? "eos" : "length";
    return false;
  }
  // Beam j continues parent p with the chosen token: p's first child takes over p's cache
  // sequence, any other child forks it (KvCache::copy_sequence: p's full blocks shared, its
  // partial last one copied), and a parent without children is released. At the first step
  // every parent is the prompt's one sequence (HF's num_beams copies of it are identical): a beam
  // continues another copy (at -1e9, as in HF) where the prompt's row has fewer unsuppressed
  // tokens than there are beams.
  std::vector<SeqState> next;
  std::vector<uint8_t> kept(beams.size(), 0);
  for (const sampling::BeamChoice& c : choices) {
    const auto p = first ? size_t{0} : static_cast<size_t>(c.parent);
    const SeqState& parent = beams[p];
    SeqState s(parent.request, kept[p] != 0 ? cache.create_sequence() : parent.cache_id, {c.token});
    if (kept[p] != 0) cache.copy_sequence(parent.cache_id, s.cache_id);
    kept[p] = 1;
    s.fed = parent.fed;
    next.push_back(std::move(s));
  }
  for (size_t b = 0; b < beams.size(); ++b)
    if (kept[b] == 0) cache.release(beams[b].cache_id);
  beams = std::move(next);
  return true;
}

}  // namespace nanoinfer
