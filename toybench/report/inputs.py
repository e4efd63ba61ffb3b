"""The files ``toybench plot`` reads back, checked: a corrupt one is one line naming it (exit 2).

``replot`` rebuilds report.md from ``results.csv``, ``config.json``, ``escape.csv`` (optional) and
``section_*.md``. Each is read here and checked for what the analysis needs (readable, decodable,
the right shape, the core columns / keys, numbers where numbers belong), so that an edited,
truncated or foreign file is a ``ValueError`` naming it (``cannot read <file>: <what>``, the
CLI's one line) instead of a traceback deep inside the statistics. The checks are the core a run
of any version writes; columns that depend on the configuration (``pass@k``...) are not required.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from toybench.analysis.map_stats import CELL

#: Columns of results.csv the analysis always reads, and those of them that must hold numbers.
RESULT_COLUMNS = (*CELL, "family", "method", "config_id", "sft_lr", "rl_lr", "split", "seed", "stage", "J")
RESULT_NUMERIC = (
    "num_generations",
    "wrong_demo_frac",
    "base_correct_mass",
    "rl_steps",
    "config_id",
    "sft_lr",
    "rl_lr",
    "seed",
    "J",
)
#: Top-level keys of config.json that report.md reads.
CONFIG_KEYS = (
    "seeds",
    "val_seeds",
    "lr_grid",
    "knob_lrs",
    "methods",
    "pipeline",
    "headline_k",
    "reward_threshold",
    "wrong_demo_fracs",
    "base_correct_masses",
    "rl_budgets",
    "error_unit",
)
ESCAPE_COLUMNS = (
    "setting",
    "rl_algorithm",
    "num_generations",
    "wrong_demo_frac",
    "base_correct_mass",
    "family",
    "config_id",
    "split",
    "initial",
    "steps",
    "reached",
    "budget",
)
ESCAPE_NUMERIC = ("initial", "steps", "budget")


def _bad(path: Path, what: str) -> ValueError:
    return ValueError(f"cannot read {path}: {what}")


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise _bad(path, f"not UTF-8 text (byte {e.start + 1}: {e.reason})") from None
    except OSError as e:
        raise _bad(path, f"{e.strerror}") from None


def read_csv(path: Path, columns: tuple[str, ...], numeric: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV with at least ``columns``, numbers in ``numeric``; ValueError naming the file otherwise."""
    try:
        df = pd.read_csv(path)
    except UnicodeDecodeError as e:
        raise _bad(path, f"not UTF-8 text (byte {e.start + 1}: {e.reason})") from None
    except (OSError, ValueError) as e:  # pandas' ParserError / EmptyDataError are ValueErrors
        raise _bad(path, f"not a CSV table ({type(e).__name__}: {e})") from None
    with path.open("rb") as f:  # to_csv ends every row with a newline: without it, the file was cut
        f.seek(max(path.stat().st_size - 1, 0))
        if f.read(1) != b"\n":
            raise _bad(path, "the last line is incomplete (a truncated file?)")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"cannot read {path}: missing column(s) {missing}; is it a `toybench report` output?"
        )
    if df.empty:
        raise _bad(path, "no rows")
    for c in numeric:
        if not pd.api.types.is_numeric_dtype(df[c]):
            bad = df[c][pd.to_numeric(df[c], errors="coerce").isna() & df[c].notna()]
            row = int(bad.index[0]) + 2 if len(bad) else "?"  # +1 header, +1 1-based
            raise ValueError(
                f"cannot read {path}: line {row}: column {c!r} must hold numbers, got {bad.iloc[0]!r}"
            )
    return df


def read_config(path: Path) -> dict:
    """config.json: a JSON object with :data:`CONFIG_KEYS`; ValueError naming the file otherwise."""
    try:
        cfg = json.loads(_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(
            f"cannot read {path}: invalid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
        ) from None
    if not isinstance(cfg, dict):
        raise ValueError(
            f"cannot read {path}: expected a JSON object (the resolved config), got {type(cfg).__name__}"
        )
    missing = [k for k in CONFIG_KEYS if k not in cfg]
    if missing:
        raise _bad(path, f"missing key(s) {missing}; is it a `toybench report` config?")
    if not isinstance(cfg["pipeline"], dict):
        raise ValueError(
            f"cannot read {path}: 'pipeline' must be an object, got {type(cfg['pipeline']).__name__}"
        )
    return cfg


def read_run(out: Path) -> tuple[pd.DataFrame, dict, pd.DataFrame | None, dict[str, str]]:
    """``(results, config, escape or None, {section: markdown})`` of a finished report in ``out``."""
    if not (out / "results.csv").exists():
        raise ValueError(f"out_dir {out} has no results.csv (run `toybench report --out {out}` first)")
    df = read_csv(out / "results.csv", RESULT_COLUMNS, RESULT_NUMERIC)
    cfg = read_config(out / "config.json")
    esc = (
        read_csv(out / "escape.csv", ESCAPE_COLUMNS, ESCAPE_NUMERIC)
        if (out / "escape.csv").exists()
        else None
    )
    extra = {p.stem.removeprefix("section_"): _text(p) for p in sorted(out.glob("section_*.md"))}
    return df, cfg, esc, extra


__all__ = ["CONFIG_KEYS", "ESCAPE_COLUMNS", "RESULT_COLUMNS", "read_config", "read_csv", "read_run"]
