#include "dist/communicator.h"

#include <cstdlib>

#include "util/error.h"

namespace nanoinfer {
namespace {

class SingleRank final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(Tensor& /*t*/) override {}
  void gather(const Tensor& local, Tensor& out) override { NI_ASSERT(local.data() == out.data()); }
  void broadcast(std::vector<uint8_t>& /*bytes*/) override {}
  bool all_true(bool mine) override { return mine; }
};

int env_int(const char* const* names, int fallback) {
  for (const char* const* n = names; *n != nullptr; ++n) {
    const char* v = std::getenv(*n);
    if (v != nullptr && *v != '\0') return std::atoi(v);
  }
  return fallback;
}

}  // namespace

Communicator& single_rank() {
  static SingleRank one;
  return one;
}

// Open MPI, MPICH / Intel MPI (Hydra), and PMIx-based launchers name these differently.
int launched_world_size() {
  static const char* const kNames[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", nullptr};
  return env_int(kNames, 1);
}

int launched_rank() {
  static const char* const kNames[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", nullptr};
  return env_int(kNames, 0);
}

int local_rank() {
  static const char* const kNames[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                                       "PMI_LOCAL_RANK", nullptr};
  return env_int(kNames, 0);
}

#ifndef NANOINFER_HAVE_MPI
std::unique_ptr<Communicator> make_mpi_communicator() {
  fail("tensor parallelism needs MPI, and this build has none (install libopenmpi-dev, rebuild)");
}

void abort_job(int code) {
  std::exit(code);
}
#endif

#if !defined(NANOINFER_HAVE_NCCL) || !defined(NANOINFER_HAVE_MPI)
std::unique_ptr<Communicator> make_nccl_communicator(Backend& /*cuda_backend*/) {
  fail("tensor parallelism on GPUs needs NCCL and MPI, and this build lacks them");
}
std::string nccl_version() {
  fail("this build has no NCCL");
}
#endif

}  // namespace nanoinfer
