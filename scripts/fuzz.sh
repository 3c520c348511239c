#!/usr/bin/env bash
# Usage: scripts/fuzz.sh [SECONDS [TARGET...]]
# Fuzzes what a user feeds in (GGUF and safetensors files, config.json, tokenizer.json, text to
# tokenize, the server's request bodies, requests' parameters) with libFuzzer under
# AddressSanitizer + UBSan, in build-fuzz: each target (all seven by default) runs SECONDS (60)
# from build-fuzz/corpus/<target>, which keeps what earlier runs found. A finding (a crash, a
# sanitizer report, an exception other than nanoinfer::Error, one input over 10 s, an allocation
# over 2 GB) stops with its input in build-fuzz/findings/; rerun it with build-fuzz/<target> <file>.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
bash scripts/install_deps.sh clang libclang-rt-dev libomp-dev
b=build-fuzz
flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CC=clang CXX=clang++ cmake -S . -B $b -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNANOINFER_CUDA=OFF \
  -DNANOINFER_TESTS=OFF -DNANOINFER_BENCH=OFF -DNANOINFER_FUZZ=ON "-DCMAKE_CXX_FLAGS=$flags" \
  "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined" > /tmp/nanoinfer-fuzz-cmake.log 2>&1 ||
  { cat /tmp/nanoinfer-fuzz-cmake.log; exit 1; }
targets=(fuzz_gguf fuzz_safetensors fuzz_hf_config fuzz_tokenizer fuzz_tokenizer_json fuzz_request
         fuzz_generate)
[ $# -gt 1 ] && targets=("${@:2}")
cmake --build $b -j "$(nproc)" --target write_seeds "${targets[@]}"
# Seeds: the micro model's files, the test models' and benchmark configs, texts for every tokenizer.
$b/write_seeds $b/corpus
for f in tests/data/models/*/config.json bench/configs/*.json; do
  cp "$f" "$b/corpus/fuzz_hf_config/$(echo "$f" | tr / _)"
done
mkdir -p $b/corpus/fuzz_tokenizer $b/findings
for t in 0 1 2; do
  for f in tests/data/prompts/*.txt; do
    { printf "\\x$t"; head -c 2000 "$f"; } > "$b/corpus/fuzz_tokenizer/$t-$(basename "$f")"
  done
done
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
export OMP_NUM_THREADS=1
for t in "${targets[@]}"; do
  echo "== $t: $seconds s"
  mkdir -p $b/corpus/$t
  rc=0
  $b/$t -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -malloc_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix=$b/findings/$t- $b/corpus/$t > $b/$t.log 2>&1 || rc=$?
  grep -E '^stat::number_of_executed_units|^#[0-9]+ +DONE' $b/$t.log || true
  if [ $rc -ne 0 ]; then
    grep -v '^#' $b/$t.log | tail -40
    echo "$t: a finding (log $b/$t.log, input in $b/findings/)"
    exit 1
  fi
done
