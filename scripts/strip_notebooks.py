"""Strip outputs, execution counts and volatile metadata from Jupyter notebooks (the repo keeps them clean).

Usage:
    python scripts/strip_notebooks.py                 # strip every notebooks/*.ipynb in place
    python scripts/strip_notebooks.py --check a.ipynb # exit 1 and list the files that are not stripped

Only ``nbformat`` is needed. Cell sources and ids are kept; what a run adds is removed: code-cell
``outputs`` and ``execution_count``, and the ``execution`` / ``collapsed`` / ``scrolled`` cell
metadata, plus the kernel's ``language_info`` version details in the notebook metadata.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")
NB_VERSION = 4


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Return ``nb`` with outputs, execution counts and volatile metadata removed (in place)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
    nb.metadata.pop("widgets", None)
    nb.metadata.pop("language_info", None)
    return nb


def is_stripped(nb: nbformat.NotebookNode) -> bool:
    """True iff no code cell holds outputs or an execution count and no volatile metadata is left."""
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            return False
        if any(key in cell.metadata for key in VOLATILE_CELL_METADATA):
            return False
    return "widgets" not in nb.metadata and "language_info" not in nb.metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if any is not stripped")
    args = parser.parse_args(argv)
    paths = args.paths or sorted((ROOT / "notebooks").glob("*.ipynb"))
    dirty = []
    for path in paths:
        nb = nbformat.read(path, as_version=NB_VERSION)
        if is_stripped(nb):
            continue
        dirty.append(path)
        if not args.check:
            nbformat.write(strip(nb), path)
    verb = "not stripped" if args.check else "stripped"
    for path in dirty:
        print(f"{verb}: {path}")
    return 1 if (args.check and dirty) else 0


if __name__ == "__main__":
    sys.exit(main())
