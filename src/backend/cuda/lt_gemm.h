// cuBLASLt matrix products for the model's one shape of GEMM: y[T, N] = x[T, K] w[N, K]^T,
// row-major, bf16 or fp32 inputs, fp32 accumulation, output in the input type or f32 (logits).
// Plans (descriptors + the heuristic's algorithm) are cached per shape, so a step that is
// captured in a CUDA graph issues no host-side cuBLAS setup; the algorithm is the one picked for
// the row count's bucket (bucket_of) where it runs that count.
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <optional>
#include <tuple>
#include <vector>

#include "tensor/tensor.h"

namespace nanoinfer::cuda {

class LtGemm {
 public:
  LtGemm();
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  void run(DType in_dt, DType out_dt, const void* x, const void* w, void* y, int64_t tokens,
           int64_t k, int64_t n, cudaStream_t s);

  // The row count whose algorithm a product of `tokens` rows runs: 16 up to 16 rows, above that
  // `tokens` rounded up to a quarter octave (20, 24, 28, 32, 40, ..., 896, 1024, 1280, ...).
  static int64_t bucket_of(int64_t tokens);
  // Every bucket from 16 to max_rows, ascending.
  static std::vector<int> buckets_up_to(int max_rows);

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  using Key = std::tuple<int, int, int64_t, int64_t, int64_t>;
  Plan& plan(DType in_dt, DType out_dt, int64_t tokens, int64_t k, int64_t n);
  bool pick(cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
            cublasLtMatrixLayout_t c, cublasLtMatmulAlgo_t& algo);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Plan> plans_;
  std::map<Key, std::optional<cublasLtMatmulAlgo_t>> bucket_algos_;  // none: the heuristic had none
};

}  // namespace nanoinfer::cuda
