"""Closed forms for the one-step softmax bandit (numpy only).

This module is the *independent oracle* that the torch losses in ``toybench.losses`` are
tested against, so it never imports torch and it writes each formula in its textbook closed
form rather than by calling the same primitives the torch code uses (the GIFT target, for
instance, is built from the eps formula, not from ``softmax(log p + beta e_y)``).

Conventions: ``z`` are logits with the answer axis last (shape ``[..., V]``), ``pi =
softmax(z)``; ``p`` is the data distribution; ``r`` a reward vector over answers. Every
function broadcasts over leading axes. Gradients are with respect to the logits ``z`` and
are those of the *loss* (to be descended), except ``policy_gradient`` and
``natural_gradient`` which are ascent directions of the expected reward J, as in the
literature. Equations follow ``docs/methods.md`` §1, §2 and §4.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]


# ----------------------------------------------------------------------------- basics
def _as_dist(p: ArrayLike, name: str, atol: float = 1e-6) -> Array:
    """Return ``p`` as float64 and check it is a probability vector along the last axis."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 0:
        raise ValueError(f"{name} must have an answer axis, got a scalar")
    if np.any(p < -atol) or not np.all(np.isfinite(p)):
        raise ValueError(f"{name} must be non-negative and finite")
    if not np.allclose(p.sum(-1), 1.0, atol=atol):
        raise ValueError(f"{name} must sum to 1 along the last axis (sums: {np.ravel(p.sum(-1))[:4]})")
    return p


def softmax(z: ArrayLike, axis: int = -1) -> Array:
    """pi_k = exp(z_k) / sum_j exp(z_j), computed stably.

    >>> softmax([0.0, np.log(3.0)]).round(3).tolist()
    [0.25, 0.75]
    """
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(z: ArrayLike, axis: int = -1) -> Array:
    """log pi_k = z_k - logsumexp(z)."""
    z = np.asarray(z, dtype=np.float64)
    m = np.max(z, axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def entropy(pi: ArrayLike) -> Array:
    """H(pi) = -sum_k pi_k log pi_k, with 0 log 0 = 0."""
    pi = np.asarray(pi, dtype=np.float64)
    safe = np.where(pi > 0, pi, 1.0)
    return -np.sum(np.where(pi > 0, pi * np.log(safe), 0.0), axis=-1)


def kl(p: ArrayLike, q: ArrayLike) -> Array:
    """KL(p || q) = sum_k p_k (log p_k - log q_k); +inf where q = 0 < p."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(q)), 0.0)
    return terms.sum(-1)


def expected_reward(pi: ArrayLike, r: ArrayLike) -> Array:
    """J(pi) = sum_k pi_k r_k."""
    return np.sum(np.asarray(pi, dtype=np.float64) * np.asarray(r, dtype=np.float64), axis=-1)


# ----------------------------------------------------------------------------- SFT
def sft_loss(p: ArrayLike, pi: ArrayLike) -> Array:
    """Population SFT loss L(pi) = E_{y~p}[-log pi(y)] = H(p) + KL(p || pi)   (docs/methods.md §1.1, §4.1).

    >>> p = np.array([0.5, 0.5]); float(sft_loss(p, p).round(6)) == float(np.log(2).round(6))
    True
    """
    p = _as_dist(p, "p")
    return entropy(p) + kl(p, pi)


def sft_population_grad(p: ArrayLike, pi: ArrayLike) -> Array:
    """Population SFT gradient dL_SFT/dz = pi - p, from the data distribution p and the policy pi.

    Per sample (logits and one target token) it is :func:`sft_token_grad`.
    """
    return np.asarray(pi, dtype=np.float64) - np.asarray(p, dtype=np.float64)


def _onehot(y: ArrayLike, V: int) -> Array:
    y = np.asarray(y)
    if np.any(y < 0) or np.any(y >= V):
        raise ValueError(f"targets must lie in [0, {V}), got {y}")
    return (np.arange(V) == y[..., None]).astype(np.float64)


def sft_token_grad(z: ArrayLike, y: ArrayLike) -> Array:
    """Per-token SFT gradient of l = -log pi(y) in the logits z: softmax(z) - e_y.

    Averaged over y ~ p it is :func:`sft_population_grad`.
    """
    pi = softmax(z)
    return pi - _onehot(y, pi.shape[-1])


def grad_weighted_sft(z: ArrayLike, y: ArrayLike, w: ArrayLike) -> Array:
    """Gradient of the PEAR-weighted token loss sg[w] * (-log pi(y)): w (pi - e_y) (docs/methods.md §1.5)."""
    return np.asarray(w, dtype=np.float64)[..., None] * sft_token_grad(z, y)


def grad_entropy_sft(z: ArrayLike, y: ArrayLike, coef: float) -> Array:
    """Gradient of l = -log pi(y) - coef H(pi): pi - e_y + coef pi (log pi + H(pi))   (docs/methods.md §1.2).

    Uses dH/dz_k = -pi_k (log pi_k + H).
    """
    pi = softmax(z)
    H = entropy(pi)[..., None]
    return pi - _onehot(y, pi.shape[-1]) + coef * pi * (log_softmax(z) + H)


def grad_dft(z: ArrayLike, y: ArrayLike) -> Array:
    """Gradient of l = -sg[pi(y)] log pi(y): pi(y) (pi - e_y)   (docs/methods.md §1.6)."""
    pi = softmax(z)
    e_y = _onehot(y, pi.shape[-1])
    pi_y = np.sum(pi * e_y, axis=-1, keepdims=True)
    return pi_y * (pi - e_y)


def grad_curio(z: ArrayLike, y: ArrayLike, zbar: ArrayLike, tau: ArrayLike, alpha: float = 1.0) -> Array:
    """Gradient of CurioSFT's l = -log pi(y) + (alpha/2)(log pi(y) - sg[log q(y)])^2, q = softmax(zbar/tau).

    Equals w (pi - e_y) with w = 1 - alpha (log pi(y) - log q(y))   (docs/methods.md §1.4, derived).
    """
    logpi = log_softmax(z)
    tau = np.asarray(tau, dtype=np.float64)
    if np.any(tau <= 0):
        raise ValueError(f"tau must be > 0, got {tau}")
    logq = log_softmax(np.asarray(zbar, dtype=np.float64) / tau[..., None])
    e_y = _onehot(y, logpi.shape[-1])
    gap = np.sum((logpi - logq) * e_y, axis=-1)
    return grad_weighted_sft(z, y, 1.0 - alpha * gap)


# ----------------------------------------------------------------------------- GIFT
def gift_eps(p_y: ArrayLike, beta: ArrayLike) -> Array:
    """GIFT target mass off the data token: eps = (1 - p) / (1 + (e^beta - 1) p) (docs/methods.md §1.3).

    beta -> inf gives 0 (standard SFT); beta = 0 gives 1 - p (the base distribution).

    >>> float(gift_eps(0.2, 0.0))
    0.8
    """
    p = np.asarray(p_y, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    if np.any(beta < 0):
        raise ValueError(f"beta must be >= 0, got {beta}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p_y must lie in [0, 1]")
    with np.errstate(over="ignore"):
        return (1.0 - p) / (1.0 + np.expm1(beta) * p)


def gift_target(p_base: ArrayLike, y: ArrayLike, beta: float, smooth: float = 0.0) -> Array:
    """GIFT's token target in closed form: q = (1 - eps) e_y + eps p_s(. | k != y)   (docs/methods.md §1.3).

    p_s = (1 - smooth) p_base + smooth / V is the smoothed base; eps = gift_eps(p_s(y), beta).
    Equal to softmax(log p_s + beta e_y), written here without that softmax on purpose.
    """
    if not 0.0 <= smooth <= 1.0:
        raise ValueError(f"smooth must lie in [0, 1], got {smooth}")
    p_base = _as_dist(p_base, "p_base")
    V = p_base.shape[-1]
    p_s = (1.0 - smooth) * p_base + smooth / V
    e_y = _onehot(y, V)
    p = np.sum(p_s * e_y, axis=-1, keepdims=True)
    eps = gift_eps(p, beta)
    rest = np.where(e_y > 0, 0.0, p_s)
    denom = 1.0 - p
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where(denom > 0, rest / np.where(denom > 0, denom, 1.0), 0.0)
    return (1.0 - eps) * e_y + eps * off


def grad_gift(z: ArrayLike, y: ArrayLike, z_base: ArrayLike, beta: float, smooth: float = 0.0) -> Array:
    """Gradient of GIFT's loss CE(q, pi) = -sum_k q_k log pi_k in logits: pi - q."""
    return softmax(z) - gift_target(softmax(z_base), y, beta, smooth)


# ----------------------------------------------------------------------------- RL
def policy_gradient(pi: ArrayLike, r: ArrayLike) -> Array:
    """Exact softmax policy gradient dJ/dz = pi * (r - J(pi))   (docs/methods.md §2.6)."""
    pi = np.asarray(pi, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    return pi * (r - expected_reward(pi, r)[..., None])


def natural_gradient(pi: ArrayLike, r: ArrayLike) -> Array:
    """Natural policy gradient in logits: F^+ dJ/dz = r - J(pi) (the advantage), F = diag(pi) - pi pi^T.

    Defined up to adding a constant to every logit, which leaves pi unchanged.
    """
    r = np.asarray(r, dtype=np.float64)
    return r - expected_reward(pi, r)[..., None]


def kl_regularised_optimum(pi_ref: ArrayLike, r: ArrayLike, beta: float) -> Array:
    """argmax_pi J(pi) - beta KL(pi || pi_ref) = pi_ref exp(r / beta) / Z   (docs/methods.md §1.3, §4.1)."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    pi_ref = _as_dist(pi_ref, "pi_ref")
    with np.errstate(divide="ignore"):
        return softmax(np.log(pi_ref) + np.asarray(r, dtype=np.float64) / beta)


def cumulant(p: ArrayLike, r: ArrayLike, lam: ArrayLike) -> Array:
    """Centred cumulant generating function K(lam) = log E_p exp(lam (r - E_p r))   (docs/methods.md §4.1).

    At the KL-regularised optimum pi* ∝ p exp(lam r), Delta L_SFT = KL(p || pi*) = K(lam).
    """
    p = _as_dist(p, "p")
    r = np.asarray(r, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64)[..., None]
    x = lam * (r - expected_reward(p, r)[..., None])
    with np.errstate(divide="ignore"):
        a = np.log(p) + x
    m = np.max(a, axis=-1, keepdims=True)
    return (m + np.log(np.sum(np.exp(a - m), axis=-1, keepdims=True)))[..., 0]


def cumulant_grad(p: ArrayLike, r: ArrayLike, lam: ArrayLike) -> Array:
    """K'(lam) = E_{pi*}[r] - E_p[r], pi* ∝ p exp(lam r): the reward gained at the optimum (T1, T2)."""
    p = _as_dist(p, "p")
    r = np.asarray(r, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64)[..., None]
    with np.errstate(divide="ignore"):
        tilt = softmax(np.log(p) + lam * r)
    return expected_reward(tilt, r) - expected_reward(p, r)


# ----------------------------------------------------------------------------- entropy (T3)
def _cov(pi: Array, a: Array, b: Array) -> Array:
    """Cov_{k~pi}(a_k, b_k)."""
    ea = np.sum(pi * a, axis=-1, keepdims=True)
    eb = np.sum(pi * b, axis=-1, keepdims=True)
    return np.sum(pi * (a - ea) * (b - eb), axis=-1)


def entropy_change_pg(pi: ArrayLike, adv: ArrayLike, eta: float) -> Array:
    """First-order entropy change of a softmax PG step z += eta pi*A: -eta Cov_pi(log pi, pi A)   (T3)."""
    pi = _as_dist(pi, "pi")
    adv = np.asarray(adv, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return -eta * _cov(pi, np.log(pi), pi * adv)


def entropy_change_npg(pi: ArrayLike, adv: ArrayLike, eta: float) -> Array:
    """First-order entropy change of a natural PG step z += eta A: -eta Cov_pi(log pi, A)   (T3)."""
    pi = _as_dist(pi, "pi")
    adv = np.asarray(adv, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return -eta * _cov(pi, np.log(pi), adv)


def sft_loss_rate_under_rl(pi: ArrayLike, p: ArrayLike, r: ArrayLike) -> Array:
    """dL_SFT/dt along the RL gradient flow dz/dt = pi*(r - J): Cov_{y~pi}(pi(y) - p(y), r(y))   (T1)."""
    pi = _as_dist(pi, "pi")
    p = _as_dist(p, "p")
    return _cov(pi, pi - p, np.asarray(r, dtype=np.float64))


def sft_loss_curvature_at_optimum(p: ArrayLike, r: ArrayLike) -> Array:
    """d^2 L_SFT / dt^2 at t = 0 of the RL flow started at pi = p: Var_{y~p}[p(y) (r(y) - E_p r)]   (T1).

    So L(t) - H(p) = (t^2 / 2) * this + O(t^3).
    """
    p = _as_dist(p, "p")
    r = np.asarray(r, dtype=np.float64)
    g = p * (r - expected_reward(p, r)[..., None])
    return _cov(p, g, g)
