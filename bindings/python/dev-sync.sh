#!/bin/sh
# Development shortcut: copy the package's Python files over an installed copy (after
# one `pip install ./bindings/python`), to iterate without rebuilding the library.
set -e
here="$(cd "$(dirname "$0")" && pwd)"
py="${1:-$here/../../target/py-venv/bin/python}"
dest="$("$py" -c 'import dlslime, os; print(os.path.dirname(dlslime.__file__))')"
cp "$here"/dlslime/*.py "$here"/dlslime/*.pyi "$dest"/ 2>/dev/null || cp "$here"/dlslime/*.py "$dest"/
echo "synced into $dest"
