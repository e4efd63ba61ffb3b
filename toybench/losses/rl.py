"""The RL losses (policy gradient, the clipped surrogate and its mask, the KL penalties) and
:func:`reduce`, the one reduction step of every loss (docs/methods.md §2)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from toybench.losses._common import KL_KINDS, REDUCE_MODES, _adv_bt, _check_bt, _check_same


def policy_gradient_loss(logp: Tensor, adv: Tensor) -> Tensor:
    """On-policy REINFORCE with baseline: l_t = -A * log pi(y_t).  (docs/methods.md §2.2)

    Args:
        logp: ``[B, T]`` log-probabilities of the sampled tokens (with gradient).
        adv: ``[B]`` (one per sequence) or ``[B, T]``; treated as data (detached).
    Returns:
        ``[B, T]``.
    """
    _check_bt(logp, "logp")
    return -_adv_bt(adv, logp).detach().to(logp.dtype) * logp


def _check_eps(eps_low: float, eps_high: float) -> None:
    if not 0 <= eps_low < 1:  # NaN fails both comparisons
        raise ValueError(f"eps_low must lie in [0, 1), got {eps_low}")
    if not eps_high >= 0:  # inf is allowed (no upper clip)
        raise ValueError(f"eps_high must be >= 0, got {eps_high}")


def clipped_surrogate_loss(
    logp: Tensor, old_logp: Tensor, adv: Tensor, eps_low: float = 0.2, eps_high: float = 0.2
) -> Tensor:
    """PPO/GRPO clipped surrogate: l_t = -min(ratio A, clip(ratio, 1 - eps_low, 1 + eps_high) A).

    (docs/methods.md §2.3)

    ratio = exp(logp - old_logp). DAPO's clip-higher sets eps_high = 0.28. At ratio = 1 its
    gradient equals that of :func:`policy_gradient_loss`.

    Args:
        logp: ``[B, T]`` current log-probs; old_logp: ``[B, T]`` (detached); adv: ``[B]`` or ``[B, T]``.
    Returns:
        ``[B, T]``.
    """
    _check_bt(logp, "logp")
    _check_same(old_logp, logp, "old_logp", "logp")
    _check_eps(eps_low, eps_high)
    A = _adv_bt(adv, logp).detach().to(logp.dtype)
    ratio = torch.exp(logp - old_logp.detach())
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    return -torch.minimum(ratio * A, clipped * A)


def clipped_mask(
    logp: Tensor, old_logp: Tensor, adv: Tensor, eps_low: float = 0.2, eps_high: float = 0.2
) -> Tensor:
    """Where the clipped branch of :func:`clipped_surrogate_loss` is active (zero gradient), bool ``[B, T]``.

    Average it with :func:`reduce` to log the clip fraction.
    """
    _check_bt(logp, "logp")
    _check_same(old_logp, logp, "old_logp", "logp")
    _check_eps(eps_low, eps_high)
    A = _adv_bt(adv, logp).detach()
    ratio = torch.exp(logp.detach() - old_logp.detach())
    return ((ratio > 1.0 + eps_high) & (A > 0)) | ((ratio < 1.0 - eps_low) & (A < 0))


def kl_penalty(logp: Tensor, ref_logp: Tensor, kind: str = "k3") -> Tensor:
    """Per-token KL estimate to a reference policy from samples of pi.  (docs/methods.md §2.4)

    k1 = logp - ref_logp; k2 = (logp - ref_logp)^2 / 2; k3 = exp(ref - logp) - (ref - logp) - 1 (>= 0).

    Args:
        logp: ``[B, T]``; ref_logp: ``[B, T]`` (detached); kind: "k1" | "k2" | "k3".
    Returns:
        ``[B, T]``.
    """
    _check_bt(logp, "logp")
    _check_same(ref_logp, logp, "ref_logp", "logp")
    if kind not in KL_KINDS:
        raise ValueError(f"kind must be one of {KL_KINDS}, got {kind!r}")
    d = ref_logp.detach() - logp
    if kind == "k1":
        return -d
    if kind == "k2":
        return 0.5 * d**2
    return torch.expm1(d) - d


# ----------------------------------------------------------------------------- reduction
def reduce(
    per_token: Tensor, mask: Tensor, mode: str = "token_mean", constant: float | None = None
) -> Tensor:
    """Reduce per-token values ``[B, T]`` to a scalar over the counted positions (mask != 0).

    Modes (the only difference between several GRPO variants, docs/methods.md §2.5):
      token_mean: sum / number of counted tokens (DAPO).
      seq_mean:   per-sequence mean, then the mean over sequences with >= 1 counted token (GRPO).
      constant:   sum / constant, default B * T_max (Dr. GRPO).
      sum:        plain sum.
    Masked positions never leak, even when they hold inf or NaN. An empty mask gives 0.

    >>> x = torch.tensor([[1.0, 3.0, float("nan")], [2.0, 0.0, 0.0]])
    >>> m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    >>> [round(reduce(x, m, mode).item(), 4) for mode in ("token_mean", "seq_mean", "sum")]
    [2.0, 2.0, 6.0]
    """
    _check_bt(per_token, "per_token")
    _check_same(mask, per_token, "mask", "per_token")
    if mode not in REDUCE_MODES:
        raise ValueError(f"mode must be one of {REDUCE_MODES}, got {mode!r}")
    m = mask != 0
    x = torch.where(m, per_token, torch.zeros_like(per_token))
    if mode == "sum":
        return x.sum()
    if mode == "token_mean":
        return x.sum() / m.sum().clamp_min(1)
    if mode == "constant":
        c = float(per_token.numel()) if constant is None else float(constant)
        if not (c > 0 and math.isfinite(c)):
            raise ValueError(f"constant must be finite and > 0, got {constant}")
        return x.sum() / c
    counts = m.sum(dim=1)  # (B,)
    per_seq = x.sum(dim=1) / counts.clamp_min(1)
    nonempty = counts > 0
    return torch.where(nonempty, per_seq, torch.zeros_like(per_seq)).sum() / nonempty.sum().clamp_min(1)
