// The CUDA backend: bf16 (or fp32, the parity mode) weights and activations with fp32
// accumulation, cuBLASLt GEMMs, our own kernels for everything else, decode steps replayed as
// CUDA graphs per batch-size bucket, and per-op profiling on request.
#pragma once

#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/lt_gemm.h"
#include "backend/op_profile.h"

namespace nanoinfer::cuda {

// Decode batches are padded up to the next bucket so that one captured graph serves every
// batch size in the bucket; the padding rows are dummy sequences that store nothing.
int decode_bucket(int seqs);

class CudaBackend final : public Backend {
 public:
  // keep_blocks: a bf16 backend keeps GGUF block matrices of the formats kernels.h's quant_kept
  // names as stored, and multiplies them as blocks; off (and in f32) every matrix is widened.
  explicit CudaBackend(DType compute_dtype, bool keep_blocks = false);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "cuda"; }
  DType compute_dtype() const override { return dtype_; }

  Tensor alloc(std::vector<int64_t> shape, DType dtype) override;
  int64_t free_memory() const override;
  Tensor upload(const Tensor& host, DType dtype) override;
  Tensor upload_rows(const std::vector<Tensor>& parts, DType dtype) override;
  void to_host_f32(const Tensor& src, std::vector<float>& dst) override;
  bool pick_to_host(const Tensor& logits, std::span<const RowPick> rows,
                    std::span<const LogitEdit> edits, std::vector<int32_t>& ids) override;
  bool beam_rows_to_host(const Tensor& logits, int n, std::vector<BeamRow>& rows) override;
  void gather_to_host(const Tensor& x, std::span<const int32_t> flat,
                      std::vector<float>& out) override;
  DeviceBatch upload_batch(const Batch& batch) override;
  void upload_rope(const RopeTable& table) override;
  void fill_i32(Tensor& t, int32_t value) override;
  void write_i32(Tensor& t, const std::vector<int32_t>& idx,
                 const std::vector<int32_t>& v) override;
  void copy_slots(std::span<KvLayer> layers, const std::vector<int32_t>& src_slots,
                  const std::vector<int32_t>& dst_slots) override;
  void synchronize() override;
  // Every GEMM bucket of rows up to 1,024 (longer prompts pay their bucket's first use).
  std::vector<int> warmup_lengths() const override { return LtGemm::buckets_up_to(1024); }
  void run_step(int64_t key, const std::function<void()>& body) override;
  void random_normal(Tensor& t, float std, uint64_t seed) override;
  void set_profiling(bool on) override;
  std::string profile_report() override;

  void embedding(const Tensor& table, const DeviceBatch& b, Tensor& out) override;
  void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override;
  void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                   Tensor& out) override;
  void add(Tensor& acc, const Tensor& x) override;
  void matmul(const Tensor& x, const Tensor& w, Tensor& out) override;
  void silu_mul(const Tensor& gate_up, Tensor& out) override;
  void gather_rows(const Tensor& x, const Tensor& rows, Tensor& out) override;
  void copy_columns(const Tensor& src, Tensor& dst, int64_t col0) override;
  void rope_store_kv(Tensor& qkv, int num_heads, int num_kv_heads, const DeviceBatch& b,
                     KvLayer& layer, bool rotate_k) override;
  void attention(const Tensor& qkv, int num_heads, int num_kv_heads, const DeviceBatch& b,
                 const KvLayer& layer, bool rotate_keys, Tensor& out) override;

  // Applies the edits to f32 logits [R, V] in place, queued on the device.
  void edit_logits(const Tensor& logits, std::span<const LogitEdit> edits);
  // Greedy token per row of f32 logits [R, V], on the device: ids [R] i32.
  void argmax_rows(const Tensor& logits, Tensor& ids);
  // One token per row of f32 logits [R, V] as the host sampler picks it with params[r] (same
  // logits, seed and counter: same token), queued on the device: ids [R] i32.
  void sample_rows(const Tensor& logits, std::span<const RowPick> params, Tensor& ids);
  // Off: every bf16 product goes through cuBLASLt (kept blocks widened into the scratch matrix
  // first), also at decode (for comparison).
  void set_use_gemv(bool on) { use_gemv_ = on; }
  cudaStream_t stream() const { return stream_; }
  int graphs_held() const { return static_cast<int>(graphs_.size()); }
  int64_t graph_captures() const override { return captures_; }

 private:
  class OpScope;
  struct PendingOp {
    std::string name;
    bool decode;
    cudaEvent_t start, stop;
  };
  // Host-side facts about the last uploaded batch the kernels' launch shapes depend on.
  struct BatchMeta {
    bool decode = false;           // one new token per sequence
    bool profiled_decode = false;  // --profile's phase: decode, and no prompt token
    int max_new = 0;               // most new tokens of one sequence
    std::vector<int32_t> token_ids;
  };
  using GraphKey = std::tuple<int64_t, int>;

  // A host matrix upload() keeps as its blocks, and the upload of such matrices (stacked).
  bool keeps(const Tensor& host) const;
  // alloc() for a host matrix of host_dt widened to dtype: out of memory, it names --keep-blocks
  // where that would keep host_dt as blocks.
  Tensor alloc_widened(DType host_dt, std::vector<int64_t> shape, DType dtype);
  Tensor upload_blocks(const std::vector<Tensor>& parts);
  void ensure_batch_capacity(int tokens, int seqs, int stride, int64_t mask_words);
  int decode_splits(int seqs, int kv_heads, int block_size) const;
  void collect_profile();
  cudaEvent_t take_event();
  void drop_graphs();

  DType dtype_;
  int device_ = 0;
  int sm_count_ = 0;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<LtGemm> gemm_;
  bool use_gemv_ = true;
  bool keep_blocks_ = false;
  Tensor widened_;  // a block matrix widened to bf16 for a product of many rows

  Tensor rope_;  // [max_pos, D] f32
  int rope_dim_ = 0, rope_positions_ = 0;

  // Static batch buffers: fields at fixed offsets of one device buffer (and a pinned twin),
  // so a captured graph reads each step's batch from the same addresses.
  Tensor batch_dev_;
  std::shared_ptr<void> batch_host_;
  int cap_tokens_ = 0, cap_seqs_ = 0, bt_stride_ = 0;
  int64_t cap_mask_words_ = 0;
  cudaEvent_t upload_done_ = nullptr;
  BatchMeta meta_;

  // host into the device tensor out (as many elements; converted to out's dtype), queued.
  void upload_into(const Tensor& host, Tensor& out);
  // upload()'s two pinned staging slices, and the copy out of each.
  void copy_to_device(void* dst, const void* src, size_t bytes);
  std::shared_ptr<void> staging_;
  cudaEvent_t staged_[2] = {nullptr, nullptr};
  // Two index lists of a cache op (write_i32, copy_slots) on the device, a and then b, through
  // one pinned buffer and one copy, queued: no allocation or wait on a step that evicts.
  const int32_t* upload_lists(const std::vector<int32_t>& a, const std::vector<int32_t>& b);
  Tensor lists_dev_;
  std::shared_ptr<void> lists_host_;
  size_t lists_cap_ = 0;  // int32 each
  cudaEvent_t lists_done_ = nullptr;

  Tensor pick_ids_;      // pick_to_host's device ids
  Tensor pick_params_;   // sample_rows' device parameters
  Tensor pick_edits_;    // edit_logits' device edits
  Tensor pick_scratch_;  // and its keys and weights, 2 x R x V floats
  Tensor gather_buf_;    // gather_to_host's indices, then the values
  Tensor beam_out_;      // beam_rows_to_host's per row {max, lse} and n (value, id) pairs
  Tensor attn_ws_;       // split-K partials
  Tensor attn_count_;    // finished splits per (sequence, kv head), zero between launches
  // pick_to_host's ids on the host: pinned, so that their copy is a plain queued one.
  std::shared_ptr<void> pick_host_;
  int64_t pick_host_cap_ = 0;  // int32 each

  // Graphs: valid for the allocation epoch they were captured in (any alloc may move a buffer
  // a graph points into). A key is run eagerly once (sizing every buffer), captured the next time.
  uint64_t alloc_epoch_ = 0, graph_epoch_ = 0;
  int64_t captures_ = 0;
  std::map<GraphKey, cudaGraphExec_t> graphs_;
  std::set<GraphKey> warmed_;
  bool capturing_ = false;

  bool profiling_ = false;
  std::vector<PendingOp> pending_;
  std::vector<cudaEvent_t> free_events_;
  OpProfile profile_;
};

}  // namespace nanoinfer::cuda
