"""A GGUF of a real model's shapes with random quantised weights, laid out as llama.cpp writes one:
Q4_K_M's mix of Q4_K and Q6_K (Q6_K for the LM head and for attn_v / ffn_down in half the layers,
which ones as llama.cpp picks them), Q/K rows in llama.cpp's order (random, so nothing to permute),
Llama-3.1's llama3 RoPE scaling as a rope_freqs tensor, and a Llama-3 tokenizer (tokens, merges,
pre-tokenizer "llama-bpe", BOS / EOS / EOT ids, chat template) from a tokenizer.json. For load and
speed measurements of the quantised GGUF path (the CUDA engine widens the blocks to bf16 at
upload, or with --keep-blocks multiplies the Q4_K and Q6_K blocks as they are); the text it
generates is noise. Needs numpy and gguf-py (pip install gguf).

usage: make_gguf.py --config bench/configs/llama-3.1-8b.json --tokenizer DIR --out model.gguf
"""
import argparse
import json
import math
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter, quants

F16_FIELDS = {T.Q4_K: [0, 2], T.Q6_K: [208]}  # byte offsets of d (and dmin) in a block


def random_blocks(qtype, rows, cols, rng):
    per_block, block_bytes = quants.GGML_QUANT_SIZES[qtype]
    blocks = rows * cols // per_block
    raw = rng.integers(0, 256, size=(blocks, block_bytes), dtype=np.uint8)
    for at in F16_FIELDS[qtype]:  # finite scales: values of magnitude up to ~0.1
        scale = (rng.random(blocks, dtype=np.float32) * 2.0**-10).astype(np.float16)
        raw[:, at:at + 2] = scale.reshape(blocks, 1).view(np.uint8)
    return raw.reshape(rows, cols // per_block * block_bytes)


def more_bits(layer, layers):
    """llama.cpp's Q4_K_M: Q6_K for the first and last eighth of the layers and every third
    between."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def llama3_rope_freqs(c, head_dim):
    r = c["rope_scaling"]
    factor, lo, hi = r["factor"], r["low_freq_factor"], r["high_freq_factor"]
    old = r["original_max_position_embeddings"]
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * c["rope_theta"] ** (i / head_dim)
        if wavelen < old / hi:
            out.append(1.0)
        elif wavelen > old / lo:
            out.append(factor)
        else:
            s = (old / wavelen - lo) / (hi - lo)
            out.append(1.0 / ((1 - s) / factor + s))
    return np.array(out, dtype=np.float32)


def add_tokenizer(w, directory):
    with open(os.path.join(directory, "tokenizer.json")) as f:
        tj = json.load(f)
    vocab = dict(tj["model"]["vocab"])
    special = {t["content"]: t["id"] for t in tj["added_tokens"]}
    vocab.update(special)
    tokens = [""] * (max(vocab.values()) + 1)
    for tok, i in vocab.items():
        tokens[i] = tok
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types([3 if i in special.values() else 1 for i in range(len(tokens))])
    w.add_token_merges(merges)
    w.add_bos_token_id(special["<|begin_of_text|>"])
    w.add_eos_token_id(special["<|end_of_text|>"])
    w.add_eot_token_id(special["<|eot_id|>"])
    cfg = os.path.join(directory, "tokenizer_config.json")
    if os.path.exists(cfg):
        with open(cfg) as f:
            template = json.load(f).get("chat_template")
        if template:
            w.add_chat_template(template)
    return len(tokens)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="HF config.json")
    ap.add_argument("--tokenizer", required=True, help="directory with tokenizer.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    with open(a.config) as f:
        c = json.load(f)
    h, ffn, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    heads = c["num_attention_heads"]
    kv_heads = c.get("num_key_value_heads", heads)
    head_dim = c.get("head_dim", h // heads)
    rng = np.random.default_rng(a.seed)

    w = GGUFWriter(a.out, "llama")
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(h)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_rope_dimension_count(head_dim)
    vocab = add_tokenizer(w, a.tokenizer)
    assert vocab == c["vocab_size"], (vocab, c["vocab_size"])
    w.add_vocab_size(vocab)

    def matrix(name, rows, cols, qtype):
        w.add_tensor(name, random_blocks(qtype, rows, cols, rng), raw_dtype=qtype)  # byte shape

    ones = np.ones(h, dtype=np.float32)
    matrix("token_embd.weight", vocab, h, T.Q4_K)
    w.add_tensor("output_norm.weight", ones)
    if not c.get("tie_word_embeddings", False):
        matrix("output.weight", vocab, h, T.Q6_K)
    if (c.get("rope_scaling") or {}).get("rope_type") == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_freqs(c, head_dim))
    for layer in range(layers):
        p = f"blk.{layer}."
        big = T.Q6_K if more_bits(layer, layers) else T.Q4_K
        matrix(p + "attn_q.weight", heads * head_dim, h, T.Q4_K)
        matrix(p + "attn_k.weight", kv_heads * head_dim, h, T.Q4_K)
        matrix(p + "attn_v.weight", kv_heads * head_dim, h, big)
        matrix(p + "attn_output.weight", h, heads * head_dim, T.Q4_K)
        matrix(p + "ffn_gate.weight", ffn, h, T.Q4_K)
        matrix(p + "ffn_up.weight", ffn, h, T.Q4_K)
        matrix(p + "ffn_down.weight", h, ffn, big)
        w.add_tensor(p + "attn_norm.weight", ones)
        w.add_tensor(p + "ffn_norm.weight", ones)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {a.out}: {os.path.getsize(a.out) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
