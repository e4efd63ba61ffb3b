"""Evaluation metrics (docs/methods.md §3).

pass@k has two estimators and mixing them up is a classic bug: :func:`pass_at_k` is the
unbiased estimator from n samples with c correct (Chen et al. 2021), computed as a stable
product; :func:`pass_at_k_exact` is the exact value 1 - (1 - p)^k when the per-prompt success
probability p is known (tabular settings). Neither uses the wrong shortcut "c >= k implies 1".
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

__all__ = ["pass_at_k", "pass_at_k_exact", "entropy", "coverage", "kl_divergence"]


def _pass_at_k_scalar(n: int, c: int, k: int) -> float:
    if n - c < k:
        return 1.0
    # 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)
    return 1.0 - math.exp(sum(math.log1p(-k / i) for i in range(n - c + 1, n + 1)))


def pass_at_k(n: ArrayLike, c: ArrayLike, k: ArrayLike) -> float | np.ndarray:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Broadcasts over arrays of n, c, k (ints). Raises ``ValueError`` unless 0 <= c <= n and
    1 <= k <= n.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), round(pass_at_k(10, 3, 2), 6)
    (0.25, 1.0, 0.533333)
    """
    n_, c_, k_ = np.broadcast_arrays(np.asarray(n), np.asarray(c), np.asarray(k))
    for name, a in (("n", n_), ("c", c_), ("k", k_)):
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be integer, got dtype {a.dtype}")
    if np.any(n_ < 1):
        raise ValueError("n must be >= 1")
    if np.any((c_ < 0) | (c_ > n_)):
        raise ValueError("c must satisfy 0 <= c <= n")
    if np.any(k_ < 1):
        raise ValueError("k must be >= 1")
    if np.any(k_ > n_):
        raise ValueError(f"k must be <= n (k={np.max(k_)}, n={np.min(n_)}): pass@k needs at least k samples")
    out = np.vectorize(_pass_at_k_scalar, otypes=[np.float64])(n_, c_, k_)
    return float(out) if out.ndim == 0 else out


def pass_at_k_exact(p_correct, k: int):
    """Exact pass@k = 1 - (1 - p)^k for a known success probability p (numpy or torch, any shape).

    >>> round(float(pass_at_k_exact(0.5, 2)), 4)
    0.75
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")
    if isinstance(p_correct, Tensor):
        # a float32 sum of probabilities may exceed 1 by a few ulps; that is rounding, not a bad input
        tol = max(1e-9, 8 * torch.finfo(p_correct.dtype).eps) if p_correct.is_floating_point() else 1e-9
        if p_correct.device.type == "cpu" and not bool(((p_correct >= 0) & (p_correct <= 1 + tol)).all()):
            raise ValueError("p_correct must lie in [0, 1] (NaN is rejected)")
        return -torch.expm1(k * torch.log1p(-p_correct.clamp(0.0, 1.0)))
    p = np.asarray(p_correct, dtype=np.float64)
    if not np.all((p >= 0) & (p <= 1 + 1e-9)):
        raise ValueError("p_correct must lie in [0, 1] (NaN is rejected)")
    with np.errstate(divide="ignore"):
        return -np.expm1(k * np.log1p(-np.clip(p, 0.0, 1.0)))


def entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy H(softmax(logits / temperature)) over the last axis, shape ``[...]``.

    >>> round(entropy(torch.zeros(4)).item(), 4)  # log 4
    1.3863
    """
    if not isinstance(logits, Tensor):
        raise ValueError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    z = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    logp = torch.log_softmax(z / temperature, dim=-1)
    return -(logp.exp() * logp.clamp_min(torch.finfo(logp.dtype).min)).sum(-1)


def kl_divergence(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL(softmax(logits_p) || softmax(logits_q)) over the last axis, shape ``[...]``."""
    if logits_p.shape != logits_q.shape:
        raise ValueError(
            f"logits_q must have the shape of logits_p {tuple(logits_p.shape)}, got {tuple(logits_q.shape)}"
        )
    lp = torch.log_softmax(
        logits_p.float() if logits_p.dtype not in (torch.float32, torch.float64) else logits_p, -1
    )
    lq = torch.log_softmax(logits_q.to(lp.dtype), -1)
    fmin = torch.finfo(lp.dtype).min
    return (lp.exp() * (lp.clamp_min(fmin) - lq.clamp_min(fmin))).sum(-1)


def coverage(probs, correct, threshold: float):
    """Number of distinct correct answers whose probability exceeds ``threshold``.

    Args:
        probs: ``[..., V]`` probabilities (numpy or torch).
        correct: ``[..., V]`` bool, which answers are correct.
        threshold: in [0, 1).
    Returns:
        Counts ``[...]`` (same library as ``probs``).

    >>> coverage(np.array([0.5, 0.3, 0.2]), np.array([True, False, True]), 0.25)
    1
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}")
    if tuple(probs.shape) != tuple(correct.shape):
        raise ValueError(
            f"correct must have the shape of probs {tuple(probs.shape)}, got {tuple(correct.shape)}"
        )
    if isinstance(probs, Tensor):
        return ((probs > threshold) & correct.bool()).sum(-1)
    out = ((np.asarray(probs) > threshold) & np.asarray(correct, dtype=bool)).sum(-1)
    return int(out) if np.ndim(out) == 0 else out
