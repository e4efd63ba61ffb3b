"""Analysis on synthetic DataFrames with known effects: each verdict must follow the numbers."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from toybench import analysis
from toybench.tabular.pipeline import escape_frame


def frame(values: dict[str, tuple[float, float]], setting="s", seeds=12, noise=0.01, extra=None, rng=0):
    """Two rows per (method, seed): end of SFT (step 5) and end of RL (step 7), plus a step-0 row.

    values: method -> (J after SFT, J after RL). ``extra``: method -> {metric: value after SFT}.
    """
    r = np.random.default_rng(rng)
    rows = []
    for m, (a, b) in values.items():
        kind, _, v = m.partition("@")
        for seed in range(seeds):
            for stage, step, J in (("sft", 0, 0.1), ("sft", 5, a), ("rl", 0, a), ("rl", 7, b)):
                row = dict(setting=setting, method=m, kind=kind, value=float(v) if v else np.nan, seed=seed)
                row.update(stage=stage, step=step, J=J + noise * r.normal())
                row["pass@4"] = 1 - (1 - np.clip(row["J"], 0, 1)) ** 4
                for k, val in (extra or {}).get(m, {}).items():
                    row[k] = val + noise * r.normal()
                rows.append(row)
    return pd.DataFrame(rows)


def test_ci95_matches_student_t():
    x = np.array([0.2, 0.5, 0.1, 0.7, 0.4])
    m, h = analysis.ci95(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert m == pytest.approx(x.mean()) and h == pytest.approx((hi - lo) / 2)
    s = analysis.summary(pd.DataFrame({"g": ["a"] * 5 + ["b"], "x": [*x, 1.0]}), ["x"], ["g"])
    assert s.loc[0, "x_ci"] == pytest.approx(h) and s.loc[1, "x_ci"] == 0.0


def test_paired_difference_uses_seeds():
    df = frame({"sft": (0.5, 0.6), "gift@1": (0.4, 0.8)}, noise=0.0)
    end = analysis.stage_end(df, "rl")
    m, h, n = analysis.paired(end, "J", "gift@1", "sft")
    assert m == pytest.approx(0.2) and h == pytest.approx(0.0) and n == 12


def test_pear_verdict_follows_sign():
    up = frame({"sft": (0.8, 0.6), "pear_token": (0.8, 0.7), "pear_sequence": (0.8, 0.6)})
    c = analysis.compare_pear(up, "s")
    assert c.reproduces and "1 of 2 levels" in c.paragraph
    down = frame({"sft": (0.8, 0.7), "pear_token": (0.8, 0.6)})
    assert not analysis.compare_pear(down, "s").reproduces


def test_escape_times_from_trajectories():
    import torch

    # prompt 0 reaches 0.9 at step 2, prompt 1 never; J: [R=4, S=1, P=2]
    J = torch.tensor([[[0.5, 0.01]], [[0.8, 0.01]], [[0.95, 0.02]], [[0.99, 0.03]]])
    e = escape_frame(J, 0.9, "sft")
    assert e["steps"].iloc[0] == 2 and np.isnan(e["steps"].iloc[1]) and list(e["reached"]) == [True, False]
    rng = np.random.default_rng(0)
    init = rng.uniform(0.001, 1, 200)
    steps = np.where(init > 0.05, 5 / init, np.nan)  # less mass -> slower, tiny mass -> never
    esc = pd.DataFrame(dict(setting="s", initial=init, steps=steps, reached=~np.isnan(steps), budget=60))
    assert analysis.compare_escape(esc, 0.9).reproduces
    esc["steps"] = np.where(np.isnan(steps), np.nan, 5 * init)  # the opposite dependence
    assert not analysis.compare_escape(esc, 0.9).reproduces


def test_steps_to_threshold_on_seed_curves():
    df = frame({"sft": (0.5, 0.95)}, noise=0.0)
    st = analysis.steps_to_threshold(df, 0.9)
    assert (st["steps"] == 7).all() and st["reached"].all() and (st["initial"] == 0.5).all()
