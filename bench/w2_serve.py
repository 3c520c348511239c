#!/usr/bin/env python3
"""W2 through the HTTP server: N clients post /v1/completions at once (prompts of random token
ids, lengths uniform in [min, max], seeded; `max_tokens` new tokens each, EOS ignored) to a
running `nanoinfer serve`, and the wall time from the first post to the last response gives
output tokens/s. Each run sends new prompts (--same-prompts: the first run's again). With
--stream, each response is an SSE stream and the time to its first token is kept too. Prints one line per run and, with --json, writes them all.

  nanoinfer serve --backend cuda --random-weights --config bench/configs/llama-3.1-8b.json \\
      --cache-tokens 215040 --port 8123 &
  bench/w2_serve.py --url http://127.0.0.1:8123 --vocab 128256 --runs 2 --stream
"""

import argparse
import concurrent.futures
import http.client
import json
import random
import sys
import time
import urllib.parse


def post(url, body, stream):
    """One completion: (prompt tokens, completion tokens, seconds to the first token or None)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    t0 = time.monotonic()
    conn.request("POST", "/v1/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read().decode()}")
    if not stream:
        out = json.loads(resp.read())
        return out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"], None
    first, tokens = None, 0
    for line in resp:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        n = len(chunk["choices"][0].get("token_ids", []))
        if n and first is None:
            first = time.monotonic() - t0
        tokens += n
    conn.close()
    return len(body["prompt"]), tokens, first


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--vocab", type=int, required=True, help="the served model's vocabulary size")
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--min-prompt", type=int, default=100)
    ap.add_argument("--max-prompt", type=int, default=1024)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--same-prompts", action="store_true",
                    help="every run sends the first run's prompts (prefix reuse across runs)")
    ap.add_argument("--json", help="write the runs here")
    a = ap.parse_args()

    for _ in range(600):  # the server may still be loading
        try:
            c = http.client.HTTPConnection(urllib.parse.urlsplit(a.url).hostname,
                                           urllib.parse.urlsplit(a.url).port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        time.sleep(1)
    else:
        sys.exit("w2_serve: the server did not answer /health")

    def make_bodies(seed):
        rng = random.Random(seed)
        return [{"prompt": [rng.randrange(a.vocab)
                            for _ in range(rng.randint(a.min_prompt, a.max_prompt))],
                 "max_tokens": a.max_tokens, "ignore_eos": True, "temperature": 0,
                 "stream": a.stream} for _ in range(a.requests)]

    runs = []
    for run in range(a.runs):
        # New prompts each run: the server keeps released prompt blocks findable, so a repeat
        # would skip its prefill (--same-prompts measures that).
        bodies = make_bodies(a.seed if a.same_prompts else a.seed * 1000 + run)
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=a.requests) as pool:
            results = list(pool.map(lambda b: post(a.url, b, a.stream), bodies))
        seconds = time.monotonic() - t0
        prompt = sum(r[0] for r in results)
        new = sum(r[1] for r in results)
        firsts = sorted(r[2] for r in results if r[2] is not None)
        row = {"run": run, "seconds": seconds, "requests": a.requests, "prompt_tokens": prompt,
               "output_tokens": new, "output_tok_s": new / seconds,
               "total_tok_s": (prompt + new) / seconds, "stream": a.stream,
               "same_prompts": a.same_prompts}
        if firsts:
            row["ttft_p50_s"] = firsts[len(firsts) // 2]
            row["ttft_max_s"] = firsts[-1]
        runs.append(row)
        ttft = (f", first token p50 {row['ttft_p50_s']:.2f} s / max {row['ttft_max_s']:.2f} s"
                if firsts else "")
        print(f"W2 over HTTP{' (streams)' if a.stream else ''} run {run}: {seconds:6.2f} s, "
              f"{row['output_tok_s']:7.0f} output tok/s, {row['total_tok_s']:7.0f} total tok/s "
              f"({prompt} prompt and {new} new tokens, {a.requests} requests){ttft}", flush=True)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(runs, f, indent=2)


if __name__ == "__main__":
    main()
