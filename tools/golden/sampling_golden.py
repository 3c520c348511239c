"""Reference vectors for src/sampling, produced with HF transformers (5.24) on the CPU.

Writes tests/data/sampling/processors.json, beam_search.json and beam_tiny_models.json.

processors.json: fixed logits [rows, vocab] with deliberate ties at the top-k / top-p boundaries,
and for each case the per-row parameters and what HF's LogitsProcessorList (in generate()'s order:
repetition penalty, temperature, top-k, top-p, min-p) leaves: kept token ids and their values.
HF's top-p sorts with torch.sort(stable=False), whose order among equal logits is unspecified on
the CPU; each row is therefore also recorded with torch.sort forced stable ("kept_stable"), which
is the rule we implement. Presence/frequency penalties are not in HF; they follow the OpenAI
formula and are recorded from a numpy float32 computation.

beam_search.json: HF generate(num_beams=k, ...) on a throwaway tiny Llama whose next-token
scores are replaced by a custom LogitsProcessor with a deterministic "fake model": logits as an
integer hash of (last token, previous token, length, candidate), exactly representable in float32,
so the C++ test can compute the same logits and drive our BeamSearch step by step.

beam_tiny_models.json: HF generate(num_beams=k, ...) on the tiny random Llama checkpoints of
tests/data/models (tools/golden/make_tiny_models.py), with an EOS id chosen from the tokens the
beams actually produce, so that one beam finishes while the others continue.

Usage: /opt/golden/bin/python tools/golden/sampling_golden.py
"""

import json
import pathlib

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "data" / "sampling"
VOCAB = 1000
ROWS = 6
MASK64 = (1 << 64) - 1


def make_logits():
    """Logits on a 1/32 grid (so many values tie), plus hand-made tie groups at the top."""
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(ROWS, VOCAB, generator=gen) * 2.0
    x = torch.round(x * 32.0) / 32.0
    # Row 1: five tokens share the maximum, so top-k 1..4 must keep all five.
    top = x[1].max() + 1.0
    x[1, [10, 200, 201, 555, 999]] = top
    # Row 2: a plateau of 40 equal logits just below the top two, where top-p cuts through.
    x[2, 300:340] = x[2].max() + 0.5
    x[2, [7, 8]] = x[2].max() + 2.0
    # Row 3: nearly flat, so top-p keeps many tokens and top-k ties are everywhere.
    x[3] = torch.round(x[3] * 0.125 * 4.0) / 4.0
    return x


def input_ids_for_rows():
    """Prompt+generated token ids per row for the repetition penalty (generated = last 4)."""
    gen = torch.Generator().manual_seed(99)
    ids = []
    for r in range(ROWS):
        n = 6 + 3 * r
        ids.append(torch.randint(0, VOCAB, (n,), generator=gen).tolist())
    # Make sure each row repeats a token, and row 1 penalises one of its tied maxima.
    for r in range(ROWS):
        ids[r].append(ids[r][0])
    ids[1].append(200)
    return ids


CASES = [
    # name, list of per-row param dicts (None = row leaves everything off)
    ("temperature", [{"temperature": t} for t in (0.7, 1.0, 1.5, 0.25, 2.0, 0.9)]),
    ("top_k", [{"top_k": k} for k in (1, 3, 50, 5, 1000, 37)]),
    ("top_p", [{"top_p": p} for p in (0.9, 0.3, 0.2, 0.5, 0.05, 0.97)]),
    ("min_p", [{"min_p": p} for p in (0.05, 0.5, 0.1, 0.3, 1.0, 0.01)]),
    ("repetition_penalty", [{"repetition_penalty": p} for p in (1.3, 2.0, 1.1, 0.8, 1.5, 1.2)]),
    (
        "penalties_openai",
        [
            {"presence_penalty": 0.5, "frequency_penalty": 0.25},
            {"presence_penalty": -0.5},
            {"frequency_penalty": 1.0},
            {"presence_penalty": 1.5, "frequency_penalty": -0.5},
            {},
            {"presence_penalty": 2.0, "frequency_penalty": 2.0},
        ],
    ),
    (
        "mixed_per_row",
        [
            {"temperature": 0.7, "top_k": 40, "top_p": 0.9},
            {"temperature": 1.3, "top_k": 2},
            {"repetition_penalty": 1.2, "temperature": 1.5, "top_p": 0.8, "min_p": 0.1},
            {"top_p": 0.6, "min_p": 0.05},
            {"repetition_penalty": 1.4, "temperature": 0.5, "top_k": 10, "top_p": 0.95, "min_p": 0.02},
            {},
        ],
    ),
    (
        "suppress_tokens",
        [
            {"suppress_tokens": [0, 1, 2]},
            {"suppress_tokens": [10, 200], "top_k": 2},
            {"suppress_tokens": [7], "temperature": 0.5, "top_p": 0.5},
            {},
            {"suppress_tokens": list(range(0, 1000, 3)), "min_p": 0.2},
            {"repetition_penalty": 1.3, "suppress_tokens": [5, 6]},
        ],
    ),
    (
        "all_rows_same_combo",
        [{"repetition_penalty": 1.3, "temperature": 0.8, "top_k": 100, "top_p": 0.7, "min_p": 0.05}]
        * ROWS,
    ),
]


def hf_processors(p):
    """HF generate()'s order for a sampling request (see _get_logits_processor)."""
    procs = []
    if p.get("repetition_penalty", 1.0) != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(float(p["repetition_penalty"])))
    if p.get("suppress_tokens"):
        procs.append(SuppressTokensLogitsProcessor(p["suppress_tokens"]))
    if p.get("temperature", 1.0) != 1.0:
        procs.append(TemperatureLogitsWarper(float(p["temperature"])))
    if p.get("top_k", 0) != 0:
        procs.append(TopKLogitsWarper(int(p["top_k"])))
    if p.get("top_p", 1.0) < 1.0:
        procs.append(TopPLogitsWarper(float(p["top_p"])))
    if p.get("min_p", 0.0) > 0.0:
        procs.append(MinPLogitsWarper(float(p["min_p"])))
    return LogitsProcessorList(procs)


def openai_penalties(row, generated, p):
    """logit -= presence * [count > 0] + frequency * count, in float32."""
    out = row.numpy().astype(np.float32).copy()
    counts = np.bincount(np.array(generated, dtype=np.int64), minlength=VOCAB)
    pres = np.float32(p.get("presence_penalty", 0.0))
    freq = np.float32(p.get("frequency_penalty", 0.0))
    hit = counts > 0
    out[hit] = out[hit] - (pres + freq * counts[hit].astype(np.float32))
    return torch.from_numpy(out)


def run_row(row, ids, p, stable):
    original_sort = torch.sort
    if stable:
        torch.sort = lambda t, descending=False: original_sort(t, descending=descending, stable=True)
    try:
        scores = row.clone()[None, :]
        if "presence_penalty" in p or "frequency_penalty" in p:
            scores = openai_penalties(scores[0], ids[-4:], p)[None, :]
        scores = hf_processors(p)(torch.tensor([ids]), scores)
    finally:
        torch.sort = original_sort
    return scores[0]


def check_top_p_margin(row, p, ids):
    """A top-p threshold within float noise of a cumulative sum would make the test flaky."""
    if p.get("top_p", 1.0) >= 1.0:
        return
    before = dict(p)
    before.pop("top_p")
    before.pop("min_p", None)
    scores = run_row(row, ids, before, stable=True).double()
    cum = torch.sort(scores).values.softmax(-1).cumsum(-1)
    margin = (cum - (1.0 - p["top_p"])).abs().min().item()
    assert margin > 1e-5, f"top_p {p['top_p']} is {margin} from a cumulative sum"


def processor_cases(logits, ids):
    out = []
    for name, rows in CASES:
        case = {"name": name, "rows": []}
        for r, p in enumerate(rows):
            check_top_p_margin(logits[r], p, ids[r])
            res = run_row(logits[r], ids[r], p, stable=False)
            res_stable = run_row(logits[r], ids[r], p, stable=True)
            kept = torch.nonzero(torch.isfinite(res)).flatten().tolist()
            kept_stable = torch.nonzero(torch.isfinite(res_stable)).flatten().tolist()
            assert len(kept) == len(kept_stable)
            case["rows"].append(
                {
                    "params": p,
                    "kept": kept,
                    "kept_stable": kept_stable,
                    "values": [float(res_stable[i]) for i in kept_stable],
                }
            )
        out.append(case)
    return out


# ---- beam search -------------------------------------------------------------------------------

BEAM_VOCAB = 24


def mix64(x):
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & MASK64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & MASK64
    x ^= x >> 33
    return x


def fake_logits(seq, salt):
    """Deterministic next-token logits; values k/4096 - 8 are exact in float32."""
    last = seq[-1]
    prev = seq[-2] if len(seq) > 1 else 0
    base = ((last + 1) * 0x9E3779B97F4A7C15) ^ ((prev + 1) * 0xC2B2AE3D27D4EB4F)
    base ^= (len(seq) * 0x165667B19E3779F9) ^ (salt * 0x27D4EB2F165667C5)
    vals = [(mix64((base + v * 0x9E3779B97F4A7C15) & MASK64) >> 48) / 4096.0 - 8.0 for v in range(BEAM_VOCAB)]
    return torch.tensor(vals, dtype=torch.float32)


class FakeModelScores(LogitsProcessor):
    """Replaces the tiny model's log-probs with log_softmax of the fake model's logits.

    generate() runs custom processors after its own, so HF's SuppressTokensLogitsProcessor is
    applied here, to the log-probs, where generate() would apply it for a real model."""

    def __init__(self, salt, suppress=None):
        self.salt = salt
        self.suppress = SuppressTokensLogitsProcessor(suppress) if suppress else None

    def __call__(self, input_ids, scores):
        rows = [fake_logits(seq.tolist(), self.salt) for seq in input_ids]
        log_probs = torch.log_softmax(torch.stack(rows), dim=-1)
        return self.suppress(input_ids, log_probs) if self.suppress else log_probs


def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=BEAM_VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


BEAM_CASES = [
    # num_beams, length_penalty, early_stopping, num_return_sequences, max_new_tokens, eos, salt
    (1, 1.0, False, 1, 8, 5, 1),
    (2, 1.0, False, 2, 8, 5, 1),
    (2, 0.0, True, 1, 10, 3, 2),
    (4, 1.0, False, 4, 10, 3, 2),
    (4, -1.0, False, 2, 10, 3, 2),
    (4, 2.0, False, 3, 10, 3, 2),
    (4, 1.0, True, 4, 10, 3, 2),
    (4, 1.0, "never", 2, 10, 3, 2),
    (4, 2.0, "never", 4, 12, 7, 3),
    (4, 0.0, False, 1, 12, 7, 3),
    (3, 0.5, True, 2, 9, 11, 4),
    (4, -1.0, "never", 4, 12, 0, 5),
    (4, 1.0, False, 4, 12, 0, 5),
    (4, 2.0, False, 4, 12, 0, 5),
    # early_stopping decides: True stops at the first 3 hypotheses, False/"never" search on.
    (3, 1.0, True, 3, 12, 0, 6),
    (3, 1.0, False, 3, 12, 0, 6),
    (3, 1.0, "never", 3, 12, 0, 6),
    (3, 2.0, True, 3, 12, 0, 7),
    (3, 2.0, False, 3, 12, 0, 7),
    (3, 1.0, True, 3, 12, 2, 10),
    (3, 1.0, False, 3, 12, 2, 10),
    # two EOS ids: (1 + 2) * num_beams candidates per step
    (3, 1.0, False, 3, 12, [0, 2], 10),
    (2, 0.5, "never", 2, 12, [0, 2, 7], 7),
    # with suppress_tokens (BEAM_SUPPRESS)
    (4, 1.0, False, 4, 12, 0, 5),
    (3, 1.0, False, 3, 12, [0, 2], 10),
]
# suppress_tokens by index in BEAM_CASES (HF sets their log-probs to -inf after log_softmax)
BEAM_SUPPRESS = {23: [10], 24: [15, 21]}


def beam_cases():
    model = tiny_llama()
    prompt = [3, 9, 14]
    out = []
    for index, (k, lp, es, nret, max_new, eos, salt) in enumerate(BEAM_CASES):
        suppress = BEAM_SUPPRESS.get(index)
        eos_ids = eos if isinstance(eos, list) else [eos]
        res = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False,
            num_beams=k,
            length_penalty=lp,
            early_stopping=es,
            num_return_sequences=nret,
            max_new_tokens=max_new,
            eos_token_id=eos_ids,
            pad_token_id=eos_ids[0],
            logits_processor=LogitsProcessorList([FakeModelScores(salt, suppress)]),
            return_dict_in_generate=True,
            output_scores=True,
        )
        seqs = []
        for i in range(nret):
            if k == 1:
                gen = res.sequences[i, len(prompt) :].tolist()
                ends = [i for i, t in enumerate(gen) if t in eos_ids]
                if ends:
                    gen = gen[: ends[0] + 1]
                score = None
            else:
                n = int((res.beam_indices[i] >= 0).sum())
                gen = res.sequences[i, len(prompt) : len(prompt) + n].tolist()
                score = float(res.sequences_scores[i])
            seqs.append({"tokens": gen, "score": score})
        out.append(
            {
                "num_beams": k,
                "length_penalty": lp,
                "early_stopping": es if isinstance(es, str) else bool(es),
                "num_return_sequences": nret,
                "max_new_tokens": max_new,
                "eos": eos_ids,
                "salt": salt,
                "suppress": suppress or [],
                "sequences": seqs,
            }
        )
        print(k, lp, es, nret, [(s["tokens"], s["score"]) for s in seqs])
    return out


TINY_MODELS = ["gqa", "tied", "mha"]
TINY_CASES = [
    # num_beams, length_penalty, early_stopping, num_return_sequences
    (2, 1.0, False, 2),
    (4, 1.0, False, 4),
    (4, 0.0, True, 2),
    (4, 2.0, False, 3),
    (4, -1.0, "never", 4),
    (3, 1.0, "never", 1),
]


def pick_eos(model, prompt):
    """A token the second-best beam produces mid-way, so EOS ends some beams and not others."""
    res = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False,
        num_beams=4,
        num_return_sequences=4,
        max_new_tokens=12,
        eos_token_id=None,
        pad_token_id=0,
        return_dict_in_generate=True,
    )
    gen = res.sequences[1, len(prompt) :].tolist()
    return gen[4]


def tiny_model_cases():
    root = OUT.parent / "models"
    out = []
    for name in TINY_MODELS:
        model = LlamaForCausalLM.from_pretrained(root / name, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        ref = json.loads((root / name / "reference.json").read_text())
        prompt = ref["cases"][0]["prompt_ids"]
        eos = pick_eos(model, prompt)
        for k, lp, es, nret in TINY_CASES:
            res = model.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                do_sample=False,
                num_beams=k,
                length_penalty=lp,
                early_stopping=es,
                num_return_sequences=nret,
                max_new_tokens=12,
                eos_token_id=[eos],
                pad_token_id=eos,
                return_dict_in_generate=True,
                output_scores=True,
            )
            seqs = []
            for i in range(nret):
                n = int((res.beam_indices[i] >= 0).sum())
                seqs.append(
                    {
                        "tokens": res.sequences[i, len(prompt) : len(prompt) + n].tolist(),
                        "score": float(res.sequences_scores[i]),
                    }
                )
            out.append(
                {
                    "model": name,
                    "prompt": prompt,
                    "num_beams": k,
                    "length_penalty": lp,
                    "early_stopping": es if isinstance(es, str) else bool(es),
                    "num_return_sequences": nret,
                    "max_new_tokens": 12,
                    "eos": [eos],
                    "sequences": seqs,
                }
            )
            print(name, eos, k, lp, es, [(s["tokens"], round(s["score"], 4)) for s in seqs])
    return out


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    logits = make_logits()
    ids = input_ids_for_rows()
    doc = {
        "vocab": VOCAB,
        "logits": [[float(v) for v in row] for row in logits],
        "token_ids": ids,
        "generated_count": 4,
        "cases": processor_cases(logits, ids),
    }
    (OUT / "processors.json").write_text(json.dumps(doc, separators=(",", ":")))
    beam = {"vocab": BEAM_VOCAB, "prompt": [3, 9, 14], "cases": beam_cases()}
    (OUT / "beam_search.json").write_text(json.dumps(beam, indent=1))
    tiny = {"cases": tiny_model_cases()}
    (OUT / "beam_tiny_models.json").write_text(json.dumps(tiny, indent=1))


if __name__ == "__main__":
    main()
