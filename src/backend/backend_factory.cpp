// make_cuda_backend for builds without the CUDA backend (the CUDA build defines its own).
#include "backend/backend.h"

#ifndef NANOINFER_HAVE_CUDA
namespace nanoinfer {
std::unique_ptr<Backend> make_cuda_backend(DType /*compute_dtype*/, int /*device*/,
                                           bool /*keep_blocks*/) {
  return nullptr;
}
}  // namespace nanoinfer
#endif
