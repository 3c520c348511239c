#!/usr/bin/env bash
# Takes the default model (SmolLM2-135M-Instruct Q4_1 GGUF, 98 MB) to the GPU machine, whose
# calls carry at most 64 MiB each (working tree included): here it is compressed (xz, ~92%) and
# split into two ignored halves of ~43 MiB, .model_parts/a and .model_parts/b, which leaves each
# call room for prebuilt binaries; the gguf wheel HF needs to read it goes to .whl.
# Prints the two device commands: the first stages part A in /tmp/ni_model (it survives while the
# machine stays warm, ~30 s after a call), the second appends part B, decompresses, checks the
# sha256 and puts
# the file where scripts/fetch_model.sh would (scripts/device.sh looks there), then runs the
# stages. If the second call gets a fresh machine, the reassembly says so and the tests stage
# runs without the SmolLM2 set.
#   scripts/split_model.sh [MODEL.gguf] [STAGES...]   (stages of the second call; default: tests)
set -euo pipefail
cd "$(dirname "$0")/.."
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_WHEEL=gguf==0.19.0  # pure Python; needs numpy, pyyaml, tqdm (on the GPU machine's image)
model=${1:-$(scripts/fetch_model.sh)}
shift || true
stages=${*:-tests}

[[ $(sha256sum < "$model" | cut -d' ' -f1) == "$SHA" ]] \
  || { echo "$model: not the sha256 expected"; exit 1; }
grep -qx '/.model_parts/' .git/info/exclude || echo '/.model_parts/' >> .git/info/exclude
rm -rf .model_parts && mkdir -p .model_parts/a .model_parts/b
xz -T0 -6 < "$model" > .model_parts/whole.xz
half=$(($(stat -c %s .model_parts/whole.xz) / 2))
head -c "$half" .model_parts/whole.xz > .model_parts/a/part
tail -c +"$((half + 1))" .model_parts/whole.xz > .model_parts/b/part
rm .model_parts/whole.xz
[[ $(cat .model_parts/a/part .model_parts/b/part | xz -d | sha256sum | cut -d' ' -f1) == "$SHA" ]]
ls .whl/gguf-*.whl > /dev/null 2>&1 || python3 -m pip download -q --no-deps \
  --only-binary=:all: --python-version 3.12 --implementation cp --platform any -d .whl "$GGUF_WHEEL"

# What travels besides the carried paths: tracked and untracked-not-ignored files. Sizes are
# disk usage (1 KiB blocks), which is what the limit counted on 2026-12-02: 66.9 MB of bytes
# (under 64 MiB) were refused as 65,720 KiB of blocks, and 65,096 KiB went.
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) \
  | du -c --files0-from=- 2> /dev/null | tail -1 | cut -f1 || true)
tree=$((tree * 1024))
size() { echo $(($(du -c "$@" 2> /dev/null | tail -1 | cut -f1 || true) * 1024)); }
a=$(size .model_parts/a) b=$(size .model_parts/b) w=$(size .whl) d=$(size .deps)
mib() { echo "$(($1 / 1048576)) MiB"; }
echo "parts: a $(mib "$a"), b $(mib "$b"); .whl $(mib "$w"), .deps $(mib "$d");" \
  "working tree $(mib "$tree")"
echo "call 1 travels $(mib $((tree + a))), call 2 $(mib $((tree + b + w + d))) (limit 64 MiB each)"
# shellcheck disable=SC2016  # expanded on the device
dst='${XDG_CACHE_HOME:-$HOME/.cache}/nanoinfer'
echo
echo "call 1: carry [\".model_parts/a\"]"
echo "mkdir -p /tmp/ni_model && cp .model_parts/a/part /tmp/ni_model/a && ls -l /tmp/ni_model"
echo
echo "call 2: carry [\".model_parts/b\", \".whl\"$([[ -d .deps ]] && echo ', ".deps"')]"
echo "d=$dst; mkdir -p \$d && cat /tmp/ni_model/a .model_parts/b/part | xz -d > \$d/$NAME.tmp" \
  "&& echo '$SHA  '\$d/$NAME.tmp | sha256sum -c --quiet && mv \$d/$NAME.tmp \$d/$NAME" \
  "&& echo 'model reassembled' || { rm -f \$d/$NAME.tmp;" \
  "echo 'model NOT reassembled: the SmolLM2 set will be skipped'; }; scripts/device.sh $stages"
