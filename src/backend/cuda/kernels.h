// Host-side launchers of the CUDA backend's own kernels. Each one lives next to its kernel in a
// k_*.cu file; pointers are device pointers, dtype names the storage type (f32 or bf16) of the
// float tensors, and all arithmetic is fp32.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backend/row_pick.h"
#include "tensor/tensor.h"

namespace nanoinfer::cuda {

// --- k_elementwise.cu
// out[t] = table[ids[t]]  (ids outside [0, vocab) give a zero row; the host checks them first)
void embedding(DType dt, const void* table, int64_t vocab, int64_t hidden, const int32_t* ids,
               int tokens, void* out, cudaStream_t s);
void add(DType dt, void* acc, const void* x, int64_t n, cudaStream_t s);
// out[t, f] = silu(gu[t, f]) * gu[t, F + f]
void silu_mul(DType dt, const void* gate_up, void* out, int tokens, int ffn, cudaStream_t s);
void gather_rows(DType dt, const void* x, const int32_t* rows, int num_rows, int64_t hidden,
                 void* out, cudaStream_t s);
// x[i] = x[i] rounded to bf16 (f32 storage kept).
void round_to_bf16(float* x, int64_t n, cudaStream_t s);
// Element conversion between f32, f16 and bf16 storage.
void convert(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n, cudaStream_t s);
// normal(0, std) from a counter-based generator: element i depends only on (seed, i).
void random_normal(DType dt, void* out, int64_t n, float std, uint64_t seed, cudaStream_t s);
void fill_f32_value(DType dt, void* out, int64_t n, float value, cudaStream_t s);
void fill_i32(int32_t* out, int64_t n, int32_t value, cudaStream_t s);
// Reads bytes of a and of b and nothing else (the benchmarks' read ceiling).
void read_two(const void* a, const void* b, int64_t bytes, unsigned* sink, cudaStream_t s);
// t[idx[i]] = v[i]
void scatter_i32(int32_t* t, const int32_t* idx, const int32_t* v, int n, cudaStream_t s);
// Row copies src[i] -> dst[i] of the K and V caches (row_bytes each) and of slot_pos.
void copy_slots(void* k, void* v, int64_t row_bytes, int32_t* slot_pos, const int32_t* src,
                const int32_t* dst, int n, cudaStream_t s);

// --- k_rmsnorm.cu
void rmsnorm(DType dt, const void* x, const void* w, float eps, void* out, int tokens, int hidden,
             cudaStream_t s);
// residual += x; out = rmsnorm(residual) * w
void add_rmsnorm(DType dt, void* residual, const void* x, const void* w, float eps, void* out,
                 int tokens, int hidden, cudaStream_t s);

// --- k_rope_kv.cu
struct RopeKvArgs {
  DType dt;
  void* qkv;  // [T, (H + 2 KV) D]
  int tokens, heads, kv_heads, head_dim;
  const int32_t* positions;  // [T]
  const int32_t* slots;      // [T]; < 0 = padding, nothing stored
  const float* cos_sin;      // [max_pos, D]
  void* k_cache;             // [slots, KV, D]
  void* v_cache;
  int32_t* slot_pos;
  bool rotate_k;
};
void rope_store_kv(const RopeKvArgs& a, cudaStream_t s);

// --- k_attn_prefill.cu, k_attn_decode.cu
struct AttnArgs {
  DType dt;
  const void* qkv;  // [T, (H + 2 KV) D], q already rotated
  void* out;        // [T, H D]
  const void* k_cache;
  const void* v_cache;
  int64_t cache_slots;  // rows of k_cache and v_cache: [cache_slots, kv_heads, head_dim]
  const int32_t* slot_pos;
  const float* cos_sin;  // for rotate_keys: [rope_rows, head_dim]
  int rope_rows;
  int heads, kv_heads, head_dim, block_size;
  bool rotate_keys;
  const int32_t* seq_of_token;
  const int32_t* q_index;
  const int32_t* cu_seqlens;
  const int32_t* context_lens;
  const int32_t* block_tables;  // [B, bt_stride]
  int bt_stride;
  const uint8_t* tree_mask;  // null = causal
  const int32_t* tree_offsets;
  int tokens, seqs;
};
// Any batch shape: one block per (query tile of one sequence, head).
void attention_prefill(const AttnArgs& a, int max_new_tokens, cudaStream_t s);
// Token b is the only new token of sequence b. splits partitions every context; the workspace
// holds decode_workspace_floats(...) floats.
int64_t decode_workspace_floats(int seqs, int heads, int splits, int head_dim);
void attention_decode(const AttnArgs& a, int splits, float* workspace, cudaStream_t s);
// --- k_attn_mma.cu: both on the tensor cores, for bf16 with head_dim 64 or 128 (decode: at most
// 16 query heads per kv head); false (nothing launched) otherwise. Decode uses at most
// max_splits splits of the workspace, and counters [seqs x kv_heads] that start at zero and are
// left at zero.
bool attention_prefill_mma(const AttnArgs& a, int max_new_tokens, cudaStream_t s);
bool attention_decode_mma(const AttnArgs& a, int max_splits, float* workspace, int* counters,
                          cudaStream_t s);

// --- k_gemv.cu
// y[t, n] = sum_k x[t, k] w[n, k] for few rows (tokens <= kGemvMaxTokens): bf16 in, f32 accumulate,
// y bf16 or f32 (holding the sums rounded to bf16 all the same). k must be a multiple of 8.
void gemv_bf16(const void* x, const void* w, DType y_dt, void* y, int tokens, int k, int n,
               cudaStream_t s);
// Past two rows cuBLASLt streams the weights faster (H200, 2026-12-02, Llama-3.1-8B matrices, a
// layer's four products: 3 rows 126 µs against 115, 4 rows 147 against 115; 2 rows 114 against
// 115, 1 row 109 against 114).
constexpr int kGemvMaxTokens = 2;

// --- k_quant.cu: GGUF block matrices kept on the device, as stored (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K,
// Q6_K: quant_units.cuh).
bool quant_kept(DType w_dt);
// dst = `blocks` GGUF blocks of w_dt at src (device memory) in the device layout the kernels below
// read (same size; quant_units.cuh).
void repack_blocks(DType w_dt, const void* src, int64_t blocks, void* dst, cudaStream_t s);
// out[r] = row ids[r] of block matrix w [src_rows, k] (device layout; ids null: row r) widened as
// the loader widens it, in out_dt (f32, or bf16: those values rounded once); ids outside [0,
// src_rows) give zero rows.
void dequant_rows(DType w_dt, const void* w, int64_t src_rows, int64_t k, const int32_t* ids,
                  int64_t rows, DType out_dt, void* out, cudaStream_t s);
// y[t, n] = sum_k x[t, k] w[n, k] for 1 .. kQuantGemvMaxTokens rows x (bf16) and a block matrix
// w (quant_kept), on the CUDA cores over the blocks' values (integer dot products with x split
// into two int8 parts); fp32 sums rounded to bf16, y bf16 or f32.
void gemv_quant(DType w_dt, const void* x, const void* w, DType y_dt, void* y, int tokens, int k,
                int n, cudaStream_t s);
// H200, 8B Q4_K_M decode: 577 against 491 tok/s at two rows, 542 against 704 at three.
constexpr int kQuantGemvMaxTokens = 2;
// y[t, n] for 1 .. kQuantMmaMaxTokens rows on the tensor cores (the backend's past
// kQuantGemvMaxTokens, where it beats the GEMV): each weight widened to bf16 once for all rows
// (the scratch path's values and sums, in another order). Past 32 rows the weights are widened into
// a bf16 scratch matrix for cuBLASLt.
void mma_quant(DType w_dt, const void* x, const void* w, DType y_dt, void* y, int tokens, int k,
               int n, cudaStream_t s);
constexpr int kQuantMmaMaxTokens = 32;

// --- k_sample.cu
// Row r of logits [R, V] (f32) summarised for beam search: stats[r] = {max, log-sum-exp}, and
// its n best tokens (n <= V; ties to the lower id) at values / ids [r * n ...], in no order.
// Each row takes a cluster of `blocks` blocks (row_blocks(rows)).
void beam_rows(const float* logits, int rows, int vocab, int n, float2* stats, float* values,
               int32_t* ids, int blocks, cudaStream_t s);
// Rewrites the logits [R, V] (f32) that edits[0, n) name as the host's history processors do
// (backend/row_pick.h); each (row, token) at most once.
void edit_logits(float* logits, int vocab, const LogitEdit* edits, int n, cudaStream_t s);
// out[r] = argmax of row r of logits [R, V] (f32); ties go to the lowest index.
void argmax_rows(const float* logits, int rows, int vocab, int32_t* out, cudaStream_t s);
// out[r] = the host sampler's token for row r of logits [R, V] (f32) with params[r]
// (backend/row_pick.h): greedy, or the filters in HF's order and the seeded draw. scratch holds
// 2 x R x V floats. Each row takes a cluster of `blocks` blocks (row_blocks(rows)).
void sample_rows(const float* logits, int rows, int vocab, const RowPick* params, float* scratch,
                 int32_t* out, int blocks, cudaStream_t s);
// The blocks a row of sample_rows or beam_rows takes for `rows` rows: a few rows take a cluster
// of blocks, one an SM. The first call for a cluster size asks the driver for the clusters that
// fit (it also loads the sample kernel), so callers ask before any timed region.
int row_blocks(int rows);
// Loads the kernels above (with lazy module loading a kernel loads inside its first launch, and
// so inside a profiled op); once a process.
void prepare_pick_kernels();

}  // namespace nanoinfer::cuda
