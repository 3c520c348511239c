// GPU ranks: sums and the logits gather run over NCCL on the CUDA backend's stream, so they keep
// their place among the kernels (and inside a captured decode graph); the control plane and the
// NCCL unique id travel over MPI.
#include <dlfcn.h>
#include <nccl.h>

#include <cstring>
#include <string>
#include <type_traits>

#include "backend/cuda/cuda_backend.h"
#include "dist/communicator.h"
#include "dist/watchdog.h"
#include "util/error.h"

#define NI_NCCL_CHECK(call)                                            \
  do {                                                                 \
    const ncclResult_t ni_r_ = (call);                                 \
    if (ni_r_ != ncclSuccess)                                          \
      ::nanoinfer::fail(std::string("NCCL error in ") + #call + ": " + \
                        ::nanoinfer::nccl().GetErrorString(ni_r_));    \
  } while (0)

namespace nanoinfer {
namespace {

// NCCL's entry points, opened (dlopen, its symbols kept local) the first time GPU ranks need
// them rather than linked: a linked libnccl.so.2 loads with the library, and a process that then
// loads a newer NCCL of the same file name (torch's) gets ours, which lacks its symbols
// ("import nanoinfer; import torch" failed on "undefined symbol: ncclCommResume").
struct NcclApi {
  decltype(&ncclGetErrorString) GetErrorString;
  decltype(&ncclGetVersion) GetVersion;
  decltype(&ncclGetUniqueId) GetUniqueId;
  decltype(&ncclCommInitRank) CommInitRank;
  decltype(&ncclCommDestroy) CommDestroy;
  decltype(&ncclAllReduce) AllReduce;
  decltype(&ncclGroupStart) GroupStart;
  decltype(&ncclGroupEnd) GroupEnd;
  decltype(&ncclSend) Send;
  decltype(&ncclRecv) Recv;
};

const NcclApi& nccl() {
  static const NcclApi api = [] {
    void* lib = nullptr;
    std::string why;
    for (const char* name : {NI_NCCL_PATH, "libnccl.so.2"}) {  // (the build's, else the system's)
      lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (lib != nullptr) break;
      why += std::string(why.empty() ? "" : "; ") + dlerror();
    }
    if (lib == nullptr) fail("tensor parallelism on GPUs needs NCCL, which did not load: " + why);
    NcclApi a{};
    const auto bind = [lib](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      if (fn == nullptr) fail(std::string("the NCCL library lacks ") + name);
    };
    bind(a.GetErrorString, "ncclGetErrorString");
    bind(a.GetVersion, "ncclGetVersion");
    bind(a.GetUniqueId, "ncclGetUniqueId");
    bind(a.CommInitRank, "ncclCommInitRank");
    bind(a.CommDestroy, "ncclCommDestroy");
    bind(a.AllReduce, "ncclAllReduce");
    bind(a.GroupStart, "ncclGroupStart");
    bind(a.GroupEnd, "ncclGroupEnd");
    bind(a.Send, "ncclSend");
    bind(a.Recv, "ncclRecv");
    return a;
  }();
  return api;
}

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32:
      return ncclFloat32;
    case DType::BF16:
      return ncclBfloat16;
    case DType::F16:
      return ncclFloat16;
    default:
      fail(std::string("NCCL cannot sum ") + dtype_name(t) + " tensors");
  }
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(cuda::CudaBackend& backend, std::unique_ptr<Communicator> control)
      : control_(std::move(control)), stream_(backend.stream()) {
    ncclUniqueId id{};
    if (control_->rank() == 0) NI_NCCL_CHECK(nccl().GetUniqueId(&id));
    std::vector<uint8_t> bytes(sizeof(id));
    std::memcpy(bytes.data(), &id, sizeof(id));
    control_->broadcast(bytes);
    std::memcpy(&id, bytes.data(), sizeof(id));
    const WaitScope wait(control_->rank(), "NCCL set-up");
    NI_NCCL_CHECK(nccl().CommInitRank(&comm_, control_->size(), id, control_->rank()));
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;
  ~NcclCommunicator() override { nccl().CommDestroy(comm_); }

  int rank() const override { return control_->rank(); }
  int size() const override { return control_->size(); }

  void all_reduce_sum(Tensor& t) override {
    NI_NCCL_CHECK(nccl().AllReduce(t.data(), t.data(), static_cast<size_t>(t.numel()),
                                   nccl_type(t.dtype()), ncclSum, comm_, stream_));
  }

  void gather(const Tensor& local, Tensor& out) override {
    NI_ASSERT(local.dtype() == DType::F32);
    const auto n = static_cast<size_t>(local.numel());
    NI_NCCL_CHECK(nccl().GroupStart());
    if (rank() == 0) {
      NI_ASSERT(local.data() == out.data() && static_cast<size_t>(out.numel()) == n * size());
      for (int r = 1; r < size(); ++r)
        NI_NCCL_CHECK(nccl().Recv(static_cast<float*>(out.data()) + n * r, n, ncclFloat32, r, comm_,
                                  stream_));
    } else {
      NI_NCCL_CHECK(nccl().Send(local.data(), n, ncclFloat32, 0, comm_, stream_));
    }
    NI_NCCL_CHECK(nccl().GroupEnd());
  }

  void broadcast(std::vector<uint8_t>& bytes) override { control_->broadcast(bytes); }
  bool all_true(bool mine) override { return control_->all_true(mine); }

 private:
  std::unique_ptr<Communicator> control_;
  cudaStream_t stream_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::string nccl_version() {
  int v = 0;
  NI_NCCL_CHECK(nccl().GetVersion(&v));  // (2.9 on: major * 10000 + minor * 100 + patch)
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100);
}

std::unique_ptr<Communicator> make_nccl_communicator(Backend& cuda_backend) {
  auto* be = dynamic_cast<cuda::CudaBackend*>(&cuda_backend);
  if (be == nullptr) fail("NCCL needs the CUDA backend");
  return std::make_unique<NcclCommunicator>(*be, make_mpi_communicator());
}

}  // namespace nanoinfer
