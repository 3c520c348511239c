#!/usr/bin/env bash
# Tokenizer encode throughput (issue: not slower than HF tokenizers): ours and HF tokenizers on the
# same 10 MB text, one thread each, one after the other in this script. PYTHON must have
# `tokenizers` (default /opt/golden/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD:-build}"
py="${PYTHON:-/opt/golden/bin/python}"
[ -x "$py" ] || py=python3
mb="${1:-10}"
echo "== $(date -u +%FT%TZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1 /proc/loadavg)"
echo "== nanoinfer"
"./$build/bench_tokenizer" tests/data/tokenizer "$mb"
echo "== HF tokenizers"
"$py" tools/golden/bench_hf_tokenizer.py "$mb"
