#include "backend/op_profile.h"

#include <algorithm>
#include <cstdio>
#include <vector>

namespace nanoinfer {

void OpProfile::add(const std::string& op, bool decode, double ms) {
  auto& [total, calls] = ms_[{op, decode}];
  total += ms;
  ++calls;
}

std::string OpProfile::report(const char* clock) const {
  std::string out;
  char line[256];
  for (const bool decode : {false, true}) {
    double phase_ms = 0;
    std::vector<std::pair<double, std::string>> rows;
    for (const auto& [key, v] : ms_) {
      if (key.second != decode) continue;
      phase_ms += v.first;
      std::snprintf(line, sizeof(line), "  %-28s %9lld calls %10.3f ms %9.2f us/call",
                    key.first.c_str(), static_cast<long long>(v.second), v.first,
                    1000.0 * v.first / static_cast<double>(v.second));
      rows.emplace_back(v.first, line);
    }
    if (rows.empty()) continue;
    std::sort(rows.rbegin(), rows.rend());
    std::snprintf(line, sizeof(line), "%s: %.3f ms of %s in ops\n", decode ? "decode" : "prefill",
                  phase_ms, clock);
    out += line;
    for (const auto& [ms, text] : rows) {
      std::snprintf(line, sizeof(line), " %5.1f%%\n", phase_ms > 0 ? 100.0 * ms / phase_ms : 0.0);
      out += text + line;
    }
  }
  return out;
}

}  // namespace nanoinfer
