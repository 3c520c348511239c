// Builds the packed Batch of one step from the sequences that take part in it: their pending
// tokens are appended to the cache (which assigns slots and positions) and laid out back to back.
#pragma once

#include <cstdint>
#include <vector>

#include "kv/kv_cache.h"
#include "model/batch.h"

namespace nanoinfer {

struct SeqState {
  SeqState(size_t request_index, int cache_seq, std::vector<int32_t> tokens)
      : request(request_index), cache_id(cache_seq), pending(std::move(tokens)) {}
  size_t request = 0;            // index of the request it serves
  int cache_id = -1;             // its sequence in the KV cache
  std::vector<int32_t> pending;  // tokens to feed at the next step (prompt, then last sample)
  int chunk = 0;    // for one step: feed only the first `chunk` pending tokens (0: all of them)
  int32_t fed = 0;  // tokens fed so far: the text position of the next one
  bool done = false;
  // Optional, for one step (speculative trees): explicit positions of the pending tokens, an
  // n*n mask among them (byte [i*n + k] = 1: token i sees token k), logits for every token.
  std::vector<int32_t> positions;
  std::vector<uint8_t> tree_mask;
  bool all_logits = false;
};

// Text positions continue from `fed` unless given; the cache decides the RoPE positions. Logits
// are taken for the last token fed of each sequence (every token with all_logits), in order. A
// sequence with a chunk keeps the rest of its pending tokens for a later step (chunked prefill).
Batch build_batch(const std::vector<SeqState*>& seqs, KvCache& cache);

}  // namespace nanoinfer
