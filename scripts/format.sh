#!/usr/bin/env bash
# clang-format over our own C++/CUDA sources; --check fails on any difference. The file list
# comes from git (tracked and untracked, ignored files left out); outside a git checkout it is
# the source folders, so the check never passes by finding nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  mapfile -t files < <(git ls-files -co --exclude-standard -- '*.h' '*.cpp' '*.cu' '*.cuh')
else
  mapfile -t files < <(find include src tests bench -type f \
    \( -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \) | sort)
fi
if [ ${#files[@]} -eq 0 ]; then
  echo "format check: no sources found" >&2
  exit 1
fi
if [ "${1:-}" = "--check" ]; then
  clang-format --dry-run --Werror "${files[@]}"
  echo "format check: ${#files[@]} files clean"
else
  clang-format -i "${files[@]}"
fi
