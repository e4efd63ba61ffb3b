"""The 2025-26 SFT baselines: ASFT and SFT+KL (the base-KL anchor), the probability family, PSFT,
PriFT and CHORD's phi term (docs/methods.md §1.8-1.12)."""

from __future__ import annotations

import torch
from torch import Tensor

from toybench.losses._common import (
    PRIFT_KINDS,
    _check_finite,
    _check_logits,
    _check_same,
    _check_targets,
    _float,
    _nan_where_invalid,
    _target_index,
)
from toybench.losses.rl import clipped_surrogate_loss
from toybench.losses.sft import dft_loss, logprobs, sft_loss


def base_kl(logits: Tensor, base_logits: Tensor) -> Tensor:
    """Per-token KL(pi_base || pi) over the full vocabulary, gradient to ``logits`` only.

    KL_t = sum_k b_k (log b_k - log pi_k), b = softmax(sg[base_logits]); 0 log 0 = 0. Its logit
    gradient is pi - b. This is ASFT's anchor (the direction of ``F.kl_div(log pi, b)`` in the
    authors' code). (docs/methods.md §1.8)

    Args:
        logits: ``[B, T, V]``; base_logits: ``[B, T, V]`` (frozen base, detached here).
    Returns:
        ``[B, T]`` (>= 0).
    """
    _check_logits(logits)
    _check_same(base_logits, logits, "base_logits", "logits")
    logp_all = torch.log_softmax(_float(logits), dim=-1)  # (B, T, V)
    with torch.no_grad():
        log_b = torch.log_softmax(_float(base_logits.detach()), dim=-1).to(logp_all.dtype)  # (B, T, V)
        b = log_b.exp()
    terms = torch.where(b > 0, b * (log_b - logp_all), torch.zeros_like(logp_all))  # 0 log 0 = 0
    return terms.sum(-1)


def _check_lam(lam: float) -> None:
    _check_finite(lam, "lam", low=0.0)


def asft_loss(
    logits: Tensor, targets: Tensor, base_logits: Tensor, lam: float = 0.1, mask: Tensor | None = None
) -> Tensor:
    """Anchored SFT: l_t = -sg[pi(y_t)] log pi(y_t) + lam KL(pi_base,t || pi_t).  (docs/methods.md §1.8)

    DFT's reweighted NLL plus a full-vocabulary KL anchor to the frozen base. Logit gradient
    pi(y)(pi - e_y) + lam (pi - b). lam = 0 is :func:`dft_loss`.

    Args:
        logits: ``[B, T, V]``; targets: ``[B, T]``; base_logits: ``[B, T, V]`` (frozen base);
        lam: KL weight >= 0 (the authors' default 0.1);
        mask: optional ``[B, T]`` (on CPU, out-of-range targets where mask != 0 raise).
    Returns:
        ``[B, T]``.
    """
    _check_lam(lam)
    return dft_loss(logits, targets, mask) + lam * base_kl(logits, base_logits)


def sft_kl_loss(
    logits: Tensor, targets: Tensor, base_logits: Tensor, lam: float = 0.1, mask: Tensor | None = None
) -> Tensor:
    """SFT with a KL anchor (ASFT's ablation): l_t = -log pi(y_t) + lam KL(pi_base,t || pi_t).

    (docs/methods.md §1.8) Logit gradient (pi - e_y) + lam (pi - b); lam = 0 is :func:`sft_loss`.

    Args:
        as :func:`asft_loss`.
    Returns:
        ``[B, T]``.
    """
    _check_lam(lam)
    return sft_loss(logits, targets, mask) + lam * base_kl(logits, base_logits)


def prob_loss(logits: Tensor, targets: Tensor, alpha: float = 1.0, mask: Tensor | None = None) -> Tensor:
    """The probability family ("Beyond log likelihood"): l_t = (1 - pi(y_t)^alpha) / alpha.

    (docs/methods.md §1.9) Logit gradient pi(y)^alpha (pi - e_y): SFT's, weighted by pi(y)^alpha.
    alpha = 0 is the limit, -log pi(y) (:func:`sft_loss`); alpha = 1 is 1 - pi(y), whose gradient is
    DFT's. Computed as -expm1(alpha log pi(y)) / alpha, exact for small alpha.

    Args:
        logits: ``[B, T, V]``; targets: ``[B, T]``; alpha: finite, >= 0;
        mask: optional ``[B, T]`` (as in :func:`sft_loss`).
    Returns:
        ``[B, T]`` in [0, 1/alpha] (alpha > 0).

    >>> round(prob_loss(torch.zeros(1, 1, 4), torch.tensor([[0]]), alpha=1.0).item(), 4)  # 1 - 1/4
    0.75
    """
    _check_finite(alpha, "alpha", low=0.0)
    logp = logprobs(logits, targets, mask)
    if alpha == 0:
        return -logp
    return -torch.expm1(alpha * logp) / alpha


def psft_loss(
    logits: Tensor,
    targets: Tensor,
    old_logp: Tensor,
    epsilon: float = 0.28,
    mask: Tensor | None = None,
) -> Tensor:
    """Proximal SFT: PPO's clipped surrogate on the data tokens with advantage 1.

    (docs/methods.md §1.10)  l_t = -min(r_t, clip(r_t, 1 - eps, 1 + eps)) = -min(r_t, 1 + eps),
    r_t = pi(y_t) / pi_old(y_t), pi_old a snapshot of the policy refreshed every few steps. With A = 1
    the lower clip never binds (below 1 - eps the unclipped r_t is the smaller term), so only the upper
    clip is a constant: the gradient is r_t (pi - e_y) while r_t <= 1 + eps and 0 above. At
    pi_old = pi (one step per snapshot) the gradient is SFT's.

    Args:
        logits: ``[B, T, V]``; targets: ``[B, T]``;
        old_logp: ``[B, T]`` log pi_old(y_t) from the snapshot (detached);
        epsilon: the upper clip, >= 0 (the authors' script: clip_ratio_high = 0.28);
        mask: optional ``[B, T]`` (as in :func:`sft_loss`).
    Returns:
        ``[B, T]``.
    """
    logp = logprobs(logits, targets, mask)
    _check_same(old_logp, logp, "old_logp", "targets")
    if not epsilon >= 0:  # inf allowed (no clip: importance-weighted SFT), NaN not
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    # eps_low = 0: the lower side of the clip is inactive at A = 1 whatever its width (tested)
    return clipped_surrogate_loss(logp, old_logp, torch.ones_like(logp), eps_low=0.0, eps_high=epsilon)


def prift_weights(
    base_logits: Tensor,
    targets: Tensor,
    kind: str = "prob",
    threshold: float = 0.5,
    mask: Tensor | None = None,
) -> Tensor:
    """PriFT's prior-support weights from the frozen base, detached.  (docs/methods.md §1.11)

    prob: w_t = b_t(y_t).
    mass: w_t = 1[u_t >= threshold], u_t = b_t(y_t) + sum_{v : b_t(v) < b_t(y_t)} b_t(v), the base
          mass of the tokens no more likely than y_t (ties with y_t other than y_t excluded).
          u_t = 1 for the base's argmax; tokens in the base's low tail get 0.

    Args:
        base_logits: ``[B, T, V]`` (frozen base); targets: ``[B, T]`` long;
        kind: ``"prob"`` | ``"mass"``; threshold: in [0, 1] (``mass`` only; the authors' 0.5);
        mask: optional ``[B, T]`` (on CPU, out-of-range targets where mask != 0 raise).
    Returns:
        ``[B, T]`` detached weights; NaN where the target is out of range.
    """
    _check_logits(base_logits, "base_logits")
    _check_targets(targets, base_logits)
    if kind not in PRIFT_KINDS:
        raise ValueError(f"kind must be one of {PRIFT_KINDS}, got {kind!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    y, valid = _target_index(targets, base_logits.shape[-1], mask)
    with torch.no_grad():
        z = _float(base_logits.detach())
        b = torch.softmax(z, dim=-1)  # (B, T, V)
        b_y = b.gather(-1, y[..., None])  # (B, T, 1)
        if kind == "prob":
            w = b_y[..., 0]
        else:
            z_y = z.gather(-1, y[..., None])  # compare logits: b(v) < b(y) <=> z_v < z_y
            u = torch.where(z < z_y, b, torch.zeros_like(b)).sum(-1) + b_y[..., 0]  # (B, T)
            w = (u >= threshold).to(b.dtype)
        return _nan_where_invalid(w, valid)


def prift_loss(
    logits: Tensor,
    targets: Tensor,
    base_logits: Tensor,
    kind: str = "prob",
    threshold: float = 0.5,
    mask: Tensor | None = None,
) -> Tensor:
    """PriFT: SFT reweighted by the frozen base, l_t = -sg[w_t] log pi(y_t), w from :func:`prift_weights`.

    (docs/methods.md §1.11) Logit gradient w_t (pi - e_y). ``prob`` is DFT with the base's probability
    in place of the policy's; ``mass`` drops the tokens in the base's low-probability tail.

    Args:
        logits: ``[B, T, V]``; targets: ``[B, T]``; base_logits: ``[B, T, V]`` (frozen base);
        kind, threshold: as in :func:`prift_weights`; mask: optional ``[B, T]``.
    Returns:
        ``[B, T]``.
    """
    _check_same(base_logits, logits, "base_logits", "logits")
    w = prift_weights(base_logits, targets, kind, threshold, mask)
    return -w.to(_float(logits).dtype) * logprobs(logits, targets, mask)


def chord_phi_loss(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """CHORD's SFT term: l_t = -sg[pi(y_t) (1 - pi(y_t))] log pi(y_t).  (docs/methods.md §1.12)

    Logit gradient phi (pi - e_y), phi = pi(y)(1 - pi(y)) detached: tokens the policy finds either
    very unlikely or already certain are learnt less. CHORD mixes it into GRPO with weight mu; here
    it is the whole SFT stage.

    Args:
        logits: ``[B, T, V]``; targets: ``[B, T]``; mask: optional ``[B, T]`` (as in :func:`sft_loss`).
    Returns:
        ``[B, T]``.
    """
    logp = logprobs(logits, targets, mask)
    p = logp.detach().exp()
    return -(p * (1 - p)) * logp
