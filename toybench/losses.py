"""Every SFT and RL loss of the project, written once (torch).

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

import math

import torch
from torch import Tensor

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
]

REDUCE_MODES = ("token_mean", "seq_mean", "constant", "sum")
PEAR_LEVELS = ("token", "block", "sequence")
KL_KINDS = ("k1", "k2", "k3")
PRIFT_KINDS = ("prob", "mass")


# ----------------------------------------------------------------------------- checks
def _check_logits(logits: Tensor, name: str = "logits") -> None:
    if not isinstance(logits, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 3:
        raise ValueError(f"{name} must have shape [B, T, V], got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {logits.dtype}")


def _check_targets(targets: Tensor, logits: Tensor) -> None:
    if not isinstance(targets, Tensor):
        raise ValueError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.shape != logits.shape[:2]:
        raise ValueError(
            f"targets must have shape [B, T] = {tuple(logits.shape[:2])}, got {tuple(targets.shape)}"
        )
    if targets.dtype != torch.long:
        raise ValueError(f"targets must be torch.long, got {targets.dtype}")


def _target_index(targets: Tensor, V: int, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(targets clamped into [0, V) for ``gather``, valid [B, T] bool); CPU: reject bad counted targets."""
    valid = (targets >= 0) & (targets < V)  # (B, T)
    if mask is not None:
        _check_same(mask, targets, "mask", "targets")
    if targets.device.type == "cpu" and mask is not None:  # value check only where it costs no sync
        bad = ~valid & (mask != 0)
        if bool(bad.any()):
            b, t = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"targets must lie in [0, V) = [0, {V}) at counted positions (mask != 0), "
                f"got targets[{b}, {t}] = {int(targets[b, t])}"
            )
    return targets.clamp(0, V - 1), valid


def _nan_where_invalid(loss: Tensor, valid: Tensor) -> Tensor:
    """NaN (zero gradient) where the target is out of range: never a plausible-looking loss."""
    return torch.where(valid, loss, torch.full_like(loss, float("nan")))


def _check_finite(x: float, name: str, low: float | None = None, strict: bool = False) -> None:
    """x must be a finite number (NaN and inf rejected), and >= low (> low if strict)."""
    ok = math.isfinite(x) and (low is None or (x > low if strict else x >= low))
    if not ok:
        bound = "" if low is None else f" and {'>' if strict else '>='} {low:g}"
        raise ValueError(f"{name} must be finite{bound}, got {x}")


def _check_same(x: Tensor, ref: Tensor, name: str, ref_name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(x.shape)}")


def _check_bt(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape [B, T], got {tuple(x.shape)}")


def _float(x: Tensor) -> Tensor:
    """Upcast half precision to float32; keep float32/float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _xlogy_safe(p: Tensor, logq: Tensor) -> Tensor:
    """p * log q with 0 * (-inf) = 0 in value and gradient (for -inf logits)."""
    return p * logq.clamp_min(torch.finfo(logq.dtype).min)


def _adv_bt(adv: Tensor, like: Tensor) -> Tensor:
    if not isinstance(adv, Tensor):
        raise ValueError(f"adv must be a torch.Tensor, got {type(adv).__name__}")
    if adv.shape == like.shape:
        return adv
    if adv.ndim == 1 and adv.shape[0] == like.shape[0]:
        return adv[:, None].expand_as(like)
    raise ValueError(f"adv must have shape [B] or [B, T] = {tuple(like.shape)}, got {tuple(adv.shape)}")


# ----------------------------------------------------------------------------- SFT
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


# ----------------------------------------------------------------------------- SFT baselines (§1.8-1.12)
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


# ----------------------------------------------------------------------------- RL
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
