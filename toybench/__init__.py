"""toybench: every loss written once, and the bandit / token-MDP / tiny-transformer benchmarks.

Public API: ``toybench.losses`` (SFT and RL per-token losses and ``reduce``),
``toybench.advantages`` (``group_advantages``), ``toybench.metrics`` (pass@k, entropy,
coverage) and ``toybench.methods.Method`` (an SFT method spec -> its loss, needs and state).
Heavier parts are imported explicitly: ``toybench.tabular`` (environments, policies,
pipeline, dynamics), ``toybench.theorems``, ``toybench.tiny`` (the transformer scale), ``toybench.report``.
"""

from toybench import advantages, losses, metrics
from toybench.advantages import group_advantages
from toybench.losses import (
    clipped_surrogate_loss,
    curio_loss,
    dft_loss,
    entropy_guided_temperature,
    entropy_sft_loss,
    gift_loss,
    gift_target,
    kl_penalty,
    logprobs,
    pear_weights,
    policy_gradient_loss,
    reduce,
    sft_loss,
)
from toybench.methods import Method
from toybench.metrics import coverage, entropy, pass_at_k, pass_at_k_exact

__all__ = [
    "Method",
    "advantages",
    "clipped_surrogate_loss",
    "coverage",
    "curio_loss",
    "dft_loss",
    "entropy",
    "entropy_guided_temperature",
    "entropy_sft_loss",
    "gift_loss",
    "gift_target",
    "group_advantages",
    "kl_penalty",
    "logprobs",
    "losses",
    "metrics",
    "pass_at_k",
    "pass_at_k_exact",
    "pear_weights",
    "policy_gradient_loss",
    "reduce",
    "sft_loss",
]
