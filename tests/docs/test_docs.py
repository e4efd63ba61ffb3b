"""The docs name code that exists: every dotted `toybench.` and `theory.` reference resolves."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "methods.md"]
REF = re.compile(r"`((?:toybench|theory)(?:\.[A-Za-z_][A-Za-z_0-9]*)+)")


def _resolves(ref: str) -> bool:
    parts = ref.split(".")
    for i in range(len(parts), 0, -1):  # the longest importable module prefix, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_code_reference_in_the_docs_resolves(doc):
    refs = sorted(set(REF.findall(doc.read_text())))
    assert refs, f"no code references found in {doc.name}"
    missing = [r for r in refs if not _resolves(r)]
    assert not missing, f"{doc.name} names code that does not exist: {missing}"
