"""Matplotlib figures of the report (the map of each setting, escape times); each writes one PNG.

Inputs are the results DataFrame (see ``toybench.analysis``); error bars and bands are 95%
Student-t intervals over seeds (``analysis.ci95``). No computation beyond means and CIs.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd  # noqa: E402

__all__ = ["plot_escape", "plot_map"]


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


def plot_map(best: pd.DataFrame, effects: pd.DataFrame, setting: str, out: Path) -> Path:
    """The map of one setting: per RL budget a grid (teacher error x base mass) coloured by the best
    family, hatched where no family is significantly best; below it, a forest of every family's post-RL
    pass@1 effect vs sft and vs none per cell with 95% CIs."""
    budgets = sorted(best["rl_steps"].unique())
    fams = sorted(set(effects["family"]) | set(best["best"]))
    colors = {f: plt.cm.tab10(i % 10) for i, f in enumerate(fams)}
    e = effects[effects["metric"] == "J"]
    cells = (
        e[["wrong_demo_frac", "base_correct_mass", "rl_steps"]]
        .drop_duplicates()
        .sort_values(["rl_steps", "base_correct_mass", "wrong_demo_frac"])
    )
    fig = plt.figure(figsize=(max(5.0 * len(budgets), 9.0), 4.0 + 0.32 * len(cells) * 2))
    gs = fig.add_gridspec(2, len(budgets), height_ratios=[3.2, 0.32 * len(cells) * 2 + 0.5])
    for j, b in enumerate(budgets):
        ax = fig.add_subplot(gs[0, j])
        d = best[best["rl_steps"] == b]
        ws, ms = sorted(d["wrong_demo_frac"].unique()), sorted(d["base_correct_mass"].unique())
        for r in d.itertuples():
            x, y = ws.index(r.wrong_demo_frac), ms.index(r.base_correct_mass)
            ax.add_patch(
                plt.Rectangle(
                    (x - 0.5, y - 0.5),
                    1,
                    1,
                    color=colors[r.best],
                    alpha=0.85 if r.significant else 0.35,
                    hatch=None if r.significant else "//",
                    ec="k",
                )
            )
            label = f"{r.best}\n{r.best_J:.3f}" + ("" if r.significant else "\n(not sig. best)")
            ax.text(x, y, label, ha="center", va="center", fontsize=8)
        ax.set_xlim(-0.5, len(ws) - 0.5)
        ax.set_ylim(-0.5, len(ms) - 0.5)
        ax.set_xticks(range(len(ws)), [f"{w:g}" for w in ws])
        ax.set_yticks(range(len(ms)), [f"{m:g}" for m in ms])
        ax.set_xlabel("teacher error (wrong_demo_frac)")
        ax.set_ylabel("base mass on correct answers")
        ax.set_title(f"{setting}: best post-RL pass@1, RL {b} steps", fontsize=9)
    ax = fig.add_subplot(gs[1, :])
    others = [f for f in fams if f not in ("sft", "none")] + ["sft"]
    y = 0
    labels = []
    for c in cells.itertuples():
        for ref, mk in (("sft", "o"), ("none", "s")):
            g = e[
                (e["wrong_demo_frac"] == c.wrong_demo_frac)
                & (e["base_correct_mass"] == c.base_correct_mass)
                & (e["rl_steps"] == c.rl_steps)
                & (e["ref"] == ref)
            ]
            for i, f in enumerate(others):
                h = g[g["family"] == f]
                if len(h):
                    ax.errorbar(
                        h["diff"],
                        y + 0.08 * (i - len(others) / 2),
                        xerr=h["ci"],
                        fmt=mk,
                        color=colors[f],
                        ms=4,
                        capsize=2,
                        label=f if (y == 0 and ref == "sft") else None,
                    )
            labels.append(
                f"err {c.wrong_demo_frac:g}, mass {c.base_correct_mass:g}, RL {c.rl_steps:g}: vs {ref}"
            )
            y += 1
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("post-RL pass@1 minus reference (paired by seed, 95% CI; o: vs sft, s: vs none)")
    ax.legend(fontsize=7, ncol=min(len(others), 7), loc="lower right")
    return _save(fig, out / f"map_{setting}.png")
