"""GIFT's token tilt vs the exact sequence tilt on the token MDP (closed form and trained)."""

from __future__ import annotations

import numpy as np
import torch

from theory import mdp
from toybench.tabular import dynamics as dyn
from toybench.theorems.common import CLOSED, MDP, SIM, as_t, make_row

__all__ = ["check_gift_tilt"]


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
    zb = as_t(base)
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
