// Every CUDA runtime and cuBLAS call goes through these checks: a failure throws nanoinfer::Error
// naming the call, where it was made and the library's own message, so a broken launch or an
// out-of-memory never passes silently.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string>

#include "util/error.h"

namespace nanoinfer::cuda {

[[noreturn]] inline void cuda_fail(cudaError_t e, const char* what, const char* file, int line) {
  fail(std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) +
       "): " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

[[noreturn]] inline void cublas_fail(cublasStatus_t s, const char* what, const char* file,
                                     int line) {
  fail(std::string("cuBLAS error in ") + what + " (" + file + ":" + std::to_string(line) +
       "): status " + std::to_string(static_cast<int>(s)));
}

}  // namespace nanoinfer::cuda

#define NI_CUDA_CHECK(call)                                                                       \
  do {                                                                                            \
    const cudaError_t ni_err_ = (call);                                                           \
    if (ni_err_ != cudaSuccess) ::nanoinfer::cuda::cuda_fail(ni_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, not at the next sync.
#define NI_CUDA_LAUNCH_CHECK(name)                                                               \
  do {                                                                                           \
    const cudaError_t ni_err_ = cudaGetLastError();                                              \
    if (ni_err_ != cudaSuccess) ::nanoinfer::cuda::cuda_fail(ni_err_, name, __FILE__, __LINE__); \
  } while (0)

#define NI_CUBLAS_CHECK(call)                                            \
  do {                                                                   \
    const cublasStatus_t ni_st_ = (call);                                \
    if (ni_st_ != CUBLAS_STATUS_SUCCESS)                                 \
      ::nanoinfer::cuda::cublas_fail(ni_st_, #call, __FILE__, __LINE__); \
  } while (0)
