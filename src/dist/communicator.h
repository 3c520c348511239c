// The ranks of a tensor-parallel group and the collectives the sharded model needs. Two planes:
// the data plane works on the backend's tensors inside a forward (sums of partial products,
// the logits gathered to rank 0); the control plane carries rank 0's decisions (batches, cache
// commands) to the other ranks as bytes on the host. One rank alone needs neither: its
// implementation does nothing, so the model code is the same for one rank and for many.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace nanoinfer {

class Backend;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Data plane, on the backend's device. t becomes the element-wise sum of every rank's t.
  virtual void all_reduce_sum(Tensor& t) = 0;
  // Rank 0 receives every rank's `local` (f32, n elements each) stacked in `out`: block r holds
  // rank r's. Rank 0's own `local` must already be block 0 of `out`; other ranks pass no out.
  virtual void gather(const Tensor& local, Tensor& out) = 0;

  // Control plane, on the host. Every rank ends with rank 0's bytes.
  virtual void broadcast(std::vector<uint8_t>& bytes) = 0;
  // True on every rank when `mine` is true on every rank.
  virtual bool all_true(bool mine) = 0;
};

// A group of one: every collective is a no-op.
Communicator& single_rank();

// The world size and rank the MPI launcher gave this process (1 and 0 when not started by
// mpirun / mpiexec), known before MPI starts.
int launched_world_size();
int launched_rank();

// CPU ranks of the MPI job this process belongs to: both planes over MPI, on host tensors.
// Throws Error when the build has no MPI.
std::unique_ptr<Communicator> make_mpi_communicator();

// GPU ranks: the data plane over NCCL on the CUDA backend's stream, the control plane over MPI
// (which also hands NCCL its unique id). Throws Error when the build has no NCCL or MPI.
std::unique_ptr<Communicator> make_nccl_communicator(Backend& cuda_backend);
// The NCCL library's version ("2.27.3"), loading it first where it is not yet. NCCL is opened
// only when GPU ranks need it (dlopen), so that a process that never does keeps it out: a
// Python session that also imports torch, whose newer NCCL has the same file name. Throws Error
// when the build has no NCCL or it cannot be loaded.
std::string nccl_version();

// Ends this process after an error in a job of several ranks: the MPI launcher then ends the
// others (an exit through MPI_Finalize could wait for ranks that wait for this one).
[[noreturn]] void abort_job(int code);

// The GPU this rank should use: its rank among the ranks on the same host (0 without MPI).
int local_rank();

}  // namespace nanoinfer
