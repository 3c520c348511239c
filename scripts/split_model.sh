#!/usr/bin/env bash
# Takes the default model (SmolLM2-135M-Instruct Q4_1 GGUF, 98 MB) to the GPU machine, whose
# calls carry at most 64 MiB each (working tree included): here it is compressed (xz, ~92%) and
# split into ignored parts, .model_parts/a, b (and c), one a call; the gguf wheel HF needs to read
# it goes to .whl. Two halves of ~44 MiB leave the last call no room for prebuilt binaries, so
# where scripts/pack_prebuilt.sh has packed them (.prebuilt) the model goes in three thirds and the
# last call runs device.sh on those binaries instead of building there.
# Prints the device commands: each call but the last stages its part in /tmp/ni_model (it
# survives while the machine stays warm, ~30 s after a call); the last appends its own,
# decompresses, checks the sha256 and puts the file where scripts/fetch_model.sh would
# (scripts/device.sh looks there), then runs the stages. If a call gets a fresh machine, the
# reassembly says so and the tests stage runs without the SmolLM2 set.
#   scripts/split_model.sh [MODEL.gguf] [STAGES...]   (stages of the last call; default: tests)
set -euo pipefail
cd "$(dirname "$0")/.."
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_WHEEL=gguf==0.19.0  # pure Python; needs numpy, pyyaml, tqdm (on the GPU machine's image)
model=${1:-$(scripts/fetch_model.sh)}
shift || true
stages=${*:-tests}
prebuilt=""
[[ -f .prebuilt/bin.tar.xz ]] && prebuilt=.prebuilt
parts=(a b)
[[ -n $prebuilt ]] && parts=(a b c)

[[ $(sha256sum < "$model" | cut -d' ' -f1) == "$SHA" ]] \
  || { echo "$model: not the sha256 expected"; exit 1; }
grep -qx '/.model_parts/' .git/info/exclude || echo '/.model_parts/' >> .git/info/exclude
rm -rf .model_parts && mkdir -p .model_parts
xz -T0 -6 < "$model" > .model_parts/whole.xz
each=$((($(stat -c %s .model_parts/whole.xz) + ${#parts[@]} - 1) / ${#parts[@]}))
for i in "${!parts[@]}"; do
  mkdir -p ".model_parts/${parts[i]}"
  dd if=.model_parts/whole.xz of=".model_parts/${parts[i]}/part" bs=1M status=none \
    iflag=skip_bytes,count_bytes skip=$((i * each)) count="$each"
done
rm .model_parts/whole.xz
[[ $(for p in "${parts[@]}"; do cat ".model_parts/$p/part"; done | xz -d | sha256sum \
  | cut -d' ' -f1) == "$SHA" ]]
ls .whl/gguf-*.whl > /dev/null 2>&1 || python3 -m pip download -q --no-deps \
  --only-binary=:all: --python-version 3.12 --implementation cp --platform any -d .whl "$GGUF_WHEEL"

# What travels besides the carried paths: tracked and untracked-not-ignored files. Sizes are
# disk usage (1 KiB blocks), which is what the limit counted on 2026-12-02: 66.9 MB of bytes
# (under 64 MiB) were refused as 65,720 KiB of blocks, and 65,096 KiB went.
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) \
  | du -c --files0-from=- 2> /dev/null | tail -1 | cut -f1 || true)
tree=$((tree * 1024))
size() { echo $(($(du -c "$@" 2> /dev/null | tail -1 | cut -f1 || true) * 1024)); }
mib() { echo "$(($1 / 1048576)) MiB"; }
last=${parts[-1]}
extra=(.whl)
if [[ -n $prebuilt ]]; then extra+=("$prebuilt"); elif [[ -d .deps ]]; then extra+=(.deps); fi
echo "working tree $(mib "$tree"); each part $(mib "$(size .model_parts/a)");" \
  "the last call also carries ${extra[*]}: $(mib "$(size "${extra[@]}")") (limit 64 MiB a call)"
# shellcheck disable=SC2016  # expanded on the device
dst='${XDG_CACHE_HOME:-$HOME/.cache}/nanoinfer'
for p in "${parts[@]:0:${#parts[@]}-1}"; do
  echo
  echo "call for part $p: carry [\".model_parts/$p\"]"
  echo "mkdir -p /tmp/ni_model && cp .model_parts/$p/part /tmp/ni_model/$p && ls -l /tmp/ni_model"
done
staged=$(for p in "${parts[@]:0:${#parts[@]}-1}"; do printf '/tmp/ni_model/%s ' "$p"; done)
carry="\".model_parts/$last\""
for x in "${extra[@]}"; do carry+=", \"$x\""; done
run="scripts/device.sh $stages"
[[ -n $prebuilt ]] && run="bash .prebuilt/run.sh $stages"
echo
echo "last call: carry [$carry]"
echo "d=$dst; mkdir -p \$d && cat $staged.model_parts/$last/part | xz -d > \$d/$NAME.tmp" \
  "&& echo '$SHA  '\$d/$NAME.tmp | sha256sum -c --quiet && mv \$d/$NAME.tmp \$d/$NAME" \
  "&& echo 'model reassembled' || { rm -f \$d/$NAME.tmp;" \
  "echo 'model NOT reassembled: the SmolLM2 set will be skipped'; }; $run"
