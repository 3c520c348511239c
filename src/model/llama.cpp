#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "util/error.h"

namespace nanoinfer {
namespace {

const Tensor& weight(const LoadedModel& m, const std::string& name) {
  auto it = m.weights.find(name);
  if (it == m.weights.end()) fail(m.source + ": missing tensor '" + name + "'");
  return it->second;
}

}  // namespace

LlamaModel::LlamaModel(const LoadedModel& loaded, Backend& backend, int max_positions, bool no_rope,
                       Communicator& comm)
    : config_(loaded.config), backend_(backend), max_positions_(max_positions), comm_(comm) {
  // Quantised blocks must stay whole when the MLP's input features are split across ranks.
  const DType down = weight(loaded, "model.layers.0.mlp.down_proj.weight").dtype();
  shard_ = Shard::plan(config_, comm_.rank(), comm_.size(), dtype_block(down));
  local_ = shard_.local(config_);
  upload_layers(loaded);
  upload_rope_table(no_rope);
}

void LlamaModel::upload_layers(const LoadedModel& loaded) {
  const DType dt = backend_.compute_dtype();
  auto up = [&](const Tensor& host) {
    Tensor t = backend_.upload(host, dt);
    weight_bytes_ += static_cast<int64_t>(t.nbytes());
    return t;
  };
  auto up_rows = [&](const std::vector<Tensor>& parts) {
    Tensor t = backend_.upload_rows(parts, dt);
    weight_bytes_ += static_cast<int64_t>(t.nbytes());
    return t;
  };
  const Shard& s = shard_;
  const int64_t D = config_.head_dim;
  // Column-parallel matrices keep this rank's rows; row-parallel ones its input columns.
  auto rows = [&](const std::string& name, const Range& r, int64_t unit) {
    return weight(loaded, name).rows(r.begin * unit, r.end * unit);
  };
  embed_ = up(rows("model.embed_tokens.weight", s.vocab, 1));
  final_norm_ = up(weight(loaded, "model.norm.weight"));
  lm_head_ = config_.tie_word_embeddings ? embed_ : up(rows("lm_head.weight", s.vocab, 1));
  for (int i = 0; i < config_.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer l;
    l.attn_norm = up(weight(loaded, p + "input_layernorm.weight"));
    l.qkv = up_rows({rows(p + "self_attn.q_proj.weight", s.q_heads, D),
                     rows(p + "self_attn.k_proj.weight", s.kv_heads, D),
                     rows(p + "self_attn.v_proj.weight", s.kv_heads, D)});
    l.o = up(weight(loaded, p + "self_attn.o_proj.weight")
                 .columns(s.q_heads.begin * D, s.q_heads.end * D));
    l.mlp_norm = up(weight(loaded, p + "post_attention_layernorm.weight"));
    l.gate_up = up_rows(
        {rows(p + "mlp.gate_proj.weight", s.ffn, 1), rows(p + "mlp.up_proj.weight", s.ffn, 1)});
    l.down = up(weight(loaded, p + "mlp.down_proj.weight").columns(s.ffn.begin, s.ffn.end));
    layers_.push_back(std::move(l));
  }
}

LlamaModel::LlamaModel(const ModelConfig& config, Backend& backend, int max_positions,
                       uint64_t seed, Communicator& comm)
    : config_(config), backend_(backend), max_positions_(max_positions), comm_(comm) {
  config_.validate("random-weight model");
  shard_ = Shard::plan(config_, comm_.rank(), comm_.size());
  local_ = shard_.local(config_);
  const DType dt = backend_.compute_dtype();
  // Each matrix draws from its own seed, and each rank's shard from its own stream.
  uint64_t stream = 0x51ED270B27ULL * static_cast<uint64_t>(comm_.rank());
  auto matrix = [&](int64_t rows, int64_t cols) {
    Tensor t = backend_.alloc({rows, cols}, dt);
    backend_.random_normal(t, 0.02F, seed + 0x9E3779B97F4A7C15ULL * ++stream);
    weight_bytes_ += static_cast<int64_t>(t.nbytes());
    return t;
  };
  auto ones = [&](int64_t n) {
    Tensor host = Tensor::zeros(DType::F32, {n});
    std::fill(host.as<float>(), host.as<float>() + n, 1.0F);
    Tensor t = backend_.upload(host, dt);
    weight_bytes_ += static_cast<int64_t>(t.nbytes());
    return t;
  };
  const ModelConfig& c = local_;
  const int64_t H = c.hidden_size, F = c.intermediate_size;
  const int64_t q = int64_t{c.num_heads} * c.head_dim, kv = int64_t{c.num_kv_heads} * c.head_dim;
  embed_ = matrix(c.vocab_size, H);
  final_norm_ = ones(H);
  lm_head_ = c.tie_word_embeddings ? embed_ : matrix(c.vocab_size, H);
  for (int i = 0; i < c.num_layers; ++i) {
    Layer l;
    l.attn_norm = ones(H);
    l.qkv = matrix(q + 2 * kv, H);
    l.o = matrix(H, q);
    l.mlp_norm = ones(H);
    l.gate_up = matrix(2 * F, H);
    l.down = matrix(H, F);
    layers_.push_back(std::move(l));
  }
  upload_rope_table(false);
}

void LlamaModel::upload_rope_table(bool no_rope) {
  const int max_positions = max_positions_;
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

int64_t LlamaModel::activation_bytes(int tokens, int rows) const {
  const ModelConfig& c = local_;
  const int64_t per_token = 4 * int64_t{c.hidden_size} +
                            int64_t{c.num_heads + 2 * c.num_kv_heads} * c.head_dim +
                            int64_t{c.num_heads} * c.head_dim + 3 * int64_t{c.intermediate_size};
  const auto elem = static_cast<int64_t>(dtype_size(backend_.compute_dtype()));
  const int64_t logits = shard_.world > 1 ? shard_.vocab_block * shard_.world + config_.vocab_size
                                          : config_.vocab_size;
  return tokens * per_token * elem + rows * (int64_t{c.hidden_size} * elem + logits * 4);
}

void LlamaModel::ensure_activations(int tokens, int rows) {
  if (tokens <= act_.tokens && rows <= act_.rows) return;
  const int64_t T = std::max(tokens, act_.tokens), R = std::max(rows, act_.rows);
  const ModelConfig& c = local_;
  const DType dt = backend_.compute_dtype();
  const int64_t qkv_dim = int64_t{c.num_heads + 2 * c.num_kv_heads} * c.head_dim;
  act_.tokens = act_.rows = 0;  // (until every buffer has its new size: an allocation that
                                // fails, out of memory, leaves none recorded as larger than it is)
  act_.x = backend_.alloc({T, c.hidden_size}, dt);
  act_.residual = backend_.alloc({T, c.hidden_size}, dt);
  act_.qkv = backend_.alloc({T, qkv_dim}, dt);
  act_.attn = backend_.alloc({T, int64_t{c.num_heads} * c.head_dim}, dt);
  act_.proj = backend_.alloc({T, c.hidden_size}, dt);
  act_.gate_up = backend_.alloc({T, 2 * int64_t{c.intermediate_size}}, dt);
  act_.mlp = backend_.alloc({T, c.intermediate_size}, dt);
  act_.last = backend_.alloc({R, c.hidden_size}, dt);
  // Rank 0 receives every rank's block; the others only hold their own.
  const int64_t blocks = comm_.rank() == 0 ? shard_.world : 1;
  act_.gathered = backend_.alloc({blocks * R * shard_.vocab_block}, DType::F32);
  act_.logits = shard_.world == 1 ? act_.gathered.reshape({R, config_.vocab_size})
                                  : backend_.alloc({R, config_.vocab_size}, DType::F32);
  act_.tokens = static_cast<int>(T);
  act_.rows = static_cast<int>(R);
}

const Tensor& LlamaModel::forward(const Batch& batch, KvCache& cache) {
  NI_ASSERT(batch.num_tokens() > 0 && !batch.logit_rows.empty());
  // Each rank embeds only the tokens of its vocabulary rows (the others as zeros, summed after).
  Batch sharded;
  if (shard_.world > 1) {
    sharded = batch;
    for (int32_t& t : sharded.token_ids) t = shard_.local_token(t);
  }
  // Uploaded before the step body: a backend may pad the batch (decode buckets) and must write
  // it into buffers a recorded step reads from.
  const DeviceBatch b = backend_.upload_batch(shard_.world > 1 ? sharded : batch);
  const int T = b.num_tokens;
  const auto R = static_cast<int>(b.logit_rows.numel());
  ensure_activations(T, R);
  // A decode step's device work depends only on its (padded) batch size: that is its key.
  const bool decode = T == b.num_seqs && batch.tree_mask.empty();
  const int64_t key = graph_capture_ && decode ? T : -1;
  backend_.run_step(key, [&] { run_layers(b, cache, R); });
  logits_view_ =
      Tensor(DType::F32, {static_cast<int64_t>(batch.logit_rows.size()), config_.vocab_size},
             act_.logits.data(), nullptr, act_.logits.device());
  return logits_view_;
}

void LlamaModel::run_layers(const DeviceBatch& b, KvCache& cache, int R) {
  const int T = b.num_tokens;
  const ModelConfig& c = local_;
  // Views of the first T rows of each activation buffer.
  auto rows = [T](const Tensor& t) {
    return Tensor(t.dtype(), {T, t.dim(1)}, t.data(), nullptr, t.device());
  };
  Tensor x = rows(act_.x), residual = rows(act_.residual), qkv = rows(act_.qkv),
         attn = rows(act_.attn), proj = rows(act_.proj), gate_up = rows(act_.gate_up),
         mlp = rows(act_.mlp);
  Tensor last(act_.last.dtype(), {R, c.hidden_size}, act_.last.data(), nullptr, act_.last.device());

  const RopePolicy& rope = cache.rope();
  backend_.embedding(embed_, b, residual);
  comm_.all_reduce_sum(residual);  // vocabulary-parallel: each token's row came from one rank
  backend_.rmsnorm(residual, layers_[0].attn_norm, c.rms_norm_eps, x);
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& l = layers_[i];
    KvLayer& kv = cache.layer(static_cast<int>(i));
    backend_.matmul(x, l.qkv, qkv);
    rope.store(backend_, qkv, c.num_heads, c.num_kv_heads, b, kv);
    rope.attend(backend_, qkv, c.num_heads, c.num_kv_heads, b, kv, attn);
    backend_.matmul(attn, l.o, proj);
    comm_.all_reduce_sum(proj);  // row-parallel: each rank's heads add their part
    backend_.add_rmsnorm(residual, proj, l.mlp_norm, c.rms_norm_eps, x);
    backend_.matmul(x, l.gate_up, gate_up);
    backend_.silu_mul(gate_up, mlp);
    backend_.matmul(mlp, l.down, proj);
    comm_.all_reduce_sum(proj);  // row-parallel: each rank's features add their part
    const Tensor& next_norm = i + 1 < layers_.size() ? layers_[i + 1].attn_norm : final_norm_;
    backend_.add_rmsnorm(residual, proj, next_norm, c.rms_norm_eps, x);
  }
  backend_.gather_rows(x, b.logit_rows, last);
  // This rank's vocabulary rows into its block, the blocks to rank 0, then into [R, V] there.
  const int64_t block = int64_t{R} * shard_.vocab_block;
  Tensor mine(DType::F32, {R, c.vocab_size}, act_.gathered.data(), nullptr, act_.gathered.device());
  backend_.matmul(last, lm_head_, mine);
  Tensor all = act_.gathered.rows(0, block * (comm_.rank() == 0 ? shard_.world : 1));
  comm_.gather(act_.gathered.rows(0, block), all);
  if (shard_.world == 1 || comm_.rank() != 0) return;
  Tensor logits(DType::F32, {R, config_.vocab_size}, act_.logits.data(), nullptr,
                act_.logits.device());
  for (int r = 0; r < shard_.world; ++r) {
    const Range v = vocab_range(config_.vocab_size, shard_.world, r);
    const Tensor part(DType::F32, {R, v.size()},
                      static_cast<float*>(act_.gathered.data()) + r * block, nullptr,
                      act_.gathered.device());
    backend_.copy_columns(part, logits, v.begin);
  }
}

}  // namespace nanoinfer
