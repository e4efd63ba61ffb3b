"""Comparisons of a ``results.csv`` frame beside the map: (d) PEAR levels vs SFT on off-policy data, (e) RL
steps to a threshold vs the initial mass on correct answers (theorem T5)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from toybench.analysis.stats import _diff_text, _sig, ci95, fmt_ci, paired, stage_end


@dataclass
class Comparison:
    """One comparison: a title, a table, a verdict paragraph, and whether the claim reproduced."""

    key: str
    title: str
    table: pd.DataFrame
    paragraph: str
    reproduces: bool | None
    extra: dict = field(default_factory=dict)
    verdict: str = ""
    """Short verdict for the summary list; defaults to reproduces / does not reproduce."""

    def __post_init__(self):
        if not self.verdict:
            self.verdict = "reproduces" if self.reproduces else "does not reproduce"


# ----------------------------------------------------------------------------- (d)
def compare_pear(df: pd.DataFrame, setting: str, metrics: tuple[str, ...] = ("J", "pass@4")) -> Comparison:
    """(d) PEAR (token, block, sequence) minus SFT, after SFT and after RL, paired by seed."""
    d = df[df["setting"] == setting]
    sft, rl = stage_end(d, "sft"), stage_end(d, "rl")
    levels = [m for m in d["method"].unique() if m.startswith("pear_")]
    rows, reps, parts = [], [], []
    for lvl in levels:
        row = {"method": lvl}
        for m in metrics:
            row[f"Δ{m} after SFT"] = fmt_ci(*paired(sft, m, lvl, "sft")[:2])
            row[f"Δ{m} after RL"] = fmt_ci(*paired(rl, m, lvl, "sft")[:2])
        rows.append(row)
        dk = paired(rl, metrics[-1], lvl, "sft")
        reps.append(_sig(*dk[:2]) > 0)
        parts.append(f"{lvl}: post-RL {metrics[-1]} minus SFT {_diff_text(*dk)}.")
    t = pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame()
    rep = bool(reps) and any(reps)
    para = (
        f"**Claim (PEAR improves post-RL pass@k over SFT on off-policy data) "
        f"{'reproduces' if rep else 'does not reproduce'} in `{setting}`** "
        f"({sum(reps)} of {len(reps)} levels significantly better). " + " ".join(parts)
    )
    return Comparison("d", f"(d) PEAR vs SFT on data from pi_beta: {setting}", t, para, rep)


# ----------------------------------------------------------------------------- (e)
def steps_to_threshold(df: pd.DataFrame, threshold: float, metric: str = "J") -> pd.DataFrame:
    """Per (setting, method, seed): initial RL metric and first RL step reaching ``threshold``.

    Runs that never reach it get ``steps = NaN`` and ``reached = False``.
    """
    rl = df[df["stage"] == "rl"].sort_values("step")
    rows = []
    for (s, m, seed), g in rl.groupby(["setting", "method", "seed"]):
        hit = g.loc[g[metric] >= threshold, "step"]
        rows.append(
            dict(
                setting=s,
                method=m,
                seed=seed,
                initial=float(g[metric].iloc[0]),
                steps=float(hit.iloc[0]) if len(hit) else np.nan,
                reached=bool(len(hit)),
                budget=int(g["step"].max()),
            )
        )
    return pd.DataFrame(rows)


ESCAPE_BINS = (0.0, 0.01, 0.1, 0.5, 1.0 + 1e-9)


def compare_escape(esc: pd.DataFrame, threshold: float, metric: str = "J") -> Comparison:
    """(e) Spearman correlation of RL steps-to-threshold with the initial mass on correct answers.

    ``esc`` has one row per run unit (per prompt from ``pipeline.escape_frame``, or per seed from
    ``steps_to_threshold``) with columns setting, initial, steps, reached, budget. Censored
    units (never reaching the threshold) count as budget + 1 steps, which keeps their rank
    (slowest) without inventing a value. Units are binned by initial mass on a log-like grid.
    """
    rows, parts, reps = [], [], []
    for s, g in esc.groupby("setting", sort=False):
        y = g["steps"].fillna(g["budget"] + 1)
        if g["initial"].nunique() < 2 or y.nunique() < 2:
            rho, p = float("nan"), float("nan")
        else:
            rho, p = stats.spearmanr(g["initial"], y)
        bins = pd.cut(g["initial"], ESCAPE_BINS, right=False)
        for lab, gg in g.groupby(bins, observed=True):
            ys = gg["steps"].fillna(gg["budget"] + 1)
            rows.append(
                dict(
                    setting=s,
                    initial_bin=f"[{lab.left:g}, {min(lab.right, 1):g})",
                    units=len(gg),
                    initial=fmt_ci(*ci95(gg["initial"])),
                    steps=fmt_ci(*ci95(ys), digits=1),
                    reached=f"{gg['reached'].mean():.0%}",
                )
            )
        ok = bool(rho < 0 and p < 0.05)
        reps.append(ok)
        parts.append(
            f"`{s}`: Spearman rho = {rho:+.2f} (p = {p:.1g}, {len(g)} units), "
            f"{(~g['reached'].astype(bool)).mean():.0%} never reach {metric} >= {threshold:g}."
        )
    rep = bool(reps) and all(reps)
    unit = "prompt" if "prompt" in esc.columns else "seed"
    para = (
        f"**Claim (T5, Mei et al.: less initial mass on correct answers -> longer RL plateau) "
        f"{'reproduces' if rep else 'does not reproduce in every setting'}.** Per {unit}, across methods and "
        f"seeds, RL steps to reach {metric} >= {threshold:g} against {metric} at the start of RL: "
        + " ".join(parts)
    )
    t = pd.DataFrame(rows).set_index(["setting", "initial_bin"])
    return Comparison("e", "(e) RL steps to threshold vs initial mass on correct answers", t, para, rep)
