// The MPI communicator: CPU ranks exchange host tensors; GPU ranks use it for the control plane.
// MPI is started on first use and finalised at exit; every wait is bounded by the watchdog.
#include <mpi.h>

#include <climits>
#include <cstdlib>

#include "dist/communicator.h"
#include "dist/watchdog.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

void start_mpi() {
  int started = 0;
  MPI_Initialized(&started);
  if (started != 0) return;
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  std::atexit([] {
    int finished = 0;
    MPI_Finalized(&finished);
    if (finished == 0) MPI_Finalize();
  });
}

int count_of(int64_t n) {
  NI_ASSERT(n >= 0 && n <= INT_MAX);
  return static_cast<int>(n);
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    start_mpi();
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;
  ~MpiCommunicator() override {
    int finished = 0;
    MPI_Finalized(&finished);
    if (finished == 0) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(Tensor& t) override {
    NI_ASSERT(t.device() == Device::Cpu && t.dtype() == DType::F32);
    const WaitScope wait(rank_, "all_reduce");
    MPI_Allreduce(MPI_IN_PLACE, t.data(), count_of(t.numel()), MPI_FLOAT, MPI_SUM, comm_);
  }

  void gather(const Tensor& local, Tensor& out) override {
    NI_ASSERT(local.device() == Device::Cpu && local.dtype() == DType::F32);
    const int n = count_of(local.numel());
    const WaitScope wait(rank_, "gather");
    if (rank_ == 0) {
      NI_ASSERT(local.data() == out.data() && out.numel() == int64_t{n} * size_);
      MPI_Gather(MPI_IN_PLACE, n, MPI_FLOAT, out.data(), n, MPI_FLOAT, 0, comm_);
    } else {
      MPI_Gather(local.data(), n, MPI_FLOAT, nullptr, 0, MPI_FLOAT, 0, comm_);
    }
  }

  void broadcast(std::vector<uint8_t>& bytes) override {
    const WaitScope wait(rank_, "a broadcast from rank 0");
    int64_t n = static_cast<int64_t>(bytes.size());
    MPI_Bcast(&n, 1, MPI_INT64_T, 0, comm_);
    bytes.resize(static_cast<size_t>(n));
    MPI_Bcast(bytes.data(), count_of(n), MPI_BYTE, 0, comm_);
  }

  bool all_true(bool mine) override {
    const WaitScope wait(rank_, "a vote of all ranks");
    int v = mine ? 1 : 0;
    MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_LAND, comm_);
    return v != 0;
  }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator() {
  return std::make_unique<MpiCommunicator>();
}

void abort_job(int code) {
  int started = 0;
  MPI_Initialized(&started);
  if (started != 0) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

}  // namespace nanoinfer
