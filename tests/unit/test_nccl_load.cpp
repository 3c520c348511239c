// NCCL is opened when GPU ranks first need it (dlopen), not loaded with the library: a process
// that never runs GPU ranks keeps it out, so a newer NCCL of the same file name (torch's) can load
// after ours. Before, `import nanoinfer; import torch` failed on a symbol our NCCL lacks.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <string>

#include "dist/communicator.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

bool nccl_mapped() {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);)
    if (line.find("libnccl") != std::string::npos) return true;
  return false;
}

TEST(Nccl, OpenedOnlyWhenGpuRanksNeedIt) {
  EXPECT_FALSE(nccl_mapped());
#ifdef NANOINFER_HAVE_NCCL
  const std::string v = nccl_version();  // "2.27.3"
  EXPECT_TRUE(nccl_mapped());
  EXPECT_EQ(std::count(v.begin(), v.end(), '.'), 2) << v;
  EXPECT_TRUE(std::all_of(v.begin(), v.end(), [](char c) { return c == '.' || std::isdigit(c); }))
      << v;
  EXPECT_GE(std::stoi(v), 2) << v;
#else
  EXPECT_THROW(nccl_version(), Error);
#endif
}

}  // namespace
}  // namespace nanoinfer
