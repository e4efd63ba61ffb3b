"""Build the teaching notebooks from their reviewable sources in ``notebooks/src/*.py``.

Each source is a plain Python file in the "percent" format (as jupytext writes it, without needing
jupytext): a line ``# %%`` starts a code cell, ``# %% [markdown]`` a Markdown cell whose lines are
comments (the leading ``# `` is removed). The output ``notebooks/<name>.ipynb`` is written output-free
with deterministic cell ids, so regenerating gives byte-identical files (``--check`` verifies it).

Usage:
    python scripts/make_notebooks.py            # (re)write notebooks/*.ipynb
    python scripts/make_notebooks.py --check    # exit 1 if a notebook differs from its source
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "notebooks" / "src"
OUT = ROOT / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def parse_percent(text: str) -> list[tuple[str, str]]:
    """Split percent-format source into ``[(kind, source)]`` with kind ``"code"`` or ``"markdown"``.

    Lines before the first ``# %%`` (the file's own header comment) are dropped.
    """
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            kind, lines = cells[-1]
            if kind == "markdown":
                if line.strip() and not line.startswith("#"):
                    raise ValueError(f"markdown line does not start with '#': {line!r}")
                line = line[2:] if line.startswith("# ") else line[1:]
            lines.append(line)
    out = []
    for kind, lines in cells:
        source = "\n".join(lines).strip("\n")
        if source:
            out.append((kind, source))
    return out


def build(src: Path) -> nbformat.NotebookNode:
    """The notebook of one percent-format source file, output-free, with ids ``c000``, ``c001``, ...."""
    cells = []
    for i, (kind, source) in enumerate(parse_percent(src.read_text())):
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        cell.id = f"c{i:03d}"
        cells.append(cell)
    nb = new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC})
    nbformat.validate(nb)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 on any difference")
    parser.add_argument("--src", type=Path, default=SRC, help="folder of percent-format sources")
    parser.add_argument("--out", type=Path, default=OUT, help="folder to write the .ipynb files to")
    args = parser.parse_args(argv)
    sources = sorted(args.src.glob("[0-9][0-9]_*.py"))
    if not sources:
        raise ValueError(f"src holds no NN_name.py sources: {args.src}")
    stale = []
    for src in sources:
        text = nbformat.writes(build(src)) + "\n"
        target = args.out / f"{src.stem}.ipynb"
        if target.exists() and target.read_text() == text:
            continue
        stale.append(target)
        if not args.check:
            target.write_text(text)
    for target in stale:
        print(f"{'out of date' if args.check else 'wrote'}: {target}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
