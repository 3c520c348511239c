"""PyTorch's own attention kernels on bench_w1's decode attention shapes, as peers for issue 7's
"decode attention >= 80 % of the copy bandwidth" (bench_w1 --only attn runs ours in the same call).

One new query token a sequence against a cache of CTX entries: Llama-3.1-8B's 32 query heads over 8
kv heads of 128, bf16, at 1, 2, 8 and 32 sequences and 640, 4,096 and 16,384 entries. As in
bench_w1, enough cache layers are cycled that a pass reads at least 512 MB (so L2 holds no layer
from one call to its next), max(16, layers) calls are captured in one CUDA graph, and a call's time
is the mean over its replays. The bytes counted are the K and V a call must read (sequences x CTX x
8 x 128 x 2 B x 2), against a 2 GiB device-to-device copy measured here (bytes read + written).

Each kernel runs in two forms: grouped (q [B, 32, 1, 128], enable_gqa=True) and packed (each kv
head's 4 query heads as 4 query rows: q [B, 8, 4, 128] against [B, 8, CTX, 128], no mask, the same
arithmetic), which lets a backend without grouped heads read each K and V once. Every form's output
is checked against a float32 computation before it is timed (max error < 1 % of the largest
output); a form a backend refuses is reported as such. flex_attention (torch.compile's Triton
decode kernel, which splits the cache) compiles at each shape and runs when --forms names it.
Run on the GPU machine (scripts/device.sh attn):
  python3 tools/bench/torch_decode_attn.py [--forms flex_grouped,...] [--batches 1,2] [--json F]"""
import argparse
import json
import math
import time
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
GROUP = HEADS // KV_HEADS


def copy_gbs():
    """Bytes read + written per second by a 2 GiB device-to-device copy (median of 10)."""
    a = torch.ones(2 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = []
    for i in range(12):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        b.copy_(a)
        e1.record()
        e1.synchronize()
        if i >= 2:
            ms.append(e0.elapsed_time(e1))
    del a, b
    torch.cuda.empty_cache()
    return 2.0 * (2 << 30) / (sorted(ms)[len(ms) // 2] * 1e-3) / 1e9


def reference(q, k, v):
    """float32 attention of one new token: q [B, 32, 1, D] against k, v [B, 8, CTX, D]."""
    qf = q.float().view(q.shape[0], KV_HEADS, GROUP, HEAD_DIM)
    s = torch.einsum("bhgd,bhtd->bhgt", qf, k.float()) / math.sqrt(HEAD_DIM)
    o = torch.einsum("bhgt,bhtd->bhgd", s.softmax(-1), v.float())
    return o.reshape(q.shape[0], HEADS, 1, HEAD_DIM)


def forms(names):
    """The forms named: name -> fn(q [B, 32, 1, D], k, v) -> [B, 32, 1, D] (bf16)."""
    out = {}
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION),
                          ("cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        def grouped(q, k, v, backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

        def packed(q, k, v, backend=backend):
            b = q.shape[0]
            with sdpa_kernel(backend):
                o = F.scaled_dot_product_attention(q.view(b, KV_HEADS, GROUP, HEAD_DIM), k, v)
            return o.reshape(b, HEADS, 1, HEAD_DIM)  # (efficient's output is not contiguous)

        out[name + "_grouped"] = grouped
        out[name + "_packed"] = packed
    if "flex_grouped" in names:
        from torch.nn.attention.flex_attention import flex_attention
        compiled = torch.compile(flex_attention, dynamic=False)
        out["flex_grouped"] = lambda q, k, v: compiled(q, k, v, enable_gqa=True)
    unknown = set(names) - set(out) - {"flex_grouped"}
    if unknown:
        raise SystemExit(f"unknown forms {sorted(unknown)}; known: {sorted(out)} and flex_grouped")
    return {n: out[n] for n in names}


def time_form(fn, q, ks, vs, calls, reps):
    """Mean µs a call over graph replays of `calls` calls cycling the layers."""
    layers = len(ks)
    for i in range(3):  # warm-up (and flex's compilation) outside the capture
        fn(q, ks[i % layers], vs[i % layers])
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # sdpa's first calls on a side stream, as capture asks
        fn(q, ks[0], vs[0])
    torch.cuda.current_stream().wait_stream(stream)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls):
            fn(q, ks[i % layers], vs[i % layers])
    g.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        g.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e6 / (reps * calls)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="1,2,8,32")
    ap.add_argument("--contexts", default="640,4096,16384")
    ap.add_argument("--forms", default=",".join(
        f"{k}_{f}" for k in ("flash", "cudnn", "efficient") for f in ("grouped", "packed")),
        help="forms to run; flex_grouped (compiles at each shape) only when named")
    ap.add_argument("--json")
    a = ap.parse_args()
    warnings.simplefilter("ignore")  # a backend's refusal is reported from its exception instead
    copy = copy_gbs()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "copy_gb_s": copy, "runs": {}}
    print(f"{result['device']}, torch {torch.__version__}: copy {copy:.0f} GB/s", flush=True)
    fns = forms(a.forms.split(","))
    for b in (int(x) for x in a.batches.split(",")):
        for ctx in (int(x) for x in a.contexts.split(",")):
            nbytes = b * ctx * 2 * KV_HEADS * HEAD_DIM * 2
            layers = max(1, math.ceil(512e6 / nbytes))
            gen = torch.Generator(device="cuda").manual_seed(b * 100003 + ctx)
            shape = (b, KV_HEADS, ctx, HEAD_DIM)

            def randn(*s):
                return torch.randn(*s, generator=gen, device="cuda", dtype=torch.bfloat16)

            ks = [randn(*shape) for _ in range(layers)]
            vs = [randn(*shape) for _ in range(layers)]
            q = randn(b, HEADS, 1, HEAD_DIM)
            want = reference(q, ks[0], vs[0])
            scale = want.abs().max()
            calls = max(16, layers)
            reps = max(5, 2000 // calls)
            for name, fn in fns.items():
                key = f"b{b}_ctx{ctx} {name}"
                try:
                    err = ((fn(q, ks[0], vs[0]).float() - want).abs().max() / scale).item()
                    if not err < 1e-2:
                        raise RuntimeError(f"wrong output: max error {err:.3g} of the largest")
                    us = time_form(fn, q, ks, vs, calls, reps)
                except Exception as e:  # a backend that refuses the form, or computes it wrong
                    msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                    result["runs"][key] = {"error": msg}
                    print(f"B={b:2d} ctx {ctx:5d} {name:15s}: not run ({msg})", flush=True)
                    torch.cuda.synchronize()
                    continue
                gbs = nbytes / (us * 1e-6) / 1e9
                result["runs"][key] = {"us": us, "gb_s": gbs, "pct_copy_bw": 100 * gbs / copy,
                                       "max_rel_err": err, "layers_cycled": layers}
                print(f"B={b:2d} ctx {ctx:5d} {name:15s}: {us:8.1f} us  {gbs:6.0f} GB/s = "
                      f"{100 * gbs / copy:5.1f}% of copy ({layers} layers)", flush=True)
            del ks, vs
            torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
