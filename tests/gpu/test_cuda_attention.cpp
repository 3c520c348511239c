// Cache write + attention of the CUDA backend against the CPU backend: a packed prefill of
// different-length sequences (the flash-style kernels), then decode steps (the split-K kernels),
// both RoPE policies, GQA and MHA, odd head dims and block sizes (the RoPE + KV write's 16-byte,
// pair and single-pair paths), long contexts that split, a tree mask among new tokens, and prompt
// chunks next to decode rows (continuous batching's chunked prefill).
#include <gtest/gtest.h>

#include <random>

#include "engine/batch_builder.h"
#include "gpu_test_util.h"
#include "kv/kv_cache.h"

namespace nanoinfer {
namespace {

struct AttnCase {
  std::vector<int> lens;
  int heads, kv_heads, head_dim, block_size;
  std::string rope;
  int decode_steps;
  bool tree = false;  // the second step feeds 4 tokens per sequence under a tree mask
  int chunk = 0;      // > 0: the second step feeds even sequences this many tokens (the next
                      // chunk of a prompt, causal over the cache) and odd ones one (decode rows)
  int lag = 0;        // > 0: every token at the position of its index less lag (at least 0), and
                      // a RoPE table of only as many rows as those positions need
};

class CudaAttention : public ::testing::TestWithParam<std::tuple<DType, AttnCase>> {};

TEST_P(CudaAttention, MatchesCpuBackend) {
  const auto [dt, ac] = GetParam();
  NI_REQUIRE_CUDA(gpu, dt);
  auto cpu = make_cpu_backend();
  ModelConfig c;
  c.num_layers = 1;
  c.num_heads = ac.heads;
  c.num_kv_heads = ac.kv_heads;
  c.head_dim = ac.head_dim;
  int total = 0, longest = 0;
  for (int l : ac.lens) {
    total += l + ac.decode_steps + 4 + ac.chunk;
    longest = std::max(longest, l + ac.decode_steps);
  }
  const RopeTable table = RopeTable::build(c, ac.lag > 0 ? longest - ac.lag : total + 8);
  cpu->upload_rope(table);
  gpu->upload_rope(table);
  const int blocks = static_cast<int>(ac.lens.size()) * (total / ac.block_size + 2);
  KvCache cpu_cache(*cpu, c, {ac.block_size, blocks, ac.rope});
  KvCache gpu_cache(*gpu, c, {ac.block_size, blocks, ac.rope});
  std::vector<SeqState> cs, gs;
  for (size_t s = 0; s < ac.lens.size(); ++s) {
    cs.emplace_back(s, cpu_cache.create_sequence(), std::vector<int32_t>(ac.lens[s], 1));
    gs.emplace_back(s, gpu_cache.create_sequence(), std::vector<int32_t>(ac.lens[s], 1));
  }
  std::mt19937 rng(std::random_device{}());
  const int H = ac.heads, KV = ac.kv_heads, D = ac.head_dim, W = (H + 2 * KV) * D;
  const int steps = 1 + ac.decode_steps + (ac.tree || ac.chunk > 0 ? 1 : 0);
  for (int step = 0; step < steps; ++step) {
    const bool tree_step = ac.tree && step == 1;
    std::vector<SeqState*> cl, gl;
    for (size_t s = 0; s < cs.size(); ++s) {
      if (step > 0) {
        const int n = tree_step ? 4 : ac.chunk > 0 && step == 1 && s % 2 == 0 ? ac.chunk : 1;
        cs[s].pending = gs[s].pending = std::vector<int32_t>(n, 1);
        if (tree_step) {
          // token i sees itself and token 0 (siblings under one root) ...
          std::vector<uint8_t> mask(16, 0);
          for (int i = 0; i < 4; ++i) mask[i * 4 + i] = mask[i * 4] = 1;
          mask[3 * 4 + 2] = 1;  // ... and the last one also its parent 2
          cs[s].tree_mask = gs[s].tree_mask = mask;
          // at the positions of their depths, so that later steps meet cache entries whose
          // positions are not their indices
          const int32_t at = cs[s].fed;
          cs[s].positions = gs[s].positions = {at, at + 1, at + 1, at + 2};
        } else {
          cs[s].tree_mask.clear();
          gs[s].tree_mask.clear();
        }
      }
      if (ac.lag > 0) {
        std::vector<int32_t>& p = cs[s].positions;
        p.resize(cs[s].pending.size());
        for (size_t i = 0; i < p.size(); ++i)
          p[i] = std::max(0, cs[s].fed + static_cast<int>(i) - ac.lag);
        gs[s].positions = p;
      }
      cl.push_back(&cs[s]);
      gl.push_back(&gs[s]);
    }
    const Batch cb = build_batch(cl, cpu_cache), gb = build_batch(gl, gpu_cache);
    ASSERT_EQ(cb.slots, gb.slots);
    const int T = cb.num_tokens();
    Tensor qkv = test::random_host({T, W}, dt, rng);
    const DeviceBatch cdb = cpu->upload_batch(cb), gdb = gpu->upload_batch(gb);
    // The device batch may be padded (decode buckets): pad qkv rows with zeros.
    Tensor padded = Tensor::zeros(DType::F32, {gdb.num_tokens, W});
    std::copy(qkv.as<float>(), qkv.as<float>() + qkv.numel(), padded.as<float>());
    Tensor dqkv = gpu->upload(padded, dt);
    Tensor ref = cpu->alloc({T, H * D}, DType::F32), out = gpu->alloc({gdb.num_tokens, H * D}, dt);
    cpu_cache.rope().store(*cpu, qkv, H, KV, cdb, cpu_cache.layer(0));
    cpu_cache.rope().attend(*cpu, qkv, H, KV, cdb, cpu_cache.layer(0), ref);
    gpu_cache.rope().store(*gpu, dqkv, H, KV, gdb, gpu_cache.layer(0));
    gpu_cache.rope().attend(*gpu, dqkv, H, KV, gdb, gpu_cache.layer(0), out);
    std::vector<float> got;
    gpu->to_host_f32(out, got);
    const double err =
        test::rel_error(got, ref.as<const float>(), static_cast<size_t>(ref.numel()));
    EXPECT_LT(err, test::rel_bound(dt)) << "step " << step << " (" << T << " tokens)";
    // Padding rows attend to nothing.
    for (size_t i = static_cast<size_t>(ref.numel()); i < got.size(); ++i) ASSERT_EQ(got[i], 0.0F);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CudaAttention,
    ::testing::Combine(::testing::Values(DType::F32, DType::BF16),
                       ::testing::Values(AttnCase{{1}, 2, 2, 8, 4, "post", 2},
                                         AttnCase{{5, 1, 17}, 4, 2, 16, 4, "post", 2},
                                         AttnCase{{5, 1, 17}, 4, 2, 16, 4, "pre", 2},
                                         AttnCase{{3, 9, 40}, 6, 2, 12, 16, "pre", 2},
                                         AttnCase{{12, 2, 7}, 3, 3, 12, 5, "post", 1},
                                         // an odd half head: RoPE + KV write a pair at a time
                                         AttnCase{{9, 30}, 4, 2, 10, 4, "post", 2},
                                         AttnCase{{70, 33}, 9, 3, 64, 16, "post", 2},
                                         AttnCase{{300, 7}, 8, 2, 128, 16, "post", 3},
                                         AttnCase{{300, 7}, 8, 2, 128, 16, "pre", 3},
                                         AttnCase{{1100}, 32, 8, 128, 16, "post", 2},
                                         // tensor-core paths: contexts that split many ways
                                         // next to ones that fit one block, groups of 3 and 16
                                         AttnCase{{2500, 5, 700}, 32, 8, 128, 16, "post", 2},
                                         AttnCase{{900, 70}, 12, 4, 64, 16, "pre", 2},
                                         AttnCase{{65, 129}, 6, 2, 128, 8, "post", 2},
                                         AttnCase{{130, 2}, 16, 1, 64, 16, "post", 2},
                                         // a block size that is not a power of two: the
                                         // block-table lookups divide instead of shifting
                                         AttnCase{{300, 45}, 8, 2, 128, 12, "pre", 2},
                                         // more than 16 (sequence, kv head) pairs: blocks
                                         // of 16 take the kernel of tensor memory access,
                                         // "post" with six stages while the pairs fit one
                                         // wave on the SMs and three beyond (192 pairs),
                                         // "pre" with six stages and rotating warps (192
                                         // pairs: two waves); a block size not a multiple
                                         // of 16 the one-stage kernel (fewer pairs in such
                                         // blocks: the one with copying warps; "pre": keys
                                         // rotated in shared memory by either)
                                         AttnCase{{600, 33, 1, 250, 90}, 32, 8, 128, 16, "pre", 2},
                                         AttnCase{{600, 33, 250}, 32, 8, 128, 24, "post", 2},
                                         AttnCase{{600, 33, 250}, 32, 8, 128, 24, "pre", 2},
                                         AttnCase{{200, 64, 900}, 12, 6, 64, 16, "post", 2},
                                         AttnCase{{200, 64, 900}, 12, 6, 64, 16, "pre", 2},
                                         AttnCase{{900, 33, 2100}, 256, 64, 128, 16, "post", 2},
                                         AttnCase{{900, 33, 2100}, 256, 64, 128, 16, "pre", 2},
                                         AttnCase{{300, 1, 1300}, 128, 64, 64, 32, "post", 2},
                                         // 24 pairs, six stages, 5 tiles a block (5 splits
                                         // on 132 SMs): the copying warp waits for tile 0 to
                                         // land before it issues tile 4
                                         AttnCase{{1400, 5, 1300}, 8, 8, 64, 16, "post", 2},
                                         // few pairs and long contexts: 8 or more tiles a
                                         // block, so the six stages wrap around, in the
                                         // tensor-memory-access kernel (blocks of 16) and
                                         // in the copying-warp kernel (blocks of 12, whose
                                         // ring of row tables wraps too)
                                         AttnCase{{7300}, 8, 8, 64, 16, "post", 2},
                                         AttnCase{{7300}, 8, 8, 64, 12, "pre", 2},
                                         AttnCase{{3700, 3650}, 16, 8, 64, 16, "post", 2},
                                         // keys in blocks of a multiple of 16: the tiles
                                         // staged by tensor memory access (48 rows: a
                                         // block's boxes start inside it); pre-RoPE keys
                                         // rotated there by rotating warps (16 pairs)
                                         AttnCase{{7300, 90}, 16, 8, 128, 48, "post", 2},
                                         AttnCase{{7300, 90}, 16, 8, 128, 48, "pre", 2},
                                         AttnCase{{1500}, 8, 2, 128, 32, "post", 2},
                                         // one kv head: the most splits (128) per context
                                         AttnCase{{4000}, 4, 1, 128, 16, "post", 2},
                                         AttnCase{{20, 6}, 8, 1, 96, 16, "post", 1, true},
                                         AttnCase{{20, 6}, 4, 4, 64, 8, "pre", 1, true},
                                         // decode after a tree: entries whose positions are
                                         // not their indices, on the rotating warps
                                         AttnCase{{20, 130}, 8, 2, 128, 16, "pre", 2, true},
                                         // more entries than the RoPE table has rows (positions
                                         // given): the rotating warps load each piece's row
                                         AttnCase{{300, 90}, 8, 2, 128, 16, "pre", 2, false, 0, 40},
                                         // a prompt's next chunk beside decode rows
                                         AttnCase{{40, 9, 300}, 8, 2, 64, 16, "post", 1, false, 37},
                                         AttnCase{{40, 9, 300}, 8, 2, 64, 16, "pre", 1, false, 37},
                                         AttnCase{
                                             {2000, 5}, 32, 8, 128, 16, "post", 1, false, 700})),
    // e.g. bf16_2000x5_h32kv8d128b16_post_s1_chunk700: the dtype first, for filters
    // (scripts/device.sh racechecks the bf16 cases, whose kernels stage tiles in shared memory)
    [](const auto& info) {
      const AttnCase& c = std::get<1>(info.param);
      std::string name = std::string(dtype_name(std::get<0>(info.param))) + "_";
      for (size_t i = 0; i < c.lens.size(); ++i) name += (i ? "x" : "") + std::to_string(c.lens[i]);
      name += "_h" + std::to_string(c.heads) + "kv" + std::to_string(c.kv_heads) + "d" +
              std::to_string(c.head_dim) + "b" + std::to_string(c.block_size) + "_" + c.rope +
              "_s" + std::to_string(c.decode_steps);
      if (c.tree) name += "_tree";
      if (c.chunk > 0) name += "_chunk" + std::to_string(c.chunk);
      if (c.lag > 0) name += "_lag" + std::to_string(c.lag);
      return name;
    });

}  // namespace
}  // namespace nanoinfer
