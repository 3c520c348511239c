#!/usr/bin/env bash
# Everything GPU-side in one call on the lent GPU machine (run from the repository root):
# configure with CUDA in an ignored build folder, build, run the GPU tests (with the HF bf16
# greedy references made first, in the same call), the benchmarks (W1, W3, decode attention,
# per-op profile) and the HF transformers peers. Logs and JSON go to $OUT (default ./out).
#   scripts/device.sh [all|tests|bench|tp|peers|attn|load|sanitize|racecheck|gguf|python]...
#   (default: all; `attn`, `load`, `sanitize`, `racecheck`, `gguf` and `python` only by name)
# Header-only dependencies travel in .deps/include (pass carry=[".deps"]).
set -uo pipefail
STAGES=${*:-all}
# A misspelt stage ("test") would match nothing and spend a scarce GPU call on nvidia-smi alone.
KNOWN="all tests bench tp peers attn load sanitize racecheck gguf python"
for stage in $STAGES; do
  case " $KNOWN " in
    *" $stage "*) ;;
    *)
      echo "device.sh: unknown stage '$stage' (stages: $KNOWN)" >&2
      exit 2
      ;;
  esac
done
OUT=${OUT:-out}
mkdir -p "$OUT"
want() { [[ " $STAGES " == *" all "* || " $STAGES " == *" $1 "* ]]; }
export PYTHONUNBUFFERED=1
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv \
  | tee "$OUT/gpu.txt"
date -u | tee -a "$OUT/gpu.txt"

# PREBUILT=DIR: binaries built elsewhere (a CUDA build of this tree for sm_90, carried in an
# ignored folder: scripts/pack_prebuilt.sh packs them and prints the command) are run from DIR
# instead of configuring and building here, which saves the call's device time; the test data
# paths compiled into them must resolve on this machine.
BUILD=${PREBUILT:-build-gpu}
build() {
  if [[ -n "${PREBUILT:-}" ]]; then
    # (the nanoinfer_cli target builds the nanoinfer binary)
    for t in "$@"; do [[ -x "$BUILD/${t%_cli}" ]] || { echo "missing prebuilt $BUILD/${t%_cli}"; return 1; }; done
    return 0
  fi
  if ! cmake --build "$BUILD" -j16 --target "$@" >> "$OUT/build.log" 2>&1; then
    grep -E "error|Error" -A3 "$OUT/build.log" | head -60
    return 1
  fi
  echo "built $*"
}
if [[ -z "${PREBUILT:-}" && " $STAGES " != " python " ]]; then  # (python configures its own)
  GEN=""
  command -v ninja > /dev/null && GEN="-G Ninja"
  cmake -S . -B "$BUILD" $GEN -DCMAKE_BUILD_TYPE=Release -DNANOINFER_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
fi
if want tests; then
  build test_cuda_kernels test_cuda_attention test_cuda_model test_cuda_sample test_cuda_hf_bf16 \
    test_cuda_quant || exit 1
fi
if want bench || want tp || [[ " $STAGES " == *" attn "* ]]; then build bench_w1 || status=1; fi
# The wheels carried in .whl (the gguf package, to read and write GGUF files) onto PYTHONPATH.
wheels() {
  ls .whl/*.whl > /dev/null 2>&1 || return 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
}

if want tests; then
  # The default model's real-text set needs its GGUF (two or three calls bring it:
  # scripts/split_model.sh) and the gguf wheel (carried in .whl); without them only the
  # tiny-model set runs.
  gguf="${XDG_CACHE_HOME:-$HOME/.cache}/nanoinfer/SmolLM2-135M-Instruct.Q4_1.gguf"
  wheels
  hf_args=()
  if [[ -f "$gguf" ]] && python3 -c "import gguf" 2> /dev/null; then
    hf_args=(--gguf "$gguf")
  else
    echo "hf_bf16: SmolLM2 set SKIPPED ($gguf or the gguf package missing): tiny models only"
  fi
  hf_bf16() {  # NAME [hf_bf16_greedy.py arguments]: references into $OUT/NAME.json
    local name=$1
    shift
    python3 tools/bench/hf_bf16_greedy.py "$@" --out "$OUT/$name.json" \
      > "/tmp/$name.log" 2>&1 || { tail -5 "/tmp/$name.log"; return 1; }
    grep -E "rel. error|continuations" "/tmp/$name.log"
  }
  hf_bf16 hf_bf16_greedy "${hf_args[@]}" \
    || { echo "hf_bf16: failed; again without the SmolLM2 set"; hf_bf16 hf_bf16_greedy; } \
    || status=1
  export NANOINFER_HF_BF16="$OUT/hf_bf16_greedy.json"
  for t in test_cuda_kernels test_cuda_attention test_cuda_model test_cuda_sample test_cuda_hf_bf16 \
    test_cuda_quant; do
    "$BUILD/$t" --gtest_brief=1 --gtest_output="json:$OUT/$t.json" > "$OUT/$t.log" 2>&1
    rc=$?
    [[ $rc -ne 0 ]] && status=1
    echo "== $t (exit $rc)"
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |[Ss]kipped|agreement|Failure|Expected|Which is|error" \
      "$OUT/$t.log" | head -40
  done
  # For scale (docs/perf.md): HF's default attention here is cuDNN's; the same agreement against
  # HF with torch's flash-attention backend instead (printed, not asserted beyond the test's own).
  echo "== test_cuda_hf_bf16 against HF with sdpa's flash backend"
  if hf_bf16 hf_bf16_flash "${hf_args[@]}" --sdpa-backend FLASH_ATTENTION; then
    NANOINFER_HF_BF16="$OUT/hf_bf16_flash.json" "$BUILD/test_cuda_hf_bf16" --gtest_brief=1 2>&1 \
      | grep -E "agreement|^\[  (PASSED|FAILED) "
  fi
fi

if want bench; then
  "$BUILD/bench_w1" --config bench/configs/llama-3.1-8b.json --json "$OUT/bench_w1.json" \
    2>&1 | tee "$OUT/bench_w1.log" || status=1
fi

# Decode attention alone (not part of `all`; `bench` runs ours too), with PyTorch's attention
# kernels on the same shapes as peers: sdpa's backends at every shape, flex_attention (compiled
# at each shape) at the one- and two-sequence shapes of 4k and 16k entries.
if [[ " $STAGES " == *" attn "* ]]; then
  "$BUILD/bench_w1" --config bench/configs/llama-3.1-8b.json --only attn \
    --json "$OUT/bench_attn.json" 2>&1 | tee "$OUT/bench_attn.log" || status=1
  python3 tools/bench/torch_decode_attn.py --json "$OUT/torch_attn.json" 2>&1 \
    | tee "$OUT/torch_attn.log" || status=1
  timeout 300 python3 tools/bench/torch_decode_attn.py --forms flex_grouped --batches 1,2 \
    --contexts 4096,16384 --json "$OUT/torch_attn_flex.json" 2>&1 \
    | tee "$OUT/torch_attn_flex.log" || status=1
fi

# Tensor parallelism over the machine's GPUs (a kind with 2+ GPUs; needs mpirun there): TP=N
# greedy tokens in fp32 against TP=1 on a tiny model, then W1 sharded over the GPUs.
if want tp; then
  ngpu=$(nvidia-smi -L | wc -l)
  if [[ $ngpu -lt 2 ]] || ! command -v mpirun > /dev/null; then
    echo "tp: skipped ($ngpu GPU(s), mpirun $(command -v mpirun || echo missing))"
  else
    build nanoinfer_cli || status=1
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
    gen() { "$@" --model tests/data/models/gqa --backend cuda --dtype f32 --json \
      --prompt x --max-new-tokens 32 --ignore-eos; }
    one=$(gen "$BUILD/nanoinfer" generate | tail -1)
    many=$(gen mpirun -np "$ngpu" "$BUILD/nanoinfer" generate | tail -1)
    [[ "$one" == "$many" ]] && echo "tp: TP=$ngpu fp32 output equals TP=1" || \
      { echo "tp: TP=$ngpu differs from TP=1"; status=1; }
    mpirun -np "$ngpu" "$BUILD/bench_w1" --config bench/configs/llama-3.1-8b.json --only w1 \
      --json "$OUT/bench_w1_tp$ngpu.json" 2>&1 | tee "$OUT/bench_w1_tp.log" || status=1
  fi
fi

# Checkpoint load time (not part of `all`: it writes 16 GB): HF writes an 8B-shaped random bf16
# checkpoint and times its own load onto the GPU; then ours loads it and generates, with the
# warm-up at load and without it (the first request's TTFT), alternated.
if [[ " $STAGES " == *" load "* ]]; then
  build nanoinfer_cli || status=1
  ckpt=/tmp/nanoinfer_ckpt8b
  (cd tools/bench && python3 hf_load.py --config ../../bench/configs/llama-3.1-8b.json \
    --out "$ckpt" --json "$OUT/hf_load.json") 2>&1 | grep -v -i -E "warn|it/s" || status=1
  ids=$(python3 -c "import random; random.seed(1); print(','.join(str(random.randrange(128256)) for _ in range(512)))")
  for i in 1 2; do
    for w in "" --no-warmup; do
      "$BUILD/nanoinfer" generate --model "$ckpt" --backend cuda --ignore-eos --prompt-ids "$ids" \
        --max-new-tokens 32 $w --json \
        | python3 -c "import json, sys; print('ours ${w:-(warm-up)}:', json.load(sys.stdin)['timings'])" \
        || status=1
    done
  done
  rm -rf "$ckpt"
fi

# compute-sanitizer over the GPU tests, in two stages (neither is part of `all`; suites in parallel,
# the slow ones as GoogleTest shards; on an H100 on 2026-12-06, 65 s and 244 s apart, 431 s both in
# one call with the attention suite's 64 cases). `sanitize`: memcheck on every suite, synccheck on
# the attention, sampling and quant suites. `racecheck`: the kernel suite, one sampling test (the
# distribution tests take over 8 minutes), the quant suite and the attention suite's bf16 cases (its
# kernels that stage tiles in shared memory; the f32 cases take up to 2 minutes each there). In the
# quant suite, the death test (it runs its body in a fresh process, and did not finish under the
# sanitizer) and the test that fills the GPU's memory (the other processes' allocations fail while
# it holds it) run in the tests stage only. cuBLAS's own kernels (nvjet_*) report races under
# racecheck in the quant suite's widened products; only hazards in other kernels fail.
if [[ " $STAGES " == *" sanitize "* || " $STAGES " == *" racecheck "* ]]; then
  cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  build test_cuda_kernels test_cuda_attention test_cuda_model test_cuda_sample test_cuda_quant \
    || exit 1
  check() {  # tool suite [test arguments]: fails on an error, or on a race in one of our kernels
    local tool=$1 suite=$2 log="$OUT/$1_$2${GTEST_SHARD_INDEX:+_shard$GTEST_SHARD_INDEX}.log"
    shift 2
    timeout 480 "$cs" --tool "$tool" --error-exitcode 9 --print-limit 1000 "$BUILD/$suite" \
      --gtest_brief=1 "$@" > "$log" 2>&1
    local rc=$? ours
    ours=$(grep -E "^========= (Error|Warning): Race" "$log" | grep -v -c " at nvjet_")
    echo "$tool $suite${GTEST_SHARD_INDEX:+ shard $GTEST_SHARD_INDEX/$GTEST_TOTAL_SHARDS}" \
      "(exit $rc; races outside cuBLAS: $ours):" \
      "$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$log")"
    # (racecheck exits 9 on cuBLAS's races too: there the races outside it decide)
    [[ $ours -eq 0 ]] && { [[ $rc -eq 0 ]] || [[ $tool == racecheck && $rc -eq 9 ]]; }
  }
  pids=()
  sharded() {  # shards tool suite [test arguments]: check over GoogleTest shards, in the background
    local n=$1 i
    shift
    for ((i = 0; i < n; ++i)); do
      GTEST_TOTAL_SHARDS=$n GTEST_SHARD_INDEX=$i check "$@" & pids+=($!)
    done
  }
  quant_filter='--gtest_filter=-CudaQuantDeathTest.*:CudaQuant.WideningOutOfMemory*'
  if [[ " $STAGES " == *" sanitize "* ]]; then
    for s in test_cuda_kernels test_cuda_attention test_cuda_model test_cuda_sample; do
      check memcheck "$s" & pids+=($!)
    done
    for s in test_cuda_attention test_cuda_sample; do check synccheck "$s" & pids+=($!); done
    sharded 4 memcheck test_cuda_quant "$quant_filter"
    sharded 4 synccheck test_cuda_quant "$quant_filter"
  fi
  if [[ " $STAGES " == *" racecheck "* ]]; then
    check racecheck test_cuda_kernels & pids+=($!)
    check racecheck test_cuda_sample --gtest_filter='CudaSampleHost.Penalties*' & pids+=($!)
    sharded 4 racecheck test_cuda_quant "$quant_filter"
    sharded 8 racecheck test_cuda_attention --gtest_filter='*/bf16_*'
  fi
  for p in "${pids[@]}"; do wait "$p" || status=1; done
fi

# GGUF decode (not part of `all`: it writes a 4.9 GB file): tools/bench/make_gguf.py writes a
# Llama-3.1-8B-shaped Q4_K_M GGUF of random blocks (needs the gguf wheel in .whl), then
# `nanoinfer bench` decodes it widened (the default) and with --keep-blocks at 1, 8 and 32
# sequences (512-token prompts, 128 new tokens, median of 2).
if [[ " $STAGES " == *" gguf "* ]]; then
  build nanoinfer_cli || exit 1
  wheels
  tok=/tmp/nanoinfer_llama3_tokenizer gguf=/tmp/nanoinfer_q4km.gguf
  mkdir -p "$tok" && tar xzf tests/data/tokenizer/llama3/tokenizer.json.tar.gz -C "$tok" \
    && cp tests/data/tokenizer/llama3/tokenizer_config.json "$tok"/
  if python3 tools/bench/make_gguf.py --config bench/configs/llama-3.1-8b.json --tokenizer "$tok" \
    --out "$gguf" > "$OUT/make_gguf.log" 2>&1; then
    for b in 1 8 32; do
      for kept in "" --keep-blocks; do
        echo "== batch $b ${kept:-(widened)}"
        "$BUILD/nanoinfer" bench --model "$gguf" --backend cuda $kept --batch $b \
          --prompt-tokens 512 --new-tokens 128 --runs 2 2>&1 | tee -a "$OUT/gguf_bench.log" \
          | grep -E "^  (prefill|decode)|rror" || status=1
      done
    done
  else
    tail -5 "$OUT/make_gguf.log"
    status=1
  fi
  rm -f "$gguf"
fi

# The Python module on the CUDA backend (not part of `all`; PREBUILT does not apply: the module
# is built for this machine's Python): its own build folder, configured with this machine's
# Python headers and the pybind11 wheel carried in .whl (with .deps for the JSON headers), the
# module target only, then tests/gpu/test_python_cuda.py.
if [[ " $STAGES " == *" python "* ]]; then
  pyb=""
  wheels && pyb=$(python3 -c "import pybind11; print(pybind11.get_cmake_dir())" 2> /dev/null)
  if [[ -z "$pyb" ]]; then
    echo "python: no pybind11 (carry its wheel in .whl: pip download --no-deps -d .whl pybind11)"
    status=1
  elif ! cmake -S . -B build-py -DCMAKE_BUILD_TYPE=Release -DNANOINFER_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DNANOINFER_TESTS=OFF -DNANOINFER_BENCH=OFF \
    -Dpybind11_DIR="$pyb" > "$OUT/configure_py.log" 2>&1; then
    tail -30 "$OUT/configure_py.log"
    status=1
  elif [[ ! -f build-py/python/nanoinfer/__init__.py ]]; then
    echo "python: the module was not configured (Python's headers?):"
    grep -i -E "python|pybind" "$OUT/configure_py.log" | head
    status=1
  elif ! cmake --build build-py -j16 --target nanoinfer_python > "$OUT/build_py.log" 2>&1; then
    grep -E "error|Error" -A3 "$OUT/build_py.log" | head -40
    status=1
  else
    PYTHONPATH="build-py/python:${PYTHONPATH:-}" NI_TEST_DATA=tests/data python3 \
      tests/gpu/test_python_cuda.py > "$OUT/test_python_cuda.log" 2>&1 || status=1
    grep -E "^(test_|Ran |OK|FAILED)|Error|error" "$OUT/test_python_cuda.log" | head -40
  fi
fi

if want peers; then
  timeout 300 python3 tools/bench/hf_w1.py --config bench/configs/llama-3.1-8b.json \
    --json "$OUT/hf_w1.json" 2>&1 | grep -v Warning | tail -8 || status=1
fi
exit $status
