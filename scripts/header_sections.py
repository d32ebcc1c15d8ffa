#!/usr/bin/env python3
"""Arranges cbindgen's output into include/dlslime.h: one section per C object.

cbindgen (0.29) emits every enum first, then every struct and typedef, then every
function, so an object's types and its functions end up hundreds of lines apart. This
step (run by scripts/gen-header.sh, after cbindgen, before the drift check) regroups the
declarations by the `src/ffi/*.rs` module that defines them, in the order of SECTIONS,
each under a banner made of that module's first doc paragraph, and fills two generated
tables into the header comment of cbindgen.toml:

  @CONTENTS@  the sections in order, with the types each declares;
  @HANDLES@   every handle (checked to have its `_free` function): its ownership model
              (from the `Castable` impl in src/ffi: Box = owned, Arc =
              reference-counted) and the first clause of its
              "Thread safety:" documentation.

It changes no declaration, only their order, and checks that every declaration still
comes after everything it names, so the header compiles as C and as C++.

usage: header_sections.py RAW_HEADER [REPO_ROOT]  (writes the header to stdout)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# (module of src/ffi, section title), in header order: each section only names types of
# itself or of sections above it (checked below).
SECTIONS = [
    ("status.rs", "Status codes, errors and strings"),
    ("version.rs", "Version"),
    ("memory.rs", "Memory pool"),
    ("device.rs", "CUDA devices"),
    ("future.rs", "Future"),
    ("endpoint.rs", "Endpoint"),
    ("tcp.rs", "TCP transport"),
    ("shm.rs", "Shared-memory transport"),
    ("rdma.rs", "RDMA transport"),
    ("peer.rs", "PeerAgent"),
    ("rpc.rs", "SlimeRPC"),
    ("ring.rs", "Slot ring"),
    ("obs.rs", "Observability"),
]
# Declarations emitted from outside src/ffi (renamed in cbindgen.toml [export.rename]).
ELSEWHERE = {
    "dlslime_status": "status.rs",  # the Rust `Status` of src/error.rs
    # the counter snapshots of src/ring
    "dlslime_ring_metrics_t": "ring.rs",
    "dlslime_ring_client_counters_t": "ring.rs",
    "dlslime_ring_server_counters_t": "ring.rs",
}

EXTERN_OPEN = '#ifdef __cplusplus\nextern "C" {\n#endif // __cplusplus'
EXTERN_CLOSE = '#ifdef __cplusplus\n}  // extern "C"\n#endif  // __cplusplus'
GUARD_END = "#endif  /* DLSLIME_H */"
WIDTH = 90


class HeaderError(Exception):
    pass


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def declared_name(chunk: str) -> tuple[str, str] | None:
    """(kind, name) of a cbindgen declaration chunk; None for anything else."""
    code = strip_comments(chunk).strip()
    patterns = [
        ("enum", r"^enum (\w+)"),
        ("opaque", r"^typedef struct (\w+) \1;$"),
        ("struct", r"^typedef struct \{.*\} (\w+);$"),
        ("typedef", r"^typedef [^(]*\(\*(\w+)\)\("),
        ("typedef", r"^typedef [\w\s\*]+?\b(\w+);$"),
    ]
    for kind, pat in patterns:
        m = re.match(pat, code, flags=re.S)
        if m:
            return kind, m.group(1)
    m = re.match(r"^[\w\s\*]*?\b(dlslime_\w+)\(", code, flags=re.S)
    if m:
        return "function", m.group(1)
    return None


def ffi_definitions(root: Path) -> dict[str, str]:
    """Name of every C item of src/ffi -> the module file that defines it."""
    where = dict(ELSEWHERE)
    item = re.compile(r'^pub (?:extern "C" fn|struct|enum|type) (\w+)', re.M)
    for path in sorted((root / "src" / "ffi").glob("*.rs")):
        for name in item.findall(path.read_text(encoding="utf-8")):
            where.setdefault(name, path.name)
    return where


def ownership(root: Path) -> dict[str, str]:
    """Handle name -> "owned" / "reference-counted", from the `Castable` impls (written
    out, or made by `castable!(name => Box<T>)` / `castable!(name => Arc<T>)`)."""
    impl = re.compile(r"impl Castable for (\w+) \{\s*type Ownership = Ownership(\w+);", re.S)
    macro = re.compile(r"castable!\((\w+) => (Box|Arc)<")
    kinds = {"Box": "owned", "Arc": "reference-counted"}
    out = {}
    for path in sorted((root / "src" / "ffi").glob("*.rs")):
        text = path.read_text(encoding="utf-8")
        for name, model in impl.findall(text) + macro.findall(text):
            out[name] = kinds[model]
    return out


def module_doc(path: Path) -> list[str]:
    """The first paragraph of a module's `//!` documentation, as lines."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("//!"):
            break
        text = line[3:].strip()
        if not text:
            if lines:
                break
            continue
        lines.append(text)
    if not lines:
        raise HeaderError(f"{path} has no //! module documentation for its header section")
    return lines


def wrap(words: list[str], first: str, indent: str, width: int = WIDTH) -> list[str]:
    out, line = [], first
    for w in words:
        if len(line) + len(w) + 1 > width and line.strip(" *") and line != first:
            out.append(line.rstrip())
            line = indent
        line += w + " "
    out.append(line.rstrip())
    return out


def doc_of(chunk: str) -> str:
    m = re.match(r"\s*/\*\*(.*?)\*/", chunk, flags=re.S)
    if not m:
        return ""
    return " ".join(l.strip().lstrip("*").strip() for l in m.group(1).splitlines())


def thread_safety(name: str, chunk: str) -> str:
    m = re.search(r"Thread safety: (.*?)(?:[.;(]|$)", doc_of(chunk))
    if not m:
        raise HeaderError(f"the documentation of {name} says nothing about 'Thread safety:'")
    return m.group(1).strip().rstrip(",")


def arrange(raw: str, root: Path) -> str:
    if EXTERN_OPEN not in raw or EXTERN_CLOSE not in raw:
        raise HeaderError("cbindgen output without the expected extern \"C\" block")
    head, rest = raw.split(EXTERN_OPEN, 1)
    body, tail = rest.split(EXTERN_CLOSE, 1)
    if tail.strip() != GUARD_END:
        raise HeaderError(f"unexpected text after the functions: {tail.strip()[:80]!r}")

    prefix: list[str] = []
    decls: list[tuple[str, str, str]] = []  # (kind, name, chunk), cbindgen's order
    for chunk in [c.strip("\n") for c in (head + "\n\n" + body).split("\n\n") if c.strip()]:
        d = declared_name(chunk)
        if d is None:
            if decls:
                raise HeaderError(f"cannot place this cbindgen output: {chunk[:120]!r}")
            prefix.append(chunk)
        else:
            decls.append((d[0], d[1], chunk))

    where = ffi_definitions(root)
    known = {name for _, name, _ in decls}
    by_section: dict[str, list[tuple[str, str, str]]] = {f: [] for f, _ in SECTIONS}
    for kind, name, chunk in decls:
        f = where.get(name)
        if f not in by_section:
            raise HeaderError(f"{name} is defined in {f or 'no src/ffi module'}, which has no section in "
                              "scripts/header_sections.py SECTIONS")
        by_section[f].append((kind, name, chunk))

    # Types before functions within a section; otherwise cbindgen's order.
    ordered = []
    for f, _ in SECTIONS:
        items = by_section[f]
        ordered += [(f, d) for d in items if d[0] != "function"] + [(f, d) for d in items if d[0] == "function"]

    # Every name a declaration uses is declared before it.
    seen: set[str] = set()
    for _, (kind, name, chunk) in ordered:
        used = set(re.findall(r"\b(dlslime_\w+)\b", strip_comments(chunk))) & known
        late = sorted(used - seen - {name})
        if late:
            raise HeaderError(f"{name} uses {', '.join(late)}, declared in a later section: reorder SECTIONS")
        seen.add(name)

    # The tables of the header comment.
    contents = [" * Contents", " * --------"]
    for i, (f, title) in enumerate(SECTIONS, 1):
        names = [n for k, n, _ in by_section[f] if k != "function"]
        # the `_t` names, and enums that have none (flag sets)
        types = [n for n in names if n.endswith("_t") or n + "_t" not in names]
        first = f" *   {i}. {title:<34}"
        contents += wrap([t + "," for t in types[:-1]] + types[-1:], first, " *" + " " * (len(first) - 2))
    kinds = ownership(root)
    chunks = {name: chunk for _, name, chunk in decls}
    handles = [" *   handle (freed by its _free)  kind               threads"]
    for f, _ in SECTIONS:
        for k, name, chunk in by_section[f]:
            if k != "opaque":
                continue
            if name not in kinds:
                raise HeaderError(f"{name} is opaque but has no Castable impl in src/ffi")
            free = name[: -len("_t")] + "_free"
            if free not in known:
                raise HeaderError(f"{name} has no {free}")
            handles.append(f" *   {name:<28} {kinds[name]:<18} {thread_safety(name, chunk)}")

    header_comment = prefix[0]
    for mark, table in (("@CONTENTS@", contents), ("@HANDLES@", handles)):
        line = f" * {mark}"
        if header_comment.count(line) != 1:
            raise HeaderError(f"the cbindgen.toml header needs exactly one line '{line}'")
        header_comment = header_comment.replace(line, "\n".join(l.rstrip() for l in table))
    prefix[0] = header_comment

    out = prefix + [EXTERN_OPEN]
    current = None
    for f, (_, _, chunk) in ordered:
        if f != current:
            current = f
            i = [s for s, _ in SECTIONS].index(f) + 1
            title = dict(SECTIONS)[f]
            banner = ["/* " + "=" * (WIDTH - 3), f" * {i}. {title}", " *"]
            banner += [" * " + l for l in module_doc(root / "src" / "ffi" / f)]
            banner.append(" * " + "=" * (WIDTH - 6) + " */")
            out.append("\n".join(banner))
        out.append(chunk)
    out += [EXTERN_CLOSE, GUARD_END]
    return "\n\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    root = Path(argv[2]) if len(argv) == 3 else Path(__file__).resolve().parent.parent
    try:
        sys.stdout.write(arrange(Path(argv[1]).read_text(encoding="utf-8"), root))
    except HeaderError as e:
        print(f"header_sections: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
