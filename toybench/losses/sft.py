"""The SFT losses of the methods under study: SFT, entropy-regularised SFT, GIFT, CurioSFT, PEAR's
weights and DFT (docs/methods.md §1.1-1.7)."""

from __future__ import annotations

import torch
from torch import Tensor

from toybench.losses._common import (
    PEAR_LEVELS,
    _check_bt,
    _check_finite,
    _check_logits,
    _check_same,
    _check_targets,
    _float,
    _nan_where_invalid,
    _target_index,
    _xlogy_safe,
)


def logprobs(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-token log-probability log pi(y_t) = z_{t,y_t} - logsumexp(z_t).

    Args:
        logits: ``[B, T, V]``.
        targets: ``[B, T]`` long; outside ``[0, V)`` gives NaN (see the module docstring).
        mask: optional ``[B, T]``; when given (CPU), out-of-range targets where mask != 0 raise.
    Returns:
        ``[B, T]`` (float32 or float64).
    """
    _check_logits(logits)
    _check_targets(targets, logits)
    y, valid = _target_index(targets, logits.shape[-1], mask)
    logp_all = torch.log_softmax(_float(logits), dim=-1)  # (B, T, V)
    return _nan_where_invalid(logp_all.gather(-1, y[..., None])[..., 0], valid)


def sft_loss(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Standard (zero-temperature) SFT: l_t = -log pi(y_t). Logit gradient pi - e_y.  (docs/methods.md §1.1)

    Args:
        logits: ``[B, T, V]``.
        targets: ``[B, T]`` long; values at masked positions are ignored by :func:`reduce`
            (an out-of-range one, e.g. -100, gives NaN there, which :func:`reduce` drops).
        mask: optional ``[B, T]``: on CPU, an out-of-range target where mask != 0 raises.
    Returns:
        Per-token loss ``[B, T]``.

    >>> logits = torch.zeros(1, 1, 4)
    >>> round(sft_loss(logits, torch.tensor([[2]])).item(), 4)  # log 4
    1.3863
    """
    return -logprobs(logits, targets, mask)


def entropy_sft_loss(
    logits: Tensor,
    targets: Tensor,
    coef: float,
    top_k: int | None = None,
    mask: Tensor | None = None,
    rho: float = 1.0,
) -> Tensor:
    """Entropy-regularised SFT: l_t = -log pi(y_t) - coef * H(pi_t).  (docs/methods.md §1.2)

    H is over the full vocabulary by default. Documented variants: ``top_k`` takes the entropy
    of the renormalised top-k logits; ``rho < 1`` (needs ``mask``) applies the bonus only to
    the fraction ``rho`` of counted tokens with the highest entropy (threshold taken over the
    whole batch). Known failure mode [2nd, CurioSFT]: mass flows toward uniform, onto
    implausible tokens.

    Args:
        logits: ``[B, T, V]``; targets: ``[B, T]`` long; coef: lambda >= 0 (finite).
        mask: ``[B, T]``, needed when rho < 1; on CPU, out-of-range targets where mask != 0 raise.
    Returns:
        ``[B, T]``.
    """
    _check_logits(logits)
    _check_targets(targets, logits)
    _check_finite(coef, "coef", low=0.0)
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"rho must lie in (0, 1], got {rho}")
    z = _float(logits)
    y, valid = _target_index(targets, z.shape[-1], mask)
    logp_all = torch.log_softmax(z, dim=-1)  # (B, T, V)
    nll = -logp_all.gather(-1, y[..., None])[..., 0]  # (B, T)
    if top_k is not None and top_k < z.shape[-1]:
        zk = torch.topk(z, top_k, dim=-1).values  # (B, T, k)
        lk = torch.log_softmax(zk, dim=-1)
        H = -_xlogy_safe(lk.exp(), lk).sum(-1)
    else:
        H = -_xlogy_safe(logp_all.exp(), logp_all).sum(-1)  # (B, T)
    if rho < 1.0:
        if mask is None:
            raise ValueError("mask is required when rho < 1")  # its shape is checked by _target_index
        m = mask != 0
        Hd = H.detach()
        threshold = torch.quantile(Hd[m], 1.0 - rho) if bool(m.any()) else Hd.new_tensor(float("inf"))
        H = torch.where(m & (Hd >= threshold), H, torch.zeros_like(H))
    return _nan_where_invalid(nll - coef * H, valid)


def gift_target(
    base_logits: Tensor, targets: Tensor, beta: float, smooth: float = 0.0, mask: Tensor | None = None
) -> Tensor:
    """GIFT's finite-temperature token target, computed without gradient.  (docs/methods.md §1.3)

    q_t = softmax( log((1 - s) p_base,t + s / V) + beta * e_{y_t} ).
    Equivalently q = (1 - eps) e_y + eps p_base(. | k != y), eps = (1 - p) / (1 + (e^beta - 1) p),
    p = p_s(y) (see ``theory.bandit.gift_target``). beta = inf gives the one-hot SFT target;
    beta = 0 gives the (smoothed) base distribution.

    Args:
        base_logits: ``[B, T, V]`` from a FROZEN copy of the model before SFT.
        targets: ``[B, T]`` long.
        beta: inverse temperature >= 0 (code default 20; toys sweep [0, 10]).
        smooth: label smoothing s of the base in [0, 1] (code: 0, 0.01 for Llama).
        mask: optional ``[B, T]``; on CPU, out-of-range targets where mask != 0 raise.
    Returns:
        Probabilities ``[B, T, V]`` (detached); NaN rows where the target is out of range.

    >>> q = gift_target(torch.zeros(1, 1, 3), torch.tensor([[0]]), beta=0.0)
    >>> [round(v, 4) for v in q[0, 0].tolist()]
    [0.3333, 0.3333, 0.3333]
    """
    y, valid = _gift_checks(base_logits, targets, beta, smooth, mask)
    q = _gift_q(base_logits, y, beta, smooth)
    return torch.where(valid[..., None], q, torch.full_like(q, float("nan")))


def _gift_checks(base_logits, targets, beta, smooth, mask) -> tuple[Tensor, Tensor]:
    _check_logits(base_logits, "base_logits")
    _check_targets(targets, base_logits)
    if not beta >= 0:  # inf is allowed (the SFT target), NaN is not
        raise ValueError(f"beta must be >= 0, got {beta}")
    if not 0.0 <= smooth <= 1.0:
        raise ValueError(f"smooth must lie in [0, 1], got {smooth}")
    return _target_index(targets, base_logits.shape[-1], mask)


def _gift_q(base_logits: Tensor, y: Tensor, beta: float, smooth: float) -> Tensor:
    """The GIFT target for in-range indices ``y`` [B, T] (no checks)."""
    with torch.no_grad():
        z = _float(base_logits.detach())
        V = z.shape[-1]
        log_pb = torch.log_softmax(z, dim=-1)  # (B, T, V)
        if smooth > 0:
            log_pb = torch.logaddexp(
                log_pb + torch.log1p(z.new_tensor(-smooth)), z.new_tensor(smooth / V).log()
            )
        y = y[..., None]
        if beta == float("inf"):
            return torch.zeros_like(log_pb).scatter_(-1, y, 1.0)
        # In place on a buffer we own (no_grad): saves two [B, T, V] temporaries at LLM scale.
        log_pb = log_pb.scatter_add_(
            -1, y, torch.full(y.shape, float(beta), dtype=log_pb.dtype, device=y.device)
        )
        return torch.softmax(log_pb, dim=-1)


def gift_loss(
    logits: Tensor,
    targets: Tensor,
    base_logits: Tensor,
    beta: float,
    smooth: float = 0.0,
    mask: Tensor | None = None,
) -> Tensor:
    """GIFT loss: cross-entropy of the Gibbs target, l_t = -sum_k q_{t,k} log pi_{t,k}.

    (docs/methods.md §1.3)

    Equals KL(q_t || pi_t) + H(q_t); logit gradient pi - q. At beta -> inf it is SFT.

    Args:
        logits: ``[B, T, V]`` (trained model); targets: ``[B, T]``;
        base_logits: ``[B, T, V]`` (frozen base); beta >= 0; smooth in [0, 1];
        mask: optional ``[B, T]`` (on CPU, out-of-range targets where mask != 0 raise).
    Returns:
        ``[B, T]``.
    """
    _check_logits(logits)
    _check_same(base_logits, logits, "base_logits", "logits")
    y, valid = _gift_checks(base_logits, targets, beta, smooth, mask)
    q = _gift_q(base_logits, y, beta, smooth)  # (B, T, V)
    logp_all = torch.log_softmax(_float(logits), dim=-1)
    return _nan_where_invalid(-_xlogy_safe(q.to(logp_all.dtype), logp_all).sum(-1), valid)


# ----------------------------------------------------------------------------- CurioSFT
def _entropy_from_logits(z: Tensor) -> Tensor:
    logp = torch.log_softmax(z, dim=-1)
    return -_xlogy_safe(logp.exp(), logp).sum(-1)


def entropy_guided_temperature(
    teacher_logits: Tensor,
    pivot: float = 1.2,
    gain: float = 0.5,
    slope: float = 2.0,
    tau_min: float = 1.1,
    tau_max: float = 1.5,
    top_k: int = 512,
    floor: float = 0.03,
    iters: int = 20,
) -> Tensor:
    """CurioSFT's entropy-guided temperature per token, detached.  (docs/methods.md §1.4)

    H_t = entropy of the teacher's top-k logits; target H*_t = H_t + gain * sigmoid(slope (H_t - pivot));
    tau_t solves H(softmax(zbar_t^{top-k} / tau)) = H*_t by ``iters`` bisection steps in
    [tau_min, tau_max] (so it is clamped there). Tokens whose full-vocabulary entropy is
    <= ``floor`` get tau_min. The solve uses the same top-k logits as the target (CurioSFT
    code; stated here because the paper text does not say).

    Args:
        teacher_logits: ``[B, T, V]`` (EMA teacher, teacher-forced on the expert sequence).
    Returns:
        tau ``[B, T]`` in [tau_min, tau_max].
    """
    _check_logits(teacher_logits, "teacher_logits")
    _check_finite(tau_min, "tau_min", low=0.0, strict=True)
    _check_finite(tau_max, "tau_max")
    if not tau_max >= tau_min:
        raise ValueError(f"tau_max must be >= tau_min, got tau_max={tau_max} < tau_min={tau_min}")
    for name, v in (("pivot", pivot), ("gain", gain), ("slope", slope), ("floor", floor)):
        _check_finite(v, name)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    with torch.no_grad():
        z = _float(teacher_logits.detach())
        H_full = _entropy_from_logits(z)  # (B, T)
        zk = torch.topk(z, min(top_k, z.shape[-1]), dim=-1).values if top_k < z.shape[-1] else z
        H_t = _entropy_from_logits(zk)
        H_star = H_t + gain * torch.sigmoid(slope * (H_t - pivot))
        lo = torch.full_like(H_t, tau_min)
        hi = torch.full_like(H_t, tau_max)
        for _ in range(iters):  # entropy is non-decreasing in tau
            mid = 0.5 * (lo + hi)
            below = _entropy_from_logits(zk / mid[..., None]) < H_star
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        tau = 0.5 * (lo + hi)
        # Clamp exactly when the target is out of reach inside the interval.
        tau = torch.where(_entropy_from_logits(zk / tau_max) <= H_star, torch.full_like(tau, tau_max), tau)
        tau = torch.where(_entropy_from_logits(zk / tau_min) >= H_star, torch.full_like(tau, tau_min), tau)
        return torch.where(H_full <= floor, torch.full_like(tau, tau_min), tau)


def curio_loss(
    logits: Tensor,
    targets: Tensor,
    teacher_logits: Tensor,
    tau: float | Tensor,
    alpha: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """CurioSFT self-exploratory distillation loss.  (docs/methods.md §1.4)

    l_t = -log pi(y_t) + (alpha / 2) (log pi(y_t) - sg[log q_t(y_t)])^2,  q_t = softmax(zbar_t / tau_t).
    Logit gradient: w_t (pi - e_y) with w_t = 1 - alpha (log pi(y_t) - log q_t(y_t)). alpha = 0 is SFT.

    Args:
        logits: ``[B, T, V]``; targets: ``[B, T]``;
        teacher_logits: ``[B, T, V]`` (EMA teacher, no gradient);
        tau: finite float > 0 or ``[B, T]`` (e.g. from :func:`entropy_guided_temperature`; its
            values are checked on CPU only); alpha >= 0 (finite);
        mask: optional ``[B, T]`` (on CPU, out-of-range targets where mask != 0 raise).
    Returns:
        ``[B, T]``.
    """
    _check_logits(logits)
    _check_same(teacher_logits, logits, "teacher_logits", "logits")
    _check_finite(alpha, "alpha", low=0.0)
    if isinstance(tau, Tensor):
        if tau.shape != logits.shape[:2]:
            raise ValueError(
                f"tau must be a float or have shape [B, T] = {tuple(logits.shape[:2])}, "
                f"got {tuple(tau.shape)}"
            )
        ok = torch.isfinite(tau) & (tau > 0)
        if tau.device.type == "cpu" and not bool(ok.all()):  # no sync on accelerators
            raise ValueError(f"tau must be finite and > 0 everywhere, got {tau[~ok][0].item()}")
        tau_b = tau.detach()[..., None]
    else:
        _check_finite(tau, "tau", low=0.0, strict=True)
        tau_b = tau
    _check_targets(targets, logits)
    y, valid = _target_index(targets, logits.shape[-1], mask)
    logp = torch.log_softmax(_float(logits), dim=-1).gather(-1, y[..., None])[..., 0]  # (B, T)
    with torch.no_grad():
        zbar = _float(teacher_logits.detach())
        logq = torch.log_softmax(zbar / tau_b, dim=-1).gather(-1, y[..., None])
        logq = logq[..., 0].to(logp.dtype)
    return _nan_where_invalid(-logp + 0.5 * alpha * (logp - logq) ** 2, valid)


# ----------------------------------------------------------------------------- PEAR
def pear_weights(
    logp: Tensor,
    behavior_logp: Tensor,
    mask: Tensor,
    level: str = "token",
    block_size: int = 4,
    gamma: float = 0.999,
    token_clip: tuple[float, float] = (-0.08, 0.3),
    total_clip: tuple[float, float] = (-10.0, 5.0),
) -> Tensor:
    """PEAR importance weights G_t for the SFT loss sum_t sg[G_t] l_t, detached.  (docs/methods.md §1.5)

    rho_t = clip(log pi_theta(y_t) - log pi_beta(y_t), *token_clip), counted on response tokens
    only (mask = 1); n_t is t's index among them (0-based) and L the number of them.
      sequence: G_t = exp(clip(sum_j rho_j, *total_clip))
      token:    G_t = gamma^(L-1-n_t) exp(clip(sum_{n_j > n_t} rho_j, *total_clip))
      block:    blocks of ``block_size`` response tokens from the first one; e_k = last index of
                t's block; G_t = gamma^(L-1-e_k) exp(clip(sum_{n_j > e_k} rho_j, *total_clip)).
    block_size = 1 is the token level. Masked positions get weight 0. When pi_theta = pi_beta
    every weight is a power of gamma (exactly 1 at gamma = 1). Clip ranges and gamma are [2nd].

    Args:
        logp, behavior_logp, mask: ``[B, T]``.
    Returns:
        ``[B, T]`` detached weights.
    """
    _check_bt(logp, "logp")
    _check_same(behavior_logp, logp, "behavior_logp", "logp")
    _check_same(mask, logp, "mask", "logp")
    if level not in PEAR_LEVELS:
        raise ValueError(f"level must be one of {PEAR_LEVELS}, got {level!r}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must lie in (0, 1], got {gamma}")
    for name, (lo, hi) in (("token_clip", token_clip), ("total_clip", total_clip)):
        if not lo <= hi:
            raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
    with torch.no_grad():
        m = mask != 0
        diff = _float(logp.detach()) - _float(behavior_logp.detach())
        rho = torch.where(m, diff.clamp(*token_clip), torch.zeros_like(diff))  # (B, T)
        mi = m.long()
        n = torch.cumsum(mi, dim=1) - 1  # response index at counted positions
        L = mi.sum(dim=1, keepdim=True)  # (B, 1)
        if level == "sequence":
            log_g = rho.sum(dim=1, keepdim=True).clamp(*total_clip).expand_as(rho)
            decay = torch.zeros_like(rho)
        elif level == "token":
            suffix = torch.flip(torch.cumsum(torch.flip(rho, [1]), dim=1), [1])  # sum_{j >= t}
            log_g = (suffix - rho).clamp(*total_clip)
            decay = (L - 1 - n).to(rho.dtype)
        else:
            k = torch.where(m, n // block_size, torch.zeros_like(n))  # block id
            S = torch.zeros_like(rho).scatter_add_(1, k, rho)  # (B, T) block sums (<= T blocks)
            after = torch.flip(torch.cumsum(torch.flip(S, [1]), dim=1), [1]) - S  # sum over later blocks
            log_g = after.gather(1, k).clamp(*total_clip)
            e = torch.minimum((k + 1) * block_size - 1, L - 1)
            decay = (L - 1 - e).to(rho.dtype)
        G = gamma**decay * torch.exp(log_g)
        return torch.where(m, G, torch.zeros_like(G))


# ----------------------------------------------------------------------------- DFT
def dft_loss(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Dynamic fine-tuning: l_t = -sg[pi(y_t)] log pi(y_t); logit gradient pi(y)(pi - e_y).

    (docs/methods.md §1.6)

    Args:
        logits: ``[B, T, V]``; targets: ``[B, T]``; mask: optional ``[B, T]`` (as in :func:`sft_loss`).
    Returns:
        ``[B, T]``.
    """
    logp = logprobs(logits, targets, mask)
    return -logp.detach().exp() * logp
