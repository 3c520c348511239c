// One entry point for every checkpoint format: a HF directory (config.json + safetensors,
// single or sharded + generation_config.json + tokenizer files) or a GGUF file. Weights come back
// under HF names ("model.layers.0.self_attn.q_proj.weight"), in HF layout (rotate-half RoPE rows),
// as host tensors: views into the mmap where the dtype allows, else converted copies.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "loader/gguf.h"
#include "nanoinfer/model_config.h"
#include "tensor/tensor.h"

namespace nanoinfer {

struct LoadedModel {
  std::string source;  // the path given
  ModelConfig config;
  std::map<std::string, Tensor> weights;  // HF names; f32, f16, bf16 or GGUF blocks
  std::string weight_format;              // e.g. "gguf Q4_1+F32 (as stored)", "safetensors bf16"
  int64_t file_bytes = 0;                 // bytes of weights on disk
  // Tokenizer sources: HF files (empty paths when absent) or the GGUF's metadata.
  std::string tokenizer_json;
  std::string tokenizer_config_json;
  std::shared_ptr<const GgufFile> gguf;
  std::shared_ptr<void> keep_alive;  // mmaps the weight views point into
};

struct LoadOptions {
  // true: GGUF tensors are dequantised to f32 host copies. false: views of the file as stored
  // (F32, F16, BF16, or GGUF blocks, Tensor dtype Q* / IQ*; Q/K rows moved in a private
  // copy): the CPU backend widens blocks tile by tile, the CUDA backend tensor by tensor as it
  // uploads them, to the same values.
  bool dequantize = true;
};

// Throws Error with the file and tensor at fault for anything malformed.
LoadedModel load_model(const std::string& path, const LoadOptions& options = {});
// The same checkpoint's config alone (the same errors; no weight is read).
ModelConfig load_model_config(const std::string& path);

// The HF weight names and shapes a config requires (checked by load_model; used by
// --random-weights to build a model of real shape).
std::map<std::string, std::vector<int64_t>> expected_weight_shapes(const ModelConfig& config);

// GGUF llama.* and tokenizer.ggml.* metadata -> ModelConfig (tie_word_embeddings when the file
// has no output.weight).
ModelConfig config_from_gguf(const GgufFile& gguf);

// HF name of a llama.cpp tensor name ("blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj
// .weight"); names it does not know come back unchanged.
std::string hf_name_from_gguf(const std::string& gguf_name);

// llama.cpp's converter reorders the rows of each head of Q and K so that rows (2i, 2i+1) hold HF's
// rows (i, i + head_dim/2) (interleaved RoPE pairs). This puts an f32 [n_heads*head_dim, cols]
// tensor back in HF's rotate-half order, in place.
void unpermute_qk_rows(Tensor& w, int n_heads);  // any dtype: whole rows move

// Parses a HF config.json (and generation_config.json when given) into a ModelConfig.
ModelConfig parse_hf_config(const std::string& config_json_path,
                            const std::string& generation_config_path = "");

}  // namespace nanoinfer
