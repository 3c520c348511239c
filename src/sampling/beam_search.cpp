// Beam search step logic (see beam_search.h for the rules). HF keeps placeholder scores of -1e9
// for beams that must not be chosen; the same constant is used here so scores agree exactly.
#include "sampling/beam_search.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "util/error.h"

namespace nanoinfer::sampling {
namespace {

constexpr float kExcluded = -1.0e9F;

bool better(float a_score, int64_t a_index, float b_score, int64_t b_index) {
  return a_score > b_score || (a_score == b_score && a_index < b_index);
}

float length_normalised(float score, int length, float length_penalty) {
  return score / static_cast<float>(std::pow(static_cast<double>(length), length_penalty));
}

}  // namespace

BeamRow summarise_row(std::span<const float> row, size_t n) {
  BeamRow out;
  out.max = *std::max_element(row.begin(), row.end());
  double sum = 0.0;
  for (float x : row) sum += std::exp(x - out.max);
  out.lse = static_cast<float>(std::log(sum));
  if (n == 0) return out;
  // The best n by logit, kept sorted; later ids lose ties.
  out.best.reserve(n + 1);
  for (size_t v = 0; v < row.size(); ++v) {
    if (out.best.size() == n && !(row[v] > out.best.back().logit)) continue;
    const BeamRow::Token t{row[v], static_cast<int32_t>(v)};
    out.best.insert(std::upper_bound(out.best.begin(), out.best.end(), t, BeamRow::Token::before),
                    t);
    if (out.best.size() > n) out.best.pop_back();
  }
  return out;
}

BeamSearch::BeamSearch(const SamplingParams& params, std::vector<int32_t> eos_ids)
    : num_beams_(params.num_beams),
      length_penalty_(params.length_penalty),
      early_stopping_(params.early_stopping),
      num_return_sequences_(params.num_return_sequences),
      max_new_tokens_(params.max_new_tokens),
      eos_ids_(std::move(eos_ids)),
      suppress_(params.suppress_tokens),
      running_(static_cast<size_t>(params.num_beams)),
      running_scores_(static_cast<size_t>(params.num_beams), kExcluded) {
  params.validate();
  if (params.ignore_eos) eos_ids_.clear();
  running_scores_[0] = 0.0F;
}

size_t BeamSearch::candidates_per_step() const {
  return static_cast<size_t>(std::max<size_t>(2, 1 + eos_ids_.size())) * num_beams_;
}

size_t BeamSearch::tokens_per_row() const {
  return candidates_per_step() + suppress_.size();
}

std::string BeamSearch::vocabulary_error(int vocab) const {
  std::vector<int32_t> suppressed;
  for (const int32_t t : suppress_)
    if (t >= 0 && t < vocab) suppressed.push_back(t);
  std::sort(suppressed.begin(), suppressed.end());
  suppressed.erase(std::unique(suppressed.begin(), suppressed.end()), suppressed.end());
  const size_t left = static_cast<size_t>(vocab) - suppressed.size();
  const size_t need = candidates_per_step() / static_cast<size_t>(num_beams_);
  if (left >= need) return {};
  return "each beam needs " + std::to_string(need) +
         " tokens a step (max(2, 1 + eos ids)), but the vocabulary of " + std::to_string(vocab) +
         " ids less its " + std::to_string(suppressed.size()) + " suppressed token(s) leaves " +
         std::to_string(left);
}

void BeamSearch::top_candidates(std::span<const BeamRow> rows, int vocab) {
  const size_t keep = candidates_per_step();
  candidates_.clear();
  for (int b = 0; b < num_beams_; ++b) {
    const BeamRow& row = rows[static_cast<size_t>(b)];
    NI_ASSERT(row.best.size() >= std::min(tokens_per_row(), static_cast<size_t>(vocab)));
    size_t taken = 0;
    for (const BeamRow::Token& t : row.best) {
      if (taken == keep) break;
      if (std::find(suppress_.begin(), suppress_.end(), t.id) != suppress_.end()) continue;
      const float log_prob = (t.logit - row.max) - row.lse;
      candidates_.push_back(
          {log_prob + running_scores_[b], static_cast<int64_t>(b) * vocab + t.id});
      ++taken;
    }
  }
  NI_ASSERT(candidates_.size() >= keep);  // (vocabulary_error, checked by step)
  std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(),
                    [](const Candidate& a, const Candidate& b) {
                      return better(a.score, a.index, b.score, b.index);
                    });
  candidates_.resize(keep);
}

void BeamSearch::add_hypotheses() {
  const int length = generated_ + 1;
  for (int i = 0; i < num_beams_; ++i) {
    if (candidate_stops_[i] == 0) continue;
    const int parent = static_cast<int>(candidates_[i].index / vocab_);
    BeamHypothesis h;
    h.tokens = running_[parent];
    h.tokens.push_back(static_cast<int32_t>(candidates_[i].index % vocab_));
    h.score = length_normalised(candidates_[i].score, length, length_penalty_);
    const auto at = std::upper_bound(hypotheses_.begin(), hypotheses_.end(), h.score,
                                     [](float s, const BeamHypothesis& e) { return s > e.score; });
    if (at - hypotheses_.begin() >= num_beams_) continue;
    hypotheses_.insert(at, std::move(h));
    if (hypotheses_.size() > static_cast<size_t>(num_beams_)) hypotheses_.pop_back();
  }
}

void BeamSearch::check_done(bool all_candidates_stop) {
  const bool full = hypotheses_.size() == static_cast<size_t>(num_beams_);
  if (full) {
    const int best_length = early_stopping_ == EarlyStopping::kNever && length_penalty_ > 0.0F
                                ? max_new_tokens_
                                : generated_;
    const float best_possible = length_normalised(running_scores_[0], best_length, length_penalty_);
    if (!(best_possible > hypotheses_.back().score)) heuristic_unsatisfied_ = false;
  }
  done_ = !heuristic_unsatisfied_ || (early_stopping_ == EarlyStopping::kWhenFull && full) ||
          all_candidates_stop;
}

std::vector<BeamChoice> BeamSearch::step(std::span<const float> logits, int vocab) {
  NI_ASSERT(logits.size() == static_cast<size_t>(num_beams_) * static_cast<size_t>(vocab));
  std::vector<BeamRow> rows;
  rows.reserve(static_cast<size_t>(num_beams_));
  for (int b = 0; b < num_beams_; ++b)
    rows.push_back(
        summarise_row(logits.subspan(static_cast<size_t>(b) * vocab, vocab), tokens_per_row()));
  return step(rows, vocab);
}

std::vector<BeamChoice> BeamSearch::step(std::span<const BeamRow> rows, int vocab) {
  NI_ASSERT(!done_);
  NI_ASSERT(rows.size() == static_cast<size_t>(num_beams_));
  vocab_ = vocab;
  if (generated_ == 0)  // one vocabulary a search: checked at its first step
    if (const std::string e = vocabulary_error(vocab); !e.empty()) fail("beam search: " + e);
  top_candidates(rows, vocab);

  const bool at_max = generated_ + 1 >= max_new_tokens_;
  candidate_stops_.assign(candidates_.size(), 0);
  bool all_stop = true;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    const auto token = static_cast<int32_t>(candidates_[i].index % vocab);
    const bool eos = std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end();
    candidate_stops_[i] = at_max || eos ? 1 : 0;
    all_stop = all_stop && candidate_stops_[i] != 0;
  }
  add_hypotheses();

  // The best num_beams continuations that did not stop keep running (stable: earlier = better).
  std::vector<size_t> order(candidates_.size());
  std::vector<float> adjusted(candidates_.size());
  for (size_t i = 0; i < candidates_.size(); ++i) {
    order[i] = i;
    adjusted[i] = candidates_[i].score + (candidate_stops_[i] != 0 ? kExcluded : 0.0F);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&adjusted](size_t a, size_t b) { return adjusted[a] > adjusted[b]; });
  std::vector<BeamChoice> choices(static_cast<size_t>(num_beams_));
  std::vector<std::vector<int32_t>> next(static_cast<size_t>(num_beams_));
  for (int j = 0; j < num_beams_; ++j) {
    const size_t i = order[j];
    choices[j] = {static_cast<int>(candidates_[i].index / vocab),
                  static_cast<int32_t>(candidates_[i].index % vocab)};
    next[j] = running_[choices[j].parent];
    next[j].push_back(choices[j].token);
    running_scores_[j] = adjusted[i];
  }
  running_ = std::move(next);
  ++generated_;
  check_done(all_stop);
  return choices;
}

std::vector<BeamHypothesis> BeamSearch::results() const {
  NI_ASSERT(done_);
  const size_t n = std::min(hypotheses_.size(), static_cast<size_t>(num_return_sequences_));
  return {hypotheses_.begin(), hypotheses_.begin() + static_cast<std::ptrdiff_t>(n)};
}

size_t BeamSearch::state_bytes() const {
  size_t bytes = sizeof(*this);
  for (const auto& r : running_) {
    bytes += sizeof(std::vector<int32_t>) + r.capacity() * sizeof(int32_t);
  }
  for (const auto& h : hypotheses_) {
    bytes += sizeof(BeamHypothesis) + h.tokens.capacity() * sizeof(int32_t);
  }
  bytes += running_scores_.capacity() * sizeof(float);
  bytes += candidates_.capacity() * sizeof(Candidate);
  bytes += candidate_stops_.capacity() + eos_ids_.capacity() * sizeof(int32_t);
  return bytes;
}

}  // namespace nanoinfer::sampling
