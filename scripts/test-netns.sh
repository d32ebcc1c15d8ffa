#!/usr/bin/env bash
# Multi-host tests in network namespaces (bindings/python/tests_netns): a router and
# three hosts over veth pairs, NanoCtrl + Redis on one, PeerAgents on the other two; link
# down, packet loss, delay. Needs root, iproute2, iptables, ethtool and
# libnetfilter-queue (install-deps.sh);
# without them the tests are NOT RUN (failures under CI=true). Extra arguments go to
# pytest.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
source "$root/scripts/py-venv.sh"
# The NFQUEUE delayer (tests_netns/delayer.py) stands in for netem on kernels without it;
# netfilterqueue builds against libnetfilter-queue-dev (install-deps.sh).
if ! "$venv/bin/python" -c 'import netfilterqueue' 2>/dev/null; then
  echo "==> pip install netfilterqueue==1.1.0"
  "$venv/bin/pip" install --disable-pip-version-check -q netfilterqueue==1.1.0
fi
cargo build -q -p nanoctrl --bins
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
export DLSLIME_NANOCTRL_BIN="$target_dir/debug/nanoctrl"
# tests/conftest.py is loaded as a plugin: its NOT RUN accounting applies here too.
export PYTHONPATH="$root/bindings/python/tests${PYTHONPATH:+:$PYTHONPATH}"
exec "$venv/bin/python" -m pytest -p no:cacheprovider -p conftest bindings/python/tests_netns "$@"
