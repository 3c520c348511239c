// The per-op times of --profile, summed by op name and phase (prefill or decode), and the report
// that lists them, largest first. Each backend measures with its own clock (CUDA events, the
// CPU's steady clock) and adds the milliseconds here.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

namespace nanoinfer {

class OpProfile {
 public:
  void add(const std::string& op, bool decode, double ms);
  // "prefill: T ms of <clock> in ops" then one line per op (calls, ms, us/call, % of the phase),
  // and the same for decode; empty when nothing was added.
  std::string report(const char* clock) const;

 private:
  std::map<std::pair<std::string, bool>, std::pair<double, int64_t>> ms_;  // -> ms, calls
};

}  // namespace nanoinfer
