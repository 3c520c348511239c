// One row's token choice as a backend may make it where the logits are (Backend::pick_to_host):
// greedy, or a draw after temperature, top-k, top-p and min-p in HF's order, with the host
// sampler's counter-based number uniform(seed, counter) (sampling/counter_rng.h). The neutral
// value of a filter turns it off. Before the pick, LogitEdits apply what the processors that
// depend on a row's history do to it, token by token. For beam search, a BeamRow is what a step
// reads from a row (Backend::beam_rows_to_host).
#pragma once

#include <cstdint>
#include <vector>

namespace nanoinfer {

struct RowPick {
  float temperature = 0.0F;  // 0: greedy (the first maximum); the filters are then ignored
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0F;        // 1: off
  float min_p = 0.0F;        // 0: off
  uint64_t seed = 0;
  uint64_t counter = 0;  // the row's draw index: its sequence's generated tokens so far
};

// One logit of one row, rewritten as the host's processors rewrite it, in their order: HF's
// repetition penalty (x < 0 ? x * penalty : x / penalty), then the presence and frequency
// penalties (x - subtract), then suppression (-inf), then the logit bias (x + add). The neutral
// value turns a step off.
struct LogitEdit {
  int32_t row = 0;
  int32_t token = 0;
  float penalty = 1.0F;
  float subtract = 0.0F;
  int32_t suppress = 0;
  float add = 0.0F;
};

// One row of logits as a beam-search step reads it (sampling::summarise_row computes it on the
// host): the maximum, log(sum_i exp(x_i - max)) with the exps summed in double, and the best
// tokens by logit, best first, ties to the lower id.
struct BeamRow {
  struct Token {
    float logit;
    int32_t id;
    // best's order: higher logit first, the lower id first among equal logits.
    static bool before(const Token& a, const Token& b) {
      return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    }
  };
  float max = 0.0F;
  float lse = 0.0F;
  std::vector<Token> best;
};

}  // namespace nanoinfer
