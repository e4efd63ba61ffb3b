"""Matplotlib figure of the report outside the phase diagrams (``toybench.report.phase``): escape times.

Inputs are the results DataFrame (see ``toybench.analysis``); error bars and bands are 95%
Student-t intervals over seeds (``analysis.ci95``). No computation beyond means and CIs.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd  # noqa: E402

__all__ = ["plot_escape"]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_escape(st: pd.DataFrame, out: Path, threshold: float, metric: str = "J") -> Path:
    """(e) steps to reach the threshold against the metric at the start of RL (censored at budget + 1).

    ``st``: escape frame, per prompt (``pipeline.escape_frame``) or per seed
    (``analysis.steps_to_threshold``).
    """
    settings = list(st["setting"].unique())
    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 4), squeeze=False)
    for ax, s in zip(axes[0], settings):
        g = st[st["setting"] == s]
        y = g["steps"].fillna(g["budget"] + 1)
        g = g.assign(reached=g["reached"].astype(bool))
        ax.scatter(g["initial"][g["reached"]], y[g["reached"]], s=10, alpha=0.6, label="reached")
        ax.scatter(
            g["initial"][~g["reached"]], y[~g["reached"]], s=14, marker="x", label="never (budget + 1)"
        )
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_xlabel(f"{metric} at the start of RL (initial mass on correct answers)")
        ax.set_ylabel(f"RL steps to {metric} >= {threshold:g}")
        ax.set_title(s)
        ax.legend(fontsize=8)
    return _save(fig, out / "fig_e_escape.png")
