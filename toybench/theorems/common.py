"""What every theorem check shares: the table row and its status rules, random instances, tensors.

Each check (one module per theorem, bandit and token-MDP versions side by side) returns
``(rows, fig)``: table rows (dicts with the columns of ``toybench.theorems.run.COLUMNS``) and the
arrays its figure needs.  Closed forms come from ``theory.bandit`` / ``theory.mdp``, derivations
from ``theory.symbolic``, simulations from ``toybench.tabular.dynamics`` (torch, the shared losses).
A row's status is decided by a stated rule, never adjusted after the fact:
  ``<=``: PASS iff value <= tolerance (largest |lhs - rhs|, or a relative error);
  ``>=``: PASS iff value >= tolerance (fraction of instances where a sign statement holds);
  ``ce``: a counterexample to a claimed statement, COUNTEREXAMPLE-SHOWN iff it is exhibited;
  ``report``: a measured frequency with no claim attached (REPORTED).
"""

from __future__ import annotations

import numpy as np
import torch

from theory import bandit as tb
from theory import mdp

__all__ = [
    "BANDIT",
    "MDP",
    "CLOSED",
    "SYMBOLIC",
    "SIM",
    "make_row",
    "bandit_instances",
    "tree_instances",
    "as_t",
    "as_logits",
    "as_probs",
]

BANDIT, MDP = "bandit", "token MDP"
CLOSED, SYMBOLIC, SIM = "closed form", "symbolic", "simulation"


def make_row(result, setting, method, instances, statistic, value, tolerance, rule="<=") -> dict:
    """One table row; the status follows ``rule`` (see the module docstring)."""
    value = float(value)
    if rule == "<=":
        status = "PASS" if value <= tolerance else "FAIL"
    elif rule == ">=":
        status = "PASS" if value >= tolerance else "FAIL"
    elif rule == "ce":
        status = "COUNTEREXAMPLE-SHOWN" if value >= tolerance else "FAIL (no counterexample)"
    else:
        status = "REPORTED"
    return dict(
        result=result,
        setting=setting,
        method=method,
        instances=int(instances),
        statistic=statistic,
        value=value,
        tolerance=float(tolerance) if rule != "report" else float("nan"),
        status=status,
    )


def bandit_instances(rng: np.random.Generator, n: int, V: int, spread: float = 1.0):
    """Random bandits: data p, reward r in [0, 1), and an unrelated policy pi, each (n, V)."""
    p = tb.softmax(spread * rng.normal(size=(n, V)))
    r = rng.random((n, V))
    pi = tb.softmax(spread * rng.normal(size=(n, V)))
    return p, r, pi


def tree_instances(cfg, rng: np.random.Generator):
    """Random trees: data policy logits zp, an unrelated policy z, rewards R (I, L) in [0, 1)."""
    I, V, H = cfg.tree_instances, cfg.tree_vocab, cfg.tree_horizon
    N = mdp.num_internal(V, H)
    zp = rng.normal(size=(I, N, V))
    z = rng.normal(size=(I, N, V))
    R = rng.random((I, V**H))
    return zp, z, R


def as_t(x) -> torch.Tensor:
    """numpy -> torch float64 (bandit values (n, V), tree logits (I, N, V), ...)."""
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def as_logits(p: np.ndarray) -> torch.Tensor:
    """Bandit probabilities (n, V) -> tabular logits log p of shape (n, 1, V)."""
    return as_t(np.log(p))[:, None, :]  # (n, 1, V)


def as_probs(zs: torch.Tensor) -> np.ndarray:
    """Recorded bandit logits (..., n, 1, V) -> probabilities (..., n, V)."""
    return tb.softmax(zs[..., 0, :].numpy())
