"""Every SFT and RL loss of the project, written once (torch): this package is their only home.

Modules: ``sft`` (the methods under study), ``baselines`` (the 2025-26 SFT baselines), ``rl`` (RL
losses and :func:`reduce`), ``_common`` (constants and argument checks). Import the names from
``toybench.losses``.

Design choices
--------------
* Pure functions of tensors. Each loss returns UNREDUCED per-token values ``[B, T]``;
  :func:`reduce` is the one reduction step (``token_mean | seq_mean | constant | sum``).
  The same functions serve the bandit (T = 1), the token MDP (T = horizon), the tiny
  transformer and the LLM (where ``llm`` calls them chunk by chunk).
* Shapes are checked on entry and bad arguments raise ``ValueError`` naming the argument.
  Checks that would force a device sync (looking at tensor *values*) are not done on the
  hot path; the training loops catch non-finite losses instead.
* Masked positions never leak: :func:`reduce` selects with ``torch.where`` (NaN * 0 is NaN),
  and :func:`pear_weights` zeroes log-ratios at masked positions before summing them.
* Targets, teachers and weights are detached where the method says ``sg[.]``.
* Targets outside ``[0, V)`` (e.g. an ignore index -100 at padding) never yield a plausible
  loss: their per-token value is NaN with zero gradient, so :func:`reduce` drops them where
  they are masked and turns NaN where they count. A loss has no mask of its own, so it cannot
  tell padding from a real target; pass ``mask=`` and, on CPU, an out-of-range target at a
  counted position raises ``ValueError`` (off CPU the check would sync, so only the NaN is left).
* Scalar knobs are checked as ``not x >= 0`` / ``math.isfinite``, so NaN never slips through.
* Logits in half precision are upcast to float32 inside each loss (float64 is kept), so
  the same code is exact in float64 tests and safe in bf16 training.

Equations and sources: ``docs/methods.md`` §1 and §2.
"""

from __future__ import annotations

from toybench.losses._common import KL_KINDS, PEAR_LEVELS, PRIFT_KINDS, REDUCE_MODES
from toybench.losses.baselines import (
    asft_loss,
    base_kl,
    chord_phi_loss,
    prift_loss,
    prift_weights,
    prob_loss,
    psft_loss,
    sft_kl_loss,
)
from toybench.losses.rl import clipped_mask, clipped_surrogate_loss, kl_penalty, policy_gradient_loss, reduce
from toybench.losses.sft import (
    curio_loss,
    dft_loss,
    entropy_guided_temperature,
    entropy_sft_loss,
    gift_loss,
    gift_target,
    logprobs,
    pear_weights,
    sft_loss,
)

__all__ = [
    "logprobs",
    "sft_loss",
    "entropy_sft_loss",
    "gift_target",
    "gift_loss",
    "entropy_guided_temperature",
    "curio_loss",
    "pear_weights",
    "dft_loss",
    "base_kl",
    "asft_loss",
    "sft_kl_loss",
    "prob_loss",
    "psft_loss",
    "prift_weights",
    "prift_loss",
    "chord_phi_loss",
    "policy_gradient_loss",
    "clipped_surrogate_loss",
    "clipped_mask",
    "kl_penalty",
    "reduce",
    "REDUCE_MODES",
    "PEAR_LEVELS",
    "KL_KINDS",
    "PRIFT_KINDS",
]
