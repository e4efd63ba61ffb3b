"""T1 (SFT loss = H(p) + KL, raised by RL from the SFT optimum), on the bandit and the token MDP."""

from __future__ import annotations

import numpy as np
import torch

from theory import bandit as tb
from theory import mdp
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

__all__ = ["rl_from_sft_optimum", "check_t1_bandit", "check_t1_mdp"]


def rl_from_sft_optimum(cfg, setting, z0, P_data, H_p, kl_fn, R, gen, natural=True) -> list[dict]:
    """T1 with the other RL algorithms: natural PG (bandit) and sampled GRPO (fixed seed) from pi = p.

    Measures L_SFT with ``toybench.losses`` along the run and compares it with H(p) + KL(p || pi_t).
    ``kl_fn`` maps recorded logits (K+1, I, N, V) as numpy to KL(p || pi_t), shape (K+1, I).
    """
    loss = lambda z: dyn.sft_population_loss(z, P_data)
    runs = []
    if natural:
        pg = lambda z: dyn.pg_surrogate(z, R)
        runs.append(("natural PG", dict(objective=pg, steps=cfg.flow_steps, lr=cfg.flow_dt, natural=True)))
    grpo = lambda z: dyn.grpo_surrogate(z, R, cfg.num_generations, gen)
    runs.append(
        (
            f"sampled GRPO (G={cfg.num_generations}, seeded)",
            dict(objective=grpo, steps=cfg.grpo_steps, lr=cfg.grpo_lr),
        )
    )
    rows = []
    for name, kw in runs:
        _, zs = dyn.run(z0, record=lambda z: z.clone(), **kw)
        dL = torch.stack([loss(z) for z in zs]).numpy() - H_p  # (K+1, I)
        kl = kl_fn(zs.numpy())
        rows += _flow_rows(cfg, setting, dL, kl, f"KL(p||pi_RL) along {name}", f"{name} from SFT optimum")
    return rows


def _flow_rows(cfg, setting, dL, kl, identity: str, run: str) -> list[dict]:
    """Rows along an RL run from the SFT optimum: dL_SFT = ``kl`` (both (K+1, I)); dL_SFT > 0 at the end."""
    return [
        make_row(
            f"T1 dL_SFT = {identity}",
            setting,
            SIM,
            dL.shape[1],
            "max|lhs-rhs|",
            np.max(np.abs(dL - kl)),
            cfg.tol_identity,
        ),
        make_row(
            f"T1 {run} raises L_SFT",
            setting,
            SIM,
            dL.shape[1],
            "fraction dL_SFT > 0 at end",
            np.mean(dL[-1] > 0),
            1.0,
            ">=",
        ),
    ]


def _second_order_row(cfg, result: str, setting, z0, H_p, c, loss, pg) -> dict:
    """L - H = (t^2 / 2) c after a short, fine exact-PG flow from the SFT optimum ``z0``.

    Euler error is O(dt) relative, the O(t^3) term O(t) relative.
    """
    K, T = cfg.second_order_steps, cfg.second_order_time
    z_end, _ = dyn.run(z0, pg, K, T / K)
    rel = np.abs((loss(z_end).numpy() - H_p) / (0.5 * T**2 * c) - 1)
    return make_row(
        result, setting, SIM, len(c), f"max rel. error at t={T:g}", rel.max(), cfg.tol_second_order
    )


def _central_difference(z0, loss, pg, h) -> np.ndarray:
    """d loss / dt along one exact-PG step from ``z0``: a torch central difference of step ``h``."""
    z_plus, _ = dyn.run(z0, pg, 1, h)
    return (loss(z_plus) - loss(2 * z0 - z_plus)).numpy() / (2 * h)


# --------------------------------------------------------------------------- T1, bandit
def check_t1_bandit(cfg, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """T1 on the bandit: identity, second order, threshold, one exact step, KL-regularised optimum."""
    n, V = cfg.bandit_instances, cfg.bandit_vocab
    p, r, pi = bandit_instances(rng, n, V)
    P, R = as_t(p), as_t(r)
    loss = lambda z: dyn.sft_population_loss(z, P)  # measured with toybench.losses
    pg = lambda z: dyn.pg_surrogate(z, R)
    rows = [_bandit_identity(cfg, p, pi)]
    flow_rows, zs, dL = _bandit_pg_flow(cfg, p, loss, pg)
    rows += flow_rows
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    kl_fn = lambda zs_np: tb.kl(p, tb.softmax(zs_np[..., 0, :]))
    rows += rl_from_sft_optimum(cfg, BANDIT, as_logits(p), P, tb.entropy(p), kl_fn, R, gen)
    rows.append(_bandit_second_order_npg(cfg, p, r, loss, pg))
    c = tb.sft_loss_curvature_at_optimum(p, r)
    t = cfg.flow_dt * np.arange(zs.shape[0])
    fig = dict(t=t, dL=dL[:, :4], pred=0.5 * t[:, None] ** 2 * c[None, :4])
    rows.append(_bandit_second_order_pg(cfg, p, c, loss, pg))
    rows += _bandit_threshold(cfg, p, r, pi, loss, pg)
    rows.append(_bandit_one_step(cfg, p, r, loss, pg))
    kl_rows, kl_fig = _bandit_kl_optimum(cfg, p, r)
    rows += kl_rows
    fig.update(**kl_fig, dL_flow=dL[:, :4])
    return rows, fig


def _bandit_identity(cfg, p, pi) -> dict:
    """L = H(p) + KL(p || pi) in closed form."""
    direct = -np.sum(p * np.log(pi), -1)
    err = np.max(np.abs(direct - tb.entropy(p) - tb.kl(p, pi)))
    return make_row(
        "T1 L_SFT = H(p) + KL(p||pi)", BANDIT, CLOSED, len(p), "max|lhs-rhs|", err, cfg.tol_identity
    )


def _bandit_pg_flow(cfg, p, loss, pg) -> tuple[list[dict], torch.Tensor, np.ndarray]:
    """The identity along a real exact-PG run from the SFT optimum; returns rows, logits and dL_SFT."""
    _, zs = dyn.run(as_logits(p), pg, cfg.flow_steps, cfg.flow_dt, record=lambda z: z.clone())
    dL = torch.stack([loss(z) for z in zs]).numpy() - tb.entropy(p)  # (K+1, n)
    kl_path = tb.kl(p, as_probs(zs))
    return _flow_rows(cfg, BANDIT, dL, kl_path, "KL(p||pi_RL) along exact PG", "RL from SFT optimum"), zs, dL


def _bandit_second_order_npg(cfg, p, r, loss, pg) -> dict:
    """Natural PG from p: dz/dt = r - E r, so L - H = (t^2 / 2) Var_p(r) + O(t^3)."""
    K, T = cfg.second_order_steps, cfg.second_order_time
    z_npg, _ = dyn.run(as_logits(p), pg, K, T / K, natural=True)
    var_r = np.sum(p * (r - tb.expected_reward(p, r)[:, None]) ** 2, -1)
    rel = np.abs((loss(z_npg).numpy() - tb.entropy(p)) / (0.5 * T**2 * var_r) - 1)
    return make_row(
        "T1 second order under NPG: L - H = t^2/2 Var_p(r)",
        BANDIT,
        SIM,
        len(p),
        f"max rel. error at t={T:g}",
        rel.max(),
        cfg.tol_second_order,
    )


def _bandit_second_order_pg(cfg, p, c, loss, pg) -> dict:
    """Plain PG from p: L - H = (t^2 / 2) Var_p[p (r - E_p r)] + O(t^3)."""
    result = "T1 second order L - H = t^2/2 Var_p[p(r-E_p r)]"
    return _second_order_row(cfg, result, BANDIT, as_logits(p), tb.entropy(p), c, loss, pg)


def _bandit_threshold(cfg, p, r, pi, loss, pg) -> list[dict]:
    """Threshold form away from the optimum: central difference of the measured loss along the flow."""
    n = len(p)
    rate_fd = _central_difference(as_logits(pi), loss, pg, cfg.fd_step)
    rate = tb.sft_loss_rate_under_rl(pi, p, r)
    return [
        make_row(
            "T1 threshold dL/dt = Cov_pi(pi - p, r)",
            BANDIT,
            SIM,
            n,
            "max|finite diff - Cov|",
            np.max(np.abs(rate_fd - rate)),
            cfg.tol_fd,
        ),
        make_row(
            "T1 threshold: RL lowers L_SFT of a random checkpoint",
            BANDIT,
            CLOSED,
            n,
            "fraction with Cov < 0",
            np.mean(rate < 0),
            0,
            "report",
        ),
    ]


def _bandit_one_step(cfg, p, r, loss, pg) -> dict:
    """One exact logit step theta' = log p + eta g: KL = K_g(eta), measured after a real PG step."""
    eta = cfg.one_step_eta
    g = tb.policy_gradient(p, r)
    z_one, _ = dyn.run(as_logits(p), pg, 1, eta)
    measured = loss(z_one).numpy() - tb.entropy(p)
    return make_row(
        "T1 one logit step: KL = log E_p exp(eta (g - E_p g))",
        BANDIT,
        SIM,
        len(p),
        "max|lhs-rhs|",
        np.max(np.abs(measured - tb.cumulant(p, g, eta))),
        cfg.tol_identity,
    )


def _bandit_kl_optimum(cfg, p, r) -> tuple[list[dict], dict]:
    """KL-regularised optimum pi* ∝ p exp(lam r): closed form, converged KL-regularised RL, quadratic law."""
    n = len(p)
    lams = np.asarray(cfg.lams)
    pp, rr = np.repeat(p, len(lams), 0), np.repeat(r, len(lams), 0)
    ll = np.tile(lams, n)
    pi_star = tb.softmax(np.log(pp) + ll[:, None] * rr)
    K, Kp = tb.cumulant(pp, rr, ll), tb.cumulant_grad(pp, rr, ll)
    rows = [
        make_row(
            "T1 KL-reg. optimum dL_SFT = K(lam)",
            BANDIT,
            CLOSED,
            len(ll),
            "max|lhs-rhs|",
            np.max(np.abs(tb.kl(pp, pi_star) - K)),
            cfg.tol_identity,
        ),
        make_row(
            "T1 KL-reg. optimum dJ = K'(lam)",
            BANDIT,
            CLOSED,
            len(ll),
            "max|lhs-rhs|",
            np.max(np.abs(tb.expected_reward(pi_star, rr) - tb.expected_reward(pp, rr) - Kp)),
            cfg.tol_identity,
        ),
    ]
    Pp, Rr, zref = as_t(pp), as_t(rr), as_logits(pp)
    # lam * (-J) + KL has the same optimum as -J + KL / lam; natural PG on it contracts at rate 1 - lr
    obj = lambda z: as_t(ll) * dyn.pg_surrogate(z, Rr) + dyn.kl_to_reference(z, zref)
    z_rl, _ = dyn.run(zref, obj, cfg.kl_rl_steps, cfg.kl_rl_lr, natural=True)
    dL_sim = dyn.sft_population_loss(z_rl, Pp).numpy() - tb.entropy(pp)
    dJ_sim = (dyn.expected_return(z_rl, Rr)).numpy() - tb.expected_reward(pp, rr)
    rows.append(
        make_row(
            "T1 KL-reg. RL: dL_SFT = K(lam), dJ = K'(lam)",
            BANDIT,
            SIM,
            len(ll),
            "max(|dL-K|, |dJ-K'|)",
            max(np.abs(dL_sim - K).max(), np.abs(dJ_sim - Kp).max()),
            cfg.tol_converged,
        )
    )
    var = np.sum(pp * (rr - tb.expected_reward(pp, rr)[:, None]) ** 2, -1)
    small = cfg.quadratic_lam
    Ks, Kps = tb.cumulant(p, r, small), tb.cumulant_grad(p, r, small)
    var1 = np.sum(p * (r - tb.expected_reward(p, r)[:, None]) ** 2, -1)
    rel_q = np.abs(Kps**2 / (2 * var1) / Ks - 1)
    rows.append(
        make_row(
            "T1 quadratic law dL_SFT ≈ dJ^2 / (2 Var_p r)",
            BANDIT,
            CLOSED,
            n,
            f"max rel. error at lam={small:g}",
            rel_q.max(),
            cfg.tol_quadratic,
        )
    )
    return rows, dict(dJ=dJ_sim, dL=dL_sim, var=var, lam=ll)


# --------------------------------------------------------------------------- T1, token MDP
def check_t1_mdp(cfg, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """T1 on the tree: KL chain rule, threshold form, RL from the SFT optimum, KL-regularised optimum."""
    zp, z, R = tree_instances(cfg, rng)
    p, pi = mdp.policy(zp), mdp.policy(z)
    rows = [_mdp_chain_rule(cfg, zp, pi, rng)]
    threshold_rows, rate = _mdp_threshold_closed(cfg, p, z, R)
    rows += threshold_rows
    Pd, Rt = as_t(mdp.leaf_probs(p)), as_t(R)
    loss = lambda x: dyn.sft_population_loss(x, Pd)
    pg = lambda x: dyn.pg_surrogate(x, Rt)
    H_p = mdp.sequence_entropy(p)
    flow_rows, zs, dL = _mdp_pg_flow(cfg, p, loss, pg, H_p)
    rows += flow_rows
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    kl_fn = lambda zs_np: mdp.sequence_kl(p, mdp.policy(zs_np))
    rows += rl_from_sft_optimum(cfg, MDP, as_t(np.log(p)), Pd, H_p, kl_fn, Rt, gen, natural=False)
    c = mdp.sft_second_order(p, R)
    rows.append(_mdp_second_order(cfg, p, c, loss, pg, H_p))
    rows.append(_mdp_threshold_sim(cfg, z, rate, loss, pg))
    rows.append(_mdp_kl_optimum(cfg, p, R))
    t = cfg.flow_dt * np.arange(zs.shape[0])
    return rows, dict(t=t, dL=dL[:, :4], pred=0.5 * t[:, None] ** 2 * c[None, :4])


def _mdp_chain_rule(cfg, zp, pi, rng: np.random.Generator) -> dict:
    """Sequence KL chain rule, with prefixes the data never visits (some data logits -inf)."""
    zp_holes = np.where(rng.random(zp.shape) < 0.2, -np.inf, zp)
    zp_holes[..., 0] = zp[..., 0]  # keep one finite logit per node
    ph = mdp.policy(zp_holes)
    return make_row(
        "T1 seq. KL = sum_s d_p(s) KL(p(.|s)||pi(.|s))",
        MDP,
        CLOSED,
        len(zp),
        "max|lhs-rhs|",
        np.max(np.abs(mdp.sequence_kl(ph, pi) - mdp.leaf_kl(ph, pi))),
        cfg.tol_identity,
    )


def _mdp_threshold_closed(cfg, p, z, R) -> tuple[list[dict], np.ndarray]:
    """Threshold: tree Cov form = <grad L_SFT, grad J> = central finite difference (numpy)."""
    I = len(z)
    rate = mdp.sft_rate_cov(p, z, R)
    h = cfg.fd_step
    g = mdp.policy_gradient(z, R)
    fd = mdp.sequence_cross_entropy(p, mdp.policy(z + h * g)) - mdp.sequence_cross_entropy(
        p, mdp.policy(z - h * g)
    )
    rows = [
        make_row(
            "T1 threshold dL/dt = sum_s d_p d_pi Cov_pi(pi-p, Q)",
            MDP,
            CLOSED,
            I,
            "max|Cov form - <grad L, grad J>|",
            np.max(np.abs(rate - mdp.sft_rate_along_pg(p, z, R))),
            cfg.tol_identity,
        ),
        make_row(
            "T1 threshold dL/dt (Cov form) vs finite difference",
            MDP,
            CLOSED,
            I,
            "max|lhs-rhs|",
            np.max(np.abs(fd / (2 * h) - rate)),
            cfg.tol_fd,
        ),
    ]
    return rows, rate


def _mdp_pg_flow(cfg, p, loss, pg, H_p) -> tuple[list[dict], torch.Tensor, np.ndarray]:
    """Simulation: exact PG flow on the tree from the SFT optimum; returns rows, logits and dL_SFT."""
    _, zs = dyn.run(as_t(np.log(p)), pg, cfg.flow_steps, cfg.flow_dt, record=lambda x: x.clone())
    dL = torch.stack([loss(x) for x in zs]).numpy() - H_p  # (K+1, I)
    kl_path = mdp.sequence_kl(p, mdp.policy(zs.numpy()))
    return (
        _flow_rows(cfg, MDP, dL, kl_path, "seq. KL(p||pi_RL) along exact PG", "RL from SFT optimum"),
        zs,
        dL,
    )


def _mdp_second_order(cfg, p, c, loss, pg, H_p) -> dict:
    """L - H = t^2/2 sum_s d_p Var_p[g] after a short exact-PG flow from the SFT optimum."""
    result = "T1 second order L - H = t^2/2 sum_s d_p Var_p[g]"
    return _second_order_row(cfg, result, MDP, as_t(np.log(p)), H_p, c, loss, pg)


def _mdp_threshold_sim(cfg, z, rate, loss, pg) -> dict:
    """The threshold rate as a torch central difference of the measured loss along one PG step."""
    rate_sim = _central_difference(as_t(z), loss, pg, cfg.fd_step)
    return make_row(
        "T1 threshold dL/dt (torch finite diff) = Cov form",
        MDP,
        SIM,
        len(z),
        "max|lhs-rhs|",
        np.max(np.abs(rate_sim - rate)),
        cfg.tol_fd,
    )


def _mdp_kl_optimum(cfg, p, R) -> dict:
    """KL-regularised optimum over sequences: pi* = tabular Gibbs, dL = K_seq(lam), dJ = K'_seq(lam)."""
    lam = cfg.t2_lam
    star = mdp.gibbs_logits(np.log(p), R, lam)
    P = mdp.leaf_probs(p)
    dJ = mdp.expected_return(np.exp(star), R) - mdp.expected_return(p, R)
    err = max(
        np.abs(mdp.sequence_kl(p, np.exp(star)) - tb.cumulant(P, R, lam)).max(),
        np.abs(dJ - tb.cumulant_grad(P, R, lam)).max(),
    )
    return make_row(
        "T1 KL-reg. optimum: dL_SFT = K(lam), dJ = K'(lam) over sequences",
        MDP,
        CLOSED,
        len(p),
        "max|lhs-rhs|",
        err,
        cfg.tol_identity,
    )
