"""Symbolic (sympy) derivations of the bandit identities behind T1-T5 and GIFT, lambdified.

Each derivation starts from the *definition* (a loss or objective written with ``sympy.exp`` and
``sympy.log``), differentiates it with sympy, and compares the result with the closed form claimed in
docs/methods.md.  Two independent checks come out of each:

  * ``residual``: sympy's simplification of (derived - claimed) for a small symbolic vocabulary V;
    zero means an exact symbolic proof at that V;
  * ``derived_fn`` / ``claimed_fn``: the lambdified numpy functions, which the tests and the theorems
    table evaluate on random instances against ``theory.bandit`` (the numpy closed forms).

Small V (2-4) keeps sympy fast; the identities are the same for every V.  Arguments of the lambdified
functions are arrays with the answer axis last, e.g. ``fn(z, p, r)`` with shapes (..., V).

Reference: docs/methods.md §1.3 and §4; the derivations follow the notation there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import sympy as sp

__all__ = [
    "Derivation",
    "residual",
    "sft_gradient",
    "rl_gradient",
    "sft_rate_along_rl",
    "sft_curvature_at_optimum",
    "kl_optimum_loss",
    "kl_optimum_reward",
    "one_step_kl",
    "gift_eps",
    "gift_consistency_beta",
    "entropy_change",
    "escape_time_antiderivative",
    "escape_time",
    "counterexample_kl",
    "all_derivations",
]


@dataclass(frozen=True)
class Derivation:
    """One symbolic derivation.

    Attributes:
        name: short identifier (used in the theorems table).
        derived: the expression obtained by differentiating / manipulating the definition.
        claimed: the closed form from docs/methods.md.
        args: the argument groups (lists of symbols) of the lambdified functions, in order.
        residual: ``simplify(derived - claimed)`` (0 when the identity is proved for this V).
    """

    name: str
    derived: sp.Expr
    claimed: sp.Expr
    args: tuple
    residual: sp.Expr

    @property
    def proved(self) -> bool:
        """True iff sympy simplified the residual to exactly zero."""
        return bool(self.residual == 0)

    def derived_fn(self, *arrays: np.ndarray) -> np.ndarray:
        """Evaluate the derived expression on numpy arrays (answer axis last; scalars allowed)."""
        return _call(_lambdify(self.args, self.derived), self.args, arrays)

    def claimed_fn(self, *arrays: np.ndarray) -> np.ndarray:
        """Evaluate the claimed closed form on numpy arrays."""
        return _call(_lambdify(self.args, self.claimed), self.args, arrays)


def _lambdify(args: tuple, expr) -> Callable:
    flat = [s for group in args for s in (group if isinstance(group, list | tuple) else [group])]
    if isinstance(expr, sp.MatrixBase):
        fns = [sp.lambdify(flat, e, "numpy") for e in expr]
        return lambda *xs: np.stack([np.broadcast_to(f(*xs), np.broadcast(*xs).shape) for f in fns], -1)
    f = sp.lambdify(flat, expr, "numpy")
    return lambda *xs: np.broadcast_to(f(*xs), np.broadcast(*xs).shape)


def _call(fn: Callable, args: tuple, arrays: tuple) -> np.ndarray:
    if len(arrays) != len(args):
        raise ValueError(f"expected {len(args)} arrays, got {len(arrays)}")
    flat = []
    for group, a in zip(args, arrays):
        a = np.asarray(a, dtype=np.float64)
        if isinstance(group, list | tuple):
            if a.shape[-1:] != (len(group),):
                raise ValueError(f"array of shape {a.shape} must have last axis {len(group)}")
            flat.extend(np.moveaxis(a, -1, 0))
        else:
            flat.append(a)
    return np.asarray(fn(*flat), dtype=np.float64)


def _vec(name: str, V: int, **kw) -> list:
    if V < 2:
        raise ValueError(f"V must be >= 2, got {V}")
    return list(sp.symbols(f"{name}0:{V}", **kw))


def _softmax(z: list) -> list:
    S = sum(sp.exp(zk) for zk in z)
    return [sp.exp(zk) / S for zk in z]


def _E(w: list, x: list):
    return sum(wi * xi for wi, xi in zip(w, x))


def _cov(w: list, a: list, b: list):
    return _E(w, [ai * bi for ai, bi in zip(a, b)]) - _E(w, a) * _E(w, b)


def _simplex(p: list) -> dict:
    """Substitution p_{V-1} = 1 - sum of the others (the data distribution sums to one)."""
    return {p[-1]: 1 - sum(p[:-1])}


def residual(derived, claimed, subs: dict | None = None) -> sp.Expr:
    """derived - claimed (elementwise for lists), after ``subs``, simplified: 0 iff the identity is proved."""
    diff = sp.Matrix(derived) - sp.Matrix(claimed) if isinstance(derived, list) else derived - claimed
    if subs:
        diff = diff.subs(subs)
    if isinstance(diff, sp.MatrixBase):
        diff = diff.applyfunc(lambda e: sp.simplify(sp.expand_log(e, force=True)))
        return sp.Integer(0) if all(e == 0 for e in diff) else diff
    return sp.simplify(sp.expand_log(diff, force=True))


def _log_residual(derived, claimed, subs: dict) -> sp.Expr:
    """Residual for identities between logarithms: simplify(exp(derived - claimed) - 1), zero iff equal."""
    return sp.simplify(sp.exp(sp.expand_log(derived - claimed, force=True)).subs(subs) - 1)


# --------------------------------------------------------------------------- gradients (T1, sec. 2)
@cache
def sft_gradient(V: int = 3) -> Derivation:
    """d/dz_k of L = -sum_i p_i log softmax(z)_i; claimed pi_k - p_k (args: z, p)."""
    z, p = _vec("z", V, real=True), _vec("p", V, positive=True)
    pi = _softmax(z)
    L = -sum(pi_i_p * sp.log(pi_i) for pi_i_p, pi_i in zip(p, pi))
    derived = sp.Matrix([sp.diff(L, zk) for zk in z])
    claimed = sp.Matrix([pk_pi - pk for pk_pi, pk in zip(pi, p)])
    return Derivation(
        "sft_grad", derived, claimed, (z, p), residual(list(derived), list(claimed), _simplex(p))
    )


@cache
def rl_gradient(V: int = 3) -> Derivation:
    """d/dz_k of J = sum_i softmax(z)_i r_i; claimed pi_k (r_k - J) (args: z, r)."""
    z, r = _vec("z", V, real=True), _vec("r", V, real=True)
    pi = _softmax(z)
    J = _E(pi, r)
    derived = sp.Matrix([sp.diff(J, zk) for zk in z])
    claimed = sp.Matrix([pk * (rk - J) for pk, rk in zip(pi, r)])
    return Derivation("pg", derived, claimed, (z, r), residual(list(derived), list(claimed)))


@cache
def sft_rate_along_rl(V: int = 3) -> Derivation:
    """dL_SFT/dt along dz/dt = dJ/dz (chain rule); claimed Cov_{y~pi}(pi(y) - p(y), r(y)) (args: z, p, r)."""
    z, p, r = _vec("z", V, real=True), _vec("p", V, positive=True), _vec("r", V, real=True)
    pi = _softmax(z)
    L = -sum(pk * sp.log(pik) for pk, pik in zip(p, pi))
    J = _E(pi, r)
    derived = sum(sp.diff(L, zk) * sp.diff(J, zk) for zk in z)
    claimed = _cov(pi, [a - b for a, b in zip(pi, p)], r)
    return Derivation("sft_rate", derived, claimed, (z, p, r), residual(derived, claimed, _simplex(p)))


@cache
def sft_curvature_at_optimum(V: int = 3) -> Derivation:
    """d^2 L_SFT/dt^2 at t = 0 of the RL flow from z = log p; claimed Var_{y~p}[p(y)(r(y) - E_p r)].

    Second derivative along an ODE: d^2/dt^2 L(z(t)) = grad(grad L . G) . G with G = dJ/dz.
    Args of the lambdified functions: (p, r).
    """
    z, p, r = _vec("z", V, real=True), _vec("p", V, positive=True), _vec("r", V, real=True)
    pi = _softmax(z)
    L = -sum(pk * sp.log(pik) for pk, pik in zip(p, pi))
    J = _E(pi, r)
    G = [sp.diff(J, zk) for zk in z]
    first = sum(sp.diff(L, zk) * Gk for zk, Gk in zip(z, G))
    second = sum(sp.diff(first, zk) * Gk for zk, Gk in zip(z, G))
    derived = second.subs({zk: sp.log(pk) for zk, pk in zip(z, p)})
    g = [pk * (rk - _E(p, r)) for pk, rk in zip(p, r)]
    claimed = _cov(p, g, g)
    return Derivation("sft_curvature", derived, claimed, (p, r), residual(derived, claimed, _simplex(p)))


# --------------------------------------------------------------------------- KL-regularised optimum (T1, T2)
def _tilt(V: int):
    p, r = _vec("p", V, positive=True), _vec("r", V, real=True)
    lam = sp.Symbol("lam", positive=True)
    Z = sum(pk * sp.exp(lam * rk) for pk, rk in zip(p, r))
    pi_star = [pk * sp.exp(lam * rk) / Z for pk, rk in zip(p, r)]
    Er = _E(p, r)
    K = sp.log(sum(pk * sp.exp(lam * (rk - Er)) for pk, rk in zip(p, r)))
    return p, r, lam, pi_star, K


@cache
def kl_optimum_loss(V: int = 3) -> Derivation:
    """Delta L_SFT = KL(p || pi*) at pi* ∝ p exp(lam r); claimed K(lam) = log E_p exp(lam (r - E_p r)).

    Args: (p, r, lam).
    """
    p, r, lam, pi_star, K = _tilt(V)
    derived = sum(pk * (sp.log(pk) - sp.log(ps)) for pk, ps in zip(p, pi_star))
    return Derivation("kl_opt_loss", derived, K, (p, r, lam), _log_residual(derived, K, _simplex(p)))


@cache
def kl_optimum_reward(V: int = 3) -> Derivation:
    """Delta J = E_{pi*} r - E_p r at pi* ∝ p exp(lam r); claimed K'(lam) (args: p, r, lam)."""
    p, r, lam, pi_star, K = _tilt(V)
    derived = _E(pi_star, r) - _E(p, r)
    claimed = sp.diff(K, lam)
    return Derivation("kl_opt_reward", derived, claimed, (p, r, lam), residual(derived, claimed, _simplex(p)))


@cache
def one_step_kl(V: int = 3) -> Derivation:
    """KL(p || softmax(log p + eta g)) = log E_p exp(eta (g - E_p g)) (args: p, g, eta)."""
    p, g = _vec("p", V, positive=True), _vec("g", V, real=True)
    eta = sp.Symbol("eta", positive=True)
    pi = _softmax([sp.log(pk) + eta * gk for pk, gk in zip(p, g)])
    derived = sum(pk * (sp.log(pk) - sp.log(pik)) for pk, pik in zip(p, pi))
    Eg = _E(p, g)
    claimed = sp.log(sum(pk * sp.exp(eta * (gk - Eg)) for pk, gk in zip(p, g)))
    return Derivation(
        "one_step_kl", derived, claimed, (p, g, eta), _log_residual(derived, claimed, _simplex(p))
    )


# --------------------------------------------------------------------------- GIFT (sec. 1.3, T4)
@cache
def gift_eps() -> Derivation:
    """eps = 1 - q(y) for q = softmax(log p_base + beta e_y); claimed (1 - p)/(1 + (e^beta - 1) p).

    Two-class reduction (y vs the rest, whose base mass is 1 - p).  Args: (p_y, beta).
    """
    p, beta = sp.Symbol("p", positive=True), sp.Symbol("beta", nonnegative=True)
    q_y = p * sp.exp(beta) / (p * sp.exp(beta) + (1 - p))
    derived = 1 - q_y
    claimed = (1 - p) / (1 + (sp.exp(beta) - 1) * p)
    return Derivation("gift_eps", derived, claimed, (p, beta), sp.simplify(derived - claimed))


@cache
def gift_consistency_beta() -> Derivation:
    """Solve for the GIFT temperature beta that makes SFT-then-KL-RL reach the global optimum (T4).

    The KL-regularised RL optimum from pi_0 ∝ pi_base exp(beta R) at strength 1/lam is found from the
    stationarity condition of J - (1/lam) KL(pi || pi_0) (Lagrangian, derived by sympy), and its
    log-odds between two answers is equated to that of pi_base exp(eta R).  Claimed: beta = eta - lam.
    Args: (eta, lam).
    """
    eta, lam, beta, mu = sp.symbols("eta lam beta mu", real=True)
    b1, b2 = sp.symbols("b1 b2", positive=True)  # pi_base of two answers
    R1, R2 = sp.symbols("R1 R2", real=True)
    x1, x2 = sp.symbols("x1 x2", positive=True)  # pi of the two answers
    pi0 = [b1 * sp.exp(beta * R1), b2 * sp.exp(beta * R2)]  # unnormalised; the constant cancels
    obj = x1 * R1 + x2 * R2 - (x1 * sp.log(x1 / pi0[0]) + x2 * sp.log(x2 / pi0[1])) / lam
    sol = [sp.solve(sp.diff(obj, x) - mu, x)[0] for x in (x1, x2)]
    log_odds_rl = sp.expand_log(sp.log(sol[0] / sol[1]), force=True)
    log_odds_global = sp.log(b1 / b2) + eta * (R1 - R2)
    derived = sp.solve(sp.Eq(sp.expand(log_odds_rl - sp.expand_log(log_odds_global, force=True)), 0), beta)[0]
    claimed = eta - lam
    return Derivation("gift_beta", derived, claimed, (eta, lam), sp.simplify(derived - claimed))


# --------------------------------------------------------------------------- entropy mechanism (T3)
@cache
def entropy_change(V: int = 3, natural: bool = False) -> Derivation:
    """dH/deta at eta = 0 of H(softmax(z + eta u)), u = pi A (PG) or A (natural PG).

    Claimed: -Cov_pi(log pi, u), i.e. Delta H ≈ -eta Cov(log pi, pi A) (PG) or -eta Cov(log pi, A) (NPG).
    Args: (z, A).
    """
    z, A = _vec("z", V, real=True), _vec("A", V, real=True)
    eta = sp.Symbol("eta", real=True)
    pi = _softmax(z)
    u = A if natural else [pk * ak for pk, ak in zip(pi, A)]
    pi_eta = _softmax([zk + eta * uk for zk, uk in zip(z, u)])
    H = -sum(q * sp.log(q) for q in pi_eta)
    derived = sp.diff(H, eta).subs(eta, 0)
    claimed = -_cov(pi, [sp.log(q) for q in pi], u)
    name = "entropy_npg" if natural else "entropy_pg"
    return Derivation(name, derived, claimed, (z, A), residual(derived, claimed))


# --------------------------------------------------------------------------- escape time (T5)
@cache
def escape_time_antiderivative() -> tuple[sp.Symbol, sp.Expr]:
    """Antiderivative F(x) of 1/(x^2 (1-x)^2), by sympy (the exact-PG plateau integral of T5).

    For r = e_{a*} and the other V - 1 logits equal, the PG flow gives
    dx/dt = V/(V-1) x^2 (1-x)^2 with x = pi(a*), so the time from x0 to x1 is (V-1)/V (F(x1) - F(x0)).
    """
    x = sp.Symbol("x", positive=True)
    integrand = 1 / (x**2 * (1 - x) ** 2)
    # sympy returns log(x - 1), complex on (0, 1); log(1 - x) differs by a constant (i pi) only.
    F = sp.simplify(sp.integrate(integrand, x)).subs(sp.log(x - 1), sp.log(1 - x))
    if sp.simplify(sp.diff(F, x) - integrand) != 0:  # guard the substitution above
        raise RuntimeError("escape-time antiderivative does not differentiate back to the integrand")
    return x, F


def escape_time(x0: np.ndarray, x1: float, V: int) -> np.ndarray:
    """Exact PG-flow time for pi(a*) to go from x0 to x1 (T5; see ``escape_time_antiderivative``)."""
    x0 = np.asarray(x0, dtype=np.float64)
    if np.any((x0 <= 0) | (x0 >= 1)) or not 0 < x1 < 1:
        raise ValueError("x0 and x1 must lie in (0, 1)")
    if V < 2:
        raise ValueError(f"V must be >= 2, got {V}")
    x, F = escape_time_antiderivative()
    f = sp.lambdify(x, F, "numpy")
    return (V - 1) / V * (f(x1) - f(x0))


def counterexample_kl() -> sp.Expr:
    """Exact KL((3/4, 1/4) || (1/2, 1/2)) of the T2 v1 counterexample (= 0.130812...)."""
    q = sp.Rational(1, 2)
    p = [sp.Rational(3, 4), sp.Rational(1, 4)]
    return sp.nsimplify(sum(pk * sp.log(pk / q) for pk in p))


def all_derivations(V: int = 3) -> list[Derivation]:
    """Every derivation above at vocabulary size V (the escape-time integral is separate)."""
    return [
        sft_gradient(V),
        rl_gradient(V),
        sft_rate_along_rl(V),
        sft_curvature_at_optimum(V),
        kl_optimum_loss(V),
        kl_optimum_reward(V),
        one_step_kl(V),
        gift_eps(),
        gift_consistency_beta(),
        entropy_change(V, natural=False),
        entropy_change(V, natural=True),
    ]
