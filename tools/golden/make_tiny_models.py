"""Tiny random Llama checkpoints and their HF reference outputs, for the model parity tests.

What it writes, for every case in CASES, under tests/data/models/<name>/:
  config.json, generation_config.json      as written by transformers' save_pretrained
  model.safetensors                        fp32 weights (bf16 for `bf16_weights`), or for
  model-0000i-of-0000n.safetensors +       `sharded` several shards and their index
    model.safetensors.index.json
  reference.json                           what HF computes from the saved checkpoint:
    {
      "model": name, "description": str,
      "transformers_version": str, "torch_version": str,
      "compute_dtype": "float32", "attn_implementation": "eager",
      "rope_config_key": "rope_parameters" | "rope_scaling",   # the form config.json uses
      "eos_token_ids": [int, ...],          # generation_config's eos ids
      "eos_stops_generation": false,        # greedy_ids ignore EOS: always 32 tokens
      "seed": int,                          # torch seed that gave clear greedy choices
      "min_top1_top2_gap": float,           # smallest top-1 minus top-2 logit, all cases
      "cases": [
        {"name": "short" | "long",
         "prompt_ids": [int, ...],          # 16 and 40 ids, no BOS added
         "last_logits": [float, ...],       # vocab_size values, last prompt position
         "greedy_ids": [int, ...],          # 32 generated ids (prompt excluded)
         "min_top1_top2_gap": float},
        ...
      ],
      # only for `multi_eos`: generation that stops at the first id of eos_token_ids,
      # the EOS id included as its last element (HF generate's behaviour)
      "eos_stop": {"prompt_ids": [...], "max_new_tokens": 32, "generated_ids": [...]}
    }

How the references are made: a model is built from its LlamaConfig with torch.manual_seed(seed),
norm weights are drawn around 1 (so a loader that ignores them fails), the checkpoint is saved
and then loaded back with from_pretrained(dtype=float32, attn_implementation="eager"); every
reference comes from that reloaded model. Greedy tokens come from model.generate(do_sample=False)
with EOS disabled and are checked against a plain argmax loop over full forwards. When any greedy
choice (or the prompt's last-position argmax) is closer than MIN_GAP to its runner-up, the seed is
bumped and the model is rebuilt, so fp32 rounding differences cannot flip a token.

Rerun (needs torch + transformers; CI only reads the committed files):
  /opt/golden/bin/python tools/golden/make_tiny_models.py [--out tests/data/models] [--only NAME]
"""

import argparse
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from golden_io import f32_list, write_json
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

REPO = Path(__file__).resolve().parents[2]
MIN_GAP = 1e-2
NEW_TOKENS = 32
SHORT_PROMPT_LEN = 16
LONG_PROMPT_LEN = 40


@dataclass
class Case:
    name: str
    description: str
    config: dict
    eos_token_ids: list = field(default_factory=lambda: [2])
    save_dtype: torch.dtype = torch.float32
    max_shard_size: str | None = None
    legacy_rope_keys: bool = False


def base(**overrides):
    cfg = dict(
        vocab_size=384,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        initializer_range=0.15,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    cfg.update(overrides)
    return cfg


CASES = [
    Case("mha", "multi-head attention, 4 heads of 16, untied head", base()),
    Case(
        "gqa",
        "grouped-query attention, 6 heads / 2 kv heads of 12, 3 layers, eps 1e-6",
        base(hidden_size=72, intermediate_size=160, num_hidden_layers=3,
             num_attention_heads=6, num_key_value_heads=2, rms_norm_eps=1e-6),
    ),
    Case(
        "tied",
        "tie_word_embeddings true: no lm_head.weight in the file",
        base(vocab_size=448, hidden_size=48, intermediate_size=128,
             num_attention_heads=3, num_key_value_heads=1, tie_word_embeddings=True),
    ),
    Case(
        "untied",
        "separate lm_head.weight, GQA 4/2",
        base(vocab_size=320, hidden_size=48, intermediate_size=144,
             num_attention_heads=4, num_key_value_heads=2, head_dim=12),
    ),
    Case(
        "llama3_rope",
        "llama3 rope scaling (factor 8, low 1, high 4, original max 64, theta 500000)",
        base(num_attention_heads=4, num_key_value_heads=2,
             rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
                              "rope_theta": 500000.0}),
    ),
    Case(
        "linear_rope",
        "linear rope scaling factor 2, written in the legacy form (rope_scaling + rope_theta)",
        base(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
        legacy_rope_keys=True,
    ),
    Case(
        "odd_hidden",
        "hidden 60 = 5 heads of 12, intermediate 100, vocab 397: sizes that are not SIMD multiples",
        base(vocab_size=397, hidden_size=60, intermediate_size=100, num_hidden_layers=3,
             num_attention_heads=5, num_key_value_heads=5),
    ),
    Case(
        "sharded",
        "untied GQA model saved in several safetensors shards with an index",
        base(num_attention_heads=4, num_key_value_heads=2),
        max_shard_size="150KB",
    ),
    Case(
        "multi_eos",
        "generation_config lists several eos ids",
        base(hidden_size=48, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2),
        eos_token_ids=[2],  # the other two are chosen from the greedy output, see eos_ids_for
    ),
    Case(
        "bf16_weights",
        "weights stored as bf16 (config dtype bfloat16), reference computed in fp32",
        base(num_attention_heads=4, num_key_value_heads=2),
        save_dtype=torch.bfloat16,
    ),
]


def top_gap(logits: torch.Tensor) -> float:
    top = torch.topk(logits.float(), 2).values
    return float(top[0] - top[1])


def prompts(vocab_size: int) -> dict:
    gen = torch.Generator().manual_seed(1234)
    # Ids 0..2 are bos/eos-like; prompts avoid them so they read like ordinary text.
    short = torch.randint(3, vocab_size, (SHORT_PROMPT_LEN,), generator=gen).tolist()
    long = torch.randint(3, vocab_size, (LONG_PROMPT_LEN,), generator=gen).tolist()
    return {"short": short, "long": long}


def build(case: Case, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**case.config)).float().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
    return model


def greedy_loop(model, prompt_ids: list) -> tuple[list, list]:
    """Argmax decoding by full re-forward each step: the cache-free reference for generate."""
    ids = torch.tensor([prompt_ids])
    out, gaps = [], []
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            logits = model(ids).logits[0, -1]
            gaps.append(top_gap(logits))
            nxt = int(torch.argmax(logits))
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out, gaps


def generate(model, prompt_ids: list, eos) -> list:
    """HF greedy generate; eos=None disables EOS (a None passed to generate would fall back to
    the model's generation_config, so the model's own setting is swapped for the call)."""
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = eos
    try:
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt_ids]), do_sample=False,
                                 max_new_tokens=NEW_TOKENS, pad_token_id=0)
    finally:
        model.generation_config.eos_token_id = saved
    return out[0, len(prompt_ids):].tolist()


def eos_ids_for(case: Case, greedy: list) -> list:
    """multi_eos: pick two extra eos ids so that the short prompt's generation meets one mid-way."""
    if case.name != "multi_eos":
        return case.eos_token_ids
    stop = next(t for t in greedy[8:] if t not in greedy[:8] and t != 2)
    spare = next(t for t in range(300, 384) if t not in greedy and t != stop)
    return [2, spare, stop]


def write_checkpoint(model, case: Case, eos: list, out_dir: Path):
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=eos if len(eos) > 1 else eos[0])
    kwargs = {"safe_serialization": True}
    if case.max_shard_size:
        kwargs["max_shard_size"] = case.max_shard_size
    model.to(case.save_dtype).save_pretrained(out_dir, **kwargs)
    if case.legacy_rope_keys:
        cfg_path = out_dir / "config.json"
        cfg = json.loads(cfg_path.read_text())
        rope = dict(cfg.pop("rope_parameters"))
        cfg["rope_theta"] = rope.pop("rope_theta")
        cfg["rope_scaling"] = rope
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def reference_for(model, case: Case) -> tuple[list, float]:
    cases, min_gap = [], float("inf")
    for name, ids in prompts(case.config["vocab_size"]).items():
        with torch.no_grad():
            last = model(torch.tensor([ids])).logits[0, -1]
        greedy = generate(model, ids, eos=None)
        loop, gaps = greedy_loop(model, ids)
        if greedy != loop:
            raise RuntimeError(f"{case.name}/{name}: generate and argmax loop disagree")
        gap = min([top_gap(last)] + gaps)
        min_gap = min(min_gap, gap)
        cases.append({"name": name, "prompt_ids": ids, "last_logits": f32_list(last.numpy()),
                      "greedy_ids": greedy, "min_top1_top2_gap": gap})
    return cases, min_gap


def make(case: Case, root: Path):
    out_dir = root / case.name
    for seed in range(100):
        model = build(case, seed)
        cases, min_gap = reference_for(model, case)
        if min_gap < MIN_GAP:
            continue
        eos = eos_ids_for(case, cases[0]["greedy_ids"])
        write_checkpoint(model, case, eos, out_dir)
        reloaded = LlamaForCausalLM.from_pretrained(out_dir, dtype=torch.float32,
                                                    attn_implementation="eager").eval()
        cases, min_gap = reference_for(reloaded, case)
        if min_gap >= MIN_GAP:
            break
    else:
        raise RuntimeError(f"{case.name}: no seed gave clear greedy choices")

    ref = {
        "model": case.name,
        "description": case.description,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "compute_dtype": "float32",
        "attn_implementation": "eager",
        "rope_config_key": "rope_scaling" if case.legacy_rope_keys else "rope_parameters",
        "eos_token_ids": eos,
        "eos_stops_generation": False,
        "seed": seed,
        "min_top1_top2_gap": min_gap,
        "cases": cases,
    }
    if case.name == "multi_eos":
        ids = cases[0]["prompt_ids"]
        stopped = generate(reloaded, ids, eos=eos)
        if len(stopped) >= NEW_TOKENS or stopped[-1] not in eos:
            raise RuntimeError("multi_eos: generation did not stop at an eos id")
        ref["eos_stop"] = {"prompt_ids": ids, "max_new_tokens": NEW_TOKENS,
                           "generated_ids": stopped}
    write_json(out_dir / "reference.json", ref)
    size = sum(p.stat().st_size for p in out_dir.iterdir())
    print(f"{case.name}: seed {seed}, min gap {min_gap:.4f}, {size / 1024:.0f} KiB, "
          f"files {sorted(p.name for p in out_dir.iterdir())}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "tests/data/models")
    parser.add_argument("--only", action="append", help="case name (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    for case in CASES:
        if not args.only or case.name in args.only:
            make(case, args.out)


if __name__ == "__main__":
    main()
