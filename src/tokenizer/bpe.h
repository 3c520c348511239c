// The BPE merge step shared by both model kinds: a table from an adjacent pair of token ids to
// (rank, merged id), and the loop that merges a word's symbols lowest rank first, leftmost first
// among equal ranks, until no adjacent pair has a merge.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace nanoinfer {

struct Merge {
  int32_t left;
  int32_t right;
  int32_t merged;
  int32_t rank;
};

class MergeTable {
 public:
  MergeTable() = default;
  explicit MergeTable(const std::vector<Merge>& merges);

  // The merge of (left, right), or nullptr. When a pair is listed twice the lower rank wins.
  const Merge* find(int32_t left, int32_t right) const;
  size_t size() const { return count_; }

 private:
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  // Open addressing with linear probing; a slot with left < 0 is empty.
  std::vector<Merge> slots_;
  uint64_t mask_ = 0;
  size_t count_ = 0;
};

// Scratch space reused across words so that merging does not allocate per word.
struct BpeScratch {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t left_id;
    int32_t right_id;
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
};

// Merges `ids` (the word's initial symbols) in place.
void apply_merges(const MergeTable& table, std::vector<int32_t>& ids, BpeScratch& scratch);

}  // namespace nanoinfer
