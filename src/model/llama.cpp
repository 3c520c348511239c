#include "model/llama.h"

#include <cmath>
#include <cstring>
#include <string>

#include "util/error.h"

namespace nanoinfer {
namespace {

// Host tensors of one dtype stacked along rows: [n1, K] + [n2, K] -> [n1 + n2, K].
Tensor concat_rows(const std::vector<Tensor>& parts) {
  int64_t rows = 0;
  for (const Tensor& p : parts) rows += p.dim(0);
  Tensor out = Tensor::zeros(parts[0].dtype(), {rows, parts[0].dim(1)});
  auto* dst = static_cast<uint8_t*>(out.data());
  for (const Tensor& p : parts) {
    NI_ASSERT(p.dtype() == parts[0].dtype() && p.dim(1) == parts[0].dim(1));
    std::memcpy(dst, p.data(), p.nbytes());
    dst += p.nbytes();
  }
  return out;
}

const Tensor& weight(const LoadedModel& m, const std::string& name) {
  auto it = m.weights.find(name);
  if (it == m.weights.end()) fail(m.source + ": missing tensor '" + name + "'");
  return it->second;
}

}  // namespace

LlamaModel::LlamaModel(const LoadedModel& loaded, Backend& backend, int max_positions,
                       bool no_rope)
    : config_(loaded.config), backend_(backend), max_positions_(max_positions) {
  const DType dt = backend_.compute_dtype();
  auto up = [&](const Tensor& host) {
    Tensor t = backend_.upload(host, dt);
    weight_bytes_ += static_cast<int64_t>(t.nbytes());
    return t;
  };
  embed_ = up(weight(loaded, "model.embed_tokens.weight"));
  final_norm_ = up(weight(loaded, "model.norm.weight"));
  lm_head_ = config_.tie_word_embeddings ? embed_ : up(weight(loaded, "lm_head.weight"));
  for (int i = 0; i < config_.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer l;
    l.attn_norm = up(weight(loaded, p + "input_layernorm.weight"));
    l.qkv = up(concat_rows({weight(loaded, p + "self_attn.q_proj.weight"),
                            weight(loaded, p + "self_attn.k_proj.weight"),
                            weight(loaded, p + "self_attn.v_proj.weight")}));
    l.o = up(weight(loaded, p + "self_attn.o_proj.weight"));
    l.mlp_norm = up(weight(loaded, p + "post_attention_layernorm.weight"));
    l.gate_up = up(concat_rows({weight(loaded, p + "mlp.gate_proj.weight"),
                                weight(loaded, p + "mlp.up_proj.weight")}));
    l.down = up(weight(loaded, p + "mlp.down_proj.weight"));
    layers_.push_back(std::move(l));
  }
  RopeTable table = RopeTable::build(config_, max_positions);
  if (no_rope) {
    const int half = config_.head_dim / 2;
    for (int p = 0; p < max_positions; ++p) {
      float* r = table.cos_sin.data() + static_cast<size_t>(p) * config_.head_dim;
      std::fill(r, r + half, 1.0F);
      std::fill(r + half, r + config_.head_dim, 0.0F);
    }
  }
  backend_.upload_rope(table);
}

void LlamaModel::ensure_activations(int tokens, int rows) {
  if (tokens <= act_.tokens && rows <= act_.rows) return;
  const int64_t T = std::max(tokens, act_.tokens), R = std::max(rows, act_.rows);
  const ModelConfig& c = config_;
  const DType dt = backend_.compute_dtype();
  const int64_t qkv_dim = int64_t{c.num_heads + 2 * c.num_kv_heads} * c.head_dim;
  act_.tokens = static_cast<int>(T);
  act_.rows = static_cast<int>(R);
  act_.x = backend_.alloc({T, c.hidden_size}, dt);
  act_.residual = backend_.alloc({T, c.hidden_size}, dt);
  act_.qkv = backend_.alloc({T, qkv_dim}, dt);
  act_.attn = backend_.alloc({T, int64_t{c.num_heads} * c.head_dim}, dt);
  act_.proj = backend_.alloc({T, c.hidden_size}, dt);
  act_.gate_up = backend_.alloc({T, 2 * int64_t{c.intermediate_size}}, dt);
  act_.mlp = backend_.alloc({T, c.intermediate_size}, dt);
  act_.last = backend_.alloc({R, c.hidden_size}, dt);
  act_.logits = backend_.alloc({R, c.vocab_size}, DType::F32);
}

const Tensor& LlamaModel::forward(const Batch& batch, KvCache& cache) {
  const int T = batch.num_tokens();
  const int R = static_cast<int>(batch.logit_rows.size());
  NI_ASSERT(T > 0 && R > 0);
  ensure_activations(T, R);
  const ModelConfig& c = config_;
  // Views of the first T rows of each activation buffer.
  auto rows = [T](const Tensor& t) { return Tensor(t.dtype(), {T, t.dim(1)}, t.data(), nullptr, t.device()); };
  Tensor x = rows(act_.x), residual = rows(act_.residual), qkv = rows(act_.qkv),
         attn = rows(act_.attn), proj = rows(act_.proj), gate_up = rows(act_.gate_up),
         mlp = rows(act_.mlp);
  Tensor last(act_.last.dtype(), {R, c.hidden_size}, act_.last.data(), nullptr, act_.last.device());
  Tensor logits(DType::F32, {R, c.vocab_size}, act_.logits.data(), nullptr, act_.logits.device());

  const DeviceBatch b = backend_.upload_batch(batch);
  const RopePolicy& rope = cache.rope();
  backend_.embedding(embed_, b, residual);
  backend_.rmsnorm(residual, layers_[0].attn_norm, c.rms_norm_eps, x);
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& l = layers_[i];
    KvLayer& kv = cache.layer(static_cast<int>(i));
    backend_.matmul(x, l.qkv, qkv);
    rope.store(backend_, qkv, c.num_heads, c.num_kv_heads, b, kv);
    rope.attend(backend_, qkv, c.num_heads, c.num_kv_heads, b, kv, attn);
    backend_.matmul(attn, l.o, proj);
    backend_.add_rmsnorm(residual, proj, l.mlp_norm, c.rms_norm_eps, x);
    backend_.matmul(x, l.gate_up, gate_up);
    backend_.silu_mul(gate_up, mlp);
    backend_.matmul(mlp, l.down, proj);
    const Tensor& next_norm = i + 1 < layers_.size() ? layers_[i + 1].attn_norm : final_norm_;
    backend_.add_rmsnorm(residual, proj, next_norm, c.rms_norm_eps, x);
  }
  backend_.gather_rows(x, b.logit_rows, last);
  backend_.matmul(last, lm_head_, logits);
  logits_view_ = logits;
  return logits_view_;
}

}  // namespace nanoinfer
