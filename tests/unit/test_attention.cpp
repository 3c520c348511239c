// Cache write + attention of the CPU backend against a naive per-sequence reference, over packed
// batches of different-length sequences, both RoPE policies, GQA and MHA, several block sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <random>
#include <tuple>
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

// A prompt's attention in one step (its queries four at a time, each key and value row loaded
// once for the four) equals the same prompt fed one token a step (one query at a time), bit for
// bit: prefill, chunked prefill and decode give a token the same output.
class AttentionSplitTest : public ::testing::TestWithParam<std::tuple<int, int, int, int, int>> {};

TEST_P(AttentionSplitTest, OneStepEqualsTokenByTokenBitForBit) {
  const int head_dim = std::get<0>(GetParam()), len = std::get<1>(GetParam()),
            block_size = std::get<2>(GetParam());  // (not a structured binding: lambdas use them)
  ModelConfig c;
  c.num_layers = 1;
  c.num_heads = std::get<3>(GetParam());
  c.num_kv_heads = std::get<4>(GetParam());
  c.head_dim = head_dim;
  c.rope_theta = 10000.0F;
  const int H = c.num_heads, KV = c.num_kv_heads, W = (H + 2 * KV) * head_dim;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0F, 2.0F);
  std::vector<float> rows(static_cast<size_t>(2 + len) * W);  // two sequences: 2 and len tokens
  for (float& x : rows) x = nd(rng);
  // Feeds both sequences at most `step` tokens a step; returns every token's output, by sequence
  // and index.
  auto run = [&](int step) {
    auto be = make_cpu_backend();
    be->upload_rope(RopeTable::build(c, 64));
    KvCache cache(*be, c, {block_size, 64, "post"});
    const std::vector<int> lens = {2, len}, first_row = {0, 2};
    std::vector<SeqState> seqs;
    seqs.reserve(2);
    for (int s = 0; s < 2; ++s)
      seqs.emplace_back(s, cache.create_sequence(), std::vector<int32_t>(lens[s], 1));
    std::vector<std::vector<float>> outs(2);
    for (int s = 0; s < 2; ++s) outs[s].resize(static_cast<size_t>(lens[s]) * H * head_dim);
    for (;;) {
      std::vector<SeqState*> live;
      for (SeqState& s : seqs) {
        if (s.pending.empty()) continue;
        s.chunk = std::min(step, static_cast<int>(s.pending.size()));
        live.push_back(&s);
      }
      if (live.empty()) break;
      const Batch batch = build_batch(live, cache);
      const int T = batch.num_tokens();
      Tensor qkv = be->alloc({T, W}, DType::F32);
      // The batch numbers the live sequences; request is the sequence's own index.
      auto seq = [&](int t) { return static_cast<int>(live[batch.seq_of_token[t]]->request); };
      for (int t = 0; t < T; ++t)
        std::copy_n(rows.begin() + (first_row[seq(t)] + batch.q_index[t]) * W, W,
                    qkv.as<float>() + int64_t{t} * W);
      const DeviceBatch db = be->upload_batch(batch);
      Tensor out = be->alloc({T, H * head_dim}, DType::F32);
      cache.rope().store(*be, qkv, H, KV, db, cache.layer(0));
      cache.rope().attend(*be, qkv, H, KV, db, cache.layer(0), out);
      for (int t = 0; t < T; ++t)
        std::copy_n(out.as<float>() + int64_t{t} * H * head_dim, H * head_dim,
                    outs[seq(t)].begin() + batch.q_index[t] * H * head_dim);
    }
    return outs;
  };
  const auto whole = run(len), single = run(1), threes = run(3);
  for (int s = 0; s < 2; ++s)
    for (size_t i = 0; i < whole[s].size(); ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(whole[s][i]), std::bit_cast<uint32_t>(single[s][i]))
          << "sequence " << s << " value " << i;
      ASSERT_EQ(std::bit_cast<uint32_t>(threes[s][i]), std::bit_cast<uint32_t>(single[s][i]))
          << "sequence " << s << " value " << i;
    }
}

// Head sizes through the four-query kernel (64, 128, 16) and the one-query loop (12); prompts
// with and without a tail of four; several cache block sizes; GQA groups of 3, 8 and 1 (MHA).
INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionSplitTest,
    ::testing::Values(std::make_tuple(64, 13, 16, 6, 2), std::make_tuple(128, 8, 4, 6, 2),
                      std::make_tuple(16, 23, 5, 6, 2), std::make_tuple(12, 6, 4, 6, 2),
                      std::make_tuple(64, 40, 1, 6, 2), std::make_tuple(64, 11, 16, 8, 1),
                      std::make_tuple(16, 9, 4, 4, 4)));

}  // namespace
}  // namespace nanoinfer
