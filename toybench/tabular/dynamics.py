"""Training dynamics on the bandit and the prefix-tree token MDP, run for real (torch, float64).

Everything the theorems check by simulation is produced here: exact policy-gradient flow (small
Euler steps on the exact expected-reward gradient), natural PG, sampled GRPO, KL-regularised RL,
population SFT and GIFT.  Every objective is built from ``toybench.losses`` / ``toybench.advantages``
(no loss is re-derived here): exact expectations are written as probability-weighted sums of the
per-token losses over all leaves, e.g. the exact PG surrogate is
``sum_y sg[P_pi(y)] * policy_gradient_loss(log P_pi(y), R(y) - J)`` whose gradient is -dJ/dtheta.

Design choices:
  * One implementation for both scales: the bandit is the tree with H = 1 (N = 1 node, L = V leaves).
    Logits are tabular, shape (I, N, V) for I independent random instances; every step updates all
    instances at once (the loss is summed over instances, whose parameters are disjoint).
  * Tree indexing is the one of ``theory.mdp`` / ``toybench.tabular.envs.TreeGeometry`` (breadth-first).
  * Runs return the recorded statistics stacked over steps, shape (K + 1, I, ...): cheap to keep and
    to compare with the closed forms of ``theory``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from theory.mdp import horizon_of
from toybench.advantages import group_advantages
from toybench.losses import gift_loss, kl_penalty, logprobs, policy_gradient_loss, sft_loss
from toybench.tabular.envs import TreeGeometry

__all__ = [
    "geometry",
    "leaf_logp",
    "leaf_probs",
    "expected_return",
    "sft_population_loss",
    "gift_demo_loss",
    "leaf_pg_surrogate",
    "leaf_kl",
    "pg_surrogate",
    "kl_to_reference",
    "grpo_surrogate",
    "run",
]

Objective = Callable[[Tensor], Tensor]


def geometry(z: Tensor) -> TreeGeometry:
    """The tree geometry of tabular logits z of shape (I, N, V)."""
    if z.ndim != 3:
        raise ValueError(f"z must have shape (I, N, V), got {tuple(z.shape)}")
    V, N = z.shape[-1], z.shape[-2]
    try:
        H = horizon_of(N, V)
    except ValueError:
        raise ValueError(f"z has {N} nodes, not (V^H - 1)/(V - 1) for V = {V}") from None
    return _geometry(V, H)


_GEOMS: dict[tuple[int, int], TreeGeometry] = {}


def _geometry(V: int, H: int) -> TreeGeometry:
    if (V, H) not in _GEOMS:
        _GEOMS[(V, H)] = TreeGeometry(V, H)
    return _GEOMS[(V, H)]


def _paths(z: Tensor) -> tuple[Tensor, Tensor, TreeGeometry]:
    """Logits along every leaf's path (I*L, H, V) and the matching targets (I*L, H)."""
    g = geometry(z)
    I = z.shape[0]
    logits = z[:, g.path_nodes]  # (I, L, H, V)
    targets = g.path_tokens.expand(I, -1, -1)  # (I, L, H)
    return logits.reshape(-1, g.H, g.V), targets.reshape(-1, g.H), g


def leaf_logp(z: Tensor) -> Tensor:
    """log P_pi(y) = sum_t log pi(y_t | y_{<t}) for every leaf, (I, N, V) -> (I, L)."""
    logits, targets, g = _paths(z)
    return logprobs(logits, targets).sum(-1).reshape(z.shape[0], g.num_leaves)


def leaf_probs(z: Tensor) -> Tensor:
    """P_pi(y), shape (I, L)."""
    return leaf_logp(z).exp()


def expected_return(z: Tensor, R: Tensor) -> Tensor:
    """J(pi) = sum_y P_pi(y) R(y), shape (I,)."""
    return (leaf_probs(z) * R).sum(-1)


def sft_population_loss(z: Tensor, P_data: Tensor) -> Tensor:
    """Population sequence SFT loss E_{y~P_data} sum_t sft_loss_t, shape (I,).

    Args:
        z: (I, N, V) logits.  P_data: (I, L) data distribution over leaves.
    """
    logits, targets, g = _paths(z)
    per_token = sft_loss(logits, targets)  # (I*L, H)
    w = P_data.reshape(-1, 1)  # (I*L, 1)
    return (per_token * w).reshape(z.shape[0], -1).sum(-1)


def gift_demo_loss(z: Tensor, base_z: Tensor, y_star: Tensor, beta: float, smooth: float = 0.0) -> Tensor:
    """GIFT loss summed over the positions of one demonstration y* per instance, shape (I,).

    Args:
        z, base_z: (I, N, V) trained and frozen base logits.  y_star: (I,) leaf index of the demo.
    """
    g = geometry(z)
    I = z.shape[0]
    nodes, tokens = g.path_nodes[y_star], g.path_tokens[y_star]  # (I, H)
    rows = torch.arange(I)[:, None]
    per_token = gift_loss(z[rows, nodes], tokens, base_z[rows, nodes], beta, smooth)  # (I, H)
    return per_token.sum(-1)


def leaf_pg_surrogate(leaf_logp: Tensor, R: Tensor) -> Tensor:
    """The exact PG surrogate from leaf log-probs; its gradient is -dJ (the one exact-PG objective).

    ``sum_y sg[P(y)] * policy_gradient_loss(log P(y), R(y) - J)`` with P = exp(leaf_logp) and
    J = sum_y P(y) R(y), computed as ``policy_gradient_loss(log P(y), sg[P(y)] (R(y) - J))`` (the
    loss is linear in the advantage; this costs one product fewer and its gradient is the same bit
    for bit).  Each leaf is one row with its sequence log-prob (T = 1): -A log P(y) =
    -A sum_t log pi(y_t) has the same gradient as the per-token form and costs H times less.
    Used by ``pg_surrogate`` (theorem dynamics) and ``toybench.tabular.pipeline`` (comparisons).

    Args:
        leaf_logp: (..., L) log P(y) of every leaf (with gradient).  R: (..., L) rewards.
    Returns:
        (...) per-instance surrogate (summed over leaves).
    """
    P = leaf_logp.detach().exp()  # (..., L): sg[P]
    J = (P * R).sum(-1, keepdim=True)
    # sg[P] folded into the advantage: -(P A) log P(y) has the gradient P (-A) bit for bit
    weighted_adv = (P * (R - J)).reshape(-1)  # (B*L,)
    rows = leaf_logp.reshape(-1, 1)  # (B*L, 1)
    return policy_gradient_loss(rows, weighted_adv).reshape(leaf_logp.shape).sum(-1)


def leaf_kl(leaf_logp: Tensor, ref_leaf_logp: Tensor) -> Tensor:
    """Exact sequence KL(P_pi || P_ref) = sum_y P_pi(y) k1(y) from leaf log-probs, P_pi WITH gradient.

    Its gradient is exactly grad KL(pi || ref).  Args: (..., L) each.  Returns (...).
    """
    rows, ref_rows = leaf_logp.reshape(-1, 1), ref_leaf_logp.reshape(-1, 1)  # (B*L, 1)
    k1 = kl_penalty(rows, ref_rows, kind="k1")
    return (leaf_logp.exp().reshape(-1, 1) * k1).reshape(leaf_logp.shape).sum(-1)


def pg_surrogate(z: Tensor, R: Tensor) -> Tensor:
    """Exact PG surrogate of tabular logits (``leaf_pg_surrogate`` of their leaf log-probs); grad = -dJ/dz.

    Shape (I,).  The advantage R(y) - J is the sequence advantage.
    """
    return leaf_pg_surrogate(leaf_logp(z), R)


def kl_to_reference(z: Tensor, ref_z: Tensor) -> Tensor:
    """Exact sequence KL(P_pi || P_ref) of tabular logits (``leaf_kl``; P_pi carries gradient), shape (I,)."""
    return leaf_kl(leaf_logp(z), leaf_logp(ref_z))


def grpo_surrogate(
    z: Tensor, R: Tensor, group_size: int, generator: torch.Generator, scale: str = "group"
) -> Tensor:
    """Sampled GRPO (on-policy, one step per batch): G leaves per instance, group advantages.

    Loss per instance = (1/G) sum_i policy_gradient_loss(log P(y_i), A_i) summed over tokens.
    Shape (I,).
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2, got {group_size}")
    g = geometry(z)
    I = z.shape[0]
    with torch.no_grad():
        P = leaf_probs(z)  # (I, L)
        y = torch.multinomial(P, group_size, replacement=True, generator=generator)  # (I, G)
        rewards = torch.gather(R, 1, y)  # (I, G)
        adv = group_advantages(rewards, scale=scale)  # (I, G)
    rows = torch.arange(I)[:, None]
    logits = z[rows[..., None], g.path_nodes[y]]  # (I, G, H, V)
    logp = logprobs(logits.reshape(-1, g.H, g.V), g.path_tokens[y].reshape(-1, g.H))  # (I*G, H)
    per_token = policy_gradient_loss(logp, adv.reshape(-1))  # (I*G, H)
    return per_token.reshape(I, -1).sum(-1) / group_size


def run(
    z0: Tensor,
    objective: Objective,
    steps: int,
    lr: float,
    record: Callable[[Tensor], Tensor] | None = None,
    record_every: int = 1,
    natural: bool = False,
    state_weight: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Gradient descent z <- z - lr * grad(objective(z).sum()), all instances at once.

    Args:
        z0: (I, N, V) initial logits.
        objective: z -> (I,) per-instance objective to minimise.
        steps: number of steps K.  lr: step size (the flow time is K * lr).
        record: optional z -> (I, ...) statistic, evaluated (without grad) at step 0 and every
            ``record_every`` steps.
        natural: precondition by the tabular softmax Fisher w(s) (diag pi - pi pi^T): step on
            grad / (w(s) pi(a|s)), the natural gradient (bandit PG step: z += lr * A; docs/methods.md §4.3).
        state_weight: (I, N) state distribution w(s) of that Fisher (default 1 everywhere, e.g. the nodes
            of one demonstration; pass d_p for population SFT on a tree).  Nodes with w(s) = 0 do not move.
    Returns:
        final logits (I, N, V) and the stacked records (K' + 1, I, ...) or None.
    """
    if steps < 0 or lr <= 0 or record_every < 1:
        raise ValueError(f"need steps >= 0, lr > 0, record_every >= 1; got {steps}, {lr}, {record_every}")
    z = z0.detach().clone()
    if state_weight is not None and state_weight.shape != z.shape[:-1]:
        raise ValueError(
            f"state_weight must have shape {tuple(z.shape[:-1])}, got {tuple(state_weight.shape)}"
        )
    w = torch.ones(z.shape[:-1], dtype=z.dtype) if state_weight is None else state_weight.to(z.dtype)
    w = w[..., None]  # (I, N, 1)
    records = []
    if record is not None:
        with torch.no_grad():
            records.append(record(z))
    for k in range(1, steps + 1):
        z.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(z).sum(), z)
        with torch.no_grad():
            if natural:
                fisher = w * torch.softmax(z, -1)  # (I, N, V)
                grad = torch.where(fisher > 0, grad / fisher.clamp_min(torch.finfo(z.dtype).tiny), 0.0)
            z = (z - lr * grad).detach()
            if record is not None and k % record_every == 0:
                records.append(record(z))
    return z, (torch.stack(records) if records else None)
