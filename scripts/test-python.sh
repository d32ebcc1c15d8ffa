#!/usr/bin/env bash
# Python bindings: builds and installs the package the way a user does
# (`pip install ./bindings/python`, which runs `cargo build --release` of the library)
# into a virtual environment, then runs the pytest suite (two processes per test over
# TCP and shared memory; PeerAgent tests against a real NanoCtrl + redis-server on
# loopback) against the installed package.
#
# Environment: DLSLIME_PY_VENV (default target/py-venv), PYTHON (default python3),
# CARGO_TARGET_DIR (honoured by the package build). Extra arguments go to pytest.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
source "$root/scripts/py-venv.sh"  # sets $venv: the package installed from this tree

# The PeerAgent tests start a real redis-server and the workspace's nanoctrl.
echo "==> cargo build -p nanoctrl --bins"
cargo build -q -p nanoctrl --bins
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
export DLSLIME_NANOCTRL_BIN="$target_dir/debug/nanoctrl"

echo "==> installed: $("$venv/bin/python" -c 'import dlslime; print(dlslime.__file__, dlslime.version())')"
# Run from the repository root so `import dlslime` is the installed package, not the
# source directory.
exec "$venv/bin/python" -m pytest -p no:cacheprovider bindings/python/tests "$@"
