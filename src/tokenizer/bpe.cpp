// BPE merging (see bpe.h). The word is a linked list of symbols and the candidate merges sit in a
// min-heap keyed by (rank, position); a candidate whose symbols changed since it was pushed is
// dropped when popped. This is O(n log n), which matters for SentencePiece models where a whole
// text segment is one word.
#include "tokenizer/bpe.h"

#include <algorithm>
#include <bit>

namespace nanoinfer {
namespace {

uint64_t hash_key(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  return k;
}

}  // namespace

MergeTable::MergeTable(const std::vector<Merge>& merges) {
  const uint64_t capacity = std::bit_ceil(std::max<uint64_t>(16, merges.size() * 2));
  slots_.assign(capacity, Merge{-1, -1, -1, -1});
  mask_ = capacity - 1;
  for (const Merge& m : merges) {
    const uint64_t k = key(m.left, m.right);
    for (uint64_t i = hash_key(k) & mask_;; i = (i + 1) & mask_) {
      Merge& slot = slots_[i];
      if (slot.left < 0) {
        slot = m;
        ++count_;
        break;
      }
      if (slot.left == m.left && slot.right == m.right) {
        if (m.rank < slot.rank) slot = m;
        break;
      }
    }
  }
}

const Merge* MergeTable::find(int32_t left, int32_t right) const {
  if (slots_.empty()) return nullptr;
  const uint64_t k = key(left, right);
  for (uint64_t i = hash_key(k) & mask_;; i = (i + 1) & mask_) {
    const Merge& slot = slots_[i];
    if (slot.left < 0) return nullptr;
    if (slot.left == left && slot.right == right) return &slot;
  }
}

void apply_merges(const MergeTable& table, std::vector<int32_t>& ids, BpeScratch& scratch) {
  const auto n = static_cast<int32_t>(ids.size());
  if (n < 2) return;
  auto& symbols = scratch.symbols;
  auto& heap = scratch.heap;
  symbols.resize(n);
  heap.clear();
  for (int32_t i = 0; i < n; ++i) symbols[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1};

  // std heap functions build a max-heap, so "greater" puts the lowest (rank, pos) on top.
  const auto later = [](const BpeScratch::Candidate& a, const BpeScratch::Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  const auto push_candidate = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    const Merge* m = table.find(symbols[pos].id, symbols[next].id);
    if (m == nullptr) return;
    heap.push_back({m->rank, pos, symbols[pos].id, symbols[next].id});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_candidate(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const BpeScratch::Candidate c = heap.back();
    heap.pop_back();
    BpeScratch::Symbol& left = symbols[c.pos];
    // A merged-away symbol has id -1; a changed neighbour shows as a different id pair.
    if (left.id != c.left_id || left.next < 0 || symbols[left.next].id != c.right_id) continue;
    const int32_t right_pos = left.next;
    BpeScratch::Symbol& right = symbols[right_pos];
    left.id = table.find(c.left_id, c.right_id)->merged;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.pos;
    right.id = -1;
    if (left.prev >= 0) push_candidate(left.prev);
    push_candidate(c.pos);
  }

  ids.clear();
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
}

}  // namespace nanoinfer
