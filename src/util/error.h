// Errors: fail() throws the library's one exception type (nanoinfer/error.h) for everything a user
// can cause, and an assert stops on programming errors. Messages name the file / tensor / flag.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "nanoinfer/error.h"

namespace nanoinfer {

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
