"""T4 (GIFT init + KL-regularised RL reaches the global Gibbs optimum iff beta = eta - lambda), bandit.

The token-MDP version (sequence Gibbs composition) runs with T2's tree instances: ``t2.check_t2_t4_mdp``.
"""

from __future__ import annotations

import numpy as np
import torch

from theory import bandit as tb
from toybench.tabular import dynamics as dyn
from toybench.theorems.common import BANDIT, CLOSED, SIM, as_logits, as_probs, as_t, make_row

__all__ = ["check_t4_bandit"]


def check_t4_bandit(cfg, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """T4: GIFT init + KL-regularised RL reaches pi_base exp(eta R) iff beta = eta - lambda."""
    n, V, eta, lam = cfg.bandit_instances, cfg.bandit_vocab, cfg.t4_eta, cfg.t4_lam
    p_base = tb.softmax(rng.normal(size=(n, V)))
    y = rng.integers(0, V, size=n)
    R1 = (np.arange(V) == y[:, None]).astype(float)  # reward 1 on the demonstrated answer
    glob = tb.kl_regularised_optimum(p_base, R1, 1.0 / eta)
    pi0 = tb.gift_target(p_base, y, eta - lam)
    rl = tb.kl_regularised_optimum(pi0, R1, 1.0 / lam)
    rows = [
        make_row(
            "T4 GIFT(beta=eta-lam) + KL-RL = global optimum",
            BANDIT,
            CLOSED,
            n,
            "max|pi - pi*|",
            np.max(np.abs(rl - glob)),
            cfg.tol_identity,
        )
    ]
    trained, tv = _t4_trained_gift(cfg, p_base, y, R1, glob)
    return rows + trained + _t4_one_hot(cfg, rng, p_base, R1), dict(tv=tv)


def _t4_trained_gift(cfg, p_base, y, R1, glob) -> tuple[list[dict], dict]:
    """Simulation: train GIFT for real at three betas, then KL-regularised RL (natural PG) from it;
    rows and the TV distance to the global optimum ``glob`` per beta."""
    n, eta, lam = len(y), cfg.t4_eta, cfg.t4_lam
    zb, Rt, yt = as_logits(p_base), as_t(R1), torch.as_tensor(y)
    tv = {}
    for label, beta in (("beta = eta - lam", eta - lam), ("beta = eta", eta), ("beta = 2 eta", 2 * eta)):
        z_gift, _ = dyn.run(zb, lambda z, b=beta: dyn.gift_demo_loss(z, zb, yt, b), cfg.sft_steps, cfg.sft_lr)
        obj = lambda z, z_ref=z_gift: lam * dyn.pg_surrogate(z, Rt) + dyn.kl_to_reference(z, z_ref)
        z_rl, _ = dyn.run(z_gift, obj, cfg.kl_rl_steps, cfg.kl_rl_lr, natural=True)
        tv[label] = 0.5 * np.abs(as_probs(z_rl) - glob).sum(-1)
    rows = [
        make_row(
            "T4 trained GIFT(beta=eta-lam) + KL-RL reaches the optimum",
            BANDIT,
            SIM,
            n,
            "max TV to pi_base exp(eta R)",
            tv["beta = eta - lam"].max(),
            cfg.tol_converged_sft,
        ),
        make_row(
            "T4 mis-set beta (eta, 2 eta) misses the optimum",
            BANDIT,
            SIM,
            2 * n,
            "fraction TV > 1e-4",
            np.mean(np.concatenate([tv["beta = eta"], tv["beta = 2 eta"]]) > 1e-4),
            1.0,
            ">=",
        ),
    ]
    return rows, tv


def _t4_one_hot(cfg, rng: np.random.Generator, p_base, R1) -> list[dict]:
    """One-hot SFT start: pi_0 = e_y stays e_y (closed form with -inf logits), and after real SFT the
    off-answer mass grows at most by e^lam under KL-regularised RL with any reward."""
    (n, V), lam = R1.shape, cfg.t4_lam
    onehot = tb.kl_regularised_optimum(R1, R1, 1.0 / lam)
    zb, Rt = as_logits(p_base), as_t(R1)
    z_sft, _ = dyn.run(zb, lambda z: dyn.sft_population_loss(z, Rt), cfg.sft_steps, cfg.sft_lr)
    R_rand = as_t(rng.random((n, V)))  # any reward in [0, 1): the bound e^lam does not depend on it
    obj = lambda z: lam * dyn.pg_surrogate(z, R_rand) + dyn.kl_to_reference(z, z_sft)
    z_rl, _ = dyn.run(z_sft, obj, cfg.kl_rl_steps, cfg.kl_rl_lr, natural=True)
    off0 = 1 - np.sum(as_probs(z_sft) * R1, -1)
    off1 = 1 - np.sum(as_probs(z_rl) * R1, -1)
    closed = np.max(1 - np.sum(onehot * R1, -1))
    return [
        make_row(
            "T4 one-hot SFT start stays one-hot",
            BANDIT,
            CLOSED,
            n,
            "max mass off y after KL-RL",
            closed,
            cfg.tol_identity,
        ),
        make_row(
            "T4 near-one-hot SFT start: off mass grows at most e^lam",
            BANDIT,
            SIM,
            n,
            "max off1 / (e^lam off0)",
            np.max(off1 / (np.exp(lam) * off0)),
            1.0 + 1e-6,
        ),
    ]
