#!/usr/bin/env bash
# Packs this tree's CUDA binaries for scripts/device.sh's PREBUILT mode, so that a GPU call runs
# them instead of configuring and building there (minutes of the call's device time). Builds the
# targets in a CUDA build folder here ($BUILD, default build; sm_90), strips them into one xz
# archive in the ignored folder .prebuilt, beside .prebuilt/run.sh, which unpacks them on the
# device and runs device.sh's stages on them. The test binaries find their data through the
# absolute path of this checkout, compiled in; run.sh links that path to the device's copy.
#   scripts/pack_prebuilt.sh        then, carrying .prebuilt: bash .prebuilt/run.sh [STAGES...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
targets=(test_cuda_kernels test_cuda_attention test_cuda_model test_cuda_sample test_cuda_hf_bf16
  test_cuda_quant bench_w1 nanoinfer_cli)
grep -q '^NANOINFER_CUDA:BOOL=ON' "$build/CMakeCache.txt" 2> /dev/null \
  || { echo "pack_prebuilt: $build is not a CUDA build (cmake -S . -B $build -DNANOINFER_CUDA=ON)"; exit 1; }
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" > /dev/null
rm -rf .prebuilt && mkdir -p .prebuilt/bin
for t in "${targets[@]}"; do strip -o ".prebuilt/bin/${t%_cli}" "$build/${t%_cli}"; done
tar -C .prebuilt -cf - bin | xz -9 -T0 > .prebuilt/bin.tar.xz
rm -rf .prebuilt/bin
root=$(pwd -P)
cat > .prebuilt/run.sh << EOF
#!/usr/bin/env bash
# Written by scripts/pack_prebuilt.sh: device.sh's stages (default all) on the packed binaries.
[[ -d $root ]] || { mkdir -p $(dirname "$root") && ln -s "\$PWD" $root; }
tar xJf .prebuilt/bin.tar.xz -C /tmp && PREBUILT=/tmp/bin exec scripts/device.sh "\$@"
EOF
echo "packed: .prebuilt/bin.tar.xz, $(du -k .prebuilt/bin.tar.xz | cut -f1) KiB (${targets[*]})"
echo "device command (carry [\".prebuilt\"]; for the SmolLM2 set, scripts/split_model.sh instead):"
echo "  bash .prebuilt/run.sh tests"
