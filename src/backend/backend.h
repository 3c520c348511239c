// The ops interface the model is written against. The CPU backend (reference, fp32) and the CUDA
// backend implement it; model code never asks which one it has. Tensors passed here live on the
// backend's device; shapes are in the comments ([T] = tokens in the packed batch).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/row_pick.h"
#include "model/batch.h"
#include "model/rope.h"
#include "tensor/tensor.h"

namespace nanoinfer {

// The batch as the device sees it: Batch's arrays uploaded once per step.
struct DeviceBatch {
  int num_tokens = 0;
  int num_seqs = 0;
  int max_blocks = 0;
  int max_context = 0;                                        // longest context_lens entry
  Tensor token_ids, positions, seq_of_token, q_index, slots;  // [T] i32
  Tensor cu_seqlens;                                          // [B+1] i32
  Tensor context_lens;                                        // [B] i32
  Tensor block_tables;                                        // [B, max_blocks] i32
  Tensor logit_rows;                                          // [R] i32
  Tensor tree_mask;     // u8 bytes as i32-free raw buffer (empty = causal)
  Tensor tree_offsets;  // [B] i32 (empty = causal)
};

// One layer's cache storage. K and V are [num_slots, kv_heads, head_dim]; slot_pos holds the
// RoPE position each stored key had when written (read by the PreRope policy).
struct KvLayer {
  Tensor k, v;
  Tensor slot_pos;  // [num_slots] i32, shared by all layers
  int block_size = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual DType compute_dtype() const = 0;

  // Memory. alloc returns uninitialised device memory of the compute dtype unless given one.
  virtual Tensor alloc(std::vector<int64_t> shape, DType dtype) = 0;
  virtual Tensor upload(const Tensor& host, DType dtype) = 0;  // converts f32/f16/bf16 → dtype
  // Bytes that alloc could still have (CPU: the host's available memory; CUDA: the GPU's free
  // memory); -1 where unknown.
  virtual int64_t free_memory() const { return -1; }
  // Host tensors of one width stacked along their rows, as one tensor of this backend (fused
  // weights such as q, k and v; a GGUF may hold the parts in different formats). Here: stacked on
  // the host, then uploaded (one dtype only; the CPU and CUDA backends take mixed ones).
  virtual Tensor upload_rows(const std::vector<Tensor>& parts, DType dtype) {
    return upload(Tensor::stack_rows(parts), dtype);
  }
  virtual void to_host_f32(const Tensor& src, std::vector<float>& dst) = 0;
  // ids[r] = the token the host sampler picks from row r of f32 logits [R, V] with rows[r]
  // (greedy: the first maximum, ties to the lowest id) after `edits` (LogitEdit.row < R),
  // picked where the logits are so that R ids reach the host instead of R x V floats. The edits
  // rewrite the logits in place. False (ids and logits untouched) when the backend has no such
  // path: the caller copies the logits and samples on the host.
  virtual bool pick_to_host(const Tensor& logits, std::span<const RowPick> rows,
                            std::span<const LogitEdit> edits, std::vector<int32_t>& ids) {
    (void)logits;
    (void)rows;
    (void)edits;
    (void)ids;
    return false;
  }
  // rows[r] = row r of f32 logits [R, V] summarised for beam search (its maximum, log-sum-exp
  // and n best tokens, as sampling::summarise_row computes them) where the logits are, so that R
  // x n tokens reach the host instead of R x V floats. False (rows untouched) when the backend
  // has no such path.
  virtual bool beam_rows_to_host(const Tensor& logits, int n, std::vector<BeamRow>& rows) {
    (void)logits;
    (void)n;
    (void)rows;
    return false;
  }
  // out[i] = element flat[i] of f32 tensor x, whose elements are few and scattered (one logit of
  // each row): one gather on a device backend instead of a copy per element.
  virtual void gather_to_host(const Tensor& x, std::span<const int32_t> flat,
                              std::vector<float>& out) {
    std::vector<float> one;
    out.clear();
    for (const int32_t i : flat) {
      to_host_f32(Tensor(DType::F32, {1}, x.as<float>() + i, nullptr, x.device()), one);
      out.push_back(one[0]);
    }
  }
  virtual DeviceBatch upload_batch(const Batch& batch) = 0;
  virtual void upload_rope(const RopeTable& table) = 0;
  virtual void fill_i32(Tensor& t, int32_t value) = 0;
  virtual void write_i32(Tensor& t, const std::vector<int32_t>& idx,
                         const std::vector<int32_t>& v) = 0;
  // A cache layer's K and V as [kv_head][slot][D], each head's rows together, rather than
  // [slot][kv_head][D], a token's heads together (the CUDA kernels' layout). The CPU's: a head's
  // attention then reads its keys and values as one stream, where the rows of one head among
  // the others were short reads a stride apart, at a third of the memory's rate.
  virtual bool kv_heads_outer() const { return false; }
  // Copies cache rows src_slots[i] → dst_slots[i] of every layer's K and V, and their positions
  // (beam forks): one call for all layers, so a device backend uploads the lists once.
  virtual void copy_slots(std::span<KvLayer> layers, const std::vector<int32_t>& src_slots,
                          const std::vector<int32_t>& dst_slots) = 0;
  virtual void synchronize() {}
  // EngineOptions::max_step_tokens's default on this backend.
  virtual int step_tokens() const { return 16384; }
  // Prompt lengths whose first forwards pay one-time costs (kernels loaded, GEMM algorithms
  // picked) that a warm-up at load should take instead; none where there are no such costs.
  virtual std::vector<int> warmup_lengths() const { return {}; }
  // Runs `body`, the device work of one forward step. A backend may record it the first time a
  // key is seen (a CUDA graph) and replay the recording on later calls with the same key; keys
  // < 0 always run eagerly. Everything body touches must then live in buffers that stay put.
  virtual void run_step(int64_t key, const std::function<void()>& body) {
    (void)key;
    body();
  }
  // Recordings run_step has made over the backend's life.
  virtual int64_t graph_captures() const { return 0; }

  // Fills t with normal(0, std) values from a fixed seed (random-weight models for benchmarks),
  // on the device, each element a pure function of (seed, its index).
  virtual void random_normal(Tensor& t, float std, uint64_t seed) = 0;
  // Per-op device time (--profile): collected while on; the report has one line per op kind,
  // prefill and decode apart. Backends without device timers report nothing.
  virtual void set_profiling(bool on) { (void)on; }
  virtual std::string profile_report() { return {}; }

  // Ops.
  // [V,H] → [T,H]; a negative id gives a zero row (a token another rank's vocabulary shard holds).
  virtual void embedding(const Tensor& table, const DeviceBatch& b, Tensor& out) = 0;
  virtual void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) = 0;  // [T,H]
  // residual += x; out = rmsnorm(residual) * w   (the fused pre-norm step of every block)
  virtual void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                           Tensor& out) = 0;
  virtual void add(Tensor& acc, const Tensor& x) = 0;  // acc += x
  // out = x w^T: [T,K] x [N,K] -> [T,N]; out may be f32 when x and w are not (the logits): it then
  // holds the products rounded to x's dtype, as an HF model in that dtype returns its logits (its
  // greedy pick breaks ties among them by the lowest index, and so does ours).
  virtual void matmul(const Tensor& x, const Tensor& w, Tensor& out) = 0;
  virtual void silu_mul(const Tensor& gate_up, Tensor& out) = 0;  // [T,2F] → [T,F]
  virtual void gather_rows(const Tensor& x, const Tensor& rows, Tensor& out) = 0;  // [T,H] → [R,H]
  // dst[:, col0 : col0 + n] = src: [R, n] into [R, N], same dtype (rank 0 of a tensor-parallel
  // group assembles the logits of each rank's vocabulary range).
  virtual void copy_columns(const Tensor& src, Tensor& dst, int64_t col0) = 0;
  // qkv: [T, (Hq + 2 Hkv) * D]. Rotates q (always) and k (when rotate_k) by the batch positions,
  // writes k and v into the cache at the batch slots and the positions into slot_pos.
  virtual void rope_store_kv(Tensor& qkv, int num_heads, int num_kv_heads, const DeviceBatch& b,
                             KvLayer& layer, bool rotate_k) = 0;
  // out[t, h] = softmax(q[t,h] . K_s^T * scale) V_s over the visible entries of t's sequence s
  // (logical index <= q_index[t], or per the tree mask for the new tokens). When rotate_keys,
  // each stored key is rotated by its slot_pos on read (PreRope).
  virtual void attention(const Tensor& qkv, int num_heads, int num_kv_heads, const DeviceBatch& b,
                         const KvLayer& layer, bool rotate_keys, Tensor& out) = 0;
};

std::unique_ptr<Backend> make_cpu_backend();
// Null when the build has no CUDA backend or no GPU is visible. keep_blocks: a bf16 backend keeps
// GGUF block matrices of the formats it multiplies directly (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) as
// blocks; off, or in f32, it widens every matrix at upload.
std::unique_ptr<Backend> make_cuda_backend(DType compute_dtype, int device = 0,
                                           bool keep_blocks = false);

}  // namespace nanoinfer
