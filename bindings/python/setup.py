"""Build of the dlslime Python package.

``pip install ./bindings/python`` runs this through setuptools' PEP 517 backend. The
build step (``build_py``):

1. runs ``cargo build --release --lib -p dlslime`` in the repository root (the Cargo
   workspace two directories up, or ``$DLSLIME_SOURCE_DIR``), honouring
   ``$CARGO_TARGET_DIR``, and copies the resulting ``libdlslime.so`` into the package;
   ``$DLSLIME_CARGO_PROFILE`` picks another profile (e.g. ``dev``);
2. turns ``include/dlslime.h`` into cffi declarations (``dlslime/_cdef.py``) and emits
   the out-of-line ABI-mode module ``dlslime/_ffi.py`` (no C compiler involved; at run
   time it ``dlopen``s the bundled library).

The wheel is tagged ``py3-none-<platform>``: it holds a native library but no CPython
extension, so it works with any Python 3 of that platform.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

try:  # setuptools >= 70 ships bdist_wheel itself
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover
    from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent


def source_root() -> Path:
    env = os.environ.get("DLSLIME_SOURCE_DIR")
    root = Path(env).resolve() if env else HERE.parents[1]
    if not (root / "Cargo.toml").is_file() or not (root / "include" / "dlslime.h").is_file():
        raise SystemExit(
            f"dlslime: no Cargo.toml + include/dlslime.h in {root}. Build from a checkout of "
            "the repository (pip install ./bindings/python) or set DLSLIME_SOURCE_DIR."
        )
    return root


def find_cargo() -> str:
    cargo = os.environ.get("CARGO") or shutil.which("cargo")
    if not cargo:
        home = Path.home() / ".cargo" / "bin" / "cargo"
        if home.is_file():
            cargo = str(home)
    if not cargo:
        raise SystemExit("dlslime: cargo not found (install the Rust toolchain, or set $CARGO)")
    return cargo


def build_library(root: Path) -> Path:
    """Builds the cdylib and returns the path cargo reports for it."""
    profile = os.environ.get("DLSLIME_CARGO_PROFILE", "release")
    cmd = [find_cargo(), "build", "--lib", "-p", "dlslime", "--profile", profile,
           "--message-format=json-render-diagnostics"]
    print("dlslime: " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"dlslime: cargo build failed (exit status {proc.returncode})")
    lib = None
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "dlslime":
            for f in msg.get("filenames", []):
                if f.endswith(".so") or f.endswith(".dylib"):
                    lib = Path(f)
    if lib is None or not lib.is_file():
        raise SystemExit("dlslime: cargo did not report a libdlslime shared library")
    return lib


def load_cdef_module():
    spec = importlib.util.spec_from_file_location("_dlslime_cdef", HERE / "dlslime" / "_cdef.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def emit_ffi_module(header: Path, out: Path) -> None:
    import cffi

    cdef = load_cdef_module().header_to_cdef(header.read_text(encoding="utf-8"))
    ffibuilder = cffi.FFI()
    ffibuilder.cdef(cdef)
    ffibuilder.set_source("dlslime._ffi", None)  # out-of-line ABI mode: pure Python output
    out.parent.mkdir(parents=True, exist_ok=True)
    ffibuilder.emit_python_code(str(out))


class BuildPy(build_py):
    def run(self):
        super().run()
        root = source_root()
        pkg = Path(self.build_lib) / "dlslime"
        pkg.mkdir(parents=True, exist_ok=True)
        lib = build_library(root)
        shutil.copyfile(lib, pkg / "libdlslime.so")
        os.chmod(pkg / "libdlslime.so", 0o755)
        emit_ffi_module(root / "include" / "dlslime.h", pkg / "_ffi.py")


class BdistWheel(bdist_wheel):
    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", plat


setup(cmdclass={"build_py": BuildPy, "bdist_wheel": BdistWheel})
