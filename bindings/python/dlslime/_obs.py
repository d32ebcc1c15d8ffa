"""Observability: the process's counters and latency histograms (``docs/observability.md``).

``obs_snapshot()`` returns the original DLSlime's shape where it has one: ``{"enabled":
False}`` when recording is off, else ``{"enabled": True, "summary": {...}, ...}`` with
``endpoints``, ``peers`` and ``rpc`` rows. Recording is off unless ``DLSLIME_OBS=1`` is
set or ``obs_set_enabled(True)`` is called.
"""

from __future__ import annotations

import json
from typing import Any, Dict

from ._core import _check, _take_string, ffi, lib


def obs_snapshot() -> Dict[str, Any]:
    """Every counter of the process as a dict (see the module docstring)."""
    out = ffi.new("char **")
    _check(lib.dlslime_obs_snapshot(out), "obs_snapshot")
    return json.loads(_take_string(out))


def obs_set_enabled(enabled: bool) -> None:
    """Turns recording on or off for the whole process (overrides ``DLSLIME_OBS``)."""
    lib.dlslime_obs_set_enabled(bool(enabled))


def obs_enabled() -> bool:
    """Whether counters are being recorded."""
    return bool(lib.dlslime_obs_enabled())
