"""HF transformers bf16 greedy references for the CUDA backend's bf16 agreement test, made on the
GPU machine in the same call (scripts/device.sh). Two sets of cases, each a prompt and HF's greedy
continuation (EOS does not stop it: every position counts):
  "tiny": each tiny model of tests/data/models, loaded from its own safetensors; its known prompts
          and seeded random ones. Random weights: top-1/top-2 logit gaps of ~0.01, near-ties.
  "real": with --gguf, the default model (SmolLM2-135M-Instruct Q4_1 GGUF, dequantised by HF
          through the gguf package) on real text: the token ids already committed under
          tests/data (summary prompt and prefixes, batch and chat prompts, beam prompts, some
          tokenizer golden texts), so no tokenizer runs here.
The C++ test (tests/gpu/test_cuda_hf_bf16.cpp) feeds the same tokens and counts the positions
where its own argmax equals HF's next token, per set, over all positions and over those where HF's
bf16 logits decide (top-1 above top-2 by more than one bf16 spacing, hf_gap_ulps > 1)."""
import argparse
import contextlib
import json
import os

import torch
from transformers import AutoModelForCausalLM

DATA = "tests/data"
GOLDEN_TEXTS = [  # from tests/data/tokenizer/golden_smollm2.json
    "The quick brown fox jumps over the lazy dog.",
    "It's a test: don't, won't, can't, I'm, you're, we've, they'll, he'd.",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) { sum += x[i] * y[i]; }",
    "Visit http://foo.bar/baz_qux-1.html or mailto:someone@example.org",
    "Mixed: English, русский, 中文, العربية, हिन्दी.",
    "price: $100.00 (€85,50) ¥1000 £20",
]


def load_json(rel):
    with open(os.path.join(DATA, rel)) as f:
        return json.load(f)


def real_prompts():
    """(name, ids) of the real-text prompts, all from committed SmolLM2 token ids."""
    summary = load_json("smollm2/summary_greedy.json")["prompt_ids"]  # 994 tokens
    out = [(f"summary_{n}", summary[:n]) for n in (64, 256, 512)] + [("summary", summary)]
    out += [(c["name"], c["prompt_ids"]) for c in load_json("smollm2/extra_greedy.json")["cases"]]
    chats = load_json("tokenizer/chat_smollm2.json")["cases"]
    out += [(f"chat_{c['name']}", c["ids"]) for c in chats if c["add_generation_prompt"]]
    beams = {c["prompt_text"]: c["prompt"]
             for c in load_json("sampling/beam_smollm2.json")["cases"]}
    out += [(f"beam_{t}", ids) for t, ids in sorted(beams.items())]
    golden = {c["text"]: c["ids"] for c in load_json("tokenizer/golden_smollm2.json")["cases"]}
    out += [(f"golden_{i}", golden[t]) for i, t in enumerate(GOLDEN_TEXTS)]
    return out


def greedy(model, ids, new_tokens, device):
    """HF's greedy tokens and, per position, its bf16 logits' top-1 minus top-2 in units of the
    top-1's bf16 spacing (0: a tie HF broke by the lowest index; <= 1: no precision to decide)."""
    with torch.no_grad():
        out = model.generate(torch.tensor([ids], device=device), max_new_tokens=new_tokens,
                             do_sample=False, output_logits=True, return_dict_in_generate=True)
    top = torch.stack([row[0] for row in out.logits]).float().topk(2, dim=-1).values.cpu()
    spacing = torch.exp2(torch.floor(torch.log2(top[:, 0].abs().clamp_min(2.0**-126))) - 7)
    gen = out.sequences[0, len(ids):]
    # HF against itself: one teacher-forced forward over prompt + continuation (other kernels,
    # other shapes than generate's step-by-step decode) picks the same next tokens how often?
    with torch.no_grad():
        forward = model(out.sequences[:, :-1]).logits[0, len(ids) - 1:].argmax(-1)
    return {"generated_ids": gen.tolist(),
            "hf_gap_ulps": ((top[:, 0] - top[:, 1]) / spacing).tolist(),
            "hf_forward_agrees": (forward == gen).tolist()}


def last_logits(model, ids, device):
    with torch.no_grad():
        return model(torch.tensor([ids], device=device)).logits[0, -1].float().cpu()


def rel_error(got, want):
    return float((got - want).norm() / want.norm())


def for_greedy(model, device, attn=None):
    model = model.to(device).eval()
    if attn:
        model.set_attn_implementation(attn)
    model.generation_config.eos_token_id = None  # every position counts, EOS included
    model.generation_config.pad_token_id = 0
    return model


def tiny_cases(models_dir, new_tokens, device, attn):
    cases = []
    for name in sorted(os.listdir(models_dir)):
        ref_path = os.path.join(models_dir, name, "reference.json")
        if not os.path.exists(ref_path):
            continue
        model = for_greedy(AutoModelForCausalLM.from_pretrained(
            os.path.join(models_dir, name), dtype=torch.bfloat16), device, attn)
        with open(ref_path) as f:
            ref = json.load(f)
        prompts = [c["prompt_ids"] for c in ref["cases"]]
        for c in ref["cases"]:  # HF's own bf16 distance from its fp32 logits, for scale
            want = torch.tensor(c["last_logits"])
            rel = rel_error(last_logits(model, c["prompt_ids"], device), want)
            print(f"HF bf16 vs HF fp32 last logits, {name}/{c['name']}: rel. error {rel:.4f}")
        g = torch.Generator().manual_seed(7)
        for n in (5, 23, 61):  # plus seeded random prompts of several lengths
            prompts.append(torch.randint(3, model.config.vocab_size, (n,), generator=g).tolist())
        for i, p in enumerate(prompts):
            cases.append({"set": "tiny", "model": name, "name": f"{name}_{i}", "prompt_ids": p,
                          **greedy(model, p, new_tokens, device)})
    return cases


def real_cases(gguf, new_tokens, device, attn):
    model = for_greedy(AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(gguf)), gguf_file=os.path.basename(gguf),
        dtype=torch.bfloat16), device, attn)
    summary = load_json("smollm2/summary_greedy.json")["prompt_ids"]
    want = torch.tensor(load_json("smollm2/summary_last_logits.json")["logits"])
    rel = rel_error(last_logits(model, summary, device), want)
    print(f"HF bf16 vs HF fp32 last logits, smollm2/summary: rel. error {rel:.4f}")
    return [{"set": "real", "model": "smollm2", "name": name, "prompt_ids": ids,
             **greedy(model, ids, new_tokens, device)} for name, ids in real_prompts()]


def sdpa_backend(name):
    """A context in which torch's scaled_dot_product_attention runs only on SDPBackend.<name>."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel(getattr(SDPBackend, name))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=f"{DATA}/models")
    ap.add_argument("--gguf", help="the default model's GGUF: adds the real set")
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", required=True)
    ap.add_argument("--sdpa-backend", help="run HF's sdpa attention on this torch SDPBackend only "
                    "(e.g. FLASH_ATTENTION; default: torch's choice, cuDNN's on an H200)")
    ap.add_argument("--attn-implementation", help="HF's attention (e.g. eager: scores and "
                    "probabilities rounded to bf16 between three ops; default: sdpa)")
    a = ap.parse_args()
    with sdpa_backend(a.sdpa_backend) if a.sdpa_backend else contextlib.nullcontext():
        cases = tiny_cases(a.models, a.new_tokens, a.device, a.attn_implementation)
        if a.gguf:
            cases += real_cases(a.gguf, a.new_tokens, a.device, a.attn_implementation)
    with open(a.out, "w") as f:
        json.dump({"dtype": "bfloat16", "attn_implementation": a.attn_implementation or "sdpa",
                   "gguf": os.path.abspath(a.gguf) if a.gguf else None,
                   "cases": cases}, f)
    for s in ("tiny", "real"):
        mine = [c for c in cases if c["set"] == s]
        same = [x for c in mine for x in c["hf_forward_agrees"]]
        decisive = [x for c in mine for x, g in zip(c["hf_forward_agrees"], c["hf_gap_ulps"])
                    if g > 1.0]
        print(f"HF bf16 greedy: {len(mine)} {s} continuations; HF's one-pass forward agrees "
              f"with its own generate on {sum(same)} / {len(same)} positions, decisive "
              f"{sum(decisive)} / {len(decisive)}")
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
