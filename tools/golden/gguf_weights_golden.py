"""Reference weights of the default SmolLM2 GGUF as HF transformers loads it (dequantised, Q/K
rows back in rotate-half order). Writes tests/data/gguf_weights_golden.json, read by
tests/unit/test_gguf.cpp to check nanoinfer's dequantisation and Q/K un-permutation.

usage: gguf_weights_golden.py PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM

# Rows on both sides of the half-head boundary (head_dim 64) and into the second head.
QK_ROWS = [0, 1, 31, 32, 33, 63, 64, 65, 96, 97]
VALUES = 8


def main():
    gguf = os.path.abspath(sys.argv[1])
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch.float32)
    state = model.state_dict()
    out = {"source": os.path.basename(gguf), "values": VALUES, "tensors": {}}
    for name, w in state.items():
        w = w.detach()
        if not (name.startswith("model.layers.0.") or name.startswith("model.layers.29.")
                or not name.startswith("model.layers.")):
            continue
        if name == "lm_head.weight":  # tied: the same tensor as the embedding
            continue
        if w.dim() == 1:
            rows = {"0": w[:VALUES].tolist()}
        elif name.endswith(("q_proj.weight", "k_proj.weight")):
            rows = {str(r): w[r, :VALUES].tolist() for r in QK_ROWS if r < w.shape[0]}
        else:
            rows = {str(r): w[r, :VALUES].tolist() for r in (0, 1, w.shape[0] - 1)}
        out["tensors"][name] = {"shape": list(w.shape), "rows": rows}
    path = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data",
                        "gguf_weights_golden.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {len(out['tensors'])} tensors to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
