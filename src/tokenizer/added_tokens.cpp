// Added-token matching (see added_tokens.h).
#include "tokenizer/added_tokens.h"

#include <algorithm>

namespace nanoinfer {

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens) {
  for (const AddedToken& t : tokens) {
    if (t.content.empty()) continue;
    const auto first = static_cast<uint8_t>(t.content[0]);
    if (by_first_byte_[first].empty()) first_bytes_ += t.content[0];
    by_first_byte_[first].push_back({t.content, t.id});
  }
  for (auto& list : by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [](const Candidate& a, const Candidate& b) {
      return a.content.size() > b.content.size();
    });
  }
}

AddedTokenMatcher::Match AddedTokenMatcher::find(std::string_view text, size_t from) const {
  if (first_bytes_.empty()) return {text.size(), text.size(), -1};
  for (size_t pos = text.find_first_of(first_bytes_, from); pos != std::string_view::npos;
       pos = text.find_first_of(first_bytes_, pos + 1)) {
    const std::string_view rest = text.substr(pos);
    for (const Candidate& c : by_first_byte_[static_cast<uint8_t>(text[pos])]) {
      if (rest.starts_with(c.content)) return {pos, pos + c.content.size(), c.id};
    }
  }
  return {text.size(), text.size(), -1};
}

}  // namespace nanoinfer
