"""T2 (SFT after RL gives back reward; the v1 counterexample; path shape), bandit and token MDP.

The token-MDP check also verifies T4's sequence Gibbs composition on the same instances.
"""

from __future__ import annotations

import numpy as np

from theory import bandit as tb
from theory import mdp
from theory import symbolic as sym
from toybench.tabular import dynamics as dyn
from toybench.theorems.common import (
    BANDIT,
    CLOSED,
    MDP,
    SIM,
    as_logits,
    as_probs,
    as_t,
    bandit_instances,
    make_row,
    tree_instances,
)

__all__ = ["check_t2_bandit", "check_t2_t4_mdp"]


# --------------------------------------------------------------------------- T2, bandit
def check_t2_bandit(cfg, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """T2 on the bandit: SFT from the RL optimum ends at J(p); the v1 counterexample; path shape."""
    n, V = cfg.bandit_instances, cfg.bandit_vocab
    p, r, pi = bandit_instances(rng, n, V)
    P, R = as_t(p), as_t(r)
    sft = lambda z: dyn.sft_population_loss(z, P)
    rec = lambda z: dyn.expected_return(z, R)
    rows, Js, J_p = _bandit_sft_from_rl_optimum(cfg, p, r, sft, rec)
    rows += _bandit_transient_search(cfg, rng, V)
    rows.append(_bandit_random_start(cfg, pi, sft, rec))
    rows.append(_bandit_v1_counterexample(cfg))
    fig = dict(J=Js[:, :6], J_p=J_p[:6], t=cfg.sft_lr * np.arange(Js.shape[0]))
    return rows, fig


def _bandit_sft_from_rl_optimum(cfg, p, r, sft, rec) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Population SFT from the KL-regularised RL optimum: end point, reward lost, strict drop, path shape."""
    n, lam = len(p), cfg.t2_lam
    pi_rl = tb.kl_regularised_optimum(p, r, 1.0 / lam)
    _, Js = dyn.run(as_logits(pi_rl), sft, cfg.sft_steps, cfg.sft_lr, record=rec)
    Js = Js.numpy()  # (K+1, n)
    J_p = tb.expected_reward(p, r)
    rows = [
        make_row(
            "T2 SFT from pi_RL ends at J(p_data)",
            BANDIT,
            SIM,
            n,
            "max|J_end - J(p)|",
            np.max(np.abs(Js[-1] - J_p)),
            cfg.tol_converged_sft,
        ),
        make_row(
            "T2 reward lost = K'(lam) at the KL-reg. optimum",
            BANDIT,
            SIM,
            n,
            "max|(J_0 - J_end) - K'(lam)|",
            np.max(np.abs(Js[0] - Js[-1] - tb.cumulant_grad(p, r, lam))),
            cfg.tol_converged_sft,
        ),
    ]
    rows += _drop_and_path_rows(cfg, BANDIT, "r", Js)
    return rows, Js, J_p


def _rises(Js: np.ndarray, tol: float) -> np.ndarray:
    """Per instance: does the reward path Js (K+1, I) ever rise by more than ``tol`` in one step?"""
    return np.max(np.diff(Js, axis=0), axis=0) > tol


def _drop_and_path_rows(cfg, setting, reward: str, Js: np.ndarray) -> list[dict]:
    """T2 along SFT from pi* (reward path Js (K+1, I)): strict drop, and how often the path rises."""
    I = Js.shape[1]
    return [
        make_row(
            f"T2 strict drop when Var_p {reward} > 0",
            setting,
            SIM,
            I,
            "fraction J_end < J_0",
            np.mean(Js[-1] < Js[0]),
            1.0,
            ">=",
        ),
        make_row(
            "T2 reward path during SFT non-monotone (from pi*)",
            setting,
            SIM,
            I,
            "fraction with a transient rise",
            np.mean(_rises(Js, cfg.tol_monotone)),
            0,
            "report",
        ),
    ]


def _bandit_transient_search(cfg, rng: np.random.Generator, V: int) -> list[dict]:
    """Larger search from the RL optimum: transient rises exist but are rare, more frequent at large lam."""
    rows = []
    for lam_s in cfg.t2_search_lams:
        p_s, r_s, _ = bandit_instances(rng, cfg.t2_search_instances, V, spread=2.0)
        z_s = as_logits(tb.kl_regularised_optimum(p_s, r_s, 1.0 / lam_s))
        P_s, R_s = as_t(p_s), as_t(r_s)
        _, J_s = dyn.run(
            z_s,
            lambda z, P_s=P_s: dyn.sft_population_loss(z, P_s),
            cfg.t2_search_steps,
            cfg.t2_search_lr,
            record=lambda z, R_s=R_s: dyn.expected_return(z, R_s),
        )
        rise = _rises(J_s.numpy(), cfg.tol_monotone)
        rows.append(
            make_row(
                f"T2 reward path during SFT non-monotone (from pi*, lam={lam_s:g})",
                BANDIT,
                SIM,
                len(rise),
                "fraction with a transient rise",
                np.mean(rise),
                0,
                "report",
            )
        )
    return rows


def _bandit_random_start(cfg, pi, sft, rec) -> dict:
    """How often the reward path of SFT from a random policy is non-monotone."""
    _, Js_rand = dyn.run(as_logits(pi), sft, cfg.sft_steps, cfg.sft_lr, record=rec)
    d = np.diff(Js_rand.numpy(), axis=0)
    nonmono = (d.max(0) > cfg.tol_monotone) & (d.min(0) < -cfg.tol_monotone)
    return make_row(
        "T2 reward path during SFT non-monotone (random start)",
        BANDIT,
        SIM,
        len(pi),
        "fraction non-monotone",
        np.mean(nonmono),
        0,
        "report",
    )


def _bandit_v1_counterexample(cfg) -> dict:
    """The v1 counterexample: r = 0, pi_ref = pi_RL = (.5, .5), pi_SFT = (.75, .25)."""
    kl_exact = float(sym.counterexample_kl())
    p_ce, r_ce = np.array([[0.75, 0.25]]), np.zeros((1, 2))
    z_ce, J_ce = dyn.run(
        as_logits(np.array([[0.5, 0.5]])),
        lambda z: dyn.sft_population_loss(z, as_t(p_ce)),
        cfg.sft_steps,
        cfg.sft_lr,
        record=lambda z: dyn.expected_return(z, as_t(r_ce)),
    )
    kl_sim = float(tb.kl(as_probs(z_ce), np.array([[0.5, 0.5]]))[0])
    shown = (0.1 <= kl_exact <= 0.2) and (0.1 <= kl_sim <= 0.2) and np.all(J_ce.numpy() == 0.0)
    return make_row(
        f"T2 v1 'KL band => strict drop': r=0, KL={kl_exact:.6f}, drop=0",
        BANDIT,
        "symbolic + simulation",
        1,
        "KL in [0.1,0.2] and no reward drop",
        shown,
        1,
        "ce",
    )


# --------------------------------------------------------------------------- T2 and T4, token MDP
def check_t2_t4_mdp(cfg, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """T2 (SFT from the tree RL optimum ends at J(P_p)) and T4 (sequence Gibbs composition) on the tree."""
    zp, _, R = tree_instances(cfg, rng)
    I = zp.shape[0]
    p = mdp.policy(zp)
    star = mdp.gibbs_logits(np.log(p), R, cfg.t2_lam)
    Pd, Rt = as_t(mdp.leaf_probs(p)), as_t(R)
    sft = lambda x: dyn.sft_population_loss(x, Pd)
    # end point: natural-gradient SFT (Fisher under the data occupancy d_p) converges at every visited node
    z_nat, _ = dyn.run(
        as_t(star), sft, cfg.kl_rl_steps, cfg.kl_rl_lr, natural=True, state_weight=as_t(mdp.occupancy(p))
    )
    J_end = dyn.expected_return(z_nat, Rt).numpy()
    # path: plain gradient SFT as trained
    _, Js = dyn.run(
        as_t(star), sft, cfg.tree_sft_steps, cfg.sft_lr, record=lambda x: dyn.expected_return(x, Rt)
    )
    Js = Js.numpy()
    J_p = mdp.expected_return(p, R)
    rows = [
        make_row(
            "T2 SFT (natural gradient) from pi_RL ends at J(p_data)",
            MDP,
            SIM,
            I,
            "max|J_end - J(p)|",
            np.max(np.abs(J_end - J_p)),
            cfg.tol_converged,
        ),
    ]
    rows += _drop_and_path_rows(cfg, MDP, "R", Js)
    beta, lam = cfg.t4_eta - cfg.t4_lam, cfg.t4_lam
    base = zp
    two = mdp.gibbs_logits(mdp.gibbs_logits(base, R, beta), R, lam)
    rows.append(
        make_row(
            "T4 seq. Gibbs(beta) + KL-RL(lam) = Gibbs(beta + lam)",
            MDP,
            CLOSED,
            I,
            "max|lhs-rhs|",
            np.max(np.abs(two - mdp.gibbs_logits(base, R, beta + lam))),
            cfg.tol_identity,
        )
    )
    return rows, {}
