// The Llama model: weights on the backend's device and one forward over a packed Batch.
// Layer by layer it reads like the paper: norm, QKV, RoPE + cache write, attention, O + residual,
// norm, gate/up, SiLU*mul, down + residual; logits only for the rows the batch asks for.
// Under tensor parallelism each rank holds its Shard (heads, MLP features, vocabulary rows) and
// the communicator sums the row-parallel products and gathers the logits to rank 0; alone, the
// communicator does nothing and the shard is the whole model.
#pragma once

#include <vector>

#include "backend/backend.h"
#include "dist/communicator.h"
#include "dist/shard.h"
#include "kv/kv_cache.h"
#include "loader/model_loader.h"

namespace nanoinfer {

class LlamaModel {
 public:
  // Uploads the weights (Q/K/V and gate/up fused into one matrix each) and the RoPE table for
  // positions [0, max_positions). no_rope uploads an identity table instead (the ablation).
  // Each rank takes only its shard's slices of the (mmapped) weights.
  LlamaModel(const LoadedModel& loaded, Backend& backend, int max_positions, bool no_rope = false,
             Communicator& comm = single_rank());
  // A model of the config's shape with random weights made on the device: matrices
  // normal(0, 0.02), norm weights 1, from a fixed seed (benchmarks: real shapes, no checkpoint).
  LlamaModel(const ModelConfig& config, Backend& backend, int max_positions, uint64_t seed,
             Communicator& comm = single_rank());

  // One forward over the batch; returns logits [R, V] (R = batch.logit_rows) on the device.
  // Every rank of a group runs it with the same batch; only rank 0's logits are filled.
  const Tensor& forward(const Batch& batch, KvCache& cache);

  // Decode steps (one token per sequence) are handed to Backend::run_step under a key, so a
  // backend may replay them as CUDA graphs; off: every step runs eagerly (--no-graph).
  void set_graph_capture(bool on) { graph_capture_ = on; }

  const ModelConfig& config() const { return config_; }
  // The shapes this rank computes with (its heads, features, vocabulary rows): its KV cache is
  // made for these.
  const ModelConfig& shard_config() const { return local_; }
  const Shard& shard() const { return shard_; }
  Backend& backend() { return backend_; }
  int max_positions() const { return max_positions_; }
  int64_t weight_bytes() const { return weight_bytes_; }
  // Activation memory one forward over `tokens` tokens producing `rows` logit rows needs.
  int64_t activation_bytes(int tokens, int rows) const;

 private:
  struct Layer {
    Tensor attn_norm, qkv, o, mlp_norm, gate_up, down;
  };
  struct Activations {
    int tokens = 0, rows = 0;
    Tensor x, residual, qkv, attn, proj, gate_up, mlp, last;
    Tensor gathered;  // [world, R, vocab_block] f32: each rank's logits block (one rank: logits)
    Tensor logits;    // [R, V] f32 (rank 0)
  };
  void ensure_activations(int tokens, int rows);
  void upload_layers(const LoadedModel& loaded);
  void upload_rope_table(bool no_rope);
  void run_layers(const DeviceBatch& b, KvCache& cache, int rows);

  ModelConfig config_;
  Backend& backend_;
  int max_positions_;
  Communicator& comm_;
  Shard shard_;
  ModelConfig local_;
  Tensor embed_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
  Activations act_;
  Tensor logits_view_;
  int64_t weight_bytes_ = 0;
  bool graph_capture_ = true;
};

}  // namespace nanoinfer
