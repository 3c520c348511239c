// GGUF blocks kept on the GPU (bf16 mode): every kept format widens to the loader's values bit
// for bit, gathers embedding rows, and multiplies against the CPU reference over the same blocks
// through each path (the block GEMV for one row, the tensor-core kernel up to 32, the
// widened scratch matrix at any count); a whole model over kept blocks gives the CPU's logits
// within bf16's bound.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>

#include "backend/cpu/cpu_kernels.h"
#include "engine/batch_builder.h"
#include "gpu_test_util.h"
#include "loader/gguf.h"
#include "loader/model_loader.h"
#include "loader_fixtures.h"
#include "model/llama.h"
#include "random_blocks.h"
#ifdef NANOINFER_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/kernels.h"
#endif

namespace nanoinfer {
namespace {

#ifdef NANOINFER_HAVE_CUDA
// A bf16 CUDA backend that keeps blocks (null where there is no GPU).
std::unique_ptr<Backend> keeping_cuda() {
  return make_cuda_backend(DType::BF16, 0, /*keep_blocks=*/true);
}

const std::vector<DType>& kept_formats() {
  static const std::vector<DType> all = {DType::Q8_0, DType::Q4_0, DType::Q4_1,
                                         DType::Q4_K, DType::Q5_K, DType::Q6_K};
  return all;
}

Tensor random_blocks_host(DType q, int64_t rows, int64_t k, unsigned seed) {
  Tensor host = Tensor::zeros(q, {rows, k});
  const std::vector<uint8_t> b = test::random_blocks(q, rows * k, seed);
  std::memcpy(host.data(), b.data(), b.size());
  return host;
}

// Kept formats stay blocks and read back as the loader's f32 values; the others are widened to
// bf16; fused parts of one kept format stay blocks, mixed ones are widened part by part.
TEST(CudaQuant, KeptFormatsStayBlocksAndWidenToTheLoadersValues) {
  auto gpu = keeping_cuda();
  if (!gpu) GTEST_SKIP() << "no CUDA backend here (no GPU or a CPU-only build)";
  const int64_t rows = 300, K = 512;
  for (const DType q : test::block_formats()) {
    const Tensor host = random_blocks_host(q, rows, K, 3);
    std::vector<float> want(static_cast<size_t>(rows * K)), got;
    cpu::dequantize_rows(q, static_cast<const uint8_t*>(host.data()), rows, K, want.data());
    const Tensor dev = gpu->upload(host, DType::BF16);
    const bool kept = cuda::quant_kept(q);
    EXPECT_EQ(kept, std::count(kept_formats().begin(), kept_formats().end(), q) == 1);
    EXPECT_EQ(dev.dtype(), kept ? q : DType::BF16) << dtype_name(q);
    gpu->to_host_f32(dev, got);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_EQ(got[i], kept ? want[i] : test::round_as(DType::BF16, want[i]))
          << dtype_name(q) << " element " << i;
  }
  const std::vector<Tensor> same = {random_blocks_host(DType::Q4_K, 4, K, 1),
                                    random_blocks_host(DType::Q4_K, 2, K, 2)};
  const std::vector<Tensor> mixed = {same[0], random_blocks_host(DType::Q6_K, 2, K, 2)};
  EXPECT_EQ(gpu->upload_rows(same, DType::BF16).dtype(), DType::Q4_K);
  const Tensor wide = gpu->upload_rows(mixed, DType::BF16);
  EXPECT_EQ(wide.dtype(), DType::BF16);
  std::vector<float> got, want(static_cast<size_t>(6 * K));
  cpu::dequantize_rows(DType::Q4_K, static_cast<const uint8_t*>(mixed[0].data()), 4, K,
                       want.data());
  cpu::dequantize_rows(DType::Q6_K, static_cast<const uint8_t*>(mixed[1].data()), 2, K,
                       want.data() + 4 * K);
  gpu->to_host_f32(wide, got);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], test::round_as(DType::BF16, want[i]));
}

// The embedding gather over kept blocks: each id's row as the loader widens it (rounded once in
// bf16), zeros for ids outside the table (another rank's vocabulary shard).
TEST(CudaQuant, DequantRowsGathersRowsAndZerosOutsideTheTable) {
  auto gpu = keeping_cuda();
  if (!gpu) GTEST_SKIP() << "no CUDA backend here (no GPU or a CPU-only build)";
  const cudaStream_t stream = dynamic_cast<cuda::CudaBackend&>(*gpu).stream();
  const int64_t rows = 50, K = 768;
  const std::vector<int32_t> ids = {7, -1, 49, 50, 0, 7, 1000};
  Tensor dev_ids = gpu->alloc({static_cast<int64_t>(ids.size())}, DType::I32);
  std::vector<int32_t> idx(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) idx[i] = static_cast<int32_t>(i);
  gpu->write_i32(dev_ids, idx, ids);
  for (const DType q : kept_formats()) {
    const Tensor host = random_blocks_host(q, rows, K, 5);
    std::vector<float> table(static_cast<size_t>(rows * K));
    cpu::dequantize_rows(q, static_cast<const uint8_t*>(host.data()), rows, K, table.data());
    const Tensor w = gpu->upload(host, DType::BF16);
    for (const DType out_dt : {DType::F32, DType::BF16}) {
      Tensor out = gpu->alloc({static_cast<int64_t>(ids.size()), K}, out_dt);
      cuda::dequant_rows(q, w.data(), rows, K, dev_ids.as<const int32_t>(),
                         static_cast<int64_t>(ids.size()), out_dt, out.data(), stream);
      std::vector<float> got;
      gpu->to_host_f32(out, got);
      for (size_t r = 0; r < ids.size(); ++r) {
        for (int64_t e = 0; e < K; ++e) {
          const bool inside = ids[r] >= 0 && ids[r] < rows;
          const float v = inside ? table[static_cast<size_t>(ids[r] * K + e)] : 0.0F;
          ASSERT_EQ(got[r * K + e], test::round_as(out_dt, v))
              << dtype_name(q) << " " << dtype_name(out_dt) << " id " << ids[r] << " value " << e;
        }
      }
    }
  }
}

struct QuantShape {
  int tokens, k, n;
};

class CudaQuantMatmul : public ::testing::TestWithParam<std::tuple<DType, QuantShape>> {};

// x [T, K] (bf16 values) times kept blocks [N, K] through each path that takes T rows, against
// the CPU backend's product (f32) over the weights the path multiplies: the blocks' values (the
// block GEMV, 1-2 rows, x split into two int8 parts; at K = 131,072, and 65,536 for two rows, x
// does not fit its shared memory and each lane splits its units itself; at 1,024 x 4,500 a warp
// takes several rows), those values rounded to bf16 (the tensor-core kernel, up to 32 rows; the
// widened scratch + cuBLASLt, any rows); within bf16's bound, and f32 outputs (the logits) hold
// bf16 values. The backend's matmul picks one of them by T (the model tests run it). Above 16 rows
// the thousands-of-rows shapes take 2 or 4 row groups a block on 132 SMs (24 x 768: two, its K
// groups a step apart; 32 x 384: four, likewise).
TEST_P(CudaQuantMatmul, MatchesTheCpuOverTheSameBlocks) {
  auto gpu = keeping_cuda();
  if (!gpu) GTEST_SKIP() << "no CUDA backend here (no GPU or a CPU-only build)";
  const auto [q, s] = GetParam();
  if (s.k % dtype_block(q) != 0) GTEST_SKIP() << "rows of whole blocks only";
  auto cpu = make_cpu_backend();
  std::mt19937 rng(static_cast<unsigned>(s.tokens * 131 + s.k + s.n));
  const Tensor x = test::random_host({s.tokens, s.k}, DType::BF16, rng);
  const Tensor w = random_blocks_host(q, s.n, s.k, static_cast<unsigned>(s.n));
  Tensor ref = cpu->alloc({s.tokens, s.n}, DType::F32);
  Tensor ref_bf16 = cpu->alloc({s.tokens, s.n}, DType::F32);
  cpu->matmul(x, cpu->upload(w, DType::F32), ref);
  Tensor rounded = Tensor::zeros(DType::F32, {s.n, s.k});
  cpu::dequantize_rows(q, static_cast<const uint8_t*>(w.data()), s.n, s.k, rounded.as<float>());
  for (int64_t i = 0; i < rounded.numel(); ++i)
    rounded.as<float>()[i] = test::round_as(DType::BF16, rounded.as<float>()[i]);
  cpu->matmul(x, rounded, ref_bf16);
  auto& cuda_be = dynamic_cast<cuda::CudaBackend&>(*gpu);
  const Tensor dx = gpu->upload(x, DType::BF16), dw = gpu->upload(w, DType::BF16);
  ASSERT_EQ(dw.dtype(), q);
  enum Path { kGemv, kMma, kScratch };
  for (const Path path : {kGemv, kMma, kScratch}) {
    if ((path == kGemv && s.tokens > cuda::kQuantGemvMaxTokens) ||
        (path == kMma && s.tokens > cuda::kQuantMmaMaxTokens))
      continue;
    const char* name = path == kGemv ? "gemv " : (path == kMma ? "mma " : "scratch ");
    for (const DType out_dt : {DType::BF16, DType::F32}) {
      Tensor out = gpu->alloc({s.tokens, s.n}, out_dt);
      if (path == kGemv) {
        cuda::gemv_quant(q, dx.data(), dw.data(), out_dt, out.data(), s.tokens, s.k, s.n,
                         cuda_be.stream());
      } else if (path == kMma) {
        cuda::mma_quant(q, dx.data(), dw.data(), out_dt, out.data(), s.tokens, s.k, s.n,
                        cuda_be.stream());
      } else {
        cuda_be.set_use_gemv(false);
        gpu->matmul(dx, dw, out);
      }
      std::vector<float> got;
      gpu->to_host_f32(out, got);
      EXPECT_LT(
          test::rel_error(got, (path == kGemv ? ref : ref_bf16).as<const float>(), got.size()),
          test::rel_bound(DType::BF16))
          << name << dtype_name(out_dt);
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_EQ(test::round_as(DType::BF16, got[i]), got[i]) << name << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaQuantMatmul,
    ::testing::Combine(::testing::ValuesIn(kept_formats()),
                       ::testing::Values(QuantShape{1, 256, 1}, QuantShape{1, 160, 7},
                                         QuantShape{1, 4096, 1100}, QuantShape{1, 14336, 300},
                                         QuantShape{2, 14336, 70}, QuantShape{1, 1024, 4500},
                                         QuantShape{1, 65536, 3}, QuantShape{1, 131072, 2},
                                         QuantShape{2, 512, 37}, QuantShape{2, 65536, 3},
                                         QuantShape{3, 96, 5}, QuantShape{4, 14336, 300},
                                         QuantShape{5, 768, 129}, QuantShape{8, 4096, 64},
                                         QuantShape{8, 14336, 40}, QuantShape{9, 1024, 77},
                                         QuantShape{13, 768, 17}, QuantShape{16, 4096, 130},
                                         QuantShape{17, 1120, 45}, QuantShape{25, 512, 33},
                                         QuantShape{32, 14336, 40}, QuantShape{40, 2048, 300},
                                         QuantShape{9, 512, 20000}, QuantShape{24, 768, 9000},
                                         QuantShape{32, 256, 40001}, QuantShape{32, 384, 40001})),
    [](const auto& info) {
      const QuantShape s = std::get<1>(info.param);
      return std::string(dtype_name(std::get<0>(info.param))) + "_" + std::to_string(s.tokens) +
             "x" + std::to_string(s.k) + "x" + std::to_string(s.n);
    });
// Each form of the block GEMV raises its own shared-memory allowance. In a fresh process (the
// death test runs this test's body in a new run of the binary), x too long for shared memory
// first (each lane splits its units itself), then x of 71.7 KB there, past the 48 KB a kernel
// gets without the raise: the second launch failed when one raise served both forms.
TEST(CudaQuantDeathTest, GemvRaisesEachFormsSharedMemory) {
  if (!keeping_cuda()) GTEST_SKIP() << "no CUDA backend here (no GPU or a CPU-only build)";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        auto gpu = keeping_cuda();
        const cudaStream_t stream = dynamic_cast<cuda::CudaBackend&>(*gpu).stream();
        std::mt19937 rng(5);
        for (const int k : {131072, 28672}) {
          const Tensor x = gpu->upload(test::random_host({1, k}, DType::BF16, rng), DType::BF16);
          const Tensor w = gpu->upload(random_blocks_host(DType::Q4_K, 2, k, 3), DType::BF16);
          Tensor out = gpu->alloc({1, 2}, DType::F32);
          cuda::gemv_quant(DType::Q4_K, x.data(), w.data(), DType::F32, out.data(), 1, k, 2,
                           stream);
          std::vector<float> got;
          gpu->to_host_f32(out, got);
        }
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

// Out of memory while a bf16 backend without --keep-blocks widens a GGUF matrix, the error names
// --keep-blocks where that flag would keep the format (Q4_K), and not where it would not (Q5_0).
// Most of the free memory is taken first, so that the 128 MB widened matrix cannot fit.
TEST(CudaQuant, WideningOutOfMemoryNamesKeepBlocksForKeptFormats) {
  auto gpu = make_cuda_backend(DType::BF16, 0, /*keep_blocks=*/false);
  if (!gpu) GTEST_SKIP() << "no CUDA backend here (no GPU or a CPU-only build)";
  const int64_t rows = 4096, K = 16384;
  std::vector<Tensor> hosts;
  for (const DType q : {DType::Q4_K, DType::Q5_0})
    hosts.push_back(random_blocks_host(q, rows, K, 9));
  size_t free_b = 0, total_b = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_b, &total_b), cudaSuccess);
  void* squeeze = nullptr;
  ASSERT_EQ(cudaMalloc(&squeeze, free_b - (size_t{48} << 20)), cudaSuccess);
  const std::unique_ptr<void, cudaError_t (*)(void*)> hold(squeeze, cudaFree);
  for (const Tensor& w : hosts) {
    std::string what;
    try {
      (void)gpu->upload(w, DType::BF16);
    } catch (const Error& e) {
      what = e.what();
    }
    EXPECT_NE(what.find("CUDA out of memory"), std::string::npos) << dtype_name(w.dtype());
    EXPECT_EQ(what.find("--keep-blocks") != std::string::npos, w.dtype() == DType::Q4_K) << what;
  }
}

// The block GEMV splits x into two int8 parts per 32 values (x ~ s (h + l / 254), s from the
// unit's largest magnitude): units with a value thousands of times the others, a zero unit and a
// unit of values near 1e-20 stay within bf16's bound of the CPU's product; a NaN or an infinity
// in x leaves every output not finite, as it does the CPU's.
TEST(CudaQuant, GemvSplitsOutliersZerosAndNonFiniteX) {
  auto gpu = keeping_cuda();
  if (!gpu) GTEST_SKIP() << "no CUDA backend here (no GPU or a CPU-only build)";
  auto cpu = make_cpu_backend();
  const cudaStream_t stream = dynamic_cast<cuda::CudaBackend&>(*gpu).stream();
  const int64_t K = 1024, N = 300;
  std::mt19937 rng(11);
  Tensor x = test::random_host({1, K}, DType::BF16, rng);
  auto* xv = x.as<float>();
  xv[5] = 2.0e4F;
  xv[40] = -3.0e3F;
  std::fill(xv + 64, xv + 96, 0.0F);
  for (int64_t e = 96; e < 128; ++e) xv[e] = test::round_as(DType::BF16, xv[e] * 1e-20F);
  for (const DType q : kept_formats()) {
    const Tensor w = random_blocks_host(q, N, K, 21);
    const Tensor dw = gpu->upload(w, DType::BF16), wf = cpu->upload(w, DType::F32);
    for (const float bad : {0.0F, NAN, INFINITY}) {
      Tensor xb = Tensor::zeros(DType::F32, {1, K});
      std::copy(xv, xv + K, xb.as<float>());
      xb.as<float>()[700] = bad != 0.0F ? bad : xv[700];
      Tensor ref = cpu->alloc({1, N}, DType::F32), out = gpu->alloc({1, N}, DType::F32);
      cpu->matmul(xb, wf, ref);
      const Tensor dx = gpu->upload(xb, DType::BF16);
      cuda::gemv_quant(q, dx.data(), dw.data(), DType::F32, out.data(), 1, K, N, stream);
      std::vector<float> got;
      gpu->to_host_f32(out, got);
      if (bad == 0.0F) {
        EXPECT_LT(test::rel_error(got, ref.as<const float>(), got.size()),
                  test::rel_bound(DType::BF16))
            << dtype_name(q);
        continue;
      }
      for (int64_t i = 0; i < N; ++i) {
        ASSERT_FALSE(std::isfinite(ref.as<const float>()[i]));
        ASSERT_FALSE(std::isfinite(got[static_cast<size_t>(i)]))
            << dtype_name(q) << " " << bad << " row " << i;
      }
    }
  }
}
#endif

// A 256-wide model whose matrices are random blocks: the CUDA bf16 forward over the kept blocks
// (1 token: every product on the block GEMV; 6 and 20: on the tensor-core kernel; 40: on the
// widened scratch) gives the CPU's f32 logits over the weights it multiplies (the blocks' values,
// rounded to bf16 past one token) within bf16's end-to-end bound, holds fewer weight bytes than
// the widened model where the formats are kept, and the same where they are not (Q5_0) or mixed.
struct ModelMix {
  GgmlType main, v_down;
  bool kept;
};

class CudaKeptBlocksModel : public ::testing::TestWithParam<ModelMix> {};

TEST_P(CudaKeptBlocksModel, ForwardMatchesTheCpuOverTheSameBlocks) {
  NI_REQUIRE_CUDA(probe, DType::BF16);  // (the probe widens: the default)
  const ModelMix mix = GetParam();
  const ModelConfig c = test::wide_config();
  test::TempDir dir;
  // Scales from 2^-20: weights up to ~1 (from 2^-16 Q4_K's reach 15, and attention's scores
  // saturate the softmax, so that one bf16 rounding of a weight moves the logits by far); Q6_K's
  // 8-bit scales times 6-bit quants reach 4x Q4_K's, so its scales start at 2^-22.
  const auto format_of = [&](const std::string& name) {
    const bool second = name.ends_with("v_proj.weight") || name.ends_with("down_proj.weight");
    return static_cast<uint32_t>(second ? mix.v_down : mix.main);
  };
  test::write_file(dir.file("q.gguf"),
                   test::random_blocks_gguf(c, format_of, mix.main == GgmlType::Q6_K ? -22 : -20));
  LoadOptions keep;
  keep.dequantize = false;
  const LoadedModel blocks = load_model(dir.file("q.gguf"), keep);
  // Past the GEMV's rows the kernels multiply the blocks' values rounded to bf16.
  LoadedModel rounded = load_model(dir.file("q.gguf"));
  for (auto& [name, t] : rounded.weights) {
    Tensor r = Tensor::zeros(DType::F32, t.shape());
    for (int64_t i = 0; i < t.numel(); ++i)
      r.as<float>()[i] = test::round_as(DType::BF16, t.as<const float>()[i]);
    t = std::move(r);
  }
  auto cpu = make_cpu_backend();
  auto kept = make_cuda_backend(DType::BF16, 0, true),
       wide = make_cuda_backend(DType::BF16, 0, false);
  std::vector<int32_t> prompt;
  prompt.reserve(40);
  for (int i = 0; i < 40; ++i) prompt.push_back((i * 37 + 11) % c.vocab_size);
  std::vector<int64_t> bytes;
  for (Backend* be : {kept.get(), wide.get()}) {
    LlamaModel model(blocks, *be, 64);
    bytes.push_back(model.weight_bytes());
  }
  if (mix.kept)
    EXPECT_LT(bytes[0], bytes[1]);
  else
    EXPECT_EQ(bytes[0], bytes[1]);
  for (const size_t len : {size_t{1}, size_t{6}, size_t{20}, size_t{40}}) {
    const std::vector<int32_t> ids(prompt.begin(), prompt.begin() + static_cast<int64_t>(len));
    std::vector<std::vector<float>> logits;
    for (Backend* be : {cpu.get(), kept.get()}) {
      LlamaModel model(be == cpu.get() && len > 1 ? rounded : blocks, *be, 64);
      KvCache cache(*be, blocks.config, {16, 3, "post"});
      SeqState seq(0, cache.create_sequence(), ids);
      be->to_host_f32(model.forward(build_batch({&seq}, cache), cache), logits.emplace_back());
    }
    ASSERT_EQ(logits[0].size(), logits[1].size());
    EXPECT_LT(test::rel_error(logits[1], logits[0].data(), logits[0].size()), 6e-2)
        << len << " tokens";
  }
}

INSTANTIATE_TEST_SUITE_P(Mixes, CudaKeptBlocksModel,
                         ::testing::Values(ModelMix{GgmlType::Q8_0, GgmlType::Q8_0, true},
                                           ModelMix{GgmlType::Q4_0, GgmlType::Q4_0, true},
                                           ModelMix{GgmlType::Q4_1, GgmlType::Q4_1, true},
                                           ModelMix{GgmlType::Q4_K, GgmlType::Q4_K, true},
                                           ModelMix{GgmlType::Q5_K, GgmlType::Q5_K, true},
                                           ModelMix{GgmlType::Q6_K, GgmlType::Q6_K, true},
                                           ModelMix{GgmlType::Q4_K, GgmlType::Q6_K, true},
                                           ModelMix{GgmlType::Q5_0, GgmlType::Q5_0, false}),
                         [](const auto& info) {
                           const auto name = [](GgmlType t) {
                             return ggml_type_name(static_cast<uint32_t>(t));
                           };
                           return name(info.param.main) + "_" + name(info.param.v_down);
                         });

}  // namespace
}  // namespace nanoinfer
