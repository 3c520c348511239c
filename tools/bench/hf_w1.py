"""HF transformers peers for W1 on the GPU machine (run by scripts/device.sh in the same call as
bench_w1): Llama-3.1-8B shapes with random bf16 weights (normal(0, 0.02), norms 1), one prompt of
512 random ids, 256 greedy new tokens with EOS ignored. Two modes: eager with the dynamic cache,
and a static cache, with which generate() compiles the decoding step (torch.compile).
Prints one line per mode and writes JSON (--json)."""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def build(config_path):
    cfg = LlamaConfig.from_json_file(config_path)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    model.generation_config.eos_token_id = None  # EOS ignored: every run makes all its tokens
    model.generation_config.pad_token_id = 0
    return model.eval()


def timed_generate(model, ids, new_tokens, **kw):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    model.generate(ids, max_new_tokens=1, do_sample=False, **kw)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    model.generate(ids, max_new_tokens=new_tokens, do_sample=False, **kw)
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    prefill = t1 - t0
    decode = (t2 - t1) - prefill  # the second call repeats the prefill
    return prefill * 1e3, (new_tokens - 1) / decode


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="bench/configs/llama-3.1-8b.json")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--modes", default="eager,static_compile")
    ap.add_argument("--json")
    a = ap.parse_args()
    model = build(a.config)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (1, a.prompt), generator=g).cuda()
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    import transformers
    out["transformers"] = transformers.__version__
    for mode in a.modes.split(","):
        kw = {}
        if mode == "static_compile":
            # A static cache makes generate() compile the decoding forward itself
            # (generation_config.compile_config: torch.compile with CUDA graphs).
            kw["cache_implementation"] = "static"
        # Warm-up with the very calls timed below: a static cache is sized by prompt +
        # max_new_tokens, so each length compiles once here and not inside the timing.
        for n in (1, a.new_tokens):
            model.generate(ids, max_new_tokens=n, do_sample=False, **kw)
        prefill_ms, tok_s = timed_generate(model, ids, a.new_tokens, **kw)
        out[mode] = {"prefill_ms": prefill_ms, "decode_tok_s": tok_s}
        print(f"HF {mode:15s} prefill({a.prompt}) {prefill_ms:8.2f} ms   decode {tok_s:7.1f} tok/s",
              flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
