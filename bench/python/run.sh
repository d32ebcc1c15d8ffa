#!/usr/bin/env bash
# Python vs C overhead per small operation (see small_op.py). Installs the package into
# target/py-venv the way scripts/test-python.sh does if it is not there yet, then runs the
# benchmark and writes bench/results/python_small_op.csv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
venv="${DLSLIME_PY_VENV:-$root/target/py-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import dlslime' 2>/dev/null; then
  [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install --disable-pip-version-check -q ./bindings/python
fi
mkdir -p bench/results
exec "$venv/bin/python" bench/python/small_op.py --csv bench/results/python_small_op.csv "$@"
