"""The loaded ``libdlslime.so`` and its cffi declarations (generated from
``include/dlslime.h`` at build time, see ``setup.py``).

``lib`` exposes the C functions and every enum constant of the header
(``lib.DLSLIME_STATUS_TIMEOUT``), so no module of the package spells a C number itself.
``$DLSLIME_LIBRARY`` loads another build of the library instead of the bundled one.
"""

from __future__ import annotations

import os

from ._ffi import ffi

__all__ = ["ffi", "lib", "enum_values"]


def _load_library():
    path = os.environ.get("DLSLIME_LIBRARY") or os.path.join(os.path.dirname(__file__), "libdlslime.so")
    return ffi.dlopen(path)


lib = _load_library()


def enum_values(enum: str) -> dict:
    """``{suffix: number}`` of a C enum of the header, in numeric order, the
    ``DLSLIME_<ENUM>_`` prefix removed: ``enum_values("dlslime_status")["TIMEOUT"]``."""
    prefix = enum.upper() + "_"
    items = sorted(ffi.typeof("enum " + enum).relements.items(), key=lambda kv: kv[1])
    return {name[len(prefix):]: value for name, value in items if name.startswith(prefix)}
