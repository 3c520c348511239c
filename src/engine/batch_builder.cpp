#include "engine/batch_builder.h"

#include <algorithm>

#include "util/error.h"

namespace nanoinfer {

Batch build_batch(const std::vector<SeqState*>& seqs, KvCache& cache) {
  Batch b;
  // Masks are built only when some sequence brings a tree: an all-causal batch needs none (and
  // a causal n x n mask of a long prompt costs more host time than its forward's kernels).
  const bool has_tree = std::any_of(seqs.begin(), seqs.end(),
                                    [](const SeqState* q) { return !q->tree_mask.empty(); });
  b.cu_seqlens.push_back(0);
  for (size_t s = 0; s < seqs.size(); ++s) {
    SeqState& q = *seqs[s];
    const size_t n =
        q.chunk > 0 ? std::min(q.pending.size(), static_cast<size_t>(q.chunk)) : q.pending.size();
    NI_ASSERT(n > 0 && (n == q.pending.size() || (q.positions.empty() && q.tree_mask.empty())));
    std::vector<int32_t> pos = q.positions;
    if (pos.empty())
      for (size_t i = 0; i < n; ++i) pos.push_back(q.fed + static_cast<int32_t>(i));
    NI_ASSERT(pos.size() == n && (q.tree_mask.empty() || q.tree_mask.size() == n * n));
    q.fed += static_cast<int32_t>(n);
    const Placement p = cache.append(q.cache_id, pos);
    if (has_tree) {
      b.tree_offsets.push_back(static_cast<int32_t>(b.tree_mask.size()));
      if (q.tree_mask.empty()) {
        for (size_t i = 0; i < n; ++i)
          for (size_t k = 0; k < n; ++k) b.tree_mask.push_back(k <= i ? 1 : 0);
      } else {
        b.tree_mask.insert(b.tree_mask.end(), q.tree_mask.begin(), q.tree_mask.end());
      }
    }
    for (size_t i = 0; i < n; ++i) {
      b.token_ids.push_back(q.pending[i]);
      b.positions.push_back(p.positions[i]);
      b.seq_of_token.push_back(static_cast<int32_t>(s));
      b.q_index.push_back(p.q_index[i]);
      b.slots.push_back(p.slots[i]);
    }
    b.cu_seqlens.push_back(b.num_tokens());
    b.context_lens.push_back(cache.length(q.cache_id));
    for (int t = q.all_logits ? b.num_tokens() - static_cast<int>(n) : b.num_tokens() - 1;
         t < b.num_tokens(); ++t)
      b.logit_rows.push_back(t);
    b.max_blocks = std::max(b.max_blocks, static_cast<int32_t>(cache.blocks(q.cache_id).size()));
    q.pending.erase(q.pending.begin(), q.pending.begin() + static_cast<std::ptrdiff_t>(n));
    q.chunk = 0;
    q.positions.clear();
    q.tree_mask.clear();
  }
  b.block_tables.assign(seqs.size() * static_cast<size_t>(b.max_blocks), 0);
  for (size_t s = 0; s < seqs.size(); ++s) {
    const std::vector<int32_t>& blocks = cache.blocks(seqs[s]->cache_id);
    std::copy(blocks.begin(), blocks.end(),
              b.block_tables.begin() + static_cast<std::ptrdiff_t>(s * b.max_blocks));
  }
  return b;
}

}  // namespace nanoinfer
