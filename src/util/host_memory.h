// How much host memory could still be had.
#pragma once

#include <cstdint>

namespace nanoinfer {

// The memory the kernel says could be had without swapping (MemAvailable of /proc/meminfo), in
// bytes; -1 where it does not say.
int64_t host_available_bytes();

}  // namespace nanoinfer
