"""Closed forms and symbolic derivations (numpy / scipy / sympy only, never torch).

The independent oracle that ``toybench`` is tested against. ``theory.bandit``: the one-step
softmax bandit. ``theory.mdp``: the prefix-tree token MDP. ``theory.symbolic``: sympy
(imported explicitly, because sympy is slow to import).
"""

from theory import bandit, mdp
from theory.bandit import (
    cumulant,
    cumulant_grad,
    entropy,
    entropy_change_npg,
    entropy_change_pg,
    expected_reward,
    gift_eps,
    gift_target,
    grad_curio,
    grad_dft,
    grad_entropy_sft,
    grad_gift,
    grad_weighted_sft,
    kl,
    kl_regularised_optimum,
    log_softmax,
    natural_gradient,
    policy_gradient,
    sft_loss,
    sft_loss_curvature_at_optimum,
    sft_loss_rate_under_rl,
    sft_population_grad,
    sft_token_grad,
    softmax,
)

__all__ = [
    "bandit",
    "mdp",
    "cumulant",
    "cumulant_grad",
    "entropy",
    "entropy_change_npg",
    "entropy_change_pg",
    "expected_reward",
    "gift_eps",
    "gift_target",
    "grad_curio",
    "grad_dft",
    "grad_entropy_sft",
    "grad_gift",
    "sft_token_grad",
    "grad_weighted_sft",
    "kl",
    "kl_regularised_optimum",
    "log_softmax",
    "natural_gradient",
    "policy_gradient",
    "sft_population_grad",
    "sft_loss",
    "sft_loss_curvature_at_optimum",
    "sft_loss_rate_under_rl",
    "softmax",
]
