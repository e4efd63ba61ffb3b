"""`toybench theorems`: verify the SFT/RL non-decoupling theorems, GIFT consistency and the entropy
mechanism three ways (closed form, symbolic, simulation) on the bandit and the prefix-tree token MDP.

One row per check (columns ``COLUMNS``); every row says how it is decided (see
``toybench.theorems.common``).  The table is printed, written as ``theorems.md`` and ``theorems.csv``,
and the figures as PNG files, all into ``cfg.out`` together with the resolved config.
Specification: docs/methods.md §1.3 and §4.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm
from tyro.conf import Suppress

from toybench.analysis import markdown_table
from toybench.config import fill_quick, prepare_out_dir, require
from toybench.theorems.figures import FIGURES, make_figures
from toybench.theorems.gift import check_gift_tilt
from toybench.theorems.symbolic import check_symbolic
from toybench.theorems.t1 import check_t1_bandit, check_t1_mdp
from toybench.theorems.t2 import check_t2_bandit, check_t2_t4_mdp
from toybench.theorems.t3 import check_t3_bandit
from toybench.theorems.t4 import check_t4_bandit
from toybench.theorems.t5 import check_t5_bandit, check_t5_mdp

__all__ = ["TheoremsConfig", "COLUMNS", "run_theorems", "theorems_markdown"]

COLUMNS = ["result", "setting", "method", "instances", "statistic", "value", "tolerance", "status"]


@dataclass
class TheoremsConfig:
    """Settings of `toybench theorems` (defaults run in well under a minute on one CPU core)."""

    out: Path = Path("out/theorems")
    """Output directory (theorems.md, theorems.csv, PNG figures, config.json)."""
    seed: int = 0
    """Seed of every random instance and of sampled runs."""
    quick: bool = False
    """Tiny sizes for smoke tests (fewer instances and steps; tolerances unchanged)."""
    bandit_instances: int = 128
    """Random bandit instances per check (vectorised: one batch)."""
    bandit_vocab: int = 6
    """Bandit vocabulary size V."""
    symbolic_vocab: int = 3
    """Vocabulary size at which sympy proves the identities (V = 4 takes ~30 s per log identity)."""
    tree_instances: int = 32
    """Random token-MDP instances per check."""
    tree_vocab: int = 3
    """Token-MDP vocabulary V."""
    tree_horizon: int = 4
    """Token-MDP horizon H (V^H leaves are enumerated exactly)."""
    flow_dt: float = 0.02
    """Euler step of the exact PG flow used for the T1 identity and figure."""
    flow_steps: int = 100
    """Steps of that flow (RL time flow_dt * flow_steps)."""
    num_generations: int = 8
    """GRPO group size G (samples per instance and step; TRL's name)."""
    grpo_steps: int = 50
    """Sampled GRPO steps from the SFT optimum (T1)."""
    grpo_lr: float = 0.1
    """GRPO step size."""
    second_order_time: float = 0.01
    """RL time at which the second-order law of T1 is checked."""
    second_order_steps: int = 20
    """Euler steps to reach second_order_time."""
    fd_step: float = 1e-4
    """Step h of the central finite differences (error O(h^2))."""
    one_step_eta: float = 0.7
    """Size of the single exact logit step of T1."""
    lams: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    """KL-regularisation strengths lam = 1/beta for the T1 optimum and the dL vs dJ figure."""
    quadratic_lam: float = 0.01
    """lam at which the quadratic law dL ≈ dJ^2 / (2 Var) is checked (it is exact as lam -> 0)."""
    kl_rl_steps: int = 100
    """Natural-PG steps of KL-regularised RL, run on lam * (-J) + KL (a contraction with factor 1 - lr)."""
    kl_rl_lr: float = 0.5
    """Step size of KL-regularised natural PG (in (0, 2) for convergence)."""
    sft_steps: int = 1500
    """Steps of population SFT / GIFT (plain gradient descent) to convergence."""
    sft_lr: float = 2.0
    """Step size of population SFT / GIFT."""
    tree_sft_steps: int = 500
    """Steps of plain-gradient SFT on the tree (reward path shape; the end point uses natural gradient)."""
    t2_lam: float = 2.0
    """lam of the RL optimum that T2 starts SFT from."""
    t2_search_lams: tuple[float, ...] = (2.0, 8.0, 30.0)
    """lam values of the larger search for transient reward rises during SFT from pi* (T2 path shape)."""
    t2_search_instances: int = 1024
    """Random bandits per lam in that search."""
    t2_search_steps: int = 300
    """Plain-gradient SFT steps in that search."""
    t2_search_lr: float = 1.0
    """SFT step size in that search (small: the flow, not the discretisation, decides monotonicity)."""
    t3_eta: float = 1e-3
    """Step size of the single PG / NPG step of T3."""
    t4_eta: float = 4.0
    """Global inverse temperature eta of T4 (target pi_base exp(eta R))."""
    t4_lam: float = 1.5
    """KL strength 1/lam of the RL stage of T4."""
    gift_beta: float = 3.0
    """GIFT beta for the token-vs-sequence tilt check."""
    t5_threshold: float = 0.9
    """Probability of the best answer that ends the T5 plateau."""
    t5_min_mass: float = 0.01
    """Smallest initial mass on the best answer in the T5 grid."""
    t5_grid: int = 10
    """Number of initial masses in the T5 grid."""
    t5_dt: float = 0.1
    """Euler step (learning rate) of the bandit T5 PG runs."""
    t5_grpo_seeds: int = 32
    """Seeded sampled-GRPO runs per initial mass in the bandit T5 check."""
    t5_grpo_steps: int = 400
    """Maximum GRPO steps in that check."""
    t5_grpo_lr: float = 0.5
    """GRPO step size in that check."""
    t5_tree_boost: tuple[float, float] = (-1.0, 2.5)
    """Range of the logit boost on the path of y* in the tree T5 runs (sets the initial P(y*))."""
    t5_tree_steps: int = 1500
    """Maximum PG steps in the tree T5 runs."""
    t5_tree_lr: float = 1.0
    """Step size of the tree T5 PG runs."""
    tol_identity: float = 1e-9
    """Tolerance of exact identities in float64."""
    tol_fd: float = 1e-6
    """Tolerance of central finite differences."""
    tol_second_order: float = 0.05
    """Relative tolerance of the second-order law at second_order_time (error O(t) + O(dt))."""
    tol_quadratic: float = 0.02
    """Relative tolerance of the quadratic law at quadratic_lam (error O(lam))."""
    tol_converged: float = 1e-8
    """Tolerance of converged natural-PG runs vs the closed form."""
    tol_converged_sft: float = 1e-4
    """Tolerance of converged plain-gradient SFT / GIFT runs vs the closed form."""
    tol_monotone: float = 1e-12
    """A reward increase larger than this counts as a transient rise (T2 path shape)."""
    tol_t3: float = 0.02
    """Relative tolerance of the first-order entropy change of T3 (error O(eta))."""
    tol_t5: float = 0.05
    """Relative tolerance of the simulated T5 escape time (Euler error)."""
    tol_t5_rho: float = -0.9
    """PASS iff the Spearman correlation of initial mass and median GRPO escape steps is <= this."""
    figures: bool = True
    """Write the PNG figures."""
    quick_filled: Annotated[tuple[str, ...], Suppress] = ()
    """Set by :meth:`resolved`: the fields ``quick`` filled (not a flag)."""

    def validate(self, prefix: str = "") -> None:
        """Raise ValueError naming the first bad field (``prefix`` names the config it is nested in).

        Every size, step, rate and tolerance must be > 0 (``seed`` >= 0), so that a bad value fails here
        and not minutes into a check.
        """
        numbers = [f.name for f in dataclasses.fields(self) if type(getattr(self, f.name)) in (int, float)]
        special = ("seed", "tol_t5_rho")
        require(
            self,
            non_negative=("seed",),
            positive=[n for n in numbers if n not in special],
            at_least={"bandit_vocab": 2, "symbolic_vocab": 2, "tree_vocab": 2, "num_generations": 2},
            within={"tol_t5_rho": (-1.0, 1.0), "kl_rl_lr": (0.0, 2.0)},
            probability=("t5_threshold", "t5_min_mass"),
            prefix=prefix,
        )
        for name in ("lams", "t2_search_lams"):
            grid = getattr(self, name)
            if not grid or not all(x > 0 for x in grid):
                raise ValueError(f"{prefix}{name} must be non-empty values > 0, got {grid}")
        lo, hi = self.t5_tree_boost
        if not lo < hi:
            raise ValueError(
                f"{prefix}t5_tree_boost must be (low, high) with low < high, got {self.t5_tree_boost}"
            )

    def resolved(self, given: set[str] | None = None) -> TheoremsConfig:
        """The config actually run, validated: ``quick`` shrinks the sizes whose flags are not in ``given``
        (:func:`toybench.config.fill_quick`; None: those left at their defaults), never the tolerances.
        Idempotent: ``quick`` is applied once (``quick_filled`` records it)."""
        cfg = self
        if self.quick and not self.quick_filled:
            cfg, filled = fill_quick(self, QUICK, given)
            cfg = dataclasses.replace(cfg, quick_filled=tuple(filled) or ("(nothing)",))
        cfg.validate()
        return cfg


# The --quick sizes (only fields whose flags the user did not type are replaced).
QUICK = dict(
    bandit_instances=16,
    tree_instances=4,
    tree_horizon=3,
    symbolic_vocab=2,
    sft_steps=600,
    flow_steps=20,
    tree_sft_steps=200,
    t2_search_instances=128,
    t2_search_steps=150,
    t5_grpo_seeds=8,
    t5_grid=5,
    t5_tree_steps=800,
)


CHECKS = [
    ("symbolic (sympy)", check_symbolic),
    ("T1 bandit", check_t1_bandit),
    ("T1 token MDP", check_t1_mdp),
    ("T2 bandit", check_t2_bandit),
    ("T2/T4 token MDP", check_t2_t4_mdp),
    ("T3 bandit", check_t3_bandit),
    ("T4 bandit", check_t4_bandit),
    ("T5 bandit", check_t5_bandit),
    ("T5 token MDP", check_t5_mdp),
    ("GIFT tilt", check_gift_tilt),
]


def run_theorems(cfg: TheoremsConfig, progress: bool = True) -> pd.DataFrame:
    """Run every check, print the table, write theorems.md / theorems.csv / figures into cfg.out.

    Returns:
        DataFrame with columns ``COLUMNS``, one row per check.
    """
    cfg = cfg.resolved()
    prepare_out_dir(cfg.out, "out")  # before any computation: a bad --out fails at once
    # seeding, in one block: each check gets its own generator derived from cfg.seed
    torch.manual_seed(cfg.seed)
    seeds = np.random.SeedSequence(cfg.seed).spawn(len(CHECKS))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    rows, figs, timings = [], {}, {}
    try:
        bar = tqdm(CHECKS, desc="theorems", **({} if progress else {"disable": True}))
        for (name, check), ss in zip(bar, seeds):
            bar.set_postfix_str(name)
            t0 = time.perf_counter()
            r, f = check(cfg, np.random.default_rng(ss))
            timings[name] = time.perf_counter() - t0
            rows += r
            figs[name] = f
    finally:
        torch.set_num_threads(threads)
    df = pd.DataFrame(rows, columns=COLUMNS)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    fig_files = make_figures(figs, out) if cfg.figures else []
    df.to_csv(out / "theorems.csv", index=False)
    (out / "theorems.md").write_text(theorems_markdown(df, ".", fig_files))
    cfg_dict = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    (out / "config.json").write_text(json.dumps({**cfg_dict, "timings_s": timings}, indent=2))
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 70):
        print(df.to_string(index=False))
    n_pass = int(df.status.isin(["PASS", "COUNTEREXAMPLE-SHOWN", "REPORTED"]).sum())
    print(f"{n_pass}/{len(df)} rows PASS / COUNTEREXAMPLE-SHOWN / REPORTED; wrote {out}")
    return df


def _fmt(x) -> str:
    """A table cell: numbers to 3 significant digits, NaN as '-'."""
    if isinstance(x, float) and np.isnan(x):
        return "-"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def theorems_markdown(df: pd.DataFrame, fig_dir_rel: str = ".", fig_files: list[str] | None = None) -> str:
    """The Markdown table of the checks and links to the figures (relative to ``fig_dir_rel``)."""
    table = markdown_table(df[COLUMNS], _fmt)
    counts = df.status.value_counts().to_dict()
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    legend = (
        "Status rules: PASS when value <= tolerance (a largest |lhs - rhs| or a relative error) or, for a "
        "fraction of instances where a statement holds, value >= tolerance; COUNTEREXAMPLE-SHOWN when the "
        "counterexample to the paper's v1 statement is exhibited; REPORTED for a measured frequency with no "
        "claim attached.\n"
    )
    files = fig_files if fig_files is not None else [f for f, _ in FIGURES]
    figs = "".join(f"![{cap}]({fig_dir_rel.rstrip('/')}/{f})\n\n" for f, cap in FIGURES if f in files)
    return f"## Theorems\n\n{summary}\n\n{legend}\n{table}\n\n{figs}"
