#!/usr/bin/env bash
# clang-tidy (checks in .clang-tidy) over our C++ sources, using the build's compile database.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
mapfile -t files < <(git ls-files -co --exclude-standard -- 'src/*.cpp' 'tests/*.cpp' 'bench/*.cpp')
run-clang-tidy -quiet -p "$build" "${files[@]}" 2>/dev/null || clang-tidy -p "$build" --quiet "${files[@]}"
