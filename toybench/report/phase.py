"""The phase diagram of one setting: the winning family of every cell against the expected number of
correct samples of the base policy, p0 x G x steps, and the teacher's error rate (exact PG, with
infinitely many samples, in its own column), with the winner's margin over early-stopped SFT."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from toybench import analysis  # noqa: E402
from toybench.analysis import MapAnalysis  # noqa: E402

BASELINE = "sft_early"


def phase_cells(a: MapAnalysis, setting: str) -> pd.DataFrame:
    """One row per cell of ``setting``: CELL, x = p0 x G x steps (inf for exact PG), the best family, and
    its paired post-RL pass@1 margin over early-stopped SFT (over the runner-up where early-stopped SFT
    wins) on the test seeds: ``margin``, ``ci`` and ``outcome`` against the minimum effect (one test per
    cell, not Holm-adjusted: the figure describes, the claims' verdicts decide)."""
    b = a.best[a.best["setting"] == setting]
    rl = a.test[(a.test["setting"] == setting) & (a.test["stage"] == "rl")]
    wide = rl.pivot_table(index=[*analysis.CELL, "seed"], columns="family", values="J", aggfunc="first")
    rows = []
    for r in b.itertuples(index=False):
        cell = tuple(getattr(r, c) for c in analysis.CELL)
        w = wide.xs(cell, level=list(range(len(analysis.CELL))))
        ref = BASELINE if r.best != BASELINE else r.runner_up
        t = analysis.paired_test(w[r.best], w[ref], a.margin) if ref in w else None
        out = analysis.outcome([t["p_above"]], [t["p_below"]], [t["p_equiv"]]) if t else "not testable"
        x = np.inf if r.rl_algorithm == "exact_pg" else r.base_correct_mass * r.num_generations * r.rl_steps
        rows.append(
            dict(
                r._asdict(),
                x=x,
                ref=ref,
                margin=t["diff"] if t else np.nan,
                ci=t["ci"] if t else np.nan,
                outcome=out,
            )
        )
    return pd.DataFrame(rows)


def plot_phase(a: MapAnalysis, setting: str, out: Path, label: str = "") -> Path:
    """phase_<setting>.png: one rectangle per cell at (log10 p0 x G x steps, teacher error), coloured by
    the winning family, solid where its margin over early-stopped SFT exceeds the minimum effect
    (reproduces), hatched where it is equivalent, inconclusive or against; the margin written inside.
    Exact PG (infinitely many samples) is the rightmost column; G = 16 is nudged right of G = 4."""
    c = phase_cells(a, setting)
    fams = sorted(set(c["best"]))
    colors = {f: plt.cm.tab10(i % 10) for i, f in enumerate(fams)}
    finite = np.log10(c.loc[np.isfinite(c["x"]), "x"]) if np.isfinite(c["x"]).any() else pd.Series([0.0])
    x_exact = float(finite.max()) + 1.0
    errs = sorted(set(c["wrong_demo_frac"]))
    # exact PG: its cells side by side in the last column, ordered by p0 x steps
    ex = c[~np.isfinite(c["x"])]
    slots = sorted(
        set(zip(ex["base_correct_mass"] * ex["rl_steps"], ex["base_correct_mass"], ex["rl_steps"]))
    )
    slot = {(m, b): x_exact + 0.2 * (i - (len(slots) - 1) / 2) for i, (_, m, b) in enumerate(slots)}
    x_end = x_exact + 0.1 * len(slots)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * (x_exact - float(finite.min()) + 2)), 1.1 * len(errs) + 2))
    for r in c.itertuples():
        if np.isfinite(r.x):
            x = np.log10(r.x) + (0.08 if r.num_generations > 4 else -0.08)
        else:
            x = slot[(r.base_correct_mass, r.rl_steps)]
        y = errs.index(r.wrong_demo_frac)
        solid = r.outcome == "reproduces"
        ax.add_patch(
            plt.Rectangle(
                (x - 0.075, y - 0.4), 0.15, 0.8, facecolor=colors[r.best], alpha=0.9 if solid else 0.35,
                hatch=None if solid else "//", edgecolor="k", lw=0.5,
            )
        )  # fmt: skip
        ax.text(
            x,
            y,
            f"{r.margin:+.2f}" if np.isfinite(r.margin) else "",
            ha="center",
            va="center",
            fontsize=6,
            rotation=90,
        )
    ax.set_xlim(float(finite.min()) - 0.5, x_end + 0.5)
    ax.set_ylim(-0.6, len(errs) - 0.4)
    ticks = sorted(set(np.round(finite, 1)))
    ax.set_xticks(
        [*ticks, *slot.values()],
        [f"{10**t:.2g}" for t in ticks] + [f"exact PG, p0 {m:g}, {int(b)} steps" for m, b in slot],
        fontsize=6,
        rotation=60,
    )
    ax.set_yticks(range(len(errs)), [f"{e:g}" for e in errs])
    ax.set_xlabel("p0 x G x steps (expected correct samples of the base per prompt; log scale)")
    ax.set_ylabel("teacher error")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[f]) for f in fams]
    ax.legend(handles, fams, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(
        f"{setting}{label}: winning family (post-RL pass@1, test seeds)\nnumber = its margin over "
        f"{BASELINE} (or over the runner-up where {BASELINE} wins); hatched: not above {a.margin:g}",
        fontsize=8,
    )
    fig.tight_layout()
    path = Path(out) / f"phase_{setting}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
