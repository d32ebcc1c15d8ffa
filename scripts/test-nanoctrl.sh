#!/usr/bin/env bash
# NanoCtrl test suite: Rust integration tests (real redis-server + real nanoctrl binary)
# and the published Python client (PyPI nanoctrl==0.1.0.post1) against our server.
# Works on a fresh Debian/Ubuntu machine with Rust, Python 3 and apt: installs
# redis-server (and python3-venv) when missing. Exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
TARGET="${CARGO_TARGET_DIR:-target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
apt_install() {
  echo "==> installing $* (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  apt_install redis-server
fi
command -v redis-server >/dev/null 2>&1 || export PATH="$PATH:/usr/bin"
redis-server --version

echo "==> cargo build -p nanoctrl"
cargo build -p nanoctrl --bins
NANOCTRL_BIN="$TARGET/debug/nanoctrl"
[ -x "$NANOCTRL_BIN" ] || { echo "nanoctrl binary not found at $NANOCTRL_BIN" >&2; exit 1; }

echo "==> cargo test -p nanoctrl"
timeout 900 cargo test -p nanoctrl

echo "==> published Python client against our server"
VENV="$TARGET/nanoctrl-pyvenv"
if [ ! -x "$VENV/bin/python" ]; then
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    apt_install python3-venv
    python3 -m venv "$VENV"
  fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "nanoctrl==0.1.0.post1" redis
# The wheel ships its own server binary in $VENV/bin; the test runs ours by absolute path.
NANOCTRL_BIN="$NANOCTRL_BIN" timeout 600 "$VENV/bin/python" nanoctrl/tests/python/test_published_client.py

echo "==> nanoctrl: all tests passed"
