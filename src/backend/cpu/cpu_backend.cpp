// The CPU backend: fp32 everywhere, OpenMP threads, AVX2 dot products (cpu_kernels.cpp).
// It is the reference every other backend is tested against.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <omp.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/op_profile.h"
#include "sampling/counter_rng.h"
#include "util/error.h"
#include "util/host_memory.h"

namespace nanoinfer {
namespace {

Tensor i32_tensor(const std::vector<int32_t>& v, std::vector<int64_t> shape) {
  Tensor t = Tensor::zeros(DType::I32, std::move(shape));
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  DType compute_dtype() const override { return DType::F32; }
  bool kv_heads_outer() const override { return true; }
  int64_t free_memory() const override { return host_available_bytes(); }
  // A prompt's rows are computed in turn whatever the step's size (compute-bound: no weight
  // reads to share), and on the 2-core dev machine 512-token chunks prefilled 994 and 3,976
  // tokens as fast as one step or faster, while a 3,001-token step had held a server's running
  // streams for 11 s.
  int step_tokens() const override { return 512; }

  Tensor alloc(std::vector<int64_t> shape, DType dtype) override {
    return Tensor::zeros(dtype, std::move(shape));
  }

  Tensor upload(const Tensor& host, DType dtype) override {
    NI_ASSERT(dtype == DType::F32);
    // f32 and block-quantised weights are used as they are (an mmap view stays a view); the
    // quantised ones are widened tile by tile inside matmul.
    if (host.dtype() == DType::F32 || dtype_block(host.dtype()) > 1) return host;
    Tensor out = Tensor::zeros(DType::F32, host.shape());
    const auto* src = host.as<const uint16_t>();
    float* dst = out.as<float>();
    const int64_t n = host.numel();
    const bool bf16 = host.dtype() == DType::BF16;
    NI_ASSERT(bf16 || host.dtype() == DType::F16);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16 ? bf16_to_f32(src[i]) : f16_to_f32(src[i]);
    return out;
  }

  // Fused weights (q|k|v, gate|up). A GGUF may keep the parts in different formats (llama.cpp's
  // Q4_K_M stores v in Q6_K beside Q4_K q and k in half the layers); such a stack is widened to
  // f32 once here, as one tensor holds one dtype.
  Tensor upload_rows(const std::vector<Tensor>& parts, DType dtype) override {
    const bool one_dtype = std::all_of(
        parts.begin(), parts.end(), [&](const Tensor& p) { return p.dtype() == parts[0].dtype(); });
    if (one_dtype) return upload(Tensor::stack_rows(parts), dtype);
    std::vector<Tensor> wide;
    for (const Tensor& p : parts) {
      if (dtype_block(p.dtype()) == 1) {
        wide.push_back(upload(p, dtype));
        continue;
      }
      Tensor w = Tensor::zeros(DType::F32, p.shape());
      cpu::dequantize_rows(p.dtype(), static_cast<const uint8_t*>(p.data()), p.dim(0), p.dim(1),
                           w.as<float>());
      wide.push_back(w);
    }
    return Tensor::stack_rows(wide);
  }

  void to_host_f32(const Tensor& src, std::vector<float>& dst) override {
    dst.assign(src.as<const float>(), src.as<const float>() + src.numel());
  }

  DeviceBatch upload_batch(const Batch& b) override {
    decode_ = b.profiled_as_decode();
    DeviceBatch d;
    d.num_tokens = b.num_tokens();
    d.num_seqs = b.num_seqs();
    d.max_blocks = b.max_blocks;
    for (int32_t c : b.context_lens) d.max_context = std::max(d.max_context, c);
    const int64_t T = d.num_tokens, B = d.num_seqs;
    d.token_ids = i32_tensor(b.token_ids, {T});
    d.positions = i32_tensor(b.positions, {T});
    d.seq_of_token = i32_tensor(b.seq_of_token, {T});
    d.q_index = i32_tensor(b.q_index, {T});
    d.slots = i32_tensor(b.slots, {T});
    d.cu_seqlens = i32_tensor(b.cu_seqlens, {B + 1});
    d.context_lens = i32_tensor(b.context_lens, {B});
    d.block_tables = i32_tensor(b.block_tables, {B, b.max_blocks});
    d.logit_rows = i32_tensor(b.logit_rows, {static_cast<int64_t>(b.logit_rows.size())});
    if (!b.tree_mask.empty()) {
      d.tree_mask = Tensor::zeros(DType::I32, {static_cast<int64_t>((b.tree_mask.size() + 3) / 4)});
      std::memcpy(d.tree_mask.data(), b.tree_mask.data(), b.tree_mask.size());
      d.tree_offsets = i32_tensor(b.tree_offsets, {B});
    }
    return d;
  }

  void set_profiling(bool on) override {
    profiling_ = on;
  }
  std::string profile_report() override {
    return profile_.report("CPU time");
  }

  void upload_rope(const RopeTable& table) override {
    rope_ = table;
  }

  // Box-Muller on the two halves of one hash of (seed, pair): elements 2k and 2k + 1 are a pure
  // function of (seed, k), every thread drawing its own pairs (Llama-3.2-1B's shape loaded in
  // 19.5 s on the 2-core dev machine, 2026-12-07, against 29.4 s from one
  // std::normal_distribution; docs/pseudocode/cuda.md).
  void random_normal(Tensor& t, float std, uint64_t seed) override {
    NI_ASSERT(t.dtype() == DType::F32);
    float* out = t.as<float>();
    const int64_t n = t.numel();
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < (n + 1) / 2; ++k) {
      const uint64_t h = sampling::mix64(seed ^ sampling::mix64(static_cast<uint64_t>(k)));
      const float u1 = (static_cast<float>(h >> 40) + 1.0F) * 0x1.0p-24F;      // (0, 1]
      const float u2 = static_cast<float>((h >> 8) & 0xFFFFFFU) * 0x1.0p-24F;  // [0, 1)
      const float r = std * std::sqrt(-2.0F * std::log(u1));
      out[2 * k] = r * std::cos(6.2831853F * u2);
      if (2 * k + 1 < n) out[2 * k + 1] = r * std::sin(6.2831853F * u2);
    }
  }

  void fill_i32(Tensor& t, int32_t value) override {
    std::fill(t.as<int32_t>(), t.as<int32_t>() + t.numel(), value);
  }

  void write_i32(Tensor& t, const std::vector<int32_t>& idx,
                 const std::vector<int32_t>& v) override {
    for (size_t i = 0; i < idx.size(); ++i) t.as<int32_t>()[idx[i]] = v[i];
  }

  void copy_slots(std::span<KvLayer> layers, const std::vector<int32_t>& src,
                  const std::vector<int32_t>& dst) override {
    const Timed op(*this, "copy_slots");
    for (KvLayer& layer : layers) {
      const int64_t D = layer.k.dim(2);
      for (const Tensor* kv : {&layer.k, &layer.v})
        for (int64_t h = 0; h < kv->dim(0); ++h) {
          float* rows = head_rows(*kv, h);
          for (size_t i = 0; i < src.size(); ++i)
            std::memcpy(rows + dst[i] * D, rows + src[i] * D, D * sizeof(float));
        }
      int32_t* pos = layer.slot_pos.as<int32_t>();
      for (size_t i = 0; i < src.size(); ++i) pos[dst[i]] = pos[src[i]];
    }
  }

  void embedding(const Tensor& table, const DeviceBatch& b, Tensor& out) override {
    const Timed op(*this, "embedding");
    const int64_t H = table.dim(1);
    const int32_t* ids = b.token_ids.as<const int32_t>();
    for (int t = 0; t < b.num_tokens; ++t) {
      if (ids[t] >= table.dim(0))
        fail("token id " + std::to_string(ids[t]) + " is outside the vocabulary (size " +
             std::to_string(table.dim(0)) + ")");
      if (ids[t] < 0)
        std::fill(out.as<float>() + t * H, out.as<float>() + (t + 1) * H, 0.0F);
      else if (table.dtype() == DType::F32)
        std::memcpy(out.as<float>() + t * H, table.as<const float>() + ids[t] * H,
                    H * sizeof(float));
      else
        cpu::dequantize_rows(table.dtype(), static_cast<const uint8_t*>(table.row(ids[t]).data()),
                             1, H, out.as<float>() + t * H);
    }
  }

  void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    const Timed op(*this, "rmsnorm");
    cpu::rmsnorm(x.as<const float>(), w.as<const float>(), eps, out.as<float>(), x.dim(0),
                 x.dim(1));
  }

  void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                   Tensor& out) override {
    const Timed op(*this, "add_rmsnorm");
    add(residual, x);
    rmsnorm(residual, w, eps, out);
  }

  void add(Tensor& acc, const Tensor& x) override {
    const Timed op(*this, "add");
    float* a = acc.as<float>();
    const float* b = x.as<const float>();
    const int64_t n = acc.numel();
    for (int64_t i = 0; i < n; ++i) a[i] += b[i];
  }

  void matmul(const Tensor& x, const Tensor& w, Tensor& out) override {
    NI_ASSERT(x.dim(1) == w.dim(1) && out.dim(1) == w.dim(0) && out.dim(0) == x.dim(0));
    const Timed op(*this, "matmul", &w);
    if (w.dtype() == DType::F32)
      cpu::matmul(x.as<const float>(), w.as<const float>(), out.as<float>(), x.dim(0), x.dim(1),
                  w.dim(0));
    else
      cpu::matmul_quantized(x.as<const float>(), w.dtype(), static_cast<const uint8_t*>(w.data()),
                            out.as<float>(), x.dim(0), x.dim(1), w.dim(0));
  }

  void silu_mul(const Tensor& gate_up, Tensor& out) override {
    const Timed op(*this, "silu_mul");
    cpu::silu_mul(gate_up.as<const float>(), out.as<float>(), out.dim(0), out.dim(1));
  }

  void gather_rows(const Tensor& x, const Tensor& rows, Tensor& out) override {
    const Timed op(*this, "gather_rows");
    const int64_t H = x.dim(1);
    for (int64_t r = 0; r < rows.numel(); ++r)
      std::memcpy(out.as<float>() + r * H, x.as<const float>() + rows.as<const int32_t>()[r] * H,
                  H * sizeof(float));
  }

  void copy_columns(const Tensor& src, Tensor& dst, int64_t col0) override {
    NI_ASSERT(src.dtype() == dst.dtype() && src.dim(0) == dst.dim(0) &&
              col0 + src.dim(1) <= dst.dim(1));
    const Timed op(*this, "copy_columns");
    const size_t elem = dtype_size(src.dtype());
    for (int64_t r = 0; r < src.dim(0); ++r)
      std::memcpy(static_cast<uint8_t*>(dst.data()) + (r * dst.dim(1) + col0) * elem,
                  static_cast<const uint8_t*>(src.data()) + r * src.dim(1) * elem,
                  src.dim(1) * elem);
  }

  void rope_store_kv(Tensor& qkv, int heads, int kv_heads, const DeviceBatch& b, KvLayer& layer,
                     bool rotate_k) override {
    const Timed op(*this, "rope_store_kv");
    const int D = rope_.head_dim;
    const int64_t stride = int64_t{heads + 2 * kv_heads} * D;
    const int32_t* pos = b.positions.as<const int32_t>();
    const int32_t* slots = b.slots.as<const int32_t>();
    for (int t = 0; t < b.num_tokens; ++t) {
      if (pos[t] < 0 || pos[t] >= rope_.max_positions)
        fail("position " + std::to_string(pos[t]) + " is outside the RoPE table (" +
             std::to_string(rope_.max_positions) + " positions)");
    }
#pragma omp parallel for schedule(static) if (b.num_tokens > 1 && \
                                              stride * b.num_tokens >= cpu::kParallelElements)
    for (int t = 0; t < b.num_tokens; ++t) {
      float* row = qkv.as<float>() + t * stride;
      const float* cs = rope_.row(pos[t]);
      for (int h = 0; h < heads; ++h) cpu::rope_rotate(row + h * D, cs, D);
      float* k = row + int64_t{heads} * D;
      if (rotate_k)
        for (int h = 0; h < kv_heads; ++h) cpu::rope_rotate(k + h * D, cs, D);
      for (int h = 0; h < kv_heads; ++h) {
        std::memcpy(head_rows(layer.k, h) + slots[t] * int64_t{D}, k + h * D, D * sizeof(float));
        std::memcpy(head_rows(layer.v, h) + slots[t] * int64_t{D}, k + (kv_heads + h) * D,
                    D * sizeof(float));
      }
      layer.slot_pos.as<int32_t>()[slots[t]] = pos[t];
    }
  }

  void attention(const Tensor& qkv, int heads, int kv_heads, const DeviceBatch& b,
                 const KvLayer& layer, bool rotate_keys, Tensor& out) override;

 private:
  // Adds the wall time of the op it lives in to the profile (--profile); an op another one calls
  // (add_rmsnorm's add) counts in the outer one only. The ops run on this thread (OpenMP joins
  // before they return), so the steady clock measures them whole.
  class Timed {
   public:
    Timed(CpuBackend& be, const char* name, const Tensor* w = nullptr)
        : be_(be.profiling_ && !be.timing_ ? &be : nullptr) {
      if (be_ == nullptr) return;
      be_->timing_ = true;
      name_ = name;
      if (w != nullptr)
        name_ += " " + std::to_string(w->dim(0)) + "x" + std::to_string(w->dim(1)) + " " +
                 dtype_name(w->dtype());
      start_ = std::chrono::steady_clock::now();
    }
    ~Timed() {
      if (be_ == nullptr) return;
      const std::chrono::duration<double, std::milli> ms =
          std::chrono::steady_clock::now() - start_;
      be_->profile_.add(name_, be_->decode_, ms.count());
      be_->timing_ = false;
    }
    Timed(const Timed&) = delete;
    Timed& operator=(const Timed&) = delete;

   private:
    CpuBackend* be_;
    std::string name_;
    std::chrono::steady_clock::time_point start_;
  };

  // Head h's rows of a cache layer's K or V, one a slot: the CPU keeps them [kv_head][slot][D]
  // (kv_heads_outer()).
  static float* head_rows(const Tensor& kv, int64_t h) {
    return kv.as<float>() + h * kv.dim(1) * kv.dim(2);
  }

  RopeTable rope_;
  bool profiling_ = false, timing_ = false;
  bool decode_ = false;  // the last uploaded batch is profiled as decode
  OpProfile profile_;
  // attention()'s table of every sequence's cache slots, kept so that a step's layers reuse the
  // memory: entry j of sequence s at slot_table_[first_slot_[s] + j].
  std::vector<int64_t> first_slot_;
  std::vector<int32_t> slot_table_;
  std::vector<int> query_blocks_;  // attention(): the first token of each block of queries,
  std::vector<float> scratch_;     // and each thread's scores
};

void CpuBackend::attention(const Tensor& qkv, int heads, int kv_heads, const DeviceBatch& b,
                           const KvLayer& layer, bool rotate_keys, Tensor& out) {
  const Timed op(*this, "attention");
  const int D = rope_.head_dim;
  const int group = heads / kv_heads;
  const int64_t stride = int64_t{heads + 2 * kv_heads} * D;
  const float scale = 1.0F / std::sqrt(static_cast<float>(D));
  const int32_t* seq_of = b.seq_of_token.as<const int32_t>();
  const int32_t* q_index = b.q_index.as<const int32_t>();
  const int32_t* cu = b.cu_seqlens.as<const int32_t>();
  const int32_t* ctx = b.context_lens.as<const int32_t>();
  const int32_t* tables = b.block_tables.as<const int32_t>();
  const int32_t* slot_pos = layer.slot_pos.as<const int32_t>();
  const auto* mask = static_cast<const uint8_t*>(b.tree_mask.data());
  const int bs = layer.block_size;
  // Every sequence's cache slots, entry by entry, once a call (a division a score cost about as
  // much as the score's dot product).
  first_slot_.assign(static_cast<size_t>(b.num_seqs) + 1, 0);
  for (int s = 0; s < b.num_seqs; ++s) first_slot_[s + 1] = first_slot_[s] + ctx[s];
  slot_table_.resize(static_cast<size_t>(first_slot_[b.num_seqs]));
  for (int s = 0; s < b.num_seqs; ++s)
    for (int j = 0; j < ctx[s]; ++j)
      slot_table_[first_slot_[s] + j] = tables[int64_t{s} * b.max_blocks + j / bs] * bs + j % bs;
  const int64_t slot_stride = D;  // within a head's rows of K and V
  auto k_of = [&](int kvh) { return head_rows(layer.k, kvh); };
  auto v_of = [&](int kvh) { return head_rows(layer.v, kvh); };
  int64_t work = 0;  // multiply-adds of Q K^T (P V as many again)
  for (int t = 0; t < b.num_tokens; ++t) work += int64_t{q_index[t] + 1} * heads * D;
  const bool team = work >= cpu::kParallelWork / 4;  // (its multiply-adds run ~4x slower)
  // Each thread's scratch, kept between calls: 4 rows of scores of <= max_context keys, a key.
  const int64_t per_thread = int64_t{4} * b.max_context + D;
  scratch_.resize(static_cast<size_t>(per_thread * omp_get_max_threads()));
  if (!rotate_keys && mask == nullptr && D % 16 == 0) {
    // Each sequence's new tokens four at a time (consecutive queries), every head: the key and
    // value rows are loaded once for the four. The same results as one query at a time, below.
    query_blocks_.clear();
    for (int s = 0; s < b.num_seqs; ++s)
      for (int t = cu[s]; t < cu[s + 1]; t += 4) query_blocks_.push_back(t);
    const int blocks = static_cast<int>(query_blocks_.size());
#pragma omp parallel for schedule(dynamic, 1) collapse(2) if (team)
    for (int i = 0; i < blocks; ++i) {
      for (int h = 0; h < heads; ++h) {
        const int t = query_blocks_[i], s = seq_of[t];
        const int R = std::min(4, cu[s + 1] - t);
        NI_ASSERT(q_index[t + R - 1] == q_index[t] + R - 1);
        const int kvh = h / group;
        cpu::attend_queries(qkv.as<const float>() + t * stride + int64_t{h} * D, stride, R,
                            q_index[t] + 1, scale, k_of(kvh), v_of(kvh),
                            slot_table_.data() + first_slot_[s], slot_stride, D,
                            scratch_.data() + per_thread * omp_get_thread_num(),
                            out.as<float>() + (int64_t{t} * heads + h) * D, int64_t{heads} * D);
      }
    }
    return;
  }
#pragma omp parallel if (team)
  {
    float* scores = scratch_.data() + per_thread * omp_get_thread_num();
    float* key = scores + b.max_context;
#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int t = 0; t < b.num_tokens; ++t) {
      for (int h = 0; h < heads; ++h) {
        const int s = seq_of[t];
        const int n_new = cu[s + 1] - cu[s];
        const int first_new = ctx[s] - n_new;
        const int qi = q_index[t];
        const float* q = qkv.as<const float>() + t * stride + int64_t{h} * D;
        const int kvh = h / group;
        const int32_t* slot_of = slot_table_.data() + first_slot_[s];
        const float* k_head = k_of(kvh);
        // Keys stored rotated: every q . k at once; stored unrotated, each is rotated by its
        // position first.
        if (!rotate_keys) cpu::dot_rows(q, k_head, slot_of, slot_stride, qi + 1, D, scores);
        for (int j = 0; rotate_keys && j <= qi; ++j) {
          const int32_t slot = slot_of[j];
          std::memcpy(key, k_head + slot * slot_stride, D * sizeof(float));
          cpu::rope_rotate(key, rope_.row(slot_pos[slot]), D);
          scores[j] = cpu::dot(q, key, D);
        }
        for (int j = 0; j <= qi; ++j) scores[j] *= scale;
        if (mask != nullptr) {  // a tree: the new tokens see the ones the mask lets them
          const uint8_t* row =
              mask + b.tree_offsets.as<const int32_t>()[s] + (qi - first_new) * n_new;
          for (int j = first_new; j <= qi; ++j)
            if (row[j - first_new] == 0) scores[j] = -std::numeric_limits<float>::infinity();
        }
        cpu::softmax(scores, qi + 1);
        cpu::weighted_rows(scores, qi + 1, v_of(kvh), slot_of, slot_stride, D,
                           out.as<float>() + (int64_t{t} * heads + h) * D);
      }
    }
  }
}

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() {
  return std::make_unique<CpuBackend>();
}

}  // namespace nanoinfer
