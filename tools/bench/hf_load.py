"""Checkpoint load time on the GPU machine: writes a Llama checkpoint of the config's shapes with
random bf16 weights as HF transformers saves one (save_pretrained: safetensors shards, index,
config.json), then times HF's own load of it onto the GPU (from_pretrained, bf16, device_map
cuda, up to the weights being there), the peer of `nanoinfer generate --model DIR`'s load time.
The files are in the page cache after the write, for both loads.
  python3 tools/bench/hf_load.py --config CONFIG.json --out DIR [--json FILE]"""
import argparse
import json
import time

import torch
from transformers import LlamaForCausalLM

from hf_w1 import build


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--json")
    a = ap.parse_args()
    model = build(a.config)
    t0 = time.perf_counter()
    model.save_pretrained(a.out, max_shard_size="5GB")
    saved = time.perf_counter() - t0
    del model
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    loaded = LlamaForCausalLM.from_pretrained(a.out, dtype=torch.bfloat16, device_map="cuda")
    torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    n = sum(p.numel() * p.element_size() for p in loaded.parameters())
    print(f"wrote {a.out} in {saved:.1f} s; HF from_pretrained to the GPU: {load_s:.2f} s "
          f"({n / 1e9:.2f} GB of weights, {n / 1e9 / load_s:.2f} GB/s)", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"save_s": saved, "hf_load_s": load_s, "weight_bytes": n}, f, indent=2)


if __name__ == "__main__":
    main()
