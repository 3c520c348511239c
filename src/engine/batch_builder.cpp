#include "engine/batch_builder.h"

#include <algorithm>

namespace nanoinfer {

Batch build_batch(const std::vector<SeqState*>& seqs, KvCache& cache) {
  Batch b;
  b.cu_seqlens.push_back(0);
  for (size_t s = 0; s < seqs.size(); ++s) {
    SeqState& q = *seqs[s];
    const int start = cache.length(q.cache_id);
    std::vector<int32_t> pos(q.pending.size());
    for (size_t i = 0; i < pos.size(); ++i) pos[i] = start + static_cast<int32_t>(i);
    const Placement p = cache.append(q.cache_id, pos);
    for (size_t i = 0; i < q.pending.size(); ++i) {
      b.token_ids.push_back(q.pending[i]);
      b.positions.push_back(p.positions[i]);
      b.seq_of_token.push_back(static_cast<int32_t>(s));
      b.q_index.push_back(p.q_index[i]);
      b.slots.push_back(p.slots[i]);
    }
    b.cu_seqlens.push_back(b.num_tokens());
    b.context_lens.push_back(cache.length(q.cache_id));
    b.logit_rows.push_back(b.num_tokens() - 1);
    b.max_blocks = std::max(b.max_blocks, static_cast<int32_t>(cache.blocks(q.cache_id).size()));
    q.pending.clear();
  }
  b.block_tables.assign(seqs.size() * static_cast<size_t>(b.max_blocks), 0);
  for (size_t s = 0; s < seqs.size(); ++s) {
    const std::vector<int32_t>& blocks = cache.blocks(seqs[s]->cache_id);
    std::copy(blocks.begin(), blocks.end(), b.block_tables.begin() + static_cast<std::ptrdiff_t>(s * b.max_blocks));
  }
  return b;
}

}  // namespace nanoinfer
