// The device sampler against a host reference of the same filters (HF order: temperature,
// top-k, top-p on the top-k survivors, min-p): every draw lies in the kept set, the draws follow
// the renormalised probabilities, greedy rows give the argmax, and a (seed, counter) pair is
// reproducible. Then against the host sampler itself: the same token for the same logits, seed
// and draw index.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <span>

#include "gpu_test_util.h"
#include "sampling/sampler.h"
#ifdef NANOINFER_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace nanoinfer {
namespace {

#ifdef NANOINFER_HAVE_CUDA

// Kept token -> renormalised probability.
std::vector<double> reference(const std::vector<float>& logits, const RowPick& p) {
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

class CudaSample : public ::testing::TestWithParam<RowPick> {};

TEST_P(CudaSample, DrawsFollowTheFilteredDistribution) {
  NI_REQUIRE_CUDA(gpu, DType::F32);
  auto& be = dynamic_cast<cuda::CudaBackend&>(*gpu);
  const int V = 777, R = 8192;
  std::mt19937 rng(std::random_device{}());
  Tensor one = test::random_host({1, V}, DType::F32, rng, 2.0F);
  const std::vector<float> row(one.as<float>(), one.as<float>() + V);
  Tensor host = Tensor::zeros(DType::F32, {R, V});
  for (int r = 0; r < R; ++r) std::copy(row.begin(), row.end(), host.as<float>() + int64_t{r} * V);
  std::vector<RowPick> params(R, GetParam());
  for (int r = 0; r < R; ++r) {
    params[r].seed = 1000 + r / 4;
    params[r].counter = r % 4;
  }
  const Tensor logits = gpu->upload(host, DType::F32);
  Tensor ids = gpu->alloc({R}, DType::I32);
  std::vector<int32_t> got(R), again(R);
  be.sample_rows(logits, params, ids);
  gpu->synchronize();
  ASSERT_EQ(cudaMemcpy(got.data(), ids.data(), R * sizeof(int32_t), cudaMemcpyDeviceToHost),
            cudaSuccess);
  be.sample_rows(logits, params, ids);
  gpu->synchronize();
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
    ::testing::Values(RowPick{0.0F, 0, 1.0F, 0.0F}, RowPick{0.7F, 0, 1.0F, 0.0F},
                      RowPick{1.0F, 20, 1.0F, 0.0F}, RowPick{1.0F, 0, 0.9F, 0.0F},
                      RowPick{1.3F, 0, 1.0F, 0.05F}, RowPick{0.8F, 50, 0.8F, 0.02F}));

// The engine's path (Backend::pick_to_host) against sampling::Sampler on the same logits: every
// row's token equal, for each filter alone and all together, greedy and sampled rows mixed in
// one call, different seeds and draw indices. Rows: a small vocabulary; Llama-3's with logits
// spread wide (many tokens near the maximum: the kernel's whole-row path), the same rounded to
// bf16 (ties at the top-p boundary, cut by id as the host's order does), and peaked as a trained
// model's (a few tokens far above the rest: the candidates' path).
TEST(CudaSampleHost, PicksTheHostSamplersToken) {
  NI_REQUIRE_CUDA(gpu, DType::F32);
  std::mt19937 rng(std::random_device{}());
  std::vector<SamplingParams> kinds(7);
  kinds[1].temperature = 0.7F;
  kinds[2].temperature = 1.0F;
  kinds[2].top_k = 40;
  kinds[3].temperature = 1.0F;
  kinds[3].top_p = 0.9F;
  kinds[4].temperature = 1.3F;
  kinds[4].min_p = 0.05F;
  kinds[5].temperature = 0.8F;
  kinds[5].top_k = 50;
  kinds[5].top_p = 0.8F;
  kinds[5].min_p = 0.02F;
  kinds[6].temperature = 1.0F;  // plain multinomial
  struct Rows {
    int vocab;
    DType values;
    bool peaked;
  };
  int draws = 0;
  for (const Rows& c : {Rows{777, DType::F32, false}, Rows{128256, DType::F32, false},
                        Rows{128256, DType::BF16, false}, Rows{128256, DType::F32, true}}) {
    const int V = c.vocab, R = V > 1000 ? 56 : 448;  // 8 (or 64) rows of each kind
    Tensor logits = test::random_host({R, V}, c.values, rng, c.peaked ? 1.0F : 3.0F);
    if (c.peaked)
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < 30; ++j) logits.as<float>()[int64_t{r} * V + rng() % V] += 15.0F;
    std::vector<SamplingParams> params(R);
    std::vector<std::vector<int32_t>> generated(R);
    std::vector<sampling::RowInput> rows(R);
    std::vector<RowPick> picks;
    for (int r = 0; r < R; ++r) {
      params[r] = kinds[r % kinds.size()];
      params[r].seed = rng();
      generated[r].assign(r % 5, 1);  // the draw index
      rows[r] = {&params[r], {}, generated[r]};
      const std::optional<RowPick> p = sampling::backend_pick(rows[r]);
      ASSERT_TRUE(p.has_value());
      picks.push_back(*p);
    }
    std::vector<int32_t> got;
    ASSERT_TRUE(gpu->pick_to_host(gpu->upload(logits, DType::F32), picks, got));
    // The host sampler processes its logits in place: it gets a copy.
    std::vector<float> copy(logits.as<float>(), logits.as<float>() + logits.numel());
    const std::vector<int32_t> want =
        sampling::Sampler().sample(sampling::LogitsView(std::span<float>(copy), R, V), rows);
    for (int r = 0; r < R; ++r)
      EXPECT_EQ(got[r], want[r]) << "vocabulary " << V << (c.peaked ? " peaked" : "")
                                 << (c.values == DType::BF16 ? " bf16" : "") << ", row " << r
                                 << " (kind " << r % kinds.size() << ")";
    draws += R;
  }
  std::printf("device picks compared with the host sampler's: %d rows\n", draws);
}

// Rows with one finite logit, and rows without any (every token suppressed, say): the host keeps
// the one token, or falls back to index 0, and the device picks the same, for every filter.
TEST(CudaSampleHost, RowsWithFewOrNoFiniteLogits) {
  NI_REQUIRE_CUDA(gpu, DType::F32);
  const int V = 777, kinds = 6, R = 2 * kinds;
  Tensor logits = Tensor::zeros(DType::F32, {R, V});
  std::fill_n(logits.as<float>(), R * V, -INFINITY);
  for (int r = 0; r < kinds; ++r) logits.as<float>()[int64_t{r} * V + 100 + 50 * r] = 1.5F;
  std::vector<SamplingParams> params(R);
  const std::vector<int32_t> none;
  std::vector<sampling::RowInput> rows(R);
  std::vector<RowPick> picks;
  for (int r = 0; r < R; ++r) {
    params[r].temperature = 0.8F;
    params[r].seed = 11 + r;
    if (r % kinds == 1) params[r].top_k = 40;
    if (r % kinds == 2) params[r].top_p = 0.9F;
    if (r % kinds == 3) params[r].min_p = 0.1F;
    if (r % kinds == 4) params[r].top_k = 40, params[r].top_p = 0.5F, params[r].min_p = 0.1F;
    if (r % kinds == 5) params[r].temperature = 0.0F;  // greedy
    rows[r] = {&params[r], none, none};
    picks.push_back(*sampling::backend_pick(rows[r]));
  }
  std::vector<int32_t> got;
  ASSERT_TRUE(gpu->pick_to_host(gpu->upload(logits, DType::F32), picks, got));
  std::vector<float> copy(logits.as<float>(), logits.as<float>() + logits.numel());
  const std::vector<int32_t> want =
      sampling::Sampler().sample(sampling::LogitsView(std::span<float>(copy), R, V), rows);
  for (int r = 0; r < R; ++r) {
    EXPECT_EQ(want[r], r < kinds ? 100 + 50 * r : 0) << "row " << r;
    EXPECT_EQ(got[r], want[r]) << "row " << r;
  }
}
#endif

}  // namespace
}  // namespace nanoinfer
