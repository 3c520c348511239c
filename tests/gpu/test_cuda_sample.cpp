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
#include <utility>

#include "gpu_test_util.h"
#include "sampling/backend_pick.h"
#include "sampling/beam_search.h"
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
// bf16 (ties at the top-p boundary, cut by id as the host's order does), peaked as a trained
// model's (a few tokens far above the rest, the k-th largest in the bulk below them: the
// candidates' path), and with 6,000 tokens tied at the maximum (too many for the candidates).
// Each batch is also picked again with its first seven rows alone (wider clusters of blocks).
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
    int plateau;  // tokens tied at the maximum
  };
  int draws = 0;
  for (const Rows& c : {Rows{777, DType::F32, false, 0}, Rows{128256, DType::F32, false, 0},
                        Rows{128256, DType::BF16, false, 0}, Rows{128256, DType::F32, true, 0},
                        Rows{128256, DType::F32, false, 6000}}) {
    const int V = c.vocab, R = V > 1000 ? 56 : 448;  // 8 (or 64) rows of each kind
    Tensor logits = test::random_host({R, V}, c.values, rng, c.peaked ? 1.0F : 3.0F);
    if (c.peaked)
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < 30; ++j) logits.as<float>()[int64_t{r} * V + rng() % V] += 15.0F;
    // More ties at the top than the candidates hold: the whole row decides, cutting by id.
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < c.plateau; ++j) logits.as<float>()[int64_t{r} * V + rng() % V] = 20.0F;
    std::vector<SamplingParams> params(R);
    std::vector<std::vector<int32_t>> generated(R);
    std::vector<sampling::RowInput> rows(R);
    std::vector<RowPick> picks;
    std::vector<LogitEdit> edits;
    for (int r = 0; r < R; ++r) {
      params[r] = kinds[r % kinds.size()];
      params[r].seed = rng();
      generated[r].assign(r % 5, 1);  // the draw index
      rows[r] = {&params[r], {}, generated[r]};
      const std::optional<RowPick> p = sampling::backend_pick(rows[r], r, V, edits);
      ASSERT_TRUE(p.has_value());
      picks.push_back(*p);
    }
    ASSERT_TRUE(edits.empty());
    std::vector<int32_t> got;
    ASSERT_TRUE(gpu->pick_to_host(gpu->upload(logits, DType::F32), picks, edits, got));
    // The host sampler processes its logits in place: it gets a copy.
    std::vector<float> copy(logits.as<float>(), logits.as<float>() + logits.numel());
    const std::vector<int32_t> want =
        sampling::Sampler().sample(sampling::LogitsView(std::span<float>(copy), R, V), rows);
    for (int r = 0; r < R; ++r)
      EXPECT_EQ(got[r], want[r]) << "vocabulary " << V << (c.peaked ? " peaked" : "")
                                 << (c.plateau > 0 ? " plateau" : "")
                                 << (c.values == DType::BF16 ? " bf16" : "") << ", row " << r
                                 << " (kind " << r % kinds.size() << ")";
    // The first seven rows alone: a small batch spreads each row over more blocks (a wider
    // cluster, smaller slices); the same tokens.
    std::vector<int32_t> few;
    ASSERT_TRUE(gpu->pick_to_host(gpu->upload(logits.rows(0, 7), DType::F32),
                                  std::span<const RowPick>(picks).first(7), edits, few));
    for (int r = 0; r < 7; ++r) EXPECT_EQ(few[r], want[r]) << "vocabulary " << V << ", row " << r;
    draws += R + 7;
  }
  std::printf("device picks compared with the host sampler's: %d rows\n", draws);
}

// Rows with penalties, suppressed tokens and logit biases, greedy and sampled, with and without
// the filters: the edits (LogitEdit, one per touched token) leave the device's logits equal bit
// for bit to the host's after its history processors, and the device picks the host sampler's
// token. Histories repeat tokens (the repetition penalty counts each once, the frequency penalty
// every time) and hold the row's top tokens, on both sides of zero, so the penalties move the
// picks.
TEST(CudaSampleHost, PenaltiesAndSuppressedTokensAsTheHost) {
  NI_REQUIRE_CUDA(gpu, DType::F32);
  std::mt19937 rng(std::random_device{}());
  std::vector<SamplingParams> kinds(8);
  kinds[0].repetition_penalty = 1.3F;  // greedy
  kinds[1].repetition_penalty = 0.7F;  // < 1 favours the history
  kinds[1].temperature = 0.9F;
  kinds[2].presence_penalty = 0.8F;
  kinds[2].frequency_penalty = 0.35F;
  kinds[3].presence_penalty = -0.4F;
  kinds[3].temperature = 0.7F;
  kinds[3].top_p = 0.9F;
  kinds[4].frequency_penalty = 1.5F;
  kinds[4].temperature = 1.0F;
  kinds[4].top_k = 20;
  kinds[5].temperature = 0.8F;
  kinds[5].min_p = 0.05F;
  kinds[6].repetition_penalty = 1.2F;
  kinds[6].presence_penalty = 0.5F;
  kinds[6].frequency_penalty = 0.25F;
  kinds[6].temperature = 0.6F;
  kinds[6].top_k = 50;
  kinds[6].top_p = 0.9F;
  kinds[6].min_p = 0.02F;
  kinds[7].repetition_penalty = 1.1F;  // greedy, every processor
  kinds[7].frequency_penalty = 0.5F;
  int moved = 0, total = 0;
  for (const int V : {777, 128256}) {
    const int R = 8 * static_cast<int>(kinds.size());
    Tensor logits = test::random_host({R, V}, DType::F32, rng, 2.0F);
    std::vector<SamplingParams> params(R), greedy(R);
    std::vector<std::vector<int32_t>> prompt(R), generated(R);
    std::vector<sampling::RowInput> rows(R), history(R);
    std::vector<RowPick> picks;
    std::vector<LogitEdit> edits;
    for (int r = 0; r < R; ++r) {
      params[r] = kinds[r % kinds.size()];
      params[r].seed = rng();
      const float* row = logits.as<float>() + int64_t{r} * V;
      std::vector<int32_t> order(V);
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + 8, order.end(),
                        [row](int32_t a, int32_t b) { return row[a] > row[b]; });
      for (int i = 0; i < 40; ++i) {  // tokens seen: the top ones, repeated, and any others
        const int32_t t = i % 3 == 0 ? static_cast<int32_t>(rng() % V) : order[i % 8];
        (i % 2 == 0 ? prompt[r] : generated[r]).push_back(t);
      }
      if (r % 3 == 0) params[r].suppress_tokens = {order[0], order[0], order[3], V - 1};
      if (r % 4 == 1) {  // (a token is biased once: V - 2 may be one of the top ones)
        params[r].logit_bias = {{order[2], 1.5F}, {order[0], -2.75F}};
        if (V - 2 != order[2] && V - 2 != order[0]) params[r].logit_bias.emplace_back(V - 2, 9.0F);
      }
      params[r].validate();  // (what a request's parameters pass before they reach a pick)
      rows[r] = {&params[r], prompt[r], generated[r]};
      greedy[r] = params[r];
      greedy[r].temperature = 0.0F;  // the history processors only
      history[r] = {&greedy[r], prompt[r], generated[r]};
      const std::optional<RowPick> p = sampling::backend_pick(rows[r], r, V, edits);
      ASSERT_TRUE(p.has_value());
      picks.push_back(*p);
    }
    Tensor dev = gpu->upload(logits, DType::F32);
    std::vector<int32_t> got;
    ASSERT_TRUE(gpu->pick_to_host(dev, picks, edits, got));
    std::vector<float> edited;
    gpu->to_host_f32(dev, edited);
    std::vector<float> want_logits(logits.as<float>(), logits.as<float>() + logits.numel());
    sampling::Sampler().process(sampling::LogitsView(std::span<float>(want_logits), R, V), history);
    for (int64_t i = 0; i < logits.numel(); ++i)
      ASSERT_EQ(edited[i], want_logits[i])
          << "vocabulary " << V << ", row " << i / V << ", token " << i % V;
    std::vector<float> copy(logits.as<float>(), logits.as<float>() + logits.numel());
    const std::vector<int32_t> want =
        sampling::Sampler().sample(sampling::LogitsView(std::span<float>(copy), R, V), rows);
    for (int r = 0; r < R; ++r)
      EXPECT_EQ(got[r], want[r]) << "vocabulary " << V << ", row " << r << " (kind "
                                 << r % kinds.size() << ")";
    // The same rows without their penalties (and seeds kept): the penalties moved picks.
    std::vector<float> unedited(logits.as<float>(), logits.as<float>() + logits.numel());
    for (int r = 0; r < R; ++r) {
      SamplingParams q = params[r];
      q.repetition_penalty = 1.0F;
      q.presence_penalty = q.frequency_penalty = 0.0F;
      q.suppress_tokens.clear();
      q.logit_bias.clear();
      const std::vector<float> one(unedited.begin() + int64_t{r} * V,
                                   unedited.begin() + int64_t{r + 1} * V);
      std::vector<float> work = one;
      const sampling::RowInput in{&q, prompt[r], generated[r]};
      const int32_t without =
          sampling::Sampler().sample(sampling::LogitsView(std::span<float>(work), 1, V),
                                     std::span<const sampling::RowInput>(&in, 1))[0];
      moved += without != want[r] ? 1 : 0;
    }
    total += R;
  }
  std::printf(
      "penalised rows compared with the host sampler's: %d, picks the penalties moved: %d\n", total,
      moved);
  EXPECT_GT(moved, total / 4);
}

// Beam rows summarised on the device (Backend::beam_rows_to_host) as the host summarises them
// (sampling::summarise_row): the same maximum and the same best tokens in the same order (ties
// to the lower id, also when they run past n), and the log-sum-exp within float rounding (the
// exps are added in another order). Rows: spread, rounded to bf16 (ties among the best), a
// plateau of 100 equal maxima (more than n), and every logit equal. 5, 40 and 80 rows: a row
// over a cluster of 8, of 2 and one block (cuda::row_blocks); 13 logits leave blocks of a
// cluster without any.
TEST(CudaBeamRows, AsTheHostSummarisesThem) {
  NI_REQUIRE_CUDA(gpu, DType::F32);
  std::mt19937 rng(std::random_device{}());
  int exact_lse = 0, rows_seen = 0;
  for (const int V : {13, 777, 128256}) {
    for (const auto& [n, R] :
         {std::pair{8, 5}, std::pair{24, 5}, std::pair{8, 40}, std::pair{8, 80}}) {
      Tensor logits = test::random_host({R, V}, DType::F32, rng, 3.0F);
      float* x = logits.as<float>();
      for (int i = 0; i < V; ++i) x[V + i] = test::round_as(DType::BF16, x[V + i]);
      for (int j = 0; j < 100; ++j) x[2 * V + rng() % V] = 30.0F;
      std::fill_n(x + 3 * V, V, -1.5F);
      std::vector<BeamRow> got;
      ASSERT_TRUE(gpu->beam_rows_to_host(gpu->upload(logits, DType::F32), n, got));
      ASSERT_EQ(got.size(), static_cast<size_t>(R));
      for (int r = 0; r < R; ++r) {
        const BeamRow want =
            sampling::summarise_row(std::span<const float>(x + int64_t{r} * V, V), n);
        EXPECT_EQ(got[r].max, want.max) << "V " << V << " row " << r;
        EXPECT_NEAR(got[r].lse, want.lse, 4e-7 * std::max(1.0F, std::fabs(want.lse)))
            << "V " << V << " row " << r;
        exact_lse += got[r].lse == want.lse ? 1 : 0;
        ++rows_seen;
        ASSERT_EQ(got[r].best.size(), want.best.size()) << "V " << V << " row " << r;
        for (size_t j = 0; j < want.best.size(); ++j) {
          EXPECT_EQ(got[r].best[j].id, want.best[j].id) << "V " << V << " row " << r << " #" << j;
          EXPECT_EQ(got[r].best[j].logit, want.best[j].logit) << "V " << V << " row " << r;
        }
      }
    }
  }
  std::printf("beam rows compared with the host's: %d, log-sum-exp bit-equal in %d\n", rows_seen,
              exact_lse);
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
  std::vector<LogitEdit> edits;
  for (int r = 0; r < R; ++r) {
    params[r].temperature = 0.8F;
    params[r].seed = 11 + r;
    if (r % kinds == 1) params[r].top_k = 40;
    if (r % kinds == 2) params[r].top_p = 0.9F;
    if (r % kinds == 3) params[r].min_p = 0.1F;
    if (r % kinds == 4) params[r].top_k = 40, params[r].top_p = 0.5F, params[r].min_p = 0.1F;
    if (r % kinds == 5) params[r].temperature = 0.0F;  // greedy
    rows[r] = {&params[r], none, none};
    picks.push_back(*sampling::backend_pick(rows[r], r, V, edits));
  }
  std::vector<int32_t> got;
  ASSERT_TRUE(gpu->pick_to_host(gpu->upload(logits, DType::F32), picks, edits, got));
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
