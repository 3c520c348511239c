// The tensor-parallel shard plan, the column slices it takes of the weights, and the step
// messages rank 0 sends: pure host code, checked without MPI.
#include <gtest/gtest.h>

#include <numeric>
#include <tuple>

#include "dist/shard.h"
#include "engine/step_message.h"
#include "tensor/tensor.h"
#include "util/error.h"

namespace nanoinfer {
namespace {

ModelConfig config(int heads, int kv_heads, int ffn, int vocab) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.hidden_size = 64;
  c.intermediate_size = ffn;
  c.num_layers = 1;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = 16;
  return c;
}

// (heads, kv heads, ffn, vocab, ranks)
using PlanCase = std::tuple<int, int, int, int, int>;
class ShardPlan : public ::testing::TestWithParam<PlanCase> {};

std::string plan_name(const ::testing::TestParamInfo<PlanCase>& info) {
  const auto [h, kv, f, v, w] = info.param;
  return "h" + std::to_string(h) + "kv" + std::to_string(kv) + "ffn" + std::to_string(f) + "v" +
         std::to_string(v) + "ranks" + std::to_string(w);
}

TEST_P(ShardPlan, RanksCoverEveryHeadFeatureAndTokenOnce) {
  const auto [heads, kv, ffn, vocab, world] = GetParam();
  const ModelConfig c = config(heads, kv, ffn, vocab);
  std::vector<int> q_owner(heads, 0), ffn_owner(ffn, 0), vocab_owner(vocab, 0);
  for (int r = 0; r < world; ++r) {
    const Shard s = Shard::plan(c, r, world);
    SCOPED_TRACE(s.describe());
    ASSERT_GT(s.q_heads.size(), 0);
    // Each query head reads a KV head this rank holds, at the same local group size.
    const int64_t group = heads / kv;
    for (int64_t h = s.q_heads.begin; h < s.q_heads.end; ++h) {
      ++q_owner[h];
      const int64_t local_kv = (h - s.q_heads.begin) / (s.q_heads.size() / s.kv_heads.size());
      EXPECT_EQ(s.kv_heads.begin + local_kv, h / group);
    }
    EXPECT_EQ(s.q_heads.size() % s.kv_heads.size(), 0);
    for (int64_t f = s.ffn.begin; f < s.ffn.end; ++f) ++ffn_owner[f];
    for (int64_t v = s.vocab.begin; v < s.vocab.end; ++v) ++vocab_owner[v];
    EXPECT_LE(s.vocab.size(), s.vocab_block);
    const ModelConfig l = s.local(c);
    EXPECT_EQ(l.num_heads, s.q_heads.size());
    EXPECT_EQ(l.num_kv_heads, s.kv_heads.size());
    EXPECT_EQ(l.intermediate_size, s.ffn.size());
    EXPECT_EQ(l.vocab_size, s.vocab.size());
    EXPECT_EQ(s.local_token(static_cast<int32_t>(s.vocab.begin)), 0);
    EXPECT_EQ(s.local_token(static_cast<int32_t>(s.vocab.end)), -1);  // the next rank's
    EXPECT_EQ(s.local_token(static_cast<int32_t>(s.vocab.begin) - 1), -1);
  }
  for (int n : q_owner) EXPECT_EQ(n, 1);
  for (int n : ffn_owner) EXPECT_EQ(n, 1);
  for (int n : vocab_owner) EXPECT_EQ(n, 1);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ShardPlan,
    ::testing::Values(PlanCase{4, 4, 160, 384, 2}, PlanCase{4, 4, 160, 384, 3},
                      PlanCase{5, 5, 100, 397, 2}, PlanCase{5, 5, 100, 397, 3},
                      PlanCase{9, 3, 1536, 49152, 2}, PlanCase{9, 3, 1536, 49152, 3},
                      PlanCase{3, 1, 128, 448, 2}, PlanCase{3, 1, 128, 448, 3},
                      PlanCase{32, 8, 14336, 128256, 4}, PlanCase{32, 8, 14336, 128256, 16},
                      PlanCase{64, 8, 28672, 128256, 8}, PlanCase{6, 2, 160, 384, 2}),
    plan_name);

struct BadPlan {
  const char* name;
  int heads, kv, ffn, world;
  int64_t ffn_align;
  const char* message;
};
class ShardPlanError : public ::testing::TestWithParam<BadPlan> {};

TEST_P(ShardPlanError, NamesTheReason) {
  const BadPlan p = GetParam();
  try {
    (void)Shard::plan(config(p.heads, p.kv, p.ffn, 384), 0, p.world, p.ffn_align);
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(p.message), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("over " + std::to_string(p.world) + " ranks"),
              std::string::npos)
        << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, ShardPlanError,
                         ::testing::Values(BadPlan{"ranks_not_a_multiple_of_kv", 4, 2, 160, 3, 1,
                                                   "a multiple of the KV heads"},
                                           BadPlan{"more_ranks_than_group", 2, 1, 160, 4, 1,
                                                   "only 2 query heads"},
                                           BadPlan{"mlp_blocks_too_few", 4, 4, 64, 3, 32,
                                                   "only 2 units of 32 features"}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(SplitRange, UnitsStayWholeAndTheLastMayBeShort) {
  EXPECT_EQ(split_range(1536, 2, 0, 32).end, 768);
  EXPECT_EQ(split_range(100, 3, 0, 32).size(), 64);
  EXPECT_EQ(split_range(100, 3, 1, 32).size(), 32);
  EXPECT_EQ(split_range(100, 3, 2, 32).size(), 4);
  EXPECT_EQ(split_range(10, 3, 0).size(), 4);
  EXPECT_EQ(split_range(10, 3, 2).begin, 7);
}

TEST(TensorSlices, RowsViewAndColumnsCopyWholeBlocks) {
  Tensor t = Tensor::zeros(DType::F32, {3, 4});
  std::iota(t.as<float>(), t.as<float>() + 12, 0.0F);
  const Tensor r = t.rows(1, 3);
  EXPECT_EQ(r.shape(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(r.as<float>(), t.as<float>() + 4);
  const Tensor c = t.columns(1, 3);
  EXPECT_EQ(c.shape(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(std::vector<float>(c.as<float>(), c.as<float>() + 6),
            (std::vector<float>{1, 2, 5, 6, 9, 10}));
  EXPECT_EQ(t.columns(0, 4).data(), t.data());  // all columns: no copy

  Tensor q = Tensor::zeros(DType::Q4_1, {2, 96});  // 3 blocks of 20 bytes a row
  for (size_t i = 0; i < q.nbytes(); ++i) static_cast<uint8_t*>(q.data())[i] = i & 0xff;
  const Tensor qc = q.columns(32, 96);
  ASSERT_EQ(qc.nbytes(), 80U);
  EXPECT_EQ(static_cast<const uint8_t*>(qc.data())[0], 20);   // row 0, block 1
  EXPECT_EQ(static_cast<const uint8_t*>(qc.data())[40], 80);  // row 1, block 1
  EXPECT_THROW((void)q.columns(16, 96), Error);
}

TEST(StepMessages, RoundTripAndRejectTruncatedBytes) {
  Batch b;
  b.token_ids = {5, 6, 7};
  b.positions = {0, 1, 2};
  b.seq_of_token = {0, 0, 0};
  b.q_index = {0, 1, 2};
  b.slots = {16, 17, 18};
  b.cu_seqlens = {0, 3};
  b.context_lens = {3};
  b.block_tables = {1};
  b.max_blocks = 1;
  b.logit_rows = {2};
  b.tree_mask = {1, 0, 1};
  b.tree_offsets = {0};
  std::vector<CacheOp> ops = {{CacheOp::Kind::CopySlots, {1, 2}, {3, 4}},
                              {CacheOp::Kind::SetPositions, {9}, {0}}};
  const StepMessage back = decode(encode(StepMessage::step(ops, b)));
  EXPECT_EQ(back.kind, StepMessage::Kind::Step);
  EXPECT_EQ(back.batch.token_ids, b.token_ids);
  EXPECT_EQ(back.batch.slots, b.slots);
  EXPECT_EQ(back.batch.block_tables, b.block_tables);
  EXPECT_EQ(back.batch.max_blocks, 1);
  EXPECT_EQ(back.batch.tree_mask, b.tree_mask);
  ASSERT_EQ(back.ops.size(), 2U);
  EXPECT_EQ(back.ops[1].kind, CacheOp::Kind::SetPositions);
  EXPECT_EQ(back.ops[0].values, (std::vector<int32_t>{3, 4}));

  KvCacheOptions kv;
  kv.num_blocks = 7;
  kv.rope = "pre";
  kv.sink_tokens = 4;
  kv.window = 60;
  const StepMessage begin = decode(encode(StepMessage::begin(kv)));
  EXPECT_EQ(begin.cache.num_blocks, 7);
  EXPECT_EQ(begin.cache.rope, "pre");
  EXPECT_EQ(begin.cache.window, 60);
  EXPECT_EQ(decode(encode(StepMessage::abort("no"))).error, "no");
  EXPECT_EQ(decode(encode(StepMessage::end())).kind, StepMessage::Kind::End);

  std::vector<uint8_t> bytes = encode(StepMessage::step(ops, b));
  bytes.pop_back();
  EXPECT_THROW(decode(bytes), Error);
  bytes.push_back(0);
  bytes.push_back(0);
  EXPECT_THROW(decode(bytes), Error);
}

}  // namespace
}  // namespace nanoinfer
