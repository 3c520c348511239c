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

  // One forward over the batch; returns logits [R, V] (R = batch.logit_rows) on the device.
  const Tensor& forward(const Batch& batch, KvCache& cache);

  const ModelConfig& config() const { return config_; }
  Backend& backend() { return backend_; }
  int max_positions() const { return max_positions_; }
  int64_t weight_bytes() const { return weight_bytes_; }

 private:
  struct Layer {
    Tensor attn_norm, qkv, o, mlp_norm, gate_up, down;
  };
  struct Activations {
    int tokens = 0, rows = 0;
    Tensor x, residual, qkv, attn, proj, gate_up, mlp, last, logits;
  };
  void ensure_activations(int tokens, int rows);

  ModelConfig config_;
  Backend& backend_;
  int max_positions_;
  Tensor embed_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
  Activations act_;
  Tensor logits_view_;
  int64_t weight_bytes_ = 0;
};

}  // namespace nanoinfer
