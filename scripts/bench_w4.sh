#!/usr/bin/env bash
# W4 (BENCHMARKS.md): nanoinfer and HF transformers fp32 on this CPU, the default model, the
# summary prompt, 128 greedy tokens, run one after the other in this script. PYTHON must have
# torch + transformers + gguf + accelerate (transformers 5.24 loads a GGUF only with accelerate;
# default /opt/golden/bin/python). Writes out/w4.json.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD:-build}"
py="${PYTHON:-/opt/golden/bin/python}"
mkdir -p out
ours=$("./$build/bench_w4" --json --repeats 3)
hf=$("$py" tools/golden/bench_hf_cpu.py --json --threads "$(nproc)" --repeats 3)
printf '{"date": "%s", "machine": "%s, %s cores", "nanoinfer": %s, "hf": %s}\n' \
  "$(date -u +%FT%TZ)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(nproc)" \
  "$ours" "$hf" | tee out/w4.json
"$py" - out/w4.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
a, b = d["nanoinfer"], d["hf"]
print(f"decode: nanoinfer {a['decode_tokens_per_s']:.1f} tok/s, HF {b['decode_tokens_per_s']:.1f} tok/s "
      f"-> {a['decode_tokens_per_s'] / b['decode_tokens_per_s']:.2f}x; "
      f"prefill: {a['prefill_ms']:.0f} ms vs {b['prefill_ms']:.0f} ms")
PY
