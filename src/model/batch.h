// Batch: everything one varlen forward needs, built once per step on the host. Tokens of all
// sequences are packed back to back; cu_seqlens marks where each sequence starts. The KV cache is
// addressed through per-sequence block tables: logical index j of sequence s lives in slot
//   block_tables[s][j / block_size] * block_size + j % block_size.
#pragma once

#include <cstdint>
#include <vector>

namespace nanoinfer {

struct Batch {
  std::vector<int32_t> token_ids;     // [T]
  std::vector<int32_t> positions;     // [T] RoPE position of each token (the cache assigns them)
  std::vector<int32_t> seq_of_token;  // [T] which sequence each token belongs to
  std::vector<int32_t> q_index;       // [T] logical cache index of each token in its sequence
  std::vector<int32_t> slots;         // [T] cache slot the token's K/V is written to
  std::vector<int32_t> cu_seqlens;    // [B+1]
  std::vector<int32_t> context_lens;  // [B] logical cache entries of the sequence after this step
  std::vector<int32_t> block_tables;  // [B, max_blocks]
  int32_t max_blocks = 0;
  // Tokens whose logits are computed, in the order of the rows returned: the last of each
  // sequence (all its tokens with SeqState::all_logits), then any a step adds (scored prompts).
  std::vector<int32_t> logit_rows;
  // Optional tree mask among the new tokens of each sequence (SpecInfer-style verification):
  // for sequence s with n new tokens, n*n bytes at tree_offsets[s]; byte [i*n + k] = 1 when new
  // token i may attend to new token k. Empty = causal.
  std::vector<uint8_t> tree_mask;
  std::vector<int32_t> tree_offsets;  // [B]
  // The step feeds prompt tokens (set by the engine's run): --profile counts it as prefill even
  // where every sequence feeds one token (one-token prompts), which the kernels run as decode.
  bool prompt = false;

  int num_tokens() const { return static_cast<int>(token_ids.size()); }
  int num_seqs() const { return static_cast<int>(cu_seqlens.size()) - 1; }
  // The phase --profile counts the step under: decode for one token a sequence and no prompt.
  bool profiled_as_decode() const { return is_decode() && !prompt; }
  // A decode step: at least one sequence, each feeding exactly one token.
  bool is_decode() const {
    for (int s = 0; s < num_seqs(); ++s)
      if (cu_seqlens[s + 1] - cu_seqlens[s] != 1) return false;
    return num_seqs() > 0;
  }
};

}  // namespace nanoinfer
