"""Exploration as a predictor: how well the policy's exploration at the end of SFT (pre-RL pass@k,
coverage, entropy) predicts the post-RL result across configurations, under sampled RL and exact PG.

The unit is a configuration in a cell (every family x configuration, each measure the mean over the
test seeds); the rank correlation (Spearman) between a pre-RL measure and the post-RL pass@1 is taken
within each cell, where the environment, teacher and budget are fixed and only the SFT differs, then
averaged over the map's cells with a 95% Student-t interval over cells. Nothing here selects anything.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from toybench.analysis.map_stats import CELL, MAP
from toybench.analysis.stats import ci95

#: pre-RL measures of exploration (those present in the frame are used)
PREDICTORS = ("pass@1", "pass@4", "pass@16", "pass@64", "coverage", "entropy")


def cell_correlations(df: pd.DataFrame, target: str = "J") -> pd.DataFrame:
    """One row per cell (longest RL budget, test seeds) x predictor: Spearman rho across the cell's
    configurations between the predictor at the end of SFT and ``target`` at the end of RL, and the
    number of configurations (NaN where either side is constant)."""
    t = df[(df["split"] == "test") & (df["rl_steps"] == df["rl_steps"].max())]
    preds = [p for p in PREDICTORS if p in t.columns]
    keys = [*CELL, "family", "config_id"]
    pre = t[t["stage"] == "sft"].groupby(keys, sort=False)[preds].mean()
    post = t[t["stage"] == "rl"].groupby(keys, sort=False)[target].mean().rename("_post")
    units = pre.join(post, how="inner").reset_index()
    rows = []
    for cell, g in units.groupby(CELL, sort=False):
        for p in preds:
            x, y = g[p].to_numpy(float), g["_post"].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            x, y = x[ok], y[ok]
            const = len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0
            rho = np.nan if const else float(stats.spearmanr(x, y).statistic)
            rows.append(dict(zip(CELL, cell), predictor=p, rho=rho, configurations=len(x)))
    return pd.DataFrame(rows)


def exploration_table(df: pd.DataFrame, target: str = "J") -> pd.DataFrame:
    """Per map (setting x RL stage) and predictor: the mean within-cell Spearman rho, its 95% t interval
    over cells, and the number of cells with a defined rho."""
    c = cell_correlations(df, target)
    rows = []
    for (*m, p), g in c.groupby([*MAP, "predictor"], sort=False):
        mean, half = ci95(g["rho"])
        rows.append(dict(zip(MAP, m), predictor=p, rho=mean, ci=half, cells=int(g["rho"].notna().sum())))
    return pd.DataFrame(rows)
