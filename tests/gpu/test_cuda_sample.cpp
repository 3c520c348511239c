// The device sampler against a host reference of the same filters (HF order: temperature,
// top-k, top-p on the top-k survivors, min-p): every draw lies in the kept set, the draws follow
// the renormalised probabilities, greedy rows give the argmax, and a (seed, step) pair is
// reproducible.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "gpu_test_util.h"
#ifdef NANOINFER_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace nanoinfer {
namespace {

#ifdef NANOINFER_HAVE_CUDA
using cuda::RowSampling;

// Kept token -> renormalised probability.
std::vector<double> reference(const std::vector<float>& logits, const RowSampling& p) {
  const int V = static_cast<int>(logits.size());
  std::vector<double> x(V), prob(V);
  for (int i = 0; i < V; ++i) x[i] = double{logits[i]} / p.temperature;
  const double mx = *std::max_element(x.begin(), x.end());
  for (int i = 0; i < V; ++i) prob[i] = std::exp(x[i] - mx);
  std::vector<int> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return x[a] > x[b]; });
  int keep = V;
  if (p.top_k > 0) keep = std::min(keep, p.top_k);
  if (p.top_p < 1.0F) {
    double total = 0, acc = 0;
    for (int r = 0; r < keep; ++r) total += prob[order[r]];
    int n = 0;
    while (n < keep && acc < p.top_p * total) acc += prob[order[n++]];
    keep = n;
  }
  std::vector<double> out(V, 0.0);
  double z = 0;
  for (int r = 0; r < keep; ++r) {
    const int i = order[r];
    if (p.min_p > 0 && prob[i] < p.min_p) continue;  // prob[max] = 1
    out[i] = prob[i];
    z += prob[i];
  }
  for (double& v : out) v /= z;
  return out;
}

class CudaSample : public ::testing::TestWithParam<RowSampling> {};

TEST_P(CudaSample, DrawsFollowTheFilteredDistribution) {
  NI_REQUIRE_CUDA(gpu, DType::F32);
  auto& be = dynamic_cast<cuda::CudaBackend&>(*gpu);
  const int V = 777, R = 8192;
  std::mt19937 rng(std::random_device{}());
  Tensor one = test::random_host({1, V}, DType::F32, rng, 2.0F);
  const std::vector<float> row(one.as<float>(), one.as<float>() + V);
  Tensor host = Tensor::zeros(DType::F32, {R, V});
  for (int r = 0; r < R; ++r) std::copy(row.begin(), row.end(), host.as<float>() + int64_t{r} * V);
  std::vector<RowSampling> params(R, GetParam());
  for (int r = 0; r < R; ++r) params[r].seed = 1000 + r;
  const Tensor logits = gpu->upload(host, DType::F32);
  Tensor ids = gpu->alloc({R}, DType::I32);
  std::vector<int32_t> got(R), again(R);
  be.sample_rows(logits, params, 5, ids);
  ASSERT_EQ(cudaMemcpy(got.data(), ids.data(), R * sizeof(int32_t), cudaMemcpyDeviceToHost),
            cudaSuccess);
  be.sample_rows(logits, params, 5, ids);
  ASSERT_EQ(cudaMemcpy(again.data(), ids.data(), R * sizeof(int32_t), cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(got, again);

  if (GetParam().temperature <= 0) {
    const int want = static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
    for (int r = 0; r < R; ++r) ASSERT_EQ(got[r], want);
    return;
  }
  const std::vector<double> q = reference(row, GetParam());
  std::vector<int> count(V, 0);
  for (int r = 0; r < R; ++r) {
    ASSERT_GE(got[r], 0);
    ASSERT_LT(got[r], V);
    ASSERT_GT(q[got[r]], 0.0) << "token " << got[r] << " is outside the kept set";
    ++count[got[r]];
  }
  for (int i = 0; i < V; ++i) {
    const double e = q[i] * R;
    EXPECT_LE(std::abs(count[i] - e), 5 * std::sqrt(e) + 3) << "token " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Params, CudaSample,
    ::testing::Values(RowSampling{0.0F, 0, 1.0F, 0.0F, 0}, RowSampling{0.7F, 0, 1.0F, 0.0F, 0},
                      RowSampling{1.0F, 20, 1.0F, 0.0F, 0}, RowSampling{1.0F, 0, 0.9F, 0.0F, 0},
                      RowSampling{1.3F, 0, 1.0F, 0.05F, 0}, RowSampling{0.8F, 50, 0.8F, 0.02F, 0}));
#endif

}  // namespace
}  // namespace nanoinfer
