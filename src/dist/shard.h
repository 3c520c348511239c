// Which part of the model one rank of a tensor-parallel group holds (Megatron-style sharding):
// a contiguous range of query heads with the KV heads they read, a range of the MLP's
// intermediate features, and a range of the vocabulary (embedding rows and LM-head rows).
// Ranges may differ by one unit between ranks, so a group need not divide every dimension.
#pragma once

#include <cstdint>
#include <string>

#include "nanoinfer/model_config.h"

namespace nanoinfer {

struct Range {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

struct Shard {
  int rank = 0, world = 1;
  Range q_heads, kv_heads, ffn, vocab;
  int64_t vocab_block = 0;  // rows of every rank's block of gathered logits (the largest range)

  // The plan for `rank` of `world`. KV heads are split whole (each rank gets whole GQA groups);
  // with more ranks than KV heads each KV head is replicated on world / kv_heads ranks that split
  // its group's query heads. The MLP splits in units of ffn_align features (the weights' block
  // size, so quantised blocks stay whole). Throws Error when the model cannot be split so.
  static Shard plan(const ModelConfig& c, int rank, int world, int64_t ffn_align = 1);

  // The shapes this rank computes with: its heads, features and vocabulary rows.
  ModelConfig local(const ModelConfig& c) const;
  // The id of `token` in this rank's embedding rows, or -1 when another rank holds it.
  int32_t local_token(int32_t token) const {
    return token >= vocab.begin && token < vocab.end ? static_cast<int32_t>(token - vocab.begin)
                                                     : -1;
  }
  std::string describe() const;
};

// The vocabulary rows rank `rank` of `world` holds: blocks of ceil(vocab / world) rows.
Range vocab_range(int64_t vocab, int world, int rank);

// [0, n) cut into `parts` contiguous ranges, in units of `unit` elements (the last unit may be
// short); sizes differ by at most one unit, the larger ones first.
Range split_range(int64_t n, int parts, int index, int64_t unit = 1);

}  // namespace nanoinfer
