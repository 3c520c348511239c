"""Beam search on the default model: HF generate(num_beams=k, ...) on SmolLM2-135M-Instruct loaded
from its Q4_1 GGUF (fp32, CPU), for the C++ engine test tests/parity/test_beam_engine.cpp.

Writes tests/data/sampling/beam_smollm2.json: {"cases": [{"prompt_text", "prompt", "num_beams",
"length_penalty", "early_stopping", "num_return_sequences", "max_new_tokens", "eos",
"sequences": [{"tokens", "score"}]}]}. Besides the model's own EOS, one case per prompt uses an
EOS id that a lower beam produces mid-way, so one beam finishes while the others continue.

Usage: /opt/golden/bin/python tools/golden/beam_smollm2_golden.py [--model-dir ~/.cache/nanoinfer]
"""

import argparse
import json
import pathlib

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "data" / "sampling" / "beam_smollm2.json"
NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = ["The capital of France is", "Once upon a time"]
CASES = [  # num_beams, length_penalty, early_stopping, num_return_sequences
    (2, 1.0, False, 2),
    (4, 1.0, False, 4),
    (4, 2.0, True, 2),
    (4, -1.0, "never", 3),
]
MAX_NEW = 10


def run(model, prompt, k, lp, es, nret, eos):
    res = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False,
        num_beams=k,
        length_penalty=lp,
        early_stopping=es,
        num_return_sequences=nret,
        max_new_tokens=MAX_NEW,
        eos_token_id=eos,
        pad_token_id=eos[0],
        return_dict_in_generate=True,
        output_scores=True,
    )
    seqs = []
    for i in range(nret):
        n = int((res.beam_indices[i] >= 0).sum())
        seqs.append({"tokens": res.sequences[i, len(prompt) : len(prompt) + n].tolist(),
                     "score": float(res.sequences_scores[i])})
    return seqs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=str(pathlib.Path.home() / ".cache" / "nanoinfer"))
    args = ap.parse_args()
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model_dir, gguf_file=NAME)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, gguf_file=NAME, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    cases = []
    for text in PROMPTS:
        prompt = tok(text)["input_ids"]
        # An id the second beam emits at step 4: as EOS it ends some beams but not others.
        mid = run(model, prompt, 4, 1.0, False, 4, [model.config.eos_token_id])[1]["tokens"]
        mid_eos = mid[min(4, len(mid) - 1)]
        for eos in ([model.config.eos_token_id], [mid_eos]):
            for k, lp, es, nret in CASES:
                seqs = run(model, prompt, k, lp, es, nret, eos)
                cases.append({"prompt_text": text, "prompt": prompt, "num_beams": k, "length_penalty": lp,
                              "early_stopping": es if isinstance(es, str) else bool(es),
                              "num_return_sequences": nret, "max_new_tokens": MAX_NEW, "eos": eos,
                              "sequences": seqs})
                print(text, eos, k, lp, es, [(s["tokens"], round(s["score"], 4)) for s in seqs])
    OUT.write_text(json.dumps({"model_file": NAME, "cases": cases}, indent=1) + "\n")


if __name__ == "__main__":
    main()
