"""Figures of `toybench theorems` (matplotlib, Agg backend): plotting glue only, no computation."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np  # noqa: E402

__all__ = ["FIGURES", "make_figures"]

FIGURES = [
    ("t1_sft_loss_during_rl.png", "T1: SFT loss during RL from the SFT optimum, with the second-order law"),
    ("t2_reward_during_sft.png", "T2: reward during SFT from the RL optimum"),
    ("t1_dL_vs_dJ.png", "T1: Delta L_SFT vs Delta J at the KL-regularised optimum, with the quadratic law"),
    ("t5_escape_time.png", "T5: PG escape time vs initial mass on the best answer"),
    ("gift_tilt_gap.png", "GIFT: token tilt vs exact sequence Gibbs tilt per position"),
]


def make_figures(figs: dict, out: Path) -> list[str]:
    """Write every figure whose data is present in ``figs`` (keyed by check name); return the file names."""
    written = []
    plotters = [_t1_flow, _t2_reward, _t1_dl_dj, _t5_escape, _gift_tilt]
    for (fname, _), plot in zip(FIGURES, plotters):
        fig = plot(figs)
        if fig is None:
            continue
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        written.append(fname)
    return written


def _label(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Axis labels, title and legend of one panel."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()


def _panel(key: str, needs: str, xlabel: str, ylabel: str, title: str):
    """Decorator: ``draw(ax, d, figs)`` becomes a one-panel (6 x 4) plotter of check ``key``'s data
    ``d = figs[key]``, which returns None (and opens no figure) when ``d`` lacks ``needs``."""

    def wrap(draw):
        def plot(figs: dict):
            d = figs.get(key, {})
            if needs not in d:
                return None
            fig, ax = plt.subplots(figsize=(6, 4))
            draw(ax, d, figs)
            _label(ax, xlabel, ylabel, title)
            return fig

        return plot

    return wrap


def _t1_flow(figs: dict):
    panels = (("T1 bandit", "bandit"), ("T1 token MDP", "token MDP"))
    if any("t" not in figs.get(key, {}) for key, _ in panels):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, title) in zip(axes, panels):
        d = figs[key]
        dl = d["dL_flow" if "dL_flow" in d else "dL"]
        for i in range(dl.shape[1]):
            ax.plot(d["t"], dl[:, i], color=f"C{i}", label=f"instance {i}: measured" if i == 0 else None)
            ax.plot(d["t"], d["pred"][:, i], "--", color=f"C{i}", label="(t^2/2) Var law" if i == 0 else None)
        _label(ax, "RL time t (exact PG flow)", "L_SFT(t) - H(p_data)", f"T1, {title}")
    return fig


@_panel(
    "T2 bandit",
    "J",
    "SFT time (lr x steps)",
    "expected reward J",
    "T2: SFT from the KL-regularised RL optimum",
)
def _t2_reward(ax, d: dict, figs: dict) -> None:
    for i in range(d["J"].shape[1]):
        ax.plot(d["t"], d["J"][:, i], color=f"C{i}", label="J during SFT" if i == 0 else None)
        ax.axhline(d["J_p"][i], color=f"C{i}", ls=":", label="J(p_data) (T2 end point)" if i == 0 else None)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)


@_panel(
    "T1 bandit",
    "dJ",
    "Delta J / sd_p(r)",
    "Delta L_SFT = K(lam)",
    "T1: SFT loss paid for reward gained (colour: log lam)",
)
def _t1_dl_dj(ax, d: dict, figs: dict) -> None:
    x = d["dJ"] / np.sqrt(d["var"])
    ax.scatter(x, d["dL"], s=6, c=np.log(d["lam"]), cmap="viridis", label="KL-reg. RL (simulated)")
    grid = np.linspace(0, x.max(), 100)
    ax.plot(grid, grid**2 / 2, "k--", label="quadratic law dJ^2 / (2 Var_p r) (exact as lam -> 0)")


@_panel(
    "T5 bandit",
    "m",
    "initial mass on the best answer / sequence",
    "RL time to reach the threshold",
    "T5: collapsed initial mass => long plateau",
)
def _t5_escape(ax, b: dict, figs: dict) -> None:
    t = figs.get("T5 token MDP", {})
    ax.loglog(b["m"], b["T_sim"], "o", label="bandit: simulated exact PG")
    ax.loglog(b["m"], b["T_sym"], "-", label="bandit: closed form (sympy integral)")
    if "T_grpo" in b:
        ax.loglog(b["m"], b["T_grpo"], "^:", label="bandit: sampled GRPO, median (lr x steps)")
    if "m" in t:
        ax.loglog(t["m"], t["steps"], "s-", label="token MDP: simulated exact PG")


@_panel(
    "GIFT tilt",
    "exact",
    "position t in the demonstration",
    "logit tilt on y*_t",
    "GIFT: token-level tilt over-tilts early positions",
)
def _gift_tilt(ax, d: dict, figs: dict) -> None:
    pos = np.arange(d["exact"].shape[1])
    ax.errorbar(
        pos,
        d["exact"].mean(0),
        yerr=d["exact"].std(0),
        fmt="o-",
        capsize=3,
        label="exact sequence Gibbs tilt (mean ± sd)",
    )
    ax.plot(pos, d["token"].mean(0), "s--", label="GIFT token tilt (closed form)")
    ax.plot(pos, d["learned"].mean(0), "x", ms=10, label="GIFT token tilt (trained, torch)")
    ax.axhline(d["beta"], color="grey", ls=":", label="beta")
