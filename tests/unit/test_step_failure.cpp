// A step whose forward fails (a device error: out of memory, a fault) in the middle of a run: the
// requests of its batch end with finish_reason "error" and their blocks back, the exception comes
// out, and the run goes on with the others (waiting, or running but not in that batch), whose
// tokens are those of a run that never failed; no prompt block of the failed step is published.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "dist/communicator.h"
#include "engine/run.h"
#include "kv/kv_cache.h"
#include "loader/model_loader.h"
#include "model/llama.h"
#include "test_paths.h"

namespace nanoinfer {
namespace {

// The CPU backend, whose attention throws while fail_attention is set (after the step's first
// layers have written their KV entries, as a fault within a forward would), and whose copy of the
// logits to the host throws while fail_copy is set (where a device's fault surfaces).
class FailingBackend final : public Backend {
 public:
  bool fail_attention = false;
  bool fail_copy = false;
  std::string name() const override { return b_->name(); }
  DType compute_dtype() const override { return b_->compute_dtype(); }
  Tensor alloc(std::vector<int64_t> shape, DType dtype) override {
    return b_->alloc(std::move(shape), dtype);
  }
  Tensor upload(const Tensor& host, DType dtype) override { return b_->upload(host, dtype); }
  void to_host_f32(const Tensor& src, std::vector<float>& dst) override {
    if (fail_copy) throw std::runtime_error("device fault");
    b_->to_host_f32(src, dst);
  }
  DeviceBatch upload_batch(const Batch& batch) override { return b_->upload_batch(batch); }
  void upload_rope(const RopeTable& table) override { b_->upload_rope(table); }
  void fill_i32(Tensor& t, int32_t value) override { b_->fill_i32(t, value); }
  void write_i32(Tensor& t, const std::vector<int32_t>& idx,
                 const std::vector<int32_t>& v) override {
    b_->write_i32(t, idx, v);
  }
  bool kv_heads_outer() const override { return b_->kv_heads_outer(); }
  void copy_slots(std::span<KvLayer> layers, const std::vector<int32_t>& src,
                  const std::vector<int32_t>& dst) override {
    b_->copy_slots(layers, src, dst);
  }
  void random_normal(Tensor& t, float std, uint64_t seed) override {
    b_->random_normal(t, std, seed);
  }
  void embedding(const Tensor& table, const DeviceBatch& b, Tensor& out) override {
    b_->embedding(table, b, out);
  }
  void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    b_->rmsnorm(x, w, eps, out);
  }
  void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                   Tensor& out) override {
    b_->add_rmsnorm(residual, x, w, eps, out);
  }
  void add(Tensor& acc, const Tensor& x) override { b_->add(acc, x); }
  void matmul(const Tensor& x, const Tensor& w, Tensor& out) override { b_->matmul(x, w, out); }
  void silu_mul(const Tensor& gate_up, Tensor& out) override { b_->silu_mul(gate_up, out); }
  void gather_rows(const Tensor& x, const Tensor& rows, Tensor& out) override {
    b_->gather_rows(x, rows, out);
  }
  void copy_columns(const Tensor& src, Tensor& dst, int64_t col0) override {
    b_->copy_columns(src, dst, col0);
  }
  void rope_store_kv(Tensor& qkv, int num_heads, int num_kv_heads, const DeviceBatch& b,
                     KvLayer& layer, bool rotate_k) override {
    b_->rope_store_kv(qkv, num_heads, num_kv_heads, b, layer, rotate_k);
  }
  void attention(const Tensor& qkv, int num_heads, int num_kv_heads, const DeviceBatch& b,
                 const KvLayer& layer, bool rotate_keys, Tensor& out) override {
    if (fail_attention) throw std::runtime_error("device fault");
    b_->attention(qkv, num_heads, num_kv_heads, b, layer, rotate_keys, out);
  }

 private:
  std::unique_ptr<Backend> b_ = make_cpu_backend();
};

GenerationRequest request(std::vector<int32_t> prompt, int new_tokens, int beams = 1) {
  GenerationRequest r{std::move(prompt), {}};
  r.params.max_new_tokens = new_tokens;
  r.params.ignore_eos = true;
  r.params.num_beams = beams;
  return r;
}

// A run over the tiny GQA model (with prefix reuse), a cache of `blocks` blocks of 16 and steps of
// at most 8 tokens, so that a prompt takes several steps.
struct Fixture {
  explicit Fixture(int blocks) : cache{backend, model.shard_config(), KvCacheOptions{16, blocks}} {}
  FailingBackend backend;
  LoadedModel loaded = load_model(test::data_path("models/gqa"));
  LlamaModel model{loaded, backend, 64};
  KvCache cache;
  RunContext ctx{loaded.config,
                 backend,
                 model,
                 nullptr,
                 64,
                 0,
                 8,
                 false,
                 true,
                 single_rank(),
                 [](const StepMessage&) {}};
  GenerationStats stats;
  Run run{ctx, cache, stats, false};
  std::map<size_t, GenerationOutput> done;

  size_t add(const GenerationRequest& r) {
    return run.add(
        r, nullptr, [this](size_t id, GenerationOutput&& o) { done[id] = o; }, "");
  }
  void finish() {
    while (run.step()) {
    }
  }
};

// Each request alone in a run that never fails (the CPU backend's tokens do not depend on the
// batch).
std::vector<GenerationOutput> alone(const std::vector<GenerationRequest>& requests) {
  std::vector<GenerationOutput> out;
  for (const GenerationRequest& r : requests) {
    Fixture f(40);
    f.add(r);
    f.finish();
    out.push_back(f.done.at(0));
  }
  return out;
}

// Steps: 1 = request 0's prompt and 2 tokens of request 1's; 2 = a token of 0 and 7 prompt tokens
// of 1; 3 = a token of 0 and 1's next 7, which complete its first block: the step fails in the
// copy of its logits, after its forward. Request 2 waits for blocks throughout (6 in all).
TEST(StepFailure, EndsItsBatchPublishesNothingAndTheRunGoesOn) {
  const std::vector<GenerationRequest> reqs = {
      request({5, 9, 2, 7, 1, 3}, 20),                                   // 2 blocks
      request({4, 4, 8, 1, 6, 2, 9, 3, 5, 7, 1, 2, 8, 6, 4, 3, 9}, 12),  // 2 blocks
      request({7, 1, 3}, 30),                                            // 3: waits
  };
  const std::vector<GenerationOutput> want = alone(reqs);
  Fixture f(6);
  for (const GenerationRequest& r : reqs) f.add(r);
  ASSERT_TRUE(f.run.step());
  ASSERT_TRUE(f.run.step());
  f.backend.fail_copy = true;
  EXPECT_THROW(f.run.step(), std::runtime_error);
  f.backend.fail_copy = false;
  ASSERT_EQ(f.done.size(), 2U);
  for (const size_t id : {0U, 1U}) {
    EXPECT_EQ(f.done[id].finish_reason, "error") << id;
    EXPECT_EQ(f.done[id].token_ids.size(), id == 0 ? 2U : 0U) << id;
  }
  EXPECT_EQ(f.cache.allocated_slots(), 0);  // their blocks are back, none of them published
  EXPECT_EQ(f.run.active(), 1U);            // request 2 waits still, and runs now
  const size_t again = f.add(reqs[1]);
  f.finish();
  EXPECT_EQ(f.done[2].finish_reason, "length");
  EXPECT_EQ(f.done[2].token_ids, want[2].token_ids);
  EXPECT_EQ(f.done[again].token_ids, want[1].token_ids);
  EXPECT_EQ(f.done[again].reused_prompt_tokens, 0);  // the failed step's block was not published
  EXPECT_EQ(f.run.active(), 0U);
}

// Steps: 1 = the beam request's prompt and request 1's; 2 = a token of request 1, the beam
// request's 8 beams left out (1 + 8 exceeds the step's 8 tokens), request 2 admitted and its whole
// prompt: the step fails within the forward. Requests 1 and 2 end; the beams run on.
TEST(StepFailure, RequestsOutsideTheBatchRunOn) {
  const std::vector<GenerationRequest> reqs = {
      request({3, 8, 1, 6}, 5, 8),
      request({9, 2, 4, 7}, 10),
      request({6, 6, 1}, 4),
  };
  const std::vector<GenerationOutput> want = alone(reqs);
  Fixture f(40);
  f.add(reqs[0]);
  f.add(reqs[1]);
  ASSERT_TRUE(f.run.step());
  f.add(reqs[2]);
  f.backend.fail_attention = true;
  EXPECT_THROW(f.run.step(), std::runtime_error);
  f.backend.fail_attention = false;
  ASSERT_EQ(f.done.size(), 2U);
  EXPECT_EQ(f.done[1].finish_reason, "error");
  EXPECT_EQ(f.done[1].token_ids.size(), 1U);
  EXPECT_EQ(f.done[2].finish_reason, "error");
  EXPECT_TRUE(f.done[2].token_ids.empty());
  EXPECT_EQ(f.run.active(), 1U);
  f.finish();
  EXPECT_EQ(f.done[0].finish_reason, "length");
  EXPECT_EQ(f.done[0].sequences, want[0].sequences);
  EXPECT_EQ(f.done[0].scores, want[0].scores);
}

}  // namespace
}  // namespace nanoinfer
