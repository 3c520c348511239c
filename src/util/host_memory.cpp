#include "util/host_memory.h"

#include <fstream>
#include <string>

namespace nanoinfer {

int64_t host_available_bytes() {
  std::ifstream meminfo("/proc/meminfo");  // ("MemAvailable:   12345 kB")
  std::string key, unit;
  int64_t kib = 0;
  while (meminfo >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  return -1;
}

}  // namespace nanoinfer
