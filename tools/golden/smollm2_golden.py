"""HF reference generations of the default model (SmolLM2-135M-Instruct, Q4_1 GGUF).

HF transformers loads the GGUF itself (gguf_file=..., dequantised to fp32) with the tokenizer from
the same file, and decodes greedily on CPU in fp32 with eager attention.

What it writes:
  tests/data/prompts/summary_prompt.txt, batch_prompts.txt   copies of ../shared/data/prompts
  tests/data/smollm2/summary_greedy.json                     the parity case:
    {
      "model_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
      "transformers_version", "torch_version", "compute_dtype": "float32",
      "prompt_file": "prompts/summary_prompt.txt",    # relative to tests/data, used byte-exact
      "add_special_tokens": true,                     # the tokenizer's default (adds no BOS here)
      "prompt_ids": [int, ...],
      "max_new_tokens": 128, "eos_token_id": int,
      "stopped_at_eos": bool,                         # HF generate stops at EOS (not ignored)
      "generated_ids": [int, ...],                    # generated only, EOS included if hit
      "text": str,                                    # decode(generated, skip_special_tokens=True)
      "text_with_special": str,                       # ... skip_special_tokens=False
      "prompt_last_logits": {"max": float, "argmax": int,
                             "top_ids": [20 ints], "top_values": [20 floats]},
      "step_top1_top2_gaps": [float per generated token],
      "min_top1_top2_gap": float
    }
  tests/data/smollm2/summary_last_logits.json   {"vocab_size": int, "logits": [float, ...]}:
                                                the full last-position logits of the prompt
  tests/data/smollm2/extra_greedy.json          other prompts, same per-case fields:
    {"transformers_version", "torch_version", "eos_token_id",
     "cases": [{"name", "prompt_text", "chat": bool, "chat_text" (templated text, chat only),
                "prompt_ids", "max_new_tokens", "stopped_at_eos", "generated_ids",
                "text", "text_with_special", "min_top1_top2_gap"}, ...]}
    cases: batch_0 and batch_1 (the lines of batch_prompts.txt, each alone, 32 tokens) and
    chat_capital ("What is the capital of France?" through the GGUF chat template with
    add_generation_prompt=True, 64 tokens). Each decodes alone, so no padding is involved.

Rerun (about a minute on 2 cores; needs the GGUF in ~/.cache/nanoinfer):
  /opt/golden/bin/python tools/golden/smollm2_golden.py [--model-dir DIR]
"""

import argparse
import shutil
from pathlib import Path

import torch
import transformers
from golden_io import f32_list, write_json
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests/data"
SHARED_PROMPTS = REPO.parent / "shared/data/prompts"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_QUESTION = "What is the capital of France?"


def load(model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=GGUF_NAME,
                                                 dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    return tokenizer, model


def greedy(model, tokenizer, prompt_ids: list, max_new_tokens: int) -> dict:
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), do_sample=False,
                             max_new_tokens=max_new_tokens, output_scores=True,
                             return_dict_in_generate=True,
                             pad_token_id=tokenizer.eos_token_id)
    generated = out.sequences[0, len(prompt_ids):].tolist()
    gaps = []
    for scores in out.scores:
        top = torch.topk(scores[0].float(), 2).values
        gaps.append(float(top[0] - top[1]))
    return {
        "prompt_ids": prompt_ids,
        "max_new_tokens": max_new_tokens,
        "stopped_at_eos": bool(generated) and generated[-1] == tokenizer.eos_token_id,
        "generated_ids": generated,
        "text": tokenizer.decode(generated, skip_special_tokens=True),
        "text_with_special": tokenizer.decode(generated, skip_special_tokens=False),
        "step_top1_top2_gaps": gaps,
        "min_top1_top2_gap": min(gaps),
    }


def summary_case(model, tokenizer) -> tuple[dict, list]:
    text = (DATA / "prompts/summary_prompt.txt").read_text(encoding="utf-8")
    prompt_ids = tokenizer(text)["input_ids"]
    with torch.no_grad():
        last = model(torch.tensor([prompt_ids])).logits[0, -1].float()
    top = torch.topk(last, 20)
    run = greedy(model, tokenizer, prompt_ids, 128)
    result = {
        "model_file": GGUF_NAME,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "compute_dtype": "float32",
        "prompt_file": "prompts/summary_prompt.txt",
        "add_special_tokens": True,
        "eos_token_id": tokenizer.eos_token_id,
        "prompt_last_logits": {"max": float(top.values[0]), "argmax": int(top.indices[0]),
                               "top_ids": top.indices.tolist(),
                               "top_values": f32_list(top.values.numpy())},
    }
    result.update(run)
    return result, f32_list(last.numpy())


def extra_cases(model, tokenizer) -> list:
    cases = []
    lines = (DATA / "prompts/batch_prompts.txt").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        run = greedy(model, tokenizer, tokenizer(line)["input_ids"], 32)
        del run["step_top1_top2_gaps"]
        cases.append({"name": f"batch_{i}", "prompt_text": line, "chat": False, **run})
    messages = [{"role": "user", "content": CHAT_QUESTION}]
    chat_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                        return_dict=True)["input_ids"]
    if ids != tokenizer(chat_text, add_special_tokens=False)["input_ids"]:
        raise RuntimeError("chat template: tokenized ids differ from tokenizing the text")
    run = greedy(model, tokenizer, ids, 64)
    del run["step_top1_top2_gaps"]
    cases.append({"name": "chat_capital", "prompt_text": CHAT_QUESTION, "chat": True,
                  "chat_text": chat_text, **run})
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path.home() / ".cache/nanoinfer")
    args = parser.parse_args()
    torch.set_num_threads(2)

    for name in ("summary_prompt.txt", "batch_prompts.txt"):
        (DATA / "prompts").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED_PROMPTS / name, DATA / "prompts" / name)

    tokenizer, model = load(args.model_dir)
    summary, logits = summary_case(model, tokenizer)
    write_json(DATA / "smollm2/summary_greedy.json", summary)
    write_json(DATA / "smollm2/summary_last_logits.json",
               {"vocab_size": len(logits), "logits": logits})
    print(f"summary: {len(summary['prompt_ids'])} prompt tokens, "
          f"{len(summary['generated_ids'])} generated, eos {summary['stopped_at_eos']}, "
          f"min gap {summary['min_top1_top2_gap']:.4f}")
    print(repr(summary["text"]))

    extra = {"transformers_version": transformers.__version__,
             "torch_version": torch.__version__,
             "eos_token_id": tokenizer.eos_token_id,
             "cases": extra_cases(model, tokenizer)}
    write_json(DATA / "smollm2/extra_greedy.json", extra)
    for case in extra["cases"]:
        print(f"{case['name']}: {len(case['generated_ids'])} generated, "
              f"eos {case['stopped_at_eos']}, min gap {case['min_top1_top2_gap']:.4f}: "
              f"{case['text']!r}")


if __name__ == "__main__":
    main()
