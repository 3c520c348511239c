// The Llama model: weights on the backend's device and one forward over a packed Batch.
// Layer by layer it reads like the paper: norm, QKV, RoPE + cache write, attention, O + residual,
// norm, gate/up, SiLU*mul, down + residual; logits only for the rows the batch asks for.
#pragma once

#include <vector>

#include "backend/backend.h"
#include "kv/kv_cache.h"
#include "loader/model_loader.h"

namespace nanoinfer {

class LlamaModel {
 public:
  // Uploads the weights (Q/K/V and gate/up fused into one matrix each) and the RoPE table for
  // positions [0, max_positions). no_rope uploads an identity table instead (the ablation).
  LlamaModel(const LoadedModel& loaded, Backend& backend, int max_positions, bool no_rope = false);
  // A model of the config's shape with random weights made on the device: matrices
  // normal(0, 0.02), norm weights 1, from a fixed seed (benchmarks: real shapes, no checkpoint).
  LlamaModel(const ModelConfig& config, Backend& backend, int max_positions, uint64_t seed);

  // One forward over the batch; returns logits [R, V] (R = batch.logit_rows) on the device.
  const Tensor& forward(const Batch& batch, KvCache& cache);

  // Decode steps (one token per sequence) are handed to Backend::run_step under a key, so a
  // backend may replay them as CUDA graphs; off: every step runs eagerly (--no-graph).
  void set_graph_capture(bool on) { graph_capture_ = on; }

  const ModelConfig& config() const { return config_; }
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
    Tensor x, residual, qkv, attn, proj, gate_up, mlp, last, logits;
  };
  void ensure_activations(int tokens, int rows);
  void upload_rope_table(bool no_rope);
  void run_layers(const DeviceBatch& b, KvCache& cache, const Tensor& logits_rows);

  ModelConfig config_;
  Backend& backend_;
  int max_positions_;
  Tensor embed_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
  Activations act_;
  Tensor logits_view_;
  int64_t weight_bytes_ = 0;
  bool graph_capture_ = true;
};

}  // namespace nanoinfer
