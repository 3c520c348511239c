// The benchmarks' number options. The whole value must be a number in [lo, hi]; anything else
// ("abc", "12x", "-3" for a count) names the option and exits 2, where atoi read 0 and the
// benchmark went on with it.
#pragma once

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>

namespace nanoinfer::bench {

inline double number(const char* option, const char* text, double lo, double hi) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text, &end);
  if (end == text || *end != '\0' || errno != 0 || !(v >= lo && v <= hi)) {
    std::fprintf(stderr, "%s: expected a number from %g to %g, got '%s'\n", option, lo, hi, text);
    std::exit(2);
  }
  return v;
}

inline int whole_number(const char* option, const char* text, int lo, int hi = INT_MAX) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || errno != 0 || v < lo || v > hi) {
    std::fprintf(stderr, "%s: expected a whole number from %d to %d, got '%s'\n", option, lo, hi,
                 text);
    std::exit(2);
  }
  return static_cast<int>(v);
}

}  // namespace nanoinfer::bench
