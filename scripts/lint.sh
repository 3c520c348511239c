#!/usr/bin/env bash
# clang-tidy (checks in .clang-tidy) over our C++ sources, using the build's compile database.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
mapfile -t files < <(git ls-files -co --exclude-standard -- 'src/*.cpp' 'tests/*.cpp' 'bench/*.cpp')
# GCC-only warning flags in the database mean nothing to clang.
run-clang-tidy -quiet -p "$build" -extra-arg=-Wno-unknown-warning-option "${files[@]}"
