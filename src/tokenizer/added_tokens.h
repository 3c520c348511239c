// Finds added tokens (special tokens like <|eot_id|> and user-defined pieces) inside raw text, so
// that they become one id each instead of being split by the model. Matching is leftmost, then
// longest, as HF tokenizers does it.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nanoinfer {

struct AddedToken {
  int32_t id;
  std::string content;
  bool special;
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);

  struct Match {
    size_t begin;  // text.size() when there is no match
    size_t end;
    int32_t id;
  };
  // The first match at or after `from`.
  Match find(std::string_view text, size_t from) const;

 private:
  struct Candidate {
    std::string content;
    int32_t id;
  };
  // Candidates by first byte, longest first.
  std::array<std::vector<Candidate>, 256> by_first_byte_;
  std::string first_bytes_;  // the distinct first bytes, for a quick scan
};

}  // namespace nanoinfer
