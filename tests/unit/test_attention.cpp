// Cache write + attention of the CPU backend against a naive per-sequence reference, over packed
// batches of different-length sequences, both RoPE policies, GQA and MHA, several block sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_kernels.h"
#include "engine/batch_builder.h"
#include "kv/kv_cache.h"

namespace nanoinfer {
namespace {

struct AttnCase {
  std::vector<int> lens;
  int heads, kv_heads, head_dim, block_size;
  std::string rope;
};

class AttentionTest : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionTest, PackedBatchMatchesNaivePerSequence) {
  const AttnCase ac = GetParam();
  ModelConfig c;
  c.num_layers = 1;
  c.num_heads = ac.heads;
  c.num_kv_heads = ac.kv_heads;
  c.head_dim = ac.head_dim;
  c.rope_theta = 10000.0F;
  auto be = make_cpu_backend();
  const RopeTable table = RopeTable::build(c, 64);
  be->upload_rope(table);
  KvCache cache(*be, c, {ac.block_size, 64, ac.rope});

  // Two steps: a prefill of lens[s] tokens, then one decode token per sequence.
  std::vector<SeqState> seqs;
  for (size_t s = 0; s < ac.lens.size(); ++s)
    seqs.emplace_back(s, cache.create_sequence(), std::vector<int32_t>(ac.lens[s], 1));
  const int D = ac.head_dim, H = ac.heads, KV = ac.kv_heads, W = (H + 2 * KV) * D;
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0F, 1.0F);
  // Reference state: every token's raw q/k/v rows per sequence.
  std::vector<std::vector<std::vector<float>>> hist(ac.lens.size());
  for (int step = 0; step < 2; ++step) {
    std::vector<SeqState*> live;
    for (SeqState& s : seqs) {
      if (step == 1) s.pending = {1};
      live.push_back(&s);
    }
    const Batch batch = build_batch(live, cache);
    const int T = batch.num_tokens();
    Tensor qkv = be->alloc({T, W}, DType::F32);
    for (int64_t i = 0; i < qkv.numel(); ++i) qkv.as<float>()[i] = nd(rng);
    for (int t = 0; t < T; ++t)
      hist[batch.seq_of_token[t]].emplace_back(qkv.as<float>() + t * W,
                                               qkv.as<float>() + (t + 1) * W);
    const DeviceBatch db = be->upload_batch(batch);
    Tensor out = be->alloc({T, H * D}, DType::F32);
    cache.rope().store(*be, qkv, H, KV, db, cache.layer(0));
    cache.rope().attend(*be, qkv, H, KV, db, cache.layer(0), out);

    for (int t = 0; t < T; ++t) {
      const int s = batch.seq_of_token[t], qi = batch.q_index[t];
      for (int h = 0; h < H; ++h) {
        std::vector<float> q(hist[s][qi].begin() + h * D, hist[s][qi].begin() + (h + 1) * D);
        cpu::rope_rotate(q.data(), table.row(qi), D);
        std::vector<double> sc(qi + 1);
        double mx = -1e300;
        for (int j = 0; j <= qi; ++j) {
          const int kvh = h / (H / KV);
          std::vector<float> k(hist[s][j].begin() + (H + kvh) * D,
                               hist[s][j].begin() + (H + kvh + 1) * D);
          cpu::rope_rotate(k.data(), table.row(j), D);
          double dotp = 0;
          for (int d = 0; d < D; ++d) dotp += double{q[d]} * k[d];
          sc[j] = dotp / std::sqrt(double(D));
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (double& x : sc) sum += (x = std::exp(x - mx));
        for (int d = 0; d < D; ++d) {
          double ref = 0;
          const int kvh = h / (H / KV);
          for (int j = 0; j <= qi; ++j) ref += sc[j] / sum * hist[s][j][(H + KV + kvh) * D + d];
          ASSERT_NEAR(out.as<float>()[(t * H + h) * D + d], ref, 2e-5)
              << "step " << step << " t " << t << " h " << h << " d " << d;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, AttentionTest,
                         ::testing::Values(AttnCase{{1}, 2, 2, 8, 4, "post"},
                                           AttnCase{{5, 1, 17}, 4, 2, 16, 4, "post"},
                                           AttnCase{{5, 1, 17}, 4, 2, 16, 4, "pre"},
                                           AttnCase{{3, 9}, 6, 1, 8, 16, "pre"},
                                           AttnCase{{12, 2, 7, 1}, 3, 3, 12, 1, "post"},
                                           AttnCase{{12, 2, 7, 1}, 3, 3, 12, 5, "pre"}));

}  // namespace
}  // namespace nanoinfer
