"""Turns ``include/dlslime.h`` into a declaration string that cffi's ``cdef`` accepts.

Used at build time (``setup.py`` generates ``dlslime/_ffi.py`` from it), so the Python
declarations always come from the generated C header, never from a hand-kept copy.

cffi's parser understands plain C declarations and ``#define NAME <integer>``, nothing
else of the preprocessor. This module therefore:

* removes comments;
* evaluates ``#ifdef``/``#ifndef``/``#else``/``#endif`` (``__cplusplus`` is undefined,
  other names are defined when the header defined them earlier), dropping the C++-only
  parts (``extern "C" {``, enum base types);
* keeps ``#define NAME <integer literal>`` (cffi exposes them as ``lib.NAME``) and drops
  every other ``#define`` and every ``#include``;
* refuses anything it does not understand (``#if``, ``#elif``, ``#undef``, ...), so a
  header change that needs new handling fails the build loudly instead of silently.

It has no dependencies and no imports from the package.
"""

from __future__ import annotations

import re

_INT_DEFINE = re.compile(r"^#\s*define\s+([A-Za-z_][A-Za-z0-9_]*)\s+(\(?-?(?:0[xX][0-9a-fA-F]+|[0-9]+)[uUlL]*\)?)\s*$")
_ANY_DEFINE = re.compile(r"^#\s*define\s+([A-Za-z_][A-Za-z0-9_]*)")
_COND = re.compile(r"^#\s*(ifdef|ifndef)\s+([A-Za-z_][A-Za-z0-9_]*)\s*$")


class HeaderError(ValueError):
    """The header uses a preprocessor construct this converter does not handle."""


def strip_comments(text: str) -> str:
    """Removes ``/* */`` and ``//`` comments, keeping string literals and line breaks."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise HeaderError("unterminated /* comment")
            out.append("\n" * text.count("\n", i, j))  # keep line numbers
            i = j + 2
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def header_to_cdef(text: str) -> str:
    """Returns the cffi declarations of a C header (see the module docstring)."""
    defined: set[str] = set()
    stack: list[bool] = []  # whether each open conditional's current branch is active
    lines_out: list[str] = []
    # Join backslash-continued lines first.
    text = strip_comments(text).replace("\\\n", " ")
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        active = all(stack)
        if line.startswith("#"):
            m = _COND.match(line)
            if m:
                kind, name = m.groups()
                is_def = name in defined  # __cplusplus is never defined
                stack.append(is_def if kind == "ifdef" else not is_def)
                continue
            word = line[1:].strip().split(None, 1)[0] if line[1:].strip() else ""
            if word == "else":
                if not stack:
                    raise HeaderError(f"line {lineno}: #else without #if")
                stack[-1] = not stack[-1]
                continue
            if word == "endif":
                if not stack:
                    raise HeaderError(f"line {lineno}: #endif without #if")
                stack.pop()
                continue
            if not active:
                if word in ("if", "elif"):
                    raise HeaderError(f"line {lineno}: unsupported directive {line!r}")
                continue
            if word == "include" or word == "pragma":
                continue
            if word == "define":
                m = _INT_DEFINE.match(line)
                name = _ANY_DEFINE.match(line)
                if name is None:
                    raise HeaderError(f"line {lineno}: malformed {line!r}")
                defined.add(name.group(1))
                if m:
                    value = m.group(2).strip("()").rstrip("uUlL")
                    lines_out.append(f"#define {m.group(1)} {value}")
                continue
            raise HeaderError(f"line {lineno}: unsupported directive {line!r}")
        if active and line:
            lines_out.append(raw.rstrip())
    if stack:
        raise HeaderError("unterminated #ifdef/#ifndef")
    return "\n".join(lines_out) + "\n"


if __name__ == "__main__":  # python _cdef.py include/dlslime.h
    import sys

    with open(sys.argv[1], encoding="utf-8") as f:
        sys.stdout.write(header_to_cdef(f.read()))
