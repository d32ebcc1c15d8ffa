"""Exceptions: one class per C status code, raised with the library's last-error message.

The classes are made from the header's ``enum dlslime_status`` (through the cffi
declarations, themselves generated from ``include/dlslime.h``), so the numbers and the
names have one source, the Rust ``Status`` enum the header is generated from. Every
``DLSLIME_STATUS_<NAME>`` except ``OK`` and ``PENDING`` gets a class:

* named ``<Name>`` in CamelCase, except the names in ``_RENAMED`` (kept from the first
  release, where ``IOError`` or a bare ``Internal`` would have been confusing);
* derived from the group of its hundred (``_GROUPS``: 1xx caller errors under
  ``InvalidArgument``, 2xx ``StateError``, 4xx ``OperationError``, 5xx
  ``SystemFailure``), plus the builtin exception in ``_ALSO_A`` where one fits;
* with ``status`` set to its number, and the library's own message for it
  (``dlslime_status_str``) as its docstring.
"""

from __future__ import annotations

import builtins
import sys
from typing import Dict, Type

from ._lib import enum_values, ffi, lib


class DLSlimeError(RuntimeError):
    """Base of every dlslime error. ``status`` is the C ``dlslime_status_t`` number,
    ``message`` the library's last-error message for the failed call.

    A subclass of ``RuntimeError``, which is what the original DLSlime raised, so code
    that catches ``RuntimeError`` keeps working.
    """

    status: int = -1

    def __init__(self, message: str = "", status: int | None = None):
        if status is not None:
            self.status = status
        self.message = message
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.message, self.status))


class StateError(DLSlimeError):
    """The endpoint is in the wrong state for the call (2xx)."""


class OperationError(DLSlimeError):
    """An operation failed (4xx); raised by ``Future.wait()`` / ``wait_for()``."""


class SystemFailure(DLSlimeError):
    """A system-level failure (5xx)."""


# Python names that are not the CamelCase of the C name.
_RENAMED = {"IO": "IOFailure", "INTERNAL": "InternalError", "PROTOCOL": "ProtocolError"}
# Builtin exceptions a status is also an instance of, for code that catches those.
_ALSO_A = {
    "INVALID_ARGUMENT": builtins.ValueError,
    "TIMEOUT": builtins.TimeoutError,
    "PEER_DISCONNECTED": builtins.ConnectionError,
    "IO": builtins.OSError,
}
# The base of each hundred: a class, or the C name whose class is the base (1xx caller
# errors are all invalid arguments). Statuses of another hundred derive DLSlimeError.
_GROUPS = {1: "INVALID_ARGUMENT", 2: StateError, 4: OperationError, 5: SystemFailure}
# Not errors.
_NOT_ERRORS = ("OK", "PENDING")

_STATUS: Dict[str, int] = enum_values("dlslime_status")
"""``{C name without DLSLIME_STATUS_: number}`` of every status, from the header."""


def _class_name(c_name: str) -> str:
    return _RENAMED.get(c_name) or "".join(w.capitalize() for w in c_name.split("_"))


def _make_classes() -> Dict[int, Type[DLSlimeError]]:
    by_status: Dict[int, Type[DLSlimeError]] = {}
    by_c_name: Dict[str, Type[DLSlimeError]] = {}
    # Group bases named by a status come first, so their group can derive from them.
    order = sorted(_STATUS, key=lambda n: (n not in _GROUPS.values(), _STATUS[n]))
    module = sys.modules[__name__]
    for c_name in order:
        if c_name in _NOT_ERRORS:
            continue
        number = _STATUS[c_name]
        group = _GROUPS.get(number // 100, DLSlimeError)
        if isinstance(group, str):  # a status whose class is its group's base
            base = DLSlimeError if group == c_name else by_c_name[group]
        else:
            base = group
        bases = (base,) + ((_ALSO_A[c_name],) if c_name in _ALSO_A else ())
        name = _class_name(c_name)
        message = ffi.string(lib.dlslime_status_str(number)).decode()
        cls = type(name, bases, {
            "__doc__": f"{message[:1].upper()}{message[1:]} (status {number}, DLSLIME_STATUS_{c_name}).",
            "__module__": __name__,
            "__qualname__": name,
            "status": number,
        })
        setattr(module, name, cls)
        by_status[number] = cls
        by_c_name[c_name] = cls
    return by_status


_BY_STATUS = _make_classes()
# The group base of each hundred, as classes, for numbers this header does not know.
_GROUP_CLASSES: Dict[int, Type[DLSlimeError]] = {
    h: (_BY_STATUS[_STATUS[g]] if isinstance(g, str) else g) for h, g in _GROUPS.items()
}

__all__ = ["DLSlimeError", "StateError", "OperationError", "SystemFailure", "error_class"] + [
    c.__name__ for c in _BY_STATUS.values()
]


def error_class(status: int) -> Type[DLSlimeError]:
    """The exception class of a status number (for a number this library does not
    know: the base of its hundred, else ``DLSlimeError``)."""
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return cls
    return _GROUP_CLASSES.get(status // 100, DLSlimeError)
