"""W4 peer: HF transformers fp32 on CPU, the default model, the summary prompt, 128 greedy tokens.

The same workload as nanoinfer's W4 benchmark (../shared/BENCHMARKS.md): SmolLM2-135M-Instruct
from its Q4_1 GGUF (HF dequantises it to fp32 at load), the summary prompt tokenized with the
tokenizer's defaults, greedy decoding with EOS ignored, torch on 2 threads, eager attention.

Timing, with a manual loop over a DynamicCache so the two phases are separate:
  prefill_ms            one forward over the whole prompt, up to the first token's argmax
  decode_tokens_per_s   the remaining new_tokens - 1 tokens (one single-token forward each)
                        divided by their total time; prefill excluded
Each repeat starts from an empty cache; the best repeat is reported after `--warmup` untimed
runs. Peak RSS is the process's maximum resident set (ru_maxrss), load included.

Prints a human summary; with --json, one JSON object instead:
  {"engine": "hf-transformers", "transformers_version", "torch_version", "threads",
   "model_file", "prompt_tokens", "new_tokens", "prefill_ms", "decode_tokens_per_s",
   "decode_ms_per_token", "repeats": [{"prefill_ms", "decode_tokens_per_s"}, ...],
   "peak_rss_mib", "load_s", "first_tokens": [first 16 generated ids], "machine", "date"}

Run: /opt/golden/bin/python tools/golden/bench_hf_cpu.py [--json] [--threads 2] [--repeats 3]
"""

import argparse
import datetime
import inspect
import json
import os
import platform
import resource
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

REPO = Path(__file__).resolve().parents[2]
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def cache_kwarg(model) -> str:
    """transformers renamed forward's past_key_values to cache (5.2x); accept either."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def run_once(model, prompt_ids: list, new_tokens: int) -> tuple[float, float, list]:
    cache = {cache_kwarg(model): DynamicCache(config=model.config)}
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        start = time.perf_counter()
        # Like generate(): the LM head runs for the last position only.
        logits = model(ids, use_cache=True, logits_to_keep=1, **cache).logits[0, -1]
        token = int(torch.argmax(logits))
        prefill_s = time.perf_counter() - start
        tokens = [token]
        start = time.perf_counter()
        for _ in range(new_tokens - 1):
            logits = model(torch.tensor([[token]]), use_cache=True, **cache).logits[0, -1]
            token = int(torch.argmax(logits))
            tokens.append(token)
        decode_s = time.perf_counter() - start
    return prefill_s * 1e3, (new_tokens - 1) / decode_s, tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path.home() / ".cache/nanoinfer")
    parser.add_argument("--prompt-file", type=Path,
                        default=REPO / "tests/data/prompts/summary_prompt.txt")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, gguf_file=GGUF_NAME,
                                                 dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    load_s = time.perf_counter() - start
    prompt_ids = tokenizer(args.prompt_file.read_text(encoding="utf-8"))["input_ids"]

    for _ in range(args.warmup):
        run_once(model, prompt_ids, 8)
    repeats, tokens = [], []
    for _ in range(args.repeats):
        prefill_ms, tok_s, tokens = run_once(model, prompt_ids, args.new_tokens)
        repeats.append({"prefill_ms": round(prefill_ms, 2), "decode_tokens_per_s": round(tok_s, 2)})
    best_prefill = min(r["prefill_ms"] for r in repeats)
    best_decode = max(r["decode_tokens_per_s"] for r in repeats)

    result = {
        "engine": "hf-transformers",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "threads": args.threads,
        "model_file": GGUF_NAME,
        "prompt_tokens": len(prompt_ids),
        "new_tokens": args.new_tokens,
        "prefill_ms": best_prefill,
        "decode_tokens_per_s": best_decode,
        "decode_ms_per_token": round(1e3 / best_decode, 3),
        "repeats": repeats,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_s": round(load_s, 2),
        "first_tokens": tokens[:16],
        "machine": f"{cpu_name()}, {os.cpu_count()} cpus",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"HF transformers {result['transformers_version']} fp32, {args.threads} threads, "
          f"{result['machine']}")
    print(f"prompt {result['prompt_tokens']} tokens, {args.new_tokens} new tokens (EOS ignored)")
    print(f"prefill: {best_prefill:.1f} ms")
    print(f"decode:  {best_decode:.2f} tok/s ({result['decode_ms_per_token']:.2f} ms/token)")
    print(f"peak RSS: {result['peak_rss_mib']:.0f} MiB, load {load_s:.1f} s")
    print(f"repeats: {repeats}")


if __name__ == "__main__":
    main()
