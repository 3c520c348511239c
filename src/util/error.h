// Errors: one exception type for everything a user can cause (files, flags, requests),
// and an assert for programming errors. Messages name the file / tensor / flag at fault.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace nanoinfer {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

[[noreturn]] inline void fail(const std::string& what) {
  throw Error(what);
}

}  // namespace nanoinfer

// Programming errors: always on (cheap checks on host-side shapes), abort with location.
#define NI_ASSERT(cond)                                                                          \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      std::fprintf(stderr, "%s:%d: internal error: assertion '%s' failed\n", __FILE__, __LINE__, \
                   #cond);                                                                       \
      std::abort();                                                                              \
    }                                                                                            \
  } while (0)
