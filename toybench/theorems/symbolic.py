"""Every sympy derivation of ``theory.symbolic``: proved at small V, and lambdified vs numpy."""

from __future__ import annotations

import numpy as np

from theory import bandit as tb
from theory import symbolic as sym
from toybench.theorems.common import BANDIT, SYMBOLIC, bandit_instances, make_row

__all__ = ["check_symbolic", "numpy_oracles"]


def check_symbolic(cfg, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """Every sympy derivation: proved at V = cfg.symbolic_vocab, and lambdified vs the numpy oracle."""
    V, n = cfg.symbolic_vocab, cfg.bandit_instances
    p, r, pi = bandit_instances(rng, n, V)
    lam = rng.uniform(0.1, 3.0, size=n)
    eta = rng.uniform(0.1, 2.0, size=n)
    numpy_oracle = numpy_oracles(p, r, pi, lam, eta)
    numpy_oracle["gift_beta"] = ((lam + eta, lam), eta)
    labels = {
        "sft_grad": "T1 SFT logit gradient pi - p",
        "pg": "T1 RL logit gradient pi (r - J)",
        "sft_rate": "T1 threshold dL/dt = Cov_pi(pi - p, r)",
        "sft_curvature": "T1 second order: L'' = Var_p[p (r - E_p r)]",
        "kl_opt_loss": "T1 KL-reg. optimum: dL_SFT = K(lam)",
        "kl_opt_reward": "T1/T2 KL-reg. optimum: dJ = K'(lam)",
        "one_step_kl": "T1 one logit step: KL = log E_p exp(eta (g - E g))",
        "gift_eps": "GIFT eps = (1-p)/(1+(e^beta-1)p)",
        "gift_beta": "T4 consistency beta = eta - lambda",
        "entropy_pg": "T3 PG: dH = -eta Cov(log pi, pi A)",
        "entropy_npg": "T3 NPG: dH = -eta Cov(log pi, A)",
    }
    rows = []
    for d in sym.all_derivations(V):
        args, oracle = numpy_oracle[d.name]
        err = np.max(np.abs(d.derived_fn(*args) - oracle))
        rows.append(
            make_row(labels[d.name], BANDIT, SYMBOLIC, 1, f"sympy residual == 0 (V={V})", d.proved, 1, ">=")
        )
        rows.append(
            make_row(
                labels[d.name],
                BANDIT,
                "symbolic vs closed form",
                n,
                "max|lambdified - numpy|",
                err,
                cfg.tol_identity,
            )
        )
    return rows, {}


def numpy_oracles(p, r, pi, lam, eta) -> dict:
    """``{derivation name: (its arguments, the theory.bandit closed form)}`` on bandits (n, V).

    ``lam`` and ``eta`` are per-instance (n,) KL strengths and logit step sizes; ``gift_beta``
    (a scalar identity, not a closed form of theory.bandit) is left to the caller.
    """
    z = np.log(pi)
    A = r - tb.expected_reward(pi, r)[:, None]
    return {
        "sft_grad": ((z, p), tb.sft_population_grad(p, pi)),
        "pg": ((z, r), tb.policy_gradient(pi, r)),
        "sft_rate": ((z, p, r), tb.sft_loss_rate_under_rl(pi, p, r)),
        "sft_curvature": ((p, r), tb.sft_loss_curvature_at_optimum(p, r)),
        "kl_opt_loss": ((p, r, lam), tb.cumulant(p, r, lam)),
        "kl_opt_reward": ((p, r, lam), tb.cumulant_grad(p, r, lam)),
        "one_step_kl": ((p, r, eta), tb.cumulant(p, r, eta)),
        "gift_eps": ((p[:, 0], lam), tb.gift_eps(p[:, 0], lam)),
        "entropy_pg": ((z, A), tb.entropy_change_pg(pi, A, 1.0)),
        "entropy_npg": ((z, A), tb.entropy_change_npg(pi, A, 1.0)),
    }
