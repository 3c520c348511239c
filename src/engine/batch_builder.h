// Builds the packed Batch of one step from the sequences that take part in it: their pending
// tokens are appended to the cache (which assigns slots and positions) and laid out back to back.
#pragma once

#include <cstdint>
#include <vector>

#include "kv/kv_cache.h"
#include "model/batch.h"

namespace nanoinfer {

struct SeqState {
  size_t request = 0;              // index of the request it serves
  int cache_id = -1;               // its sequence in the KV cache
  std::vector<int32_t> pending;    // tokens to feed at the next step (prompt, then last sample)
  bool done = false;
};

// Positions continue from the sequence's cache length. Logits are taken for the last pending
// token of each sequence, in the order given.
Batch build_batch(const std::vector<SeqState*>& seqs, KvCache& cache);

}  // namespace nanoinfer
