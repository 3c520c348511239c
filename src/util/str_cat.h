// str_cat: builds a message from strings and numbers in one buffer, for error text composed
// inside loops (where chained operator+ would allocate a temporary per piece).
#pragma once

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

}  // namespace nanoinfer
