#include "backend/cuda/lt_gemm.h"

#include <bit>
#include <string>

#include "backend/cuda/cuda_check.h"

namespace nanoinfer::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32:
      return CUDA_R_32F;
    case DType::BF16:
      return CUDA_R_16BF;
    case DType::F16:
      return CUDA_R_16F;
    default:
      fail(std::string("matmul: no cuBLAS type for ") + dtype_name(t));
  }
}

}  // namespace

LtGemm::LtGemm() : workspace_bytes_(kWorkspaceBytes) {
  NI_CUBLAS_CHECK(cublasLtCreate(&handle_));
  NI_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
}

LtGemm::~LtGemm() {
  for (auto& [key, p] : plans_) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.op);
  }
  cudaFree(workspace_);
  cublasLtDestroy(handle_);
}

// Column-major view: y^T [N, T] = w [K, N]^T . x^T [K, T], so A = w (transposed), B = x.
LtGemm::Plan& LtGemm::plan(DType in_dt, DType out_dt, int64_t tokens, int64_t k, int64_t n) {
  const Key key{static_cast<int>(in_dt), static_cast<int>(out_dt), tokens, k, n};
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  Plan p;
  // fp32 mode is the parity mode: plain fp32 arithmetic, no TF32.
  NI_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  NI_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  NI_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  NI_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, cuda_type(in_dt), k, n, k));
  NI_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, cuda_type(out_dt), n, tokens, n));
  // The heuristic's pick for the bucket of `tokens`, if it runs this size exactly as asked;
  // otherwise the pick for the size itself. Per-size picks cost every new prompt length 5-13 ms
  // on its first prefill (H200, 8B shapes: 0.1-0.25 ms a heuristic query, 2-4 ms to load a
  // kernel at its first launch, and 55-93 distinct picks over 1..1,024 rows per weight shape).
  const int64_t bucket = bucket_of(tokens);
  auto [b, fresh] = bucket_algos_.try_emplace(
      Key{static_cast<int>(in_dt), static_cast<int>(out_dt), bucket, k, n});
  if (fresh) {
    cublasLtMatrixLayout_t bucket_b = nullptr, bucket_c = nullptr;
    NI_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&bucket_b, cuda_type(in_dt), k, bucket, k));
    NI_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&bucket_c, cuda_type(out_dt), n, bucket, n));
    cublasLtMatmulAlgo_t algo{};
    if (pick(p.op, p.a, bucket_b, bucket_c, algo)) b->second = algo;
    cublasLtMatrixLayoutDestroy(bucket_b);
    cublasLtMatrixLayoutDestroy(bucket_c);
  }
  NI_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, cuda_type(in_dt), k, tokens, k));
  cublasLtMatmulHeuristicResult_t check{};
  const bool fits = b->second.has_value() &&
                    cublasLtMatmulAlgoCheck(handle_, p.op, p.a, p.b, p.c, p.c, &*b->second,
                                            &check) == CUBLAS_STATUS_SUCCESS &&
                    check.workspaceSize <= workspace_bytes_;
  if (fits)
    p.algo = *b->second;
  else if (!pick(p.op, p.a, p.b, p.c, p.algo))
    fail("cuBLASLt has no algorithm for x[" + std::to_string(tokens) + ", " + std::to_string(k) +
         "] w[" + std::to_string(n) + ", " + std::to_string(k) + "]^T (" + dtype_name(in_dt) +
         " -> " + dtype_name(out_dt) + ")");
  return plans_.emplace(key, p).first->second;
}

int64_t LtGemm::bucket_of(int64_t tokens) {
  if (tokens <= 16) return 16;
  const auto step = static_cast<int64_t>(std::bit_floor(static_cast<uint64_t>(tokens - 1)) / 4);
  return (tokens + step - 1) / step * step;
}

std::vector<int> LtGemm::buckets_up_to(int max_rows) {
  std::vector<int> out;
  for (int64_t t = 16; t <= max_rows; t = bucket_of(t + 1)) out.push_back(static_cast<int>(t));
  return out;
}

// The heuristic's first algorithm for these layouts within the workspace; false if it has none.
bool LtGemm::pick(cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                  cublasLtMatrixLayout_t c, cublasLtMatmulAlgo_t& algo) {
  cublasLtMatmulPreference_t pref = nullptr;
  NI_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  NI_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_, sizeof(workspace_bytes_)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle_, op, a, b, c, c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) return false;
  algo = result.algo;
  return true;
}

void LtGemm::run(DType in_dt, DType out_dt, const void* x, const void* w, void* y, int64_t tokens,
                 int64_t k, int64_t n, cudaStream_t s) {
  if (tokens == 0) return;
  Plan& p = plan(in_dt, out_dt, tokens, k, n);
  const float alpha = 1.0F, beta = 0.0F;
  NI_CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c,
                                 &p.algo, workspace_, workspace_bytes_, s));
}

}  // namespace nanoinfer::cuda
