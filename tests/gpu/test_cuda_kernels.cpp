// Every CUDA op against the CPU reference backend on fresh random inputs, in fp32 (rel. error
// < 1e-5) and bf16 (< 1e-2), over several shapes including odd ones and the decode (GEMV) path.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "backend/cpu/cpu_kernels.h"
#include "gpu_test_util.h"
#include "random_blocks.h"
#include "util/error.h"
#ifdef NANOINFER_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace nanoinfer {
namespace {

struct Shape {
  int tokens, k, n;
};

class CudaOps : public ::testing::TestWithParam<std::tuple<DType, Shape>> {
 protected:
  DType dt() const { return std::get<0>(GetParam()); }
  Shape shape() const { return std::get<1>(GetParam()); }
  std::mt19937 rng_{std::random_device{}()};
};

TEST_P(CudaOps, Matmul) {
  NI_REQUIRE_CUDA(gpu, dt());
  auto cpu = make_cpu_backend();
  const auto [T, K, N] = shape();
  const Tensor x = test::random_host({T, K}, dt(), rng_), w = test::random_host({N, K}, dt(), rng_);
  Tensor ref = cpu->alloc({T, N}, DType::F32);
  cpu->matmul(x, w, ref);
  const Tensor dx = gpu->upload(x, dt()), dw = gpu->upload(w, dt());
  for (const DType out_dt : {dt(), DType::F32}) {  // activations, and f32 logits
    Tensor out = gpu->alloc({T, N}, out_dt);
    gpu->matmul(dx, dw, out);
    // bf16 output: one more rounding of each value on top of fp32 accumulation.
    EXPECT_LT(test::rel_error(*gpu, out, ref), test::rel_bound(dt())) << dtype_name(out_dt);
    // f32 out of bf16 inputs (the logits) holds bf16 values, as an HF bf16 model's logits.
    std::vector<float> got;
    gpu->to_host_f32(out, got);
    const bool rounds = dt() == DType::BF16;
    for (size_t i = 0; rounds && i < got.size(); ++i)
      ASSERT_EQ(bf16_to_f32(f32_to_bf16(got[i])), got[i]) << dtype_name(out_dt) << " " << i;
  }
}

TEST_P(CudaOps, RmsnormAndFusedAdd) {
  NI_REQUIRE_CUDA(gpu, dt());
  auto cpu = make_cpu_backend();
  const int T = shape().tokens, H = shape().k;
  const Tensor x = test::random_host({T, H}, dt(), rng_), w = test::random_host({H}, dt(), rng_);
  Tensor res = test::random_host({T, H}, dt(), rng_);
  Tensor dres = gpu->upload(res, dt());
  const Tensor dx = gpu->upload(x, dt()), dw = gpu->upload(w, dt());

  Tensor ref = cpu->alloc({T, H}, DType::F32), out = gpu->alloc({T, H}, dt());
  cpu->rmsnorm(x, w, 1e-5F, ref);
  gpu->rmsnorm(dx, dw, 1e-5F, out);
  EXPECT_LT(test::rel_error(*gpu, out, ref), test::rel_bound(dt()));

  cpu->add_rmsnorm(res, x, w, 1e-6F, ref);
  gpu->add_rmsnorm(dres, dx, dw, 1e-6F, out);
  EXPECT_LT(test::rel_error(*gpu, dres, res), test::rel_bound(dt())) << "residual";
  EXPECT_LT(test::rel_error(*gpu, out, ref), test::rel_bound(dt())) << "normed";
}

TEST(CudaOpsLimits, RmsnormRejectsHiddenPastTheKernelLimit) {
  NI_REQUIRE_CUDA(gpu, DType::BF16);
  const int H = 4 * 1024 * 8 + 8;  // one vector past 4 vectors of 8 a thread x 1,024 threads
  const Tensor x = gpu->alloc({1, H}, DType::BF16), w = gpu->alloc({H}, DType::BF16);
  Tensor out = gpu->alloc({1, H}, DType::BF16);
  EXPECT_THROW(gpu->rmsnorm(x, w, 1e-5F, out), Error);
}

TEST_P(CudaOps, AddSiluMulGather) {
  NI_REQUIRE_CUDA(gpu, dt());
  auto cpu = make_cpu_backend();
  const int T = shape().tokens, F = shape().n;
  Tensor a = test::random_host({T, F}, dt(), rng_);
  const Tensor b = test::random_host({T, F}, dt(), rng_);
  Tensor da = gpu->upload(a, dt());
  gpu->add(da, gpu->upload(b, dt()));
  cpu->add(a, b);
  EXPECT_LT(test::rel_error(*gpu, da, a), test::rel_bound(dt())) << "add";

  const Tensor gu = test::random_host({T, 2 * F}, dt(), rng_);
  Tensor ref = cpu->alloc({T, F}, DType::F32), out = gpu->alloc({T, F}, dt());
  cpu->silu_mul(gu, ref);
  gpu->silu_mul(gpu->upload(gu, dt()), out);
  EXPECT_LT(test::rel_error(*gpu, out, ref), test::rel_bound(dt())) << "silu_mul";

  std::vector<int32_t> rows;
  for (int r = T - 1; r >= 0; r -= 2) rows.push_back(r);
  const auto R = static_cast<int64_t>(rows.size());
  Tensor hr = Tensor::zeros(DType::I32, {R});
  std::copy(rows.begin(), rows.end(), hr.as<int32_t>());
  Tensor dr = gpu->alloc({R}, DType::I32);
  gpu->write_i32(
      dr,
      [&] {
        std::vector<int32_t> idx(rows.size());
        for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int32_t>(i);
        return idx;
      }(),
      rows);
  Tensor gref = cpu->alloc({R, F}, DType::F32), gout = gpu->alloc({R, F}, dt());
  cpu->gather_rows(a, hr, gref);
  gpu->gather_rows(da, dr, gout);
  std::vector<float> got;
  gpu->to_host_f32(gout, got);
  for (int64_t i = 0; i < gref.numel(); ++i)
    ASSERT_NEAR(got[i], gref.as<float>()[i], std::abs(gref.as<float>()[i]) * 1e-2F + 1e-6F) << i;
}

TEST_P(CudaOps, Embedding) {
  NI_REQUIRE_CUDA(gpu, dt());
  const int T = shape().tokens, H = shape().k, V = shape().n;
  const Tensor table = test::random_host({V, H}, dt(), rng_);
  const Tensor dtable = gpu->upload(table, dt());
  Batch b;
  std::uniform_int_distribution<int32_t> id(0, V - 1);
  for (int t = 0; t < T; ++t) {
    // Every third id negative: a token of another rank's vocabulary shard embeds to zeros.
    b.token_ids.push_back(t % 3 == 2 ? -1 : id(rng_));
    b.positions.push_back(t);
    b.seq_of_token.push_back(0);
    b.q_index.push_back(t);
    b.slots.push_back(t);
  }
  b.cu_seqlens = {0, T};
  b.context_lens = {T};
  b.max_blocks = 1;
  b.block_tables = {0};
  b.logit_rows = {T - 1};
  ModelConfig c;
  c.head_dim = 8;
  gpu->upload_rope(RopeTable::build(c, T));
  const DeviceBatch db = gpu->upload_batch(b);
  Tensor out = gpu->alloc({db.num_tokens, H}, dt());
  gpu->embedding(dtable, db, out);
  std::vector<float> got;
  gpu->to_host_f32(out, got);
  auto cpu = make_cpu_backend();
  Tensor ref = cpu->alloc({T, H}, DType::F32);
  cpu->embedding(cpu->upload(table, DType::F32), cpu->upload_batch(b), ref);
  for (int64_t i = 0; i < ref.numel(); ++i) ASSERT_EQ(got[i], ref.as<float>()[i]) << i;
}

TEST_P(CudaOps, CopyColumns) {
  NI_REQUIRE_CUDA(gpu, DType::F32);  // logits are f32 whatever the compute dtype
  auto cpu = make_cpu_backend();
  const int R = shape().tokens, n = shape().n, N = n + shape().k;
  const int64_t col0 = shape().k / 2;
  const Tensor src = test::random_host({R, n}, DType::F32, rng_);
  Tensor ref = test::random_host({R, N}, DType::F32, rng_);
  Tensor dst = gpu->upload(ref, DType::F32);
  cpu->copy_columns(src, ref, col0);
  gpu->copy_columns(gpu->upload(src, DType::F32), dst, col0);
  std::vector<float> got;
  gpu->to_host_f32(dst, got);
  for (int64_t i = 0; i < ref.numel(); ++i) ASSERT_EQ(got[i], ref.as<float>()[i]) << i;
}

TEST_P(CudaOps, RandomNormalIsSeededAndScaled) {
  NI_REQUIRE_CUDA(gpu, dt());
  const int64_t n = int64_t{shape().k} * shape().n;
  Tensor a = gpu->alloc({n}, dt()), b = gpu->alloc({n}, dt()), c = gpu->alloc({n}, dt());
  gpu->random_normal(a, 0.02F, 7);
  gpu->random_normal(b, 0.02F, 7);
  gpu->random_normal(c, 0.02F, 8);
  std::vector<float> ha, hb, hc;
  gpu->to_host_f32(a, ha);
  gpu->to_host_f32(b, hb);
  gpu->to_host_f32(c, hc);
  EXPECT_EQ(ha, hb);
  EXPECT_NE(ha, hc);
  double sum = 0, sq = 0;
  for (float v : ha) {
    sum += v;
    sq += double{v} * v;
  }
  const double mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 5 * 0.02 / std::sqrt(double(n)));
  EXPECT_NEAR(sd, 0.02, 0.02 * 0.05);
}

#ifdef NANOINFER_HAVE_CUDA
TEST_P(CudaOps, ArgmaxRows) {
  NI_REQUIRE_CUDA(gpu, dt());
  const int T = shape().tokens, V = shape().n;
  // f32 rows with a tie at the maximum: the lowest index wins, as std::max_element picks.
  Tensor logits = test::random_host({T, V}, DType::F32, rng_);
  logits.as<float>()[V - 1] = logits.as<float>()[0] = 100.0F;
  auto& cuda = dynamic_cast<cuda::CudaBackend&>(*gpu);
  Tensor ids = gpu->alloc({T}, DType::I32);
  cuda.argmax_rows(gpu->upload(logits, DType::F32), ids);
  std::vector<int32_t> host_ids(static_cast<size_t>(T));
  gpu->synchronize();
  ASSERT_EQ(cudaMemcpy(host_ids.data(), ids.data(), T * sizeof(int32_t), cudaMemcpyDeviceToHost),
            cudaSuccess);
  for (int t = 0; t < T; ++t) {
    const float* row = logits.as<float>() + int64_t{t} * V;
    EXPECT_EQ(host_ids[t], std::max_element(row, row + V) - row) << "row " << t;
  }
  std::vector<int32_t> picked;  // the engine's path: the same pick, only the ids copied back
  const std::vector<RowPick> greedy(static_cast<size_t>(T));
  ASSERT_TRUE(gpu->pick_to_host(gpu->upload(logits, DType::F32), greedy, {}, picked));
  EXPECT_EQ(picked, host_ids);
}
#endif

#ifdef NANOINFER_HAVE_CUDA
// Rows of a real vocabulary (16-byte loads, and one float past them: element by element): a tie
// far apart, a row of -inf only (index 0, as std::max_element), a maximum at the last index.
TEST(CudaArgmax, VocabularyRowsAsTheHostPicks) {
  NI_REQUIRE_CUDA(gpu, DType::F32);
  std::mt19937 rng(5);
  for (const int V : {128256, 128257}) {
    Tensor logits = test::random_host({3, V}, DType::F32, rng);
    float* r = logits.as<float>();
    r[5000] = r[120000] = 50.0F;
    std::fill_n(r + V, V, -INFINITY);
    r[3 * V - 1] = 50.0F;
    std::vector<int32_t> picked;
    ASSERT_TRUE(
        gpu->pick_to_host(gpu->upload(logits, DType::F32), std::vector<RowPick>(3), {}, picked));
    std::vector<int32_t> want(3);
    for (int t = 0; t < 3; ++t)
      want[t] = static_cast<int32_t>(std::max_element(r + t * V, r + (t + 1) * V) - (r + t * V));
    EXPECT_EQ(want, (std::vector<int32_t>{5000, 0, V - 1}));
    EXPECT_EQ(picked, want) << "vocabulary " << V;
  }
}

// The decode GEMV called directly on the edge paths of its loop: k = 8, rows ending inside a
// chunk of loads (k not a multiple of 2048), warps that wrap around n several times (n > SMs x
// 16 warps, n not a multiple of 16), and a k whose 4 activation rows do not fit in shared memory
// (read through the L1 instead; 3 rows still fit). Rows of x past `tokens` and row n of w hold
// NaN (never read), the output past [tokens, n] a sentinel (never written), and a second launch
// gives the same bits.
TEST(CudaGemv, EdgeShapesLeaveTheRestAlone) {
  NI_REQUIRE_CUDA(gpu, DType::BF16);
  auto cpu = make_cpu_backend();
  const cudaStream_t stream = dynamic_cast<cuda::CudaBackend&>(*gpu).stream();
  std::mt19937 rng(7);
  const int T = cuda::kGemvMaxTokens;
  const std::pair<int, int> shapes[] = {
      {8, 37}, {120, 4500}, {2056, 2500}, {14336, 130}, {29064, 40}};
  for (const auto& [k, n] : shapes) {
    Tensor x = test::random_host({T, k}, DType::BF16, rng);
    Tensor w = test::random_host({n + 1, k}, DType::BF16, rng);
    std::fill_n(w.as<float>() + int64_t{n} * k, k, NAN);
    Tensor w_ref = Tensor::zeros(DType::F32, {n, k});
    std::copy_n(w.as<float>(), w_ref.numel(), w_ref.as<float>());
    const Tensor dw = gpu->upload(w, DType::BF16);
    for (int tokens = 1; tokens <= T; ++tokens) {
      Tensor x_ref = Tensor::zeros(DType::F32, {tokens, k});
      std::copy_n(x.as<float>(), x_ref.numel(), x_ref.as<float>());
      Tensor x_nan = Tensor::zeros(DType::F32, {T, k});
      std::copy_n(x_ref.as<float>(), x_ref.numel(), x_nan.as<float>());
      std::fill(x_nan.as<float>() + x_ref.numel(), x_nan.as<float>() + x_nan.numel(), NAN);
      const Tensor dx = gpu->upload(x_nan, DType::BF16);
      Tensor ref = cpu->alloc({tokens, n}, DType::F32);
      cpu->matmul(x_ref, w_ref, ref);
      const int64_t used = int64_t{tokens} * n, total = int64_t{T} * n + 64;
      Tensor sentinel = Tensor::zeros(DType::F32, {total});
      std::fill_n(sentinel.as<float>(), total, 3.0F);
      for (const DType y_dt : {DType::BF16, DType::F32}) {
        SCOPED_TRACE(testing::Message()
                     << "k " << k << " n " << n << " tokens " << tokens << " " << dtype_name(y_dt));
        Tensor y1 = gpu->upload(sentinel, y_dt), y2 = gpu->upload(sentinel, y_dt);
        cuda::gemv_bf16(dx.data(), dw.data(), y_dt, y1.data(), tokens, k, n, stream);
        cuda::gemv_bf16(dx.data(), dw.data(), y_dt, y2.data(), tokens, k, n, stream);
        std::vector<float> got1, got2;
        gpu->to_host_f32(y1, got1);
        gpu->to_host_f32(y2, got2);
        EXPECT_LT(test::rel_error(got1, ref.as<float>(), static_cast<size_t>(used)),
                  test::rel_bound(DType::BF16));
        for (int64_t i = 0; i < used; ++i)  // f32 y too: bf16 values (the logits)
          ASSERT_EQ(bf16_to_f32(f32_to_bf16(got1[i])), got1[i]) << i;
        for (int64_t i = used; i < total; ++i) ASSERT_EQ(got1[i], 3.0F) << "written past: " << i;
        EXPECT_EQ(got1, got2);
      }
    }
  }
}

// A host tensor of `rows` x `K` random values in `dt` (f32, f16, bf16, or GGUF blocks with finite
// f16 scales and minimums: test::random_blocks).
Tensor random_host(DType dt, int64_t rows, int64_t K, unsigned seed) {
  Tensor host = Tensor::zeros(dt, {rows, K});
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0F, 1.0F);
  const auto n = static_cast<size_t>(rows * K);
  if (dt == DType::F32) {
    for (size_t i = 0; i < n; ++i) host.as<float>()[i] = normal(rng);
    return host;
  }
  if (dt == DType::F16 || dt == DType::BF16) {
    for (size_t i = 0; i < n; ++i)
      host.as<uint16_t>()[i] =
          dt == DType::F16 ? f32_to_f16(normal(rng)) : f32_to_bf16(normal(rng));
    return host;
  }
  const std::vector<uint8_t> blocks = test::random_blocks(dt, rows * K, seed);
  std::memcpy(host.data(), blocks.data(), blocks.size());
  return host;
}

// GGUF blocks of every format uploaded as the loader leaves them (views of the file) to a backend
// that widens them (the default; test_cuda_quant.cpp keeps them): widened on the host a slice of
// rows at a time, to the values the loader's dequantisation gives (rounded once to bf16 in the
// bf16 mode). 1,100 rows of 4,096 take two slices.
TEST(CudaUpload, WidensGgufBlocksToTheLoadersValues) {
  for (const DType dt : {DType::F32, DType::BF16}) {
    NI_REQUIRE_CUDA(gpu, dt);
    for (const DType q : test::block_formats()) {
      const int64_t rows = 1100, K = 4096;
      const Tensor host = random_host(q, rows, K, 7);
      std::vector<float> want(static_cast<size_t>(rows * K)), got;
      cpu::dequantize_rows(q, static_cast<const uint8_t*>(host.data()), rows, K, want.data());
      gpu->to_host_f32(gpu->upload(host, dt), got);
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < want.size(); ++i) {
        const float w = dt == DType::BF16 ? bf16_to_f32(f32_to_bf16(want[i])) : want[i];
        ASSERT_EQ(got[i], w) << dtype_name(q) << " to " << dtype_name(dt) << ", element " << i;
      }
    }
  }
}

// Stacked weights (q, k, v; gate, up) uploaded part by part into their rows equal the host stack
// uploaded whole, for every stored dtype (blocks: the middle part takes two slices).
TEST(CudaUpload, RowsLandWhereTheHostStackPutsThem) {
  for (const DType dt : {DType::F32, DType::BF16}) {
    NI_REQUIRE_CUDA(gpu, dt);
    for (const DType src : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_1,
                            DType::Q4_K, DType::Q6_K}) {
      const int64_t K = 4096;
      const std::vector<Tensor> parts = {random_host(src, 3, K, 1), random_host(src, 1100, K, 2),
                                         random_host(src, 1, K, 3)};
      std::vector<float> want, got;
      gpu->to_host_f32(gpu->upload(Tensor::stack_rows(parts), dt), want);
      gpu->to_host_f32(gpu->upload_rows(parts, dt), got);
      ASSERT_EQ(got.size(), static_cast<size_t>(1104 * K));
      ASSERT_EQ(got, want) << dtype_name(src) << " to " << dtype_name(dt);
    }
  }
}

// GEMM algorithm buckets (host only): 16 up to 16 rows, then quarter octaves, so a row count runs
// an algorithm picked for at most 25 % more rows; the warm-up's list is every bucket in order.
TEST(LtGemmBuckets, QuarterOctavesAndTheWarmupList) {
  const std::vector<int> all = cuda::LtGemm::buckets_up_to(1024);
  EXPECT_EQ(all, (std::vector<int>{16,  20,  24,  28,  32,  40,  48,  56,  64,  80,  96,  112, 128,
                                   160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024}));
  for (int64_t t = 1; t <= 4096; ++t) {
    const int64_t b = cuda::LtGemm::bucket_of(t);
    ASSERT_GE(b, t);
    ASSERT_EQ(cuda::LtGemm::bucket_of(b), b) << t;
    if (t > 16) {
      ASSERT_LT(4 * (b - t), t) << t;
    }
    if (t <= 1024) {
      ASSERT_TRUE(std::find(all.begin(), all.end(), b) != all.end()) << t;
    }
  }
  EXPECT_EQ(cuda::LtGemm::bucket_of(1025), 1280);
}

// cuda::read_two (the benchmarks' read ceiling) reads every word of both buffers: with every word
// zero but one, set to the value that makes the thread holding it write the sink, the sink is
// written wherever that word sits (at either end of either buffer, or inside).
TEST(CudaReadTwo, ReadsEveryWordOfBoth) {
  NI_REQUIRE_CUDA(gpu, DType::F32);
  const cudaStream_t stream = dynamic_cast<cuda::CudaBackend&>(*gpu).stream();
  constexpr int32_t kWrites = static_cast<int32_t>(0x9e3779b9U);  // read_two_kernel's value
  for (const int64_t words : {int64_t{4}, int64_t{1028}, int64_t{4} << 20}) {  // per buffer
    Tensor a = gpu->alloc({words}, DType::I32), b = gpu->alloc({words}, DType::I32);
    Tensor sink = gpu->alloc({1}, DType::I32);
    for (const int64_t p :
         {int64_t{0}, int64_t{3}, words / 2, words - 1, words, words + 3, 2 * words - 1}) {
      gpu->fill_i32(a, 0);
      gpu->fill_i32(b, 0);
      gpu->fill_i32(sink, 0);
      gpu->write_i32(p < words ? a : b, {static_cast<int32_t>(p % words)}, {kWrites});
      cuda::read_two(a.data(), b.data(), words * 4, static_cast<unsigned*>(sink.data()), stream);
      int32_t got = 0;
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(&got, sink.data(), 4, cudaMemcpyDeviceToHost), cudaSuccess);
      EXPECT_EQ(got, kWrites) << words << " words a buffer, the word at " << p << " unread";
    }
  }
}
#endif

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaOps,
    ::testing::Combine(::testing::Values(DType::F32, DType::BF16),
                       ::testing::Values(Shape{1, 64, 96}, Shape{3, 256, 1000}, Shape{4, 72, 40},
                                         Shape{5, 100, 33}, Shape{37, 576, 1536},
                                         Shape{130, 128, 515},
                                         // rows of several vectors a thread
                                         Shape{2, 12000, 40}, Shape{1, 16000, 24},
                                         Shape{3, 2050, 17})));

}  // namespace
}  // namespace nanoinfer
