"""T3 (entropy change of one PG / NPG step) on the bandit."""

from __future__ import annotations

import numpy as np

from theory import bandit as tb
from toybench.metrics import entropy as entropy_t
from toybench.tabular import dynamics as dyn
from toybench.theorems.common import BANDIT, SIM, as_logits, as_t, bandit_instances, make_row

__all__ = ["check_t3_bandit"]


def check_t3_bandit(cfg, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """T3: one small PG / NPG step changes the entropy by -eta Cov(log pi, pi A) / -eta Cov(log pi, A)."""
    n, V, eta = cfg.bandit_instances, cfg.bandit_vocab, cfg.t3_eta
    _, r, pi = bandit_instances(rng, n, V, spread=2.0)
    A = r - tb.expected_reward(pi, r)[:, None]
    R, z0 = as_t(r), as_logits(pi)
    rows = []
    for natural, pred_fn, name in ((False, tb.entropy_change_pg, "PG"), (True, tb.entropy_change_npg, "NPG")):
        z1, _ = dyn.run(z0, lambda z: dyn.pg_surrogate(z, R), 1, eta, natural=natural)
        dH = (entropy_t(z1[:, 0]) - entropy_t(z0[:, 0])).numpy()
        pred = pred_fn(pi, A, eta)
        rows.append(
            make_row(
                f"T3 entropy change of a {name} step",
                BANDIT,
                SIM,
                n,
                f"max|dH - pred| / max|pred| (eta={eta:g})",
                np.max(np.abs(dH - pred)) / np.max(np.abs(pred)),
                cfg.tol_t3,
            )
        )
        big = np.abs(pred) > 10 * eta**2
        rows.append(
            make_row(
                f"T3 sign of dH = sign of -Cov ({name})",
                BANDIT,
                SIM,
                int(big.sum()),
                "fraction holding",
                np.mean(np.sign(dH[big]) == np.sign(pred[big])),
                1.0,
                ">=",
            )
        )
    return rows, {}
