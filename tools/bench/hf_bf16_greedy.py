"""HF transformers bf16 greedy references for the CUDA backend's bf16 agreement test, made on the
GPU machine in the same call (scripts/device.sh): each tiny model of tests/data/models is loaded
from its own safetensors in bfloat16 on cuda and continues a fixed prompt set greedily. The C++
test (tests/gpu/test_cuda_hf_bf16.cpp) feeds the same tokens and counts the positions where its
own argmax equals HF's next token."""
import argparse
import json
import os

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="tests/data/models")
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cases = []
    for name in sorted(os.listdir(a.models)):
        ref_path = os.path.join(a.models, name, "reference.json")
        if not os.path.exists(ref_path):
            continue
        model = AutoModelForCausalLM.from_pretrained(
            os.path.join(a.models, name), dtype=torch.bfloat16).cuda().eval()
        model.generation_config.eos_token_id = None  # every position counts, EOS included
        model.generation_config.pad_token_id = 0
        with open(ref_path) as f:
            ref = json.load(f)
        prompts = [c["prompt_ids"] for c in ref["cases"]]
        for c in ref["cases"]:  # HF's own bf16 distance from its fp32 logits, for scale
            with torch.no_grad():
                last = model(torch.tensor([c["prompt_ids"]], device="cuda")).logits[0, -1].float().cpu()
            want = torch.tensor(c["last_logits"])
            rel = float((last - want).norm() / want.norm())
            print(f"HF bf16 vs HF fp32 last logits, {name}/{c['name']}: rel. error {rel:.4f}")
        g = torch.Generator().manual_seed(7)
        for n in (5, 23, 61):  # plus seeded random prompts of several lengths
            prompts.append(torch.randint(3, model.config.vocab_size, (n,), generator=g).tolist())
        for p in prompts:
            ids = torch.tensor([p], device="cuda")
            with torch.no_grad():
                gen = model.generate(ids, max_new_tokens=a.new_tokens, do_sample=False)
            cases.append({"model": name, "prompt_ids": p, "generated_ids": gen[0, len(p):].tolist()})
    with open(a.out, "w") as f:
        json.dump({"dtype": "bfloat16", "cases": cases}, f)
    print(f"HF bf16 greedy: {len(cases)} continuations written to {a.out}")


if __name__ == "__main__":
    main()
