# Sourced by scripts/test-python.sh and scripts/soak.sh (with $root set): a virtual
# environment ($venv) with the Python package installed from this tree the way a user
# installs it (`pip install ./bindings/python`, which builds the library in release), plus
# pytest, numpy, flatbuffers, msgpack and prometheus_client (its parser reads NanoCtrl's
# /metrics in tests/test_obs.py). Environment: DLSLIME_PY_VENV (default target/py-venv), PYTHON.
venv="${DLSLIME_PY_VENV:-$root/target/py-venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/pip" install --disable-pip-version-check -q)
if ! "$venv/bin/python" -c 'import dlslime' 2>/dev/null; then
  echo "==> pip install ./bindings/python pytest numpy flatbuffers msgpack prometheus_client"
  "${pip[@]}" ./bindings/python pytest numpy flatbuffers msgpack prometheus_client
else
  # Already installed once: rebuild and reinstall it from this tree (its dependencies
  # are there), so the tests always see the current sources.
  echo "==> pip install --force-reinstall --no-deps ./bindings/python"
  "${pip[@]}" pytest numpy flatbuffers msgpack prometheus_client
  "${pip[@]}" --no-deps --force-reinstall ./bindings/python
fi

