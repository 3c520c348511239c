"""How far HF transformers bf16 agrees with itself, as the scale for the CUDA backend's bf16 greedy
agreement (tests/gpu/test_cuda_hf_bf16.cpp): the default model (SmolLM2-135M-Instruct GGUF) on the
same real-text prompts as tools/bench/hf_bf16_greedy.py, 48 greedy tokens each.

A reference's tokens (this process's generate, or --reference FILE: hf_bf16_greedy.py's output,
its real set) are fed to HF teacher-forced, one token a step through its KV cache as the C++ test
feeds ours, in configurations (--configs, CONFIGS below) that are all "HF transformers bf16":
another BLAS path or batch shape, another sdpa backend, eager attention, attention functions
that emulate a kernel's rounding points, or attention and products in float64 (no rounding inside
them, HF's between ops). Per configuration it prints the positions whose argmax
equals the reference's next token, over all positions and over the decisive ones (the reference's
top-1 above its top-2 by more than one bf16 spacing). With --reference, this process's own
generate (free-running, so a flip changes the rest of its continuation) is compared as well.
Run on the GPU machine with the GGUF and the gguf wheel (scripts/split_model.sh); about 25 s a
configuration, 40-70 s for an emulated or float64 one. Results: docs/perf.md (2026-12-04 and
2026-12-06)."""
import argparse
import contextlib
import json
import math
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_bf16_greedy import for_greedy, greedy, real_prompts, sdpa_backend  # noqa: E402


def teacher_forced(model, ids, teacher, batch, device):
    """Argmax of HF's bf16 logits before each teacher token, one token a step through the cache."""
    picks = []
    with torch.no_grad():
        # (the prompt's last logits only, as generate asks: the LM head's product at one row)
        out = model(torch.tensor([ids] * batch, device=device), use_cache=True, logits_to_keep=1)
        for t in teacher:
            picks.append(int(out.logits[0, -1].argmax()))
            out = model(torch.tensor([[t]] * batch, device=device),
                        past_key_values=out.past_key_values, use_cache=True)
    return picks


def num_splits(rows, slots, n_blocks, most=128):
    """FlashAttention-2's choice of key splits (flash_api.cpp, num_splits_heuristic): one split when
    the (batch, head, 64-row block) tiles nearly fill `slots` (2 x the SMs); else the fewest splits
    whose wave efficiency is within 85 % of the best, skipping counts that give the same blocks
    per split as one fewer."""
    if rows >= 0.8 * slots:
        return 1
    most = min(most, slots, n_blocks)
    eligible = [s == 1 or math.ceil(n_blocks / s) != math.ceil(n_blocks / (s - 1))
                for s in range(1, most + 1)]
    eff = [(rows * s / slots) / math.ceil(rows * s / slots) if ok else 0.0
           for s, ok in zip(range(1, most + 1), eligible)]
    for s, ok in zip(range(1, most + 1), eligible):
        if ok and eff[s - 1] >= 0.85 * max(eff):
            return s
    return 1


def causal_scores(query, key, dtype):
    """q k^T in dtype (unscaled), each query row of the kv head its group shares, the keys past
    the row's own position at -inf (the new rows are the last lq of the lk)."""
    g = query.shape[1] // key.shape[1]
    s = torch.matmul(query.to(dtype), key.repeat_interleave(g, dim=1).to(dtype).transpose(-1, -2))
    lq, lk = s.shape[-2], s.shape[-1]
    row = torch.arange(lq, device=s.device)[:, None] + (lk - lq)
    col = torch.arange(lk, device=s.device)[None, :]
    return s.masked_fill(col > row, float("-inf"))


def blocked_attention(single_block, split_block, reverse, split):
    """An HF attention function (AttentionInterface) in the arithmetic of FlashAttention-2's forward
    as its rounding points go: keys in blocks of single_block (one split) or split_block (several,
    num_splits' choice), a running max over a split's blocks in the order they are visited
    (reverse: last block first), p = 2^(s c - m c) rounded to bf16 against the running max of its
    block before the product with V, the sum of the unrounded p, each split's output over its sum
    and the splits merged by their log-sum-exp, the output rounded to bf16 once. The sums
    themselves run in float64: only the rounding points are the kernel's, not its order of
    fp32 additions, so that the agreement this buys measures the rounding points alone."""
    def attend(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        b, h, lq, d = query.shape
        hk, lk = key.shape[1], key.shape[2]
        g = h // hk
        scaling = scaling if scaling is not None else d ** -0.5
        c32 = torch.tensor(float(torch.tensor(scaling, dtype=torch.float32)) * math.log2(math.e),
                           dtype=torch.float32)  # the kernel's float scale_softmax_log2
        c = float(c32)
        v = value.repeat_interleave(g, dim=1).double()
        s = causal_scores(query, key, torch.float32)
        tiles = b * hk * math.ceil(g / 64) if lq == 1 and g > 1 else b * h * math.ceil(lq / 64)
        sms = torch.cuda.get_device_properties(query.device).multi_processor_count
        splits = num_splits(tiles, 2 * sms, math.ceil(lk / split_block)) if split else 1
        bn = single_block if splits == 1 else split_block
        nb = math.ceil(lk / bn)
        per = nb if splits == 1 else math.ceil(nb / splits)
        pad = nb * bn - lk
        sp = torch.nn.functional.pad(s, (0, pad), value=float("-inf")).view(b, h, lq, nb, bn)
        vp = torch.nn.functional.pad(v, (0, 0, 0, pad)).view(b, h, nb, bn, d)
        bmax = sp.amax(-1)
        run, final = torch.empty_like(bmax), torch.empty_like(bmax)
        for s0 in range(0, nb, per):
            blk = bmax[..., s0:s0 + per]
            r = blk.flip(-1).cummax(-1).values.flip(-1) if reverse else blk.cummax(-1).values
            run[..., s0:s0 + per] = r
            final[..., s0:s0 + per] = (r[..., :1] if reverse else r[..., -1:]).expand_as(r)
        dead = torch.isneginf(run)
        run_c = torch.where(dead, torch.zeros_like(run), run * c32)  # fp32, 0 before any key
        p = torch.exp2((sp.double() * c - run_c.double()[..., None]).float())  # one fma's rounding
        pb = p.bfloat16().double()
        r = torch.where(dead, torch.zeros_like(run, dtype=torch.float64),
                        torch.exp2(torch.where(dead, 0.0, run.double() - final.double()) * c))
        lsum = p.double().sum(-1) * r
        acc = torch.einsum("bhqnk,bhnkd->bhqnd", pb, vp) * r[..., None]
        outs, lses = [], []
        for s0 in range(0, nb, per):
            ls = lsum[..., s0:s0 + per].sum(-1)
            o = acc[..., s0:s0 + per, :].sum(-2)
            outs.append(torch.where(ls[..., None] > 0, o / ls[..., None].clamp_min(1e-300), 0.0))
            lses.append(torch.where(ls > 0, final[..., s0].double() * scaling
                                    + torch.log(ls.clamp_min(1e-300)), float("-inf")))
        out = outs[0]
        if len(outs) > 1:
            lse = torch.stack(lses)
            mx = lse.amax(0)
            mx = torch.where(torch.isneginf(mx), 0.0, mx)
            total = torch.log(torch.exp(lse - mx).sum(0)) + mx
            out = (torch.exp(lse - total)[..., None] * torch.stack(outs)).sum(0)
        return out.to(torch.bfloat16).transpose(1, 2).contiguous(), None
    return attend


def exact_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                    **kwargs):
    """An HF attention function with no rounding but the output's: scores, softmax and the product
    with V in float64 from the bf16 q, k, v, rounded to bf16 once."""
    d = query.shape[-1]
    scaling = scaling if scaling is not None else d ** -0.5
    v = value.repeat_interleave(query.shape[1] // key.shape[1], dim=1).double()
    p = torch.softmax(causal_scores(query, key, torch.float64) * scaling, dim=-1)
    return torch.matmul(p, v).to(torch.bfloat16).transpose(1, 2).contiguous(), None


def eager_exact_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                          **kwargs):
    """HF's eager attention with its rounding points and no others: q k^T rounded to bf16, scaled
    in bf16, softmax in float32 rounded to bf16, the product with V rounded to bf16; the dot
    products' sums in float64 (no order of fp32 additions to reproduce)."""
    d = query.shape[-1]
    scaling = scaling if scaling is not None else d ** -0.5
    s = causal_scores(query, key, torch.float64).to(torch.bfloat16) * scaling
    p = torch.softmax(s, dim=-1, dtype=torch.float32).to(torch.bfloat16).double()
    v = value.repeat_interleave(query.shape[1] // key.shape[1], dim=1).double()
    return torch.matmul(p, v).to(torch.bfloat16).transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def exact_linear():
    """Every nn.Linear (the projections, the MLP, the LM head) in float64 from its bf16 input and
    weights, rounded to bf16 once: a product with no order of sums to reproduce."""
    forward, wide = torch.nn.Linear.forward, {}  # module -> its float64 weight and bias

    def exact(self, x):
        if self not in wide:
            wide[self] = (self.weight.double(), None if self.bias is None else self.bias.double())
        return torch.nn.functional.linear(x.double(), *wide[self]).to(x.dtype)
    torch.nn.Linear.forward = exact
    try:
        yield
    finally:
        torch.nn.Linear.forward = forward


def use_attention(model, name, fn):
    from transformers import AttentionInterface
    AttentionInterface.register(name, fn)
    try:  # its causal mask as sdpa's (unused here: the function masks by position)
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)
    except (ImportError, AttributeError):
        pass
    model.set_attn_implementation(name)
    return contextlib.nullcontext()


def after(_):
    """No context: the configuration was a setting, made by evaluating the argument."""
    return contextlib.nullcontext()


def with_exact_linear(model, name, attention):
    """An attention function (registered as name) and every product in float64 (exact_linear)."""
    use_attention(model, name, attention)
    return exact_linear()


# name -> model -> (context to run in, batch rows); each starts from sdpa and cuBLAS defaults.
CONFIGS = {
    "default": lambda m: (contextlib.nullcontext(), 1),
    "cublaslt": lambda m: (after(torch.backends.cuda.preferred_blas_library("cublaslt")), 1),
    "no_reduced": lambda m: (after(setattr(torch.backends.cuda.matmul,
                                           "allow_bf16_reduced_precision_reduction", False)), 1),
    "batch2": lambda m: (contextlib.nullcontext(), 2),
    "eager": lambda m: (after(m.set_attn_implementation("eager")), 1),
    "sdpa_flash": lambda m: (sdpa_backend("FLASH_ATTENTION"), 1),
    "sdpa_efficient": lambda m: (sdpa_backend("EFFICIENT_ATTENTION"), 1),
    "sdpa_cudnn": lambda m: (sdpa_backend("CUDNN_ATTENTION"), 1),
    # FlashAttention-2's blocks for head_dim 64: 128 keys in one split, 256 in several
    "fa2_blocks": lambda m: (use_attention(m, "fa2_blocks", blocked_attention(128, 256, True,
                                                                              True)), 1),
    "fa2_blocks_nosplit": lambda m: (use_attention(m, "fa2_nosplit", blocked_attention(
        128, 256, True, False)), 1),
    # the running max over 64-key tiles in key order, as this engine's prefill kernel keeps it
    "forward64": lambda m: (use_attention(m, "forward64", blocked_attention(64, 64, False,
                                                                            False)), 1),
    # no rounding inside the attention / the products: how near a rounding-free engine comes
    "exact_attention": lambda m: (use_attention(m, "exact", exact_attention), 1),
    # p rounded to bf16 against the row's own maximum (one block of keys: every sequence here is
    # under 2,048 entries), the rest exact
    "exact_p_bf16": lambda m: (use_attention(m, "one_block", blocked_attention(2048, 2048, False,
                                                                               False)), 1),
    "exact_linear": lambda m: (exact_linear(), 1),
    # both: HF's rounding points between ops, nothing rounded inside them
    "exact_all": lambda m: (with_exact_linear(m, "exact", exact_attention), 1),
    # eager's rounding points (scores and p in bf16) with sums in float64: against an eager
    # reference (--reference of hf_bf16_greedy.py --attn-implementation eager), how near an
    # engine that keeps eager's rounding points but not cuBLAS's order of sums comes
    "eager_exact": lambda m: (use_attention(m, "eager_exact", eager_exact_attention), 1),
    "eager_exact_all": lambda m: (with_exact_linear(m, "eager_exact", eager_exact_attention), 1),
}


def count(picks, ref):
    agree = decisive = decisive_agree = total = 0
    for c in ref:
        for p, t, g in zip(picks[c["name"]], c["generated_ids"], c["hf_gap_ulps"]):
            total += 1
            agree += p == t
            if g > 1.0:
                decisive += 1
                decisive_agree += p == t
    return agree, total, decisive_agree, decisive


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--reference", help="another run's --out: its tokens are the reference")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    model = for_greedy(AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(a.gguf)), gguf_file=os.path.basename(a.gguf),
        dtype=torch.bfloat16), a.device)
    prompts = real_prompts()
    own = [{"name": n, "prompt_ids": ids, **greedy(model, ids, a.new_tokens, a.device)}
           for n, ids in prompts]
    ref = own
    rows = []
    start = time.time()

    def report(name, counts):
        agree, total, da, d = counts
        rows.append([name, list(counts)])
        print(f"  {name:32s} {agree:5d} / {total} = {100.0 * agree / total:6.2f} %   "
              f"decisive {da} / {d} = {100.0 * da / max(d, 1):6.2f} %   "
              f"({time.time() - start:.0f} s)", flush=True)

    if a.reference:
        with open(a.reference) as f:
            ref = [c for c in json.load(f)["cases"] if c.get("set", "real") == "real"]
    print(f"HF bf16 against the reference ({a.reference or 'this process generate'}), "
          f"{len(ref)} prompts x {a.new_tokens} tokens, {torch.cuda.get_device_name()}:",
          flush=True)
    if a.reference:
        report("generate, this process", count({c["name"]: c["generated_ids"] for c in own}, ref))
    for name in a.configs.split(","):
        model.set_attn_implementation("sdpa")
        torch.backends.cuda.preferred_blas_library("cublas")
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
        try:
            context, batch = CONFIGS[name](model)
            with context:
                picks = {c["name"]: teacher_forced(model, c["prompt_ids"], c["generated_ids"],
                                                   batch, a.device) for c in ref}
        except Exception as e:  # noqa: BLE001  (a configuration this build cannot run)
            print(f"{name}: not run ({type(e).__name__}: {e})", flush=True)
            continue
        report(f"teacher-forced, {name}", count(picks, ref))
    with open(a.out, "w") as f:
        json.dump({"cases": own, "rows": rows}, f)


if __name__ == "__main__":
    main()
