"""Reference values of every GGUF block format nanoinfer reads, from gguf-py's numpy
dequantisation (the code HF transformers runs to load a GGUF). Each format gets a few blocks of
seeded random bytes whose f16 scale fields hold finite values of both signs; the rest (sub-block
scales, mins, quants, high bits) is left random, so every bit of the layout is exercised.
Writes tests/data/gguf_quant_golden.json, read by tests/unit/test_gguf.cpp.

usage: pip install gguf==0.19.0 numpy; python3 tools/golden/gguf_quant_golden.py
"""
import json
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

# Byte offsets of each format's f16 fields (d, and dmin / m where there is one) in a block.
F16_FIELDS = {
    T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.IQ4_NL: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    T.IQ4_XS: [0],
}


def random_blocks(qtype, blocks, rng):
    block_values, block_bytes = quants.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(blocks, block_bytes), dtype=np.uint8)
    for at in F16_FIELDS[qtype]:
        mag = np.exp2(rng.uniform(-12.0, -3.0, size=blocks))
        sign = np.where(rng.integers(0, 2, size=blocks) == 1, -1.0, 1.0)
        raw[:, at:at + 2] = (mag * sign).astype(np.float16).reshape(blocks, 1).view(np.uint8)
    return raw, block_values


def main():
    rng = np.random.default_rng(20261203)
    out = {"source": "gguf-py " + __import__("importlib.metadata").metadata.version("gguf"),
           "formats": []}
    for qtype in F16_FIELDS:
        blocks = 3 if quants.GGML_QUANT_SIZES[qtype][0] == 256 else 5
        raw, per_block = random_blocks(qtype, blocks, rng)
        values = quants.dequantize(raw.reshape(-1), qtype).astype(np.float32).reshape(-1)
        assert values.size == blocks * per_block and np.isfinite(values).all()
        out["formats"].append({"name": qtype.name, "ggml_type": int(qtype),
                               "bytes": raw.tobytes().hex(),
                               "values": [float(v) for v in values]})
    path = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data",
                        "gguf_quant_golden.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print(f"wrote {len(out['formats'])} formats to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
