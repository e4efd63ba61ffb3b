"""T5 (escape time from a small initial mass on the best answer), on the bandit and the token MDP."""

from __future__ import annotations

import numpy as np
import torch
from scipy.integrate import quad
from scipy.stats import spearmanr

from theory import mdp
from theory import symbolic as sym
from toybench.tabular import dynamics as dyn
from toybench.theorems.common import BANDIT, MDP, SIM, SYMBOLIC, as_t, make_row

__all__ = ["check_t5_bandit", "check_t5_mdp"]


def _steps_to(mass: np.ndarray, threshold: float) -> np.ndarray:
    """Per run (columns of ``mass``, rows are steps): the first step at which ``mass >= threshold``,
    ``inf`` for a run that never gets there."""
    reached = mass >= threshold
    return np.where(reached.any(0), reached.argmax(0), np.inf)


def _best_answer_mass(z: torch.Tensor) -> torch.Tensor:
    """Probability of answer 0 (the rewarded one) of bandit logits z of shape (I, 1, V)."""
    return torch.softmax(z[:, 0], -1)[:, 0]


def check_t5_bandit(cfg, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """T5: exact PG escape time from initial mass m on the best answer ~ (V-1)/V (F(x1) - F(m))."""
    V, x1 = cfg.bandit_vocab, cfg.t5_threshold
    m = np.geomspace(cfg.t5_min_mass, 0.5, cfg.t5_grid)
    f = lambda x: (V - 1) / V / (x**2 * (1 - x) ** 2)
    T_sym = sym.escape_time(m, x1, V)
    T_quad = np.array([quad(f, mi, x1, limit=200)[0] for mi in m])
    rows = [
        make_row(
            "T5 escape-time integral (sympy) vs quadrature",
            BANDIT,
            SYMBOLIC,
            len(m),
            "max rel. diff",
            np.max(np.abs(T_sym / T_quad - 1)),
            1e-8,
        )
    ]
    logits = np.log(np.concatenate([m[:, None], np.repeat((1 - m[:, None]) / (V - 1), V - 1, 1)], 1))
    R = torch.zeros(len(m), V, dtype=torch.float64)
    R[:, 0] = 1.0
    dt = cfg.t5_dt
    steps = int(np.ceil(1.2 * T_sym.max() / dt)) + 1
    z0 = as_t(logits)[:, None]
    _, mass = dyn.run(z0, lambda z: dyn.pg_surrogate(z, R), steps, dt, record=_best_answer_mass)
    T_sim = _steps_to(mass.numpy(), x1) * dt
    rows.append(
        make_row(
            "T5 PG steps-to-threshold x time step = escape time",
            BANDIT,
            SIM,
            len(m),
            "max rel. error",
            np.max(np.abs(T_sim / T_sym - 1)),
            cfg.tol_t5,
        )
    )
    rows.append(
        make_row(
            "T5 smaller initial mass => longer plateau",
            BANDIT,
            SIM,
            len(m) - 1,
            "fraction of ordered neighbours",
            np.mean(np.diff(T_sim) <= 0),
            1.0,
            ">=",
        )
    )
    grpo_rows, med = _t5_grpo_bandit(cfg, rng, logits, R, m)
    return rows + grpo_rows, dict(m=m, T_sim=T_sim, T_sym=T_sym, T_grpo=med * cfg.t5_grpo_lr)


def _t5_grpo_bandit(
    cfg, rng, logits: np.ndarray, R: torch.Tensor, m: np.ndarray
) -> tuple[list[dict], np.ndarray]:
    """T5 with sampled GRPO (seeded): the same trend, and the runs stuck because every group of the
    smallest mass had no success (zero advantage). Returns the rows and the median steps per mass."""
    S = cfg.t5_grpo_seeds
    zg = as_t(np.repeat(logits, S, 0))[:, None]  # (len(m) * S, 1, V)
    Rg = R.repeat_interleave(S, 0)
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    _, mass_g = dyn.run(
        zg,
        lambda z: dyn.grpo_surrogate(z, Rg, cfg.num_generations, gen),
        cfg.t5_grpo_steps,
        cfg.t5_grpo_lr,
        record=_best_answer_mass,
    )
    steps_g = _steps_to(mass_g.numpy(), cfg.t5_threshold).reshape(len(m), S)
    med = np.median(steps_g, axis=1)
    rho = spearmanr(m, med).statistic
    rows = [
        make_row(
            f"T5 sampled GRPO (G={cfg.num_generations}): median steps fall with initial mass",
            BANDIT,
            SIM,
            len(m) * S,
            "Spearman rho(mass, median steps)",
            rho,
            cfg.tol_t5_rho,
        ),
        make_row(
            f"T5 sampled GRPO: runs not escaped within {cfg.t5_grpo_steps} steps (m={m[0]:.2g})",
            BANDIT,
            SIM,
            S,
            "fraction",
            np.mean(np.isinf(steps_g[0])),
            0,
            "report",
        ),
    ]
    return rows, med


def check_t5_mdp(cfg, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """T5 on the tree: exact PG steps until P(y*) >= threshold, vs the initial P(y*)."""
    V, H = cfg.tree_vocab, cfg.tree_horizon
    N = mdp.num_internal(V, H)
    b = np.linspace(cfg.t5_tree_boost[0], cfg.t5_tree_boost[1], cfg.t5_grid)
    y = np.zeros(H, dtype=np.int64)  # y* = (0, ..., 0), leaf 0
    z = 0.3 * rng.normal(size=(1, N, V)).repeat(len(b), 0)
    z[:, mdp.path_nodes(y, V), 0] += b[:, None]
    m = mdp.leaf_probs(mdp.policy(z))[:, 0]
    R = torch.zeros(len(b), V**H, dtype=torch.float64)
    R[:, 0] = 1.0
    _, mass = dyn.run(
        as_t(z),
        lambda x: dyn.pg_surrogate(x, R),
        cfg.t5_tree_steps,
        cfg.t5_tree_lr,
        record=lambda x: dyn.leaf_probs(x)[:, 0],
    )
    reached = mass.numpy() >= cfg.t5_threshold
    steps = _steps_to(mass.numpy(), cfg.t5_threshold)
    order = np.argsort(m)
    rows = [
        make_row(
            "T5 all runs reach the threshold",
            MDP,
            SIM,
            len(b),
            "fraction reached",
            np.mean(reached.any(0)),
            1.0,
            ">=",
        ),
        make_row(
            "T5 smaller initial P(y*) => more PG steps",
            MDP,
            SIM,
            len(b) - 1,
            "fraction of ordered neighbours",
            np.mean(np.diff(steps[order]) <= 0),
            1.0,
            ">=",
        ),
    ]
    return rows, dict(m=m[order], steps=steps[order] * cfg.t5_tree_lr)
