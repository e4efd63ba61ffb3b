"""`toybench report`: every SFT method as an RL initialiser, exactly, over many seeds -> report.md.

Three separate steps (bsuite style): ``run_map`` produces the raw records (``results.csv``: one
row per setting x cell x RL budget x configuration x seed x stage), ``toybench.analysis`` turns them
into tables and verdicts, ``toybench.plots`` into figures, and ``write_markdown`` assembles
``report.md``. ``replot(out_dir)`` redoes the last two from the saved CSV.

Modules: ``config`` (ReportConfig, resolve, the tuning grid), ``runs`` (run_map), ``markdown``
(report.md, headline.md, figures); the statistics are ``toybench.analysis``.

Settings: ``bandit`` (per-prompt softmax, expert data on one correct answer), ``bandit_shared``
(log-linear policy, SFT and RL on disjoint prompts), ``tree`` (reasoning-tree token MDP, expert
data on one strategy) and ``tree_offpolicy`` (the same tree, data rejection-sampled from
pi_beta != pi_base: PEAR's setting).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from toybench.analysis import MapAnalysis, analyse_map
from toybench.config import prepare_out_dir
from toybench.report.config import FAMILIES, SETTINGS, ReportConfig, resolve, tuning_grid
from toybench.report.inputs import read_run
from toybench.report.markdown import headline_markdown, write_markdown
from toybench.report.runs import concat_scenarios, make_scenario, map_cells, run_map
from toybench.theorems import run_theorems, theorems_markdown

__all__ = [
    "ReportConfig",
    "run_report",
    "replot",
    "run_map",
    "resolve",
    "analyse_map",
    "SETTINGS",
    "FAMILIES",
    "make_scenario",
    "tuning_grid",
    "MapAnalysis",
    "concat_scenarios",
    "map_cells",
    "headline_markdown",
    "write_markdown",
]


# ----------------------------------------------------------------------------- entry points
def _theorems_section(cfg: ReportConfig) -> str:
    return theorems_markdown(run_theorems(cfg.theorems), "theorems")


def run_report(cfg: ReportConfig) -> Path:
    """Run theorems (unless skipped), the comparisons and (scale='transformer') the tiny transformer.

    Writes report.md, results.csv, config.json and PNG figures to ``cfg.out``; returns report.md's path.
    """
    cfg = resolve(cfg)
    out = prepare_out_dir(cfg.out, "out")  # before any computation: a bad --out fails at once
    # One thread: the tensors are small, and extra OpenMP threads slow it ~10x on busy cores (measured).
    torch.set_num_threads(1)
    timing, extra = {}, {}
    resolved = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))  # paths as strings
    (out / "config.json").write_text(json.dumps(resolved, indent=2))
    if not cfg.skip_theorems:
        t0 = time.perf_counter()
        extra["theorems"] = _theorems_section(cfg)
        timing["theorems"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    df, esc = run_map(cfg)
    timing["comparisons"] = time.perf_counter() - t0
    df.to_csv(out / "results.csv", index=False, float_format="%.6g")
    esc.to_csv(out / "escape.csv", index=False, float_format="%.6g")
    if cfg.scale == "transformer":
        from toybench.tiny.scale import run_transformer_section

        t0 = time.perf_counter()
        extra["transformer"] = run_transformer_section(out, cfg.quick, cfg.tiny.seeds, cfg=cfg.tiny)[0]
        timing["transformer"] = time.perf_counter() - t0
    for key, text in extra.items():  # kept so that replot can rebuild report.md without re-running
        (out / f"section_{key}.md").write_text(text)
    resolved["timing"] = timing
    (out / "config.json").write_text(json.dumps(resolved, indent=2))
    replot(out)  # the report is a function of the saved records only, so replot gives the same file
    path = out / "report.md"
    print(f"report: {path}  ({', '.join(f'{k}: {v:.1f} s' for k, v in timing.items())})")
    return path


def replot(out_dir: Path) -> None:
    """Rebuild the figures and report.md of a finished run from results.csv and config.json."""
    out = Path(out_dir)
    df, cfg, esc, extra = read_run(out)  # every file checked: a corrupt one is a ValueError naming it
    try:
        write_markdown(df, cfg, out, extra, esc)
    except KeyError as err:  # a column/key this version reads that the files lack
        raise ValueError(f"{out}: results.csv/config.json lack {err} (written by another version?)") from err
