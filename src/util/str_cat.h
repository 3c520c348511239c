// str_cat: builds a message from strings and numbers in one buffer, for error text composed
// inside loops (where chained operator+ would allocate a temporary per piece).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

namespace nanoinfer {

namespace detail {
inline void append(std::string& out, std::string_view piece) {
  out += piece;
}
template <class T>
requires(std::is_arithmetic_v<T> && !std::is_same_v<T, char>) void append(std::string& out,
                                                                          T value) {
  out += std::to_string(value);
}
}  // namespace detail

template <class... Parts>
std::string str_cat(const Parts&... parts) {
  std::string out;
  (detail::append(out, parts), ...);
  return out;
}

// "1 token", "2 tokens": a count and its noun (one made plural by an s), for messages.
inline std::string count_of(int64_t n, std::string_view noun) {
  return std::to_string(n) + " " + std::string(noun) + (n == 1 ? "" : "s");
}

}  // namespace nanoinfer
