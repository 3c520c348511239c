"""HF tokenizers encode throughput on the same text as bench/bench_tokenizer.cpp: the summary
prompt repeated to 10 MB, one thread (RAYON_NUM_THREADS=1), once as one 10 MB string and once as
separate documents (one encode call per copy of the prompt).

Usage (from the repository root): /opt/golden/bin/python tools/golden/bench_hf_tokenizer.py [MB]
"""

import os
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from tokenizers import Tokenizer  # noqa: E402

DATA = os.path.join("tests", "data", "tokenizer")


def main():
    megabytes = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    with open(os.path.join(DATA, "summary_prompt.txt"), "rb") as f:
        prompt = f.read()
    target = int(megabytes * 1e6)
    raw = (prompt * (target // len(prompt) + 1))[:target]
    text = raw.decode("utf-8")
    print(f"text: {len(raw) / 1e6:.1f} MB (summary_prompt.txt repeated), 1 thread")
    for name in ("llama3", "smollm2", "llama2"):
        t = time.perf_counter()
        tok = Tokenizer.from_file(os.path.join(DATA, name, "tokenizer.json"))
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        ids = tok.encode(text, add_special_tokens=False).ids
        s = time.perf_counter() - t
        t = time.perf_counter()
        tok.decode(ids)
        ds = time.perf_counter() - t
        doc = prompt.decode("utf-8")
        docs = len(raw) // len(prompt)
        t = time.perf_counter()
        doc_tokens = sum(len(tok.encode(doc, add_special_tokens=False).ids) for _ in range(docs))
        doc_s = time.perf_counter() - t
        print(f"{name:8s} encode {len(raw) / 1e6 / s:7.2f} MB/s ({len(ids)} tokens)  "
              f"per-document encode {docs * len(prompt) / 1e6 / doc_s:7.2f} MB/s ({docs} docs, "
              f"{doc_tokens} tokens)  decode {len(raw) / 1e6 / ds:7.2f} MB/s  load {load_s:.2f} s")


if __name__ == "__main__":
    main()
