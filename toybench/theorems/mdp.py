"""The token-MDP checks of the theorems table: T1, T2, T4, T5 and the GIFT token-vs-sequence tilt.

Closed forms from ``theory.mdp`` (numpy, exact on the prefix tree); simulations from
``toybench.tabular.dynamics`` on the same tabular policies (torch, the shared losses).  Row rules as in
``toybench.theorems.t1``.
"""

from __future__ import annotations

import numpy as np
import torch

from theory import bandit as tb
from theory import mdp
from toybench.tabular import dynamics as dyn
from toybench.theorems.t1 import CLOSED, SIM, make_row, rl_from_sft_optimum

__all__ = ["tree_instances", "check_t1_mdp", "check_t2_t4_mdp", "check_gift_tilt", "check_t5_mdp"]

MDP = "token MDP"


def tree_instances(cfg, rng: np.random.Generator):
    """Random trees: data policy logits zp, an unrelated policy z, rewards R (I, L) in [0, 1)."""
    I, V, H = cfg.tree_instances, cfg.tree_vocab, cfg.tree_horizon
    N = mdp.num_internal(V, H)
    zp = rng.normal(size=(I, N, V))
    z = rng.normal(size=(I, N, V))
    R = rng.random((I, V**H))
    return zp, z, R


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def check_t1_mdp(cfg, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """T1 on the tree: KL chain rule, threshold form, RL from the SFT optimum, KL-regularised optimum."""
    zp, z, R = tree_instances(cfg, rng)
    I = zp.shape[0]
    p, pi = mdp.policy(zp), mdp.policy(z)
    rows = []
    # chain rule, with prefixes the data never visits (some data logits -inf)
    zp_holes = np.where(rng.random(zp.shape) < 0.2, -np.inf, zp)
    zp_holes[..., 0] = zp[..., 0]  # keep one finite logit per node
    ph = mdp.policy(zp_holes)
    rows.append(
        make_row(
            "T1 seq. KL = sum_s d_p(s) KL(p(.|s)||pi(.|s))",
            MDP,
            CLOSED,
            I,
            "max|lhs-rhs|",
            np.max(np.abs(mdp.sequence_kl(ph, pi) - mdp.leaf_kl(ph, pi))),
            cfg.tol_identity,
        )
    )
    # threshold: tree Cov form = <grad L_SFT, grad J> = central finite difference (numpy)
    rate = mdp.sft_rate_cov(p, z, R)
    h = cfg.fd_step
    g = mdp.policy_gradient(z, R)
    fd = mdp.sequence_cross_entropy(p, mdp.policy(z + h * g)) - mdp.sequence_cross_entropy(
        p, mdp.policy(z - h * g)
    )
    rows.append(
        make_row(
            "T1 threshold dL/dt = sum_s d_p d_pi Cov_pi(pi-p, Q)",
            MDP,
            CLOSED,
            I,
            "max|Cov form - <grad L, grad J>|",
            np.max(np.abs(rate - mdp.sft_rate_along_pg(p, z, R))),
            cfg.tol_identity,
        )
    )
    rows.append(
        make_row(
            "T1 threshold dL/dt (Cov form) vs finite difference",
            MDP,
            CLOSED,
            I,
            "max|lhs-rhs|",
            np.max(np.abs(fd / (2 * h) - rate)),
            cfg.tol_fd,
        )
    )
    # simulation: exact PG flow on the tree from the SFT optimum
    Pd, Rt = _t(mdp.leaf_probs(p)), _t(R)
    loss = lambda x: dyn.sft_population_loss(x, Pd)
    H_p = mdp.sequence_entropy(p)
    _, zs = dyn.run(
        _t(np.log(p)),
        lambda x: dyn.pg_surrogate(x, Rt),
        cfg.flow_steps,
        cfg.flow_dt,
        record=lambda x: x.clone(),
    )
    dL = torch.stack([loss(x) for x in zs]).numpy() - H_p  # (K+1, I)
    kl_path = mdp.sequence_kl(p, mdp.policy(zs.numpy()))
    rows.append(
        make_row(
            "T1 dL_SFT = seq. KL(p||pi_RL) along exact PG",
            MDP,
            SIM,
            I,
            "max|lhs-rhs|",
            np.max(np.abs(dL - kl_path)),
            cfg.tol_identity,
        )
    )
    rows.append(
        make_row(
            "T1 RL from SFT optimum raises L_SFT",
            MDP,
            SIM,
            I,
            "fraction dL_SFT > 0 at end",
            np.mean(dL[-1] > 0),
            1.0,
            ">=",
        )
    )
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    kl_fn = lambda zs_np: mdp.sequence_kl(p, mdp.policy(zs_np))
    rows += rl_from_sft_optimum(cfg, MDP, _t(np.log(p)), Pd, H_p, kl_fn, Rt, gen, natural=False)
    c = mdp.sft_second_order(p, R)
    K = cfg.second_order_steps
    z_end, _ = dyn.run(_t(np.log(p)), lambda x: dyn.pg_surrogate(x, Rt), K, cfg.second_order_time / K)
    rel = np.abs((loss(z_end).numpy() - H_p) / (0.5 * cfg.second_order_time**2 * c) - 1)
    rows.append(
        make_row(
            "T1 second order L - H = t^2/2 sum_s d_p Var_p[g]",
            MDP,
            SIM,
            I,
            f"max rel. error at t={cfg.second_order_time:g}",
            rel.max(),
            cfg.tol_second_order,
        )
    )
    z0 = _t(z)
    z_plus, _ = dyn.run(z0, lambda x: dyn.pg_surrogate(x, Rt), 1, h)
    rate_sim = (loss(z_plus) - loss(2 * z0 - z_plus)).numpy() / (2 * h)
    rows.append(
        make_row(
            "T1 threshold dL/dt (torch finite diff) = Cov form",
            MDP,
            SIM,
            I,
            "max|lhs-rhs|",
            np.max(np.abs(rate_sim - rate)),
            cfg.tol_fd,
        )
    )
    # KL-regularised optimum over sequences: pi* = tabular Gibbs, dL = K_seq(lam), dJ = K'_seq(lam)
    lam = cfg.t2_lam
    star = mdp.gibbs_logits(np.log(p), R, lam)
    P = mdp.leaf_probs(p)
    dJ = mdp.expected_return(np.exp(star), R) - mdp.expected_return(p, R)
    err = max(
        np.abs(mdp.sequence_kl(p, np.exp(star)) - tb.cumulant(P, R, lam)).max(),
        np.abs(dJ - tb.cumulant_grad(P, R, lam)).max(),
    )
    rows.append(
        make_row(
            "T1 KL-reg. optimum: dL_SFT = K(lam), dJ = K'(lam) over sequences",
            MDP,
            CLOSED,
            I,
            "max|lhs-rhs|",
            err,
            cfg.tol_identity,
        )
    )
    t = cfg.flow_dt * np.arange(zs.shape[0])
    return rows, dict(t=t, dL=dL[:, :4], pred=0.5 * t[:, None] ** 2 * c[None, :4])


def check_t2_t4_mdp(cfg, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """T2 (SFT from the tree RL optimum ends at J(P_p)) and T4 (sequence Gibbs composition) on the tree."""
    zp, _, R = tree_instances(cfg, rng)
    I = zp.shape[0]
    p = mdp.policy(zp)
    star = mdp.gibbs_logits(np.log(p), R, cfg.t2_lam)
    Pd, Rt = _t(mdp.leaf_probs(p)), _t(R)
    sft = lambda x: dyn.sft_population_loss(x, Pd)
    # end point: natural-gradient SFT (Fisher under the data occupancy d_p) converges at every visited node
    z_nat, _ = dyn.run(
        _t(star), sft, cfg.kl_rl_steps, cfg.kl_rl_lr, natural=True, state_weight=_t(mdp.occupancy(p))
    )
    J_end = dyn.expected_return(z_nat, Rt).numpy()
    # path: plain gradient SFT as trained
    _, Js = dyn.run(
        _t(star), sft, cfg.tree_sft_steps, cfg.sft_lr, record=lambda x: dyn.expected_return(x, Rt)
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
        make_row(
            "T2 strict drop when Var_p R > 0",
            MDP,
            SIM,
            I,
            "fraction J_end < J_0",
            np.mean(Js[-1] < Js[0]),
            1.0,
            ">=",
        ),
        make_row(
            "T2 reward path during SFT non-monotone (from pi*)",
            MDP,
            SIM,
            I,
            "fraction with a transient rise",
            np.mean(np.max(np.diff(Js, axis=0), 0) > cfg.tol_monotone),
            0,
            "report",
        ),
    ]
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


def check_gift_tilt(cfg, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """GIFT's token tilt (beta everywhere) vs the exact sequence tilt log(1 + (e^beta-1) P_base(suffix))."""
    I, V, H, beta = cfg.tree_instances, cfg.tree_vocab, cfg.tree_horizon, cfg.gift_beta
    base = rng.normal(size=(I, mdp.num_internal(V, H), V))
    y = rng.integers(0, V, size=H)
    exact = mdp.sequence_gibbs_tilt(base, y, beta)  # (I, H) from the generic backward pass
    closed = mdp.sequence_gibbs_tilt_closed_form(base, y, beta)
    token = mdp.token_gift_tilt(base, y, beta)
    rows = [
        make_row(
            "GIFT exact seq. tilt = log(1+(e^b-1) P_base(y*_>t|y*_<=t))",
            MDP,
            CLOSED,
            I,
            "max|lhs-rhs|",
            np.max(np.abs(exact - closed)),
            cfg.tol_identity,
        ),
        make_row(
            "GIFT token tilt >= exact seq. tilt, equal at the last position",
            MDP,
            CLOSED,
            I * H,
            "fraction holding",
            np.mean(
                np.concatenate(
                    [
                        (token[:, :-1] > exact[:, :-1]).ravel(),
                        np.isclose(token[:, -1], exact[:, -1], atol=1e-9),
                    ]
                )
            ),
            1.0,
            ">=",
        ),
    ]
    # simulation: train GIFT for real on the demo y*, measure the tilt it learned
    zb = _t(base)
    leaf = mdp.leaf_index(y, V)
    gift = lambda x: dyn.gift_demo_loss(x, zb, torch.full((I,), leaf), beta)
    # plain gradient descent (as trained); natural steps (pi - q)/pi overshoot where pi << q
    z_end, _ = dyn.run(zb, gift, cfg.sft_steps, cfg.sft_lr)
    nodes = mdp.path_nodes(y, V)
    q = np.exp(mdp.token_gift_logits(base, y, beta))[:, nodes]  # (I, H, V) closed-form token targets
    pi_end = torch.softmax(z_end, -1).numpy()[:, nodes]
    rows.append(
        make_row(
            "GIFT training converges to the token target q_t",
            MDP,
            SIM,
            I * H,
            "max|pi - q|",
            np.max(np.abs(pi_end - q)),
            cfg.tol_converged_sft,
        )
    )
    # learned tilt against the most probable other token (well resolved after training)
    pos = np.arange(H)
    k = np.argmax(np.where(np.arange(V) == y[:, None], -np.inf, q), -1)  # (I, H)
    lp_end, lp_base = np.log(pi_end), np.log(mdp.policy(base)[:, nodes])
    delta = lp_end - lp_base
    learned = delta[:, pos, y] - np.take_along_axis(delta, k[..., None], -1)[..., 0]  # (I, H)
    # consequence at the sequence level: token GIFT over-weights y* vs the exact Gibbs target
    R = np.zeros(V**H)
    R[leaf] = 1.0
    P_tok = mdp.leaf_probs(np.exp(mdp.token_gift_logits(base, y, beta)))[:, leaf]
    P_seq = mdp.leaf_probs(np.exp(mdp.gibbs_logits(base, R, beta)))[:, leaf]
    rows.append(
        make_row(
            "GIFT token target P(y*) > exact Gibbs P*(y*) (H > 1)",
            MDP,
            CLOSED,
            I,
            "fraction holding",
            np.mean(P_tok > P_seq),
            1.0,
            ">=",
        )
    )
    return rows, dict(exact=exact, token=token, learned=learned, beta=beta, P_tok=P_tok, P_seq=P_seq)


def check_t5_mdp(cfg, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """T5 on the tree: exact PG steps until P(y*) >= threshold, vs the initial P(y*)."""
    V, H = cfg.tree_vocab, cfg.tree_horizon
    N = mdp.num_internal(V, H)
    b = np.linspace(cfg.t5_tree_boost[0], cfg.t5_tree_boost[1], cfg.t5_grid)
    y = np.zeros(H, dtype=np.int64)  # y* = (0, ..., 0), leaf 0
    z = 0.3 * rng.normal(size=(1, N, V)).repeat(len(b), 0)
    z[:, mdp.path_nodes(y, V), 0] += b[:, None]
    m = mdp.leaf_probs(mdp.policy(z))[:, 0]
    R = torch.zeros(len(b), V**H, dtype=torch.float64)
    R[:, 0] = 1.0
    _, mass = dyn.run(
        _t(z),
        lambda x: dyn.pg_surrogate(x, R),
        cfg.t5_tree_steps,
        cfg.t5_tree_lr,
        record=lambda x: dyn.leaf_probs(x)[:, 0],
    )
    reached = mass.numpy() >= cfg.t5_threshold
    steps = np.where(reached.any(0), reached.argmax(0), np.inf)
    order = np.argsort(m)
    rows = [
        make_row(
            "T5 all runs reach the threshold",
            MDP,
            SIM,
            len(b),
            "fraction reached",
            np.mean(reached.any(0)),
            1.0,
            ">=",
        ),
        make_row(
            "T5 smaller initial P(y*) => more PG steps",
            MDP,
            SIM,
            len(b) - 1,
            "fraction of ordered neighbours",
            np.mean(np.diff(steps[order]) <= 0),
            1.0,
            ">=",
        ),
    ]
    return rows, dict(m=m[order], steps=steps[order] * cfg.t5_tree_lr)
