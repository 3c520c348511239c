#!/usr/bin/env bash
# test_install.sh BUILD PREFIX PYTHON_DIR PYTHON [PY_UNDER_PREFIX]: installs BUILD under a staging
# root (DESTDIR), builds tests/install/consumer against it with find_package(nanoinfer), and checks
# that the consumer, the installed CLI and the installed Python module (where one was built) give
# the same greedy tokens for a tiny test model; then installs it again with `--prefix DIR` (a user
# without root), where everything, the Python module included (DIR/PY_UNDER_PREFIX), goes under DIR.
set -euo pipefail
build=$1 prefix=$2 pydir=$3 python=$4 under_prefix=${5:-}
src=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'echo "test_install.sh: failed at line $LINENO"' ERR
root=$work/root
model=$src/tests/data/models/gqa
prompt=(5 17 42 99)

DESTDIR=$root cmake --install "$build" > "$work/install.log"
test -f "$root$prefix/include/nanoinfer/engine.h"
test -f "$root$prefix/include/nanoinfer/error.h"

cmake -S "$src/tests/install/consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$root$prefix" \
  > "$work/configure.log" 2>&1 || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/consumer" > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
from_lib=$("$work/consumer/consumer" "$model" "${prompt[@]}")
echo "library (find_package): $from_lib"

ids=$(IFS=,; echo "${prompt[*]}")
from_cli=$("$root$prefix/bin/nanoinfer" generate --model "$model" --prompt-ids "$ids" \
  --max-new-tokens 8 --ignore-eos --json | "$python" -c \
  'import json, sys; print(" ".join(map(str, json.load(sys.stdin)["outputs"][0]["token_ids"])), "")')
echo "installed CLI:          $from_cli"
[[ "$from_lib" == "$from_cli" ]] || { echo "the library and the CLI disagree"; exit 1; }

if [[ -n "$pydir" ]]; then
  from_py=$(PYTHONPATH="$root$pydir" "$python" -c "
import nanoinfer, sys
assert nanoinfer.__file__.startswith('$root'), nanoinfer.__file__
out = nanoinfer.Engine('$model').generate([[${ids}]], max_new_tokens=8, ignore_eos=True)[0]
print(' '.join(map(str, out.token_ids)), '')")
  echo "installed Python:       $from_py"
  [[ "$from_lib" == "$from_py" ]] || { echo "the library and the Python module disagree"; exit 1; }
fi

user=$work/user
cmake --install "$build" --prefix "$user" > "$work/install_user.log"
grep -v "^$user/" "$build/install_manifest.txt" && { echo "installed outside --prefix"; exit 1; }
test -x "$user/bin/nanoinfer"
if [[ -n "$pydir" ]]; then
  PYTHONPATH="$user/$under_prefix" "$python" -c "
import nanoinfer
assert nanoinfer.__file__.startswith('$user/$under_prefix/nanoinfer/'), nanoinfer.__file__"
  echo "installed with --prefix: the Python module in $under_prefix"
fi
echo "install checked"
