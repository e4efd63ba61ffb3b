"""Matplotlib figures of the report, one function per comparison; each writes a PNG and returns its path.

Inputs are the results DataFrame (see ``toybench.analysis``); error bars and bands are 95%
Student-t intervals over seeds (``analysis.ci95``). No computation beyond means and CIs.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from toybench.analysis import stage_end, summary  # noqa: E402

__all__ = ["plot_ranking", "plot_entropy", "plot_gift", "plot_pear", "plot_escape", "plot_curves", "plot_map"]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ranking(df: pd.DataFrame, settings: list[str], out: Path, metric: str = "J") -> Path:
    """(a) metric after SFT and after RL per method, one panel per setting."""
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 4.2), squeeze=False)
    for ax, s in zip(axes[0], settings):
        d = df[df["setting"] == s]
        a = summary(stage_end(d, "sft"), [metric], ["method"]).set_index("method")
        b = summary(stage_end(d, "rl"), [metric], ["method"]).set_index("method").reindex(a.index)
        x = np.arange(len(a))
        ax.errorbar(x - 0.12, a[metric], a[metric + "_ci"], fmt="o", label="after SFT", capsize=3)
        ax.errorbar(x + 0.12, b[metric], b[metric + "_ci"], fmt="s", label="after RL", capsize=3)
        ax.set_xticks(x, a.index, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel(f"{metric} (pass@1)" if metric == "J" else metric)
        ax.set_title(s)
        ax.legend()
    return _save(fig, out / "fig_a_ranking.png")


def plot_entropy(df: pd.DataFrame, settings: list[str], out: Path) -> Path:
    """(b) entropy, reward-0 mass, implausible mass and coverage after SFT for SFT / entropy-SFT / Curio."""
    metrics = ["entropy", "wrong_mass", "implausible_mass", "coverage"]
    fig, axes = plt.subplots(len(settings), 4, figsize=(15, 3.2 * len(settings)), squeeze=False)
    for row, s in zip(axes, settings):
        d = stage_end(df[df["setting"] == s], "sft")
        d = d[d["method"].str.startswith(("sft", "entropy_sft", "curio"))]
        t = summary(d, metrics, ["method"])
        for ax, m in zip(row, metrics):
            ax.bar(t["method"], t[m], yerr=t[m + "_ci"], capsize=3, color="tab:blue", alpha=0.8)
            ax.set_title(f"{s}: {m}", fontsize=9)
            ax.set_ylabel(m)
            ax.tick_params(axis="x", rotation=60, labelsize=7)
    return _save(fig, out / "fig_b_entropy.png")


def plot_gift(df: pd.DataFrame, settings: list[str], out: Path, metrics=("J", "pass@4")) -> Path:
    """(c) post-RL metrics against beta (log axis), SFT (beta = inf) as a horizontal band."""
    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 4), squeeze=False)
    for ax, s in zip(axes[0], settings):
        rl = stage_end(df[df["setting"] == s], "rl")
        for m, c in zip(metrics, ["tab:blue", "tab:orange"]):
            g = summary(rl[rl["kind"] == "gift"], [m], ["value"]).sort_values("value")
            ax.plot(g["value"], g[m], "o-", color=c, label=f"GIFT, {m} after RL")
            ax.fill_between(g["value"], g[m] - g[m + "_ci"], g[m] + g[m + "_ci"], color=c, alpha=0.2)
            sm = summary(rl[rl["method"] == "sft"], [m], ["method"])
            if len(sm):
                y, h = sm[m].iloc[0], sm[m + "_ci"].iloc[0]
                ax.axhline(y, color=c, ls="--", label=f"SFT (beta = inf), {m}")
                ax.axhspan(y - h, y + h, color=c, alpha=0.08)
        ax.set_xscale("log")
        ax.set_xlabel("GIFT beta (inverse temperature)")
        ax.set_ylabel("post-RL value")
        ax.set_title(s)
        ax.legend(fontsize=7)
    return _save(fig, out / "fig_c_gift.png")


def plot_pear(df: pd.DataFrame, setting: str, out: Path, metrics=("J", "pass@4")) -> Path:
    """(d) PEAR levels and SFT: metrics after SFT and after RL with CIs."""
    d = df[df["setting"] == setting]
    methods = ["sft"] + sorted(m for m in d["method"].unique() if m.startswith("pear_"))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        x = np.arange(len(methods))
        for off, stage, mk in ((-0.12, "sft", "o"), (0.12, "rl", "s")):
            t = summary(stage_end(d, stage), [m], ["method"]).set_index("method").reindex(methods)
            ax.errorbar(x + off, t[m], t[m + "_ci"], fmt=mk, capsize=3, label=f"after {stage.upper()}")
        ax.set_xticks(x, methods, rotation=30, ha="right")
        ax.set_ylabel(m)
        ax.set_title(f"{setting}: {m}")
        ax.legend()
    return _save(fig, out / "fig_d_pear.png")


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


def plot_curves(
    df: pd.DataFrame, settings: list[str], out: Path, methods: list[str], metric: str = "J"
) -> Path:
    """Training curves: metric over global step (SFT then RL) for selected methods, mean and CI band."""
    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 4), squeeze=False)
    for ax, s in zip(axes[0], settings):
        d = df[(df["setting"] == s) & df["method"].isin(methods)]
        t = summary(d, [metric], ["method", "global_step"])
        for m, g in t.groupby("method", sort=False):
            ax.plot(g["global_step"], g[metric], label=m)
            ax.fill_between(
                g["global_step"], g[metric] - g[metric + "_ci"], g[metric + "_ci"] + g[metric], alpha=0.15
            )
        sft_end = d[d["stage"] == "sft"]["global_step"].max()
        ax.axvline(sft_end, color="grey", ls=":", label="SFT -> RL")
        ax.set_xlabel("step (SFT, then RL)")
        ax.set_ylabel(metric)
        ax.set_title(s)
        ax.legend(fontsize=7)
    return _save(fig, out / "fig_curves.png")


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
