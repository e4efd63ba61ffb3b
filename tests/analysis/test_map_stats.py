"""The map's statistics on synthetic frames whose answer is known: Holm, selection on
validation only, paired effects, claim outcomes, the computed condition, the best method per cell; and
pinned down by hand: the paired test and its interval against a textbook computation, TOST and Holm
against worked examples, selection reading only post-RL validation rows, no test seed read before the
test stage, and the validation / test seed boundary of the map's records."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from toybench import analysis
from toybench.analysis import map_stats

CELL = dict(
    setting="s",
    rl_algorithm="grpo",
    num_generations=4,
    wrong_demo_frac=0.2,
    base_correct_mass=0.1,
    rl_steps=10,
)


def frame(rl_means: dict, seeds=range(8), split="test", noise=0.01, sft_means=None, cell=CELL, config_id=0):
    """Rows for one cell: family -> mean post-RL J (stage 'rl') and post-SFT J (stage 'sft'); per-seed
    noise of exactly zero mean (+-noise alternating, phase per family), so equal means are a true tie."""
    rows = []
    for i, (fam, mu) in enumerate(rl_means.items()):
        for seed in seeds:
            eps = noise * (-1) ** (seed // (1 + i % 2))
            for stage, m in (("rl", mu), ("sft", (sft_means or rl_means)[fam])):
                J = m + eps
                rows.append(
                    dict(
                        cell,
                        family=fam,
                        method=fam,
                        config_id=config_id,
                        sft_lr=1.0,
                        rl_lr=1.0,
                        split=split,
                        seed=seed,
                        stage=stage,
                        J=J,
                        **{"pass@4": min(1.0, J + 0.1)},
                    )
                )
    return pd.DataFrame(rows)


def test_holm_matches_the_definition():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    adj = analysis.holm(p)
    # sorted finite p: 0.005, 0.01, 0.03, 0.04 (m = 4) -> 0.02, 0.03, 0.06, max(0.06, 0.04) = 0.06
    np.testing.assert_allclose(adj[:4], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adj[4])
    assert (analysis.holm([0.9, 0.8]) <= 1).all()


def test_selection_treats_near_ties_as_ties():
    """Validation means closer than SELECTION_TIE go to the lower config_id; larger gaps decide."""
    for gap, winner in ((1e-7, 0), (-1e-7, 0), (1e-3, 1), (-1e-3, 0)):
        val = pd.concat(
            [
                frame({"gift": 0.5}, split="val", config_id=0),
                frame({"gift": 0.5 + gap}, split="val", config_id=1),
            ]
        )
        assert analysis.select_configs(val)["config_id"].tolist() == [winner], gap


def test_selection_reads_validation_only():
    val = pd.concat(
        [frame({"gift": 0.5}, split="val", config_id=0), frame({"gift": 0.7}, split="val", config_id=1)]
    )
    test = pd.concat(
        [frame({"gift": 0.99}, split="test", config_id=0), frame({"gift": 0.1}, split="test", config_id=1)]
    )
    sel = analysis.select_configs(pd.concat([val, test]))
    assert sel["config_id"].tolist() == [1]  # the validation winner, although config 0 wins on test
    # changing the test rows arbitrarily cannot change the selection
    test2 = test.assign(J=np.nan)
    pd.testing.assert_frame_equal(sel, analysis.select_configs(pd.concat([val, test2])))
    rows = analysis.selected_rows(pd.concat([val, test]), sel)
    assert set(rows["split"]) == {"test"} and set(rows["config_id"]) == {1}


def test_effects_are_paired_by_seed():
    # none varies strongly across seeds, gift = none + 0.05 on every seed: paired CI is tiny
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.9, 8)
    rows = [
        dict(CELL, family=f, seed=s, stage="rl", J=base[s] + d, split="test")
        for f, d in (("none", 0.0), ("sft", 0.02), ("gift", 0.05))
        for s in range(8)
    ]
    e = analysis.map_effects(pd.DataFrame(rows))
    g = e[(e["family"] == "gift") & (e["ref"] == "none")].iloc[0]
    assert g["diff"] == pytest.approx(0.05) and g["ci"] < 1e-9 and g["p"] == 0.0
    assert set(zip(e["family"], e["ref"])) == {("gift", "sft"), ("gift", "none"), ("sft", "none")}


@pytest.mark.parametrize(
    "means, noise, expected, vs_none",
    [
        ({"none": 0.3, "sft": 0.5, "gift": 0.7}, 0.02, "reproduces", "reproduces"),  # above both
        # the claim is vs SFT -> RL: below none is reported apart (the secondary comparison)
        ({"none": 0.8, "sft": 0.5, "gift": 0.7}, 0.02, "reproduces", "refuted"),
        ({"none": 0.3, "sft": 0.7, "gift": 0.6}, 0.02, "refuted", "reproduces"),  # below sft by > margin
        ({"none": 0.3, "sft": 0.7, "gift": 0.7}, 0.005, "equivalent", "reproduces"),  # equal, precisely
        ({"none": 0.3, "sft": 0.7, "gift": 0.7}, 0.05, "inconclusive", "reproduces"),  # equal up to noise
        # significantly above sft, but by less than the margin (0.02): no effect that matters
        ({"none": 0.3, "sft": 0.7, "gift": 0.71}, 0.002, "equivalent", "reproduces"),
    ],
)
def test_claim_outcome_follows_the_data(means, noise, expected, vs_none):
    test = frame(means, noise=noise)
    effects = analysis.map_effects(test)
    tests = analysis.claim_tests(effects, pd.DataFrame(), "pass@4")
    v = analysis.claim_verdicts(tests)
    v = v[v["claim"] == "c"]
    assert v["outcome"].tolist() == [expected]
    assert v["outcome_vs_none"].tolist() == [vs_none]
    for c in analysis.map_stats.P_COLS:
        assert (tests[f"{c}_holm"] >= tests[c] - 1e-12).all()


def test_reversal_claim():
    sft_means = {"none": 0.1, "sft": 0.9, "gift": 0.5}
    rl_means = {"none": 0.3, "sft": 0.6, "gift": 0.8}
    df = pd.concat([frame(rl_means, split=sp, sft_means=sft_means) for sp in ("val", "test")])
    sel = analysis.select_configs(df)
    rev = analysis.map_reversal(df, sel)
    assert rev["best_after_sft"].iloc[0] == "sft" and rev["best_after_rl"].iloc[0] == "gift"
    eff = analysis.map_effects(analysis.selected_rows(df, sel))
    v = analysis.claim_verdicts(analysis.claim_tests(eff, rev, "pass@4"))
    assert v[v["claim"] == "a"]["outcome"].tolist() == ["reproduces"]
    # no reversal candidate (validation picks the same family after SFT and after RL): no test, and the
    # absence of a test is not a refutation
    same = pd.concat([frame(rl_means, split=sp) for sp in ("val", "test")])
    rev2 = analysis.map_reversal(same, analysis.select_configs(same))
    eff2 = analysis.map_effects(same[same.split == "test"])
    v2 = analysis.claim_verdicts(analysis.claim_tests(eff2, rev2, "pass@4"))
    assert v2[v2["claim"] == "a"]["outcome"].tolist() == ["not testable"]


def test_condition_is_computed_not_typed():
    grid = pd.DataFrame(
        [(w, m, r) for w in (0.0, 0.2, 0.4) for m in (0.01, 0.1) for r in (10, 50)],
        columns=["wrong_demo_frac", "base_correct_mass", "rl_steps"],
    )
    hit = (grid["wrong_demo_frac"] >= 0.2) & (grid["base_correct_mass"] <= 0.01)
    assert analysis.condition(grid, hit) == "when teacher error >= 0.2 and base mass <= 0.01"
    hit = hit & (grid["rl_steps"] == 50)
    assert (
        analysis.condition(grid, hit)
        == "when teacher error >= 0.2 and base mass <= 0.01 and RL budget 50 steps"
    )
    assert analysis.condition(grid, grid["rl_steps"] > 0) == "in every cell"
    assert analysis.condition(grid, grid["rl_steps"] < 0) == "in no cell"
    odd = pd.Series([i in (0, 11) for i in range(len(grid))])
    assert "matching no single threshold rule" in analysis.condition(grid, odd)


def test_best_per_cell_and_significance():
    clear = analysis.best_per_cell(frame({"none": 0.3, "sft": 0.5, "gift": 0.8}))
    assert clear["best"].tolist() == ["gift"] and clear["significant"].tolist() == [True]
    tie = analysis.best_per_cell(frame({"none": 0.3, "sft": 0.8, "gift": 0.8}, noise=0.05))
    assert tie["significant"].tolist() == [False]


def test_family_contrast_is_paired_per_stage():
    d = frame(
        {"gift": 0.7, "gift_seq": 0.6, "sft": 0.5}, sft_means={"gift": 0.4, "gift_seq": 0.4, "sft": 0.4}
    )
    c = analysis.family_contrast(d, "gift", "gift_seq").set_index("stage")
    assert c.at["rl", "diff"] == pytest.approx(0.1) and c.at["rl", "p"] < 0.05
    assert abs(c.at["sft", "diff"]) < 0.02 and c.at["sft", "n"] == 8
    assert analysis.family_contrast(d, "gift", "pear").empty  # no shared cell


# two methods on 6 seeds whose seed effect (about 0.3 wide) dwarfs the method effect (about 0.03)
X = np.array([0.42, 0.81, 0.55, 0.30, 0.67, 0.74])
Y = np.array([0.40, 0.77, 0.53, 0.25, 0.65, 0.70])


def test_paired_test_and_interval_match_a_textbook_computation():
    r = analysis.paired_test(pd.Series(X), pd.Series(Y))
    d = X - Y  # 0.02, 0.04, 0.02, 0.05, 0.02, 0.04
    n, mean = 6, d.mean()
    sd = np.sqrt(((d - mean) ** 2).sum() / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)  # t_{0.975, 5} = 2.5706
    assert mean == pytest.approx(0.031666666, abs=1e-8)
    assert stats.t.ppf(0.975, 5) == pytest.approx(2.5706, abs=1e-4)
    assert r["diff"] == pytest.approx(mean) and r["ci"] == pytest.approx(half) and r["n"] == 6
    assert r["p"] == pytest.approx(stats.ttest_rel(X, Y).pvalue, rel=1e-9)
    # a paired test, not an unpaired one: the seed effect would swamp the difference
    assert stats.ttest_ind(X, Y).pvalue > 0.5 > 0.01 > r["p"]
    # pairing is by seed index, not by position
    shuffled = analysis.paired_test(pd.Series(X, index=[5, 4, 3, 2, 1, 0]), pd.Series(Y[::-1]))
    assert shuffled["diff"] == pytest.approx(mean) and shuffled["p"] == pytest.approx(r["p"])


def test_one_sided_tests_against_the_margin():
    d = X - Y
    se = d.std(ddof=1) / np.sqrt(6)
    r = analysis.paired_test(pd.Series(X), pd.Series(Y), margin=0.02)
    # H0 mean <= 0.02 vs H1 mean > 0.02: t = (mean - 0.02) / se, p = P(T_5 > t)
    assert r["p_above"] == pytest.approx(stats.t.sf((d.mean() - 0.02) / se, 5))
    assert r["p_above"] == pytest.approx(stats.ttest_1samp(d, 0.02, alternative="greater").pvalue)
    assert r["p_below"] == pytest.approx(stats.ttest_1samp(d, -0.02, alternative="less").pvalue)
    assert r["p_above"] < 0.05 and r["p_below"] > 0.99


def test_tost_worked_example():
    # d = 0.01, 0.03, 0.02, 0.00, 0.04: mean 0.02, sd sqrt(0.001 / 4) = 0.0158114, se 0.00707107
    d = np.array([0.01, 0.03, 0.02, 0.00, 0.04])
    se = 0.0158114 / np.sqrt(5)
    t_low, t_high = (0.02 + 0.05) / se, (0.02 - 0.05) / se  # 9.8995 and -4.2426
    assert (t_low, t_high) == (pytest.approx(9.8995, abs=1e-3), pytest.approx(-4.2426, abs=1e-3))
    p_low, p_high = stats.t.sf(t_low, 4), stats.t.cdf(t_high, 4)  # 0.000292 and 0.006618
    assert analysis.tost(d, 0.05) == pytest.approx(max(p_low, p_high), rel=1e-4)
    assert analysis.tost(d, 0.05) == pytest.approx(0.006618, abs=2e-6)
    assert analysis.tost(d, 0.03) > 0.05  # mean 0.02 is not shown to lie within +-0.03 by 5 seeds
    assert analysis.tost(d, 0.0) >= 0.5  # a zero margin can never show equivalence
    # no spread: exact answers
    assert analysis.tost([0.01] * 4, 0.02) == 0.0 and analysis.tost([0.03] * 4, 0.02) == 1.0
    r = analysis.paired_test(pd.Series([0.01] * 4), pd.Series([0.0] * 4), margin=0.02)
    assert (r["p"], r["p_above"], r["p_below"], r["p_equiv"]) == (0.0, 1.0, 1.0, 0.0)


def test_holm_worked_example():
    # Holm (1979) step-down at alpha 0.05 on p = 0.01, 0.04, 0.03, 0.005: compare the sorted p with
    # 0.05/4, 0.05/3, 0.05/2, 0.05/1: 0.005 < 0.0125 and 0.01 < 0.0167 are rejected, 0.03 > 0.025 stops
    p = [0.01, 0.04, 0.03, 0.005]
    adj = analysis.holm(p)
    assert (adj < 0.05).tolist() == [True, False, False, True]
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    # one family per claim and reference: three one-sided p per test, all in one Holm family
    t = pd.DataFrame({"p_above": [0.01, 0.5], "p_below": [0.9, 0.04], "p_equiv": [0.2, 0.005]})
    h = map_stats.holm_family(t)
    # sorted: 0.005 x 6 = 0.03, 0.01 x 5 = 0.05, 0.04 x 4 = 0.16, 0.2 x 3 = 0.6, 0.5 x 2 = 1, 0.9 x 1 -> 1
    np.testing.assert_allclose(h["p_above_holm"], [0.05, 1.0])
    np.testing.assert_allclose(h["p_below_holm"], [1.0, 0.16])
    np.testing.assert_allclose(h["p_equiv_holm"], [0.6, 0.03])


def rows(family, config_id, split, stage, J, seeds=range(4)):
    return [
        dict(CELL, family=family, method=family, config_id=config_id, sft_lr=1.0, rl_lr=1.0, split=split,
             seed=s, stage=stage, J=J + 0.001 * s, **{"pass@4": J})
        for s in seeds
    ]  # fmt: skip


def test_selection_reads_only_post_rl_validation_rows():
    # post-RL validation: config 1 best; post-SFT validation and every test row: config 0 far better
    df = pd.DataFrame(
        rows("sft", 0, "val", "rl", 0.50)
        + rows("sft", 1, "val", "rl", 0.60)
        + rows("sft", 0, "val", "sft", 0.99)
        + rows("sft", 1, "val", "sft", 0.01)
        + rows("sft", 0, "test", "rl", 0.99, range(4, 8))
        + rows("sft", 1, "test", "rl", 0.01, range(4, 8))
    )
    assert analysis.select_configs(df)["config_id"].tolist() == [1]
    # the validation score is the mean of the post-RL validation rows only
    assert analysis.select_configs(df)["val_score"].iloc[0] == pytest.approx(0.6015)


def map_frame():
    out = []
    for split, seeds in (("val", range(3)), ("test", range(3, 9))):
        for fam, (sft_j, rl_j) in {"none": (0.1, 0.5), "sft": (0.9, 0.6), "gift": (0.6, 0.8)}.items():
            for cid, shift in ((0, 0.0), (1, -0.05)):
                out += rows(fam, cid, split, "sft", sft_j + shift, seeds)
                out += rows(fam, cid, split, "rl", rl_j + shift, seeds)
    return pd.DataFrame(out)


def test_no_test_seed_is_read_before_the_test_stage(monkeypatch):
    """Every choice made before the test stage (configurations, (a)'s candidates, where (d) applies) is
    handed validation rows only: a tripwire fails the test if a test row reaches one of them."""
    seen = []

    def tripwire(fn):
        def wrapped(frame, *a, **k):
            seen.append(fn.__name__)
            assert (frame["split"] != "test").all(), f"{fn.__name__} was given test rows"
            return fn(frame, *a, **k)

        return wrapped

    for name in ("select_configs", "reversal_picks", "pear_settings"):
        monkeypatch.setattr(map_stats, name, tripwire(getattr(map_stats, name)))
    df = map_frame()
    a = map_stats.analyse_map(df, 4)
    assert sorted(set(seen)) == ["pear_settings", "reversal_picks", "select_configs"]
    # and the choices do not move when every test value is replaced
    garbage = df.copy()
    test = garbage["split"] == "test"
    garbage.loc[test, "J"] = np.random.default_rng(0).uniform(size=int(test.sum()))
    b = map_stats.analyse_map(garbage, 4)
    pd.testing.assert_frame_equal(a.selected, b.selected)
    keys = ["best_after_sft", "best_after_rl"]
    pd.testing.assert_frame_equal(a.reversal[keys], b.reversal[keys])
    assert a.reversal["best_after_sft"].iloc[0] == "sft" and a.reversal["best_after_rl"].iloc[0] == "gift"


def test_claim_d_only_where_pear_data_are_off_policy():
    df = map_frame()
    pear = df[df["family"] == "gift"].assign(family="pear", method="pear_token", pear_degenerate=True)
    df = pd.concat([df.assign(pear_degenerate=False), pear], ignore_index=True)
    v = map_stats.analyse_map(df, 4).verdicts
    assert v[v["claim"] == "d"]["outcome"].tolist() == ["not testable"]
    df.loc[df["family"] == "pear", "pear_degenerate"] = False
    v = map_stats.analyse_map(df, 4).verdicts
    assert v[v["claim"] == "d"]["outcome"].tolist() == ["reproduces"]  # pass@4: 0.8 vs sft's 0.6


def test_the_map_records_the_validation_test_seed_boundary():
    """Seeds seed .. seed+val_seeds-1 are validation, the next ``seeds`` are test: moving the boundary by
    one (or sharing a seed) fails here."""
    from toybench.report import ReportConfig, resolve, run_map
    from toybench.tabular.pipeline import PipelineConfig

    cfg = ReportConfig(
        skip_theorems=True, seed=3, val_seeds=2, seeds=3, settings=("bandit",), methods=("none", "sft"),
        wrong_demo_fracs=(0.0,), base_correct_masses=(0.1,), rl_budgets=(2,), lr_grid=(1.0,),
        knob_lrs=(1.0,), bandit_prompts=2, bandit_V=4, bandit_correct=1, pipeline=PipelineConfig(sft_steps=2),
    )  # fmt: skip
    df, _ = run_map(resolve(cfg))
    split = df.groupby("seed")["split"].agg(set).to_dict()
    # the validation seeds also run once more with step sizes x (1 + 1e-6): the stability copies
    assert split == {
        3: {"val", "val_perturbed"},
        4: {"val", "val_perturbed"},
        5: {"test"},
        6: {"test"},
        7: {"test"},
    }
    assert set(df["family"]) == {"none", "sft"} and set(df["rl_algorithm"]) == {"grpo", "exact_pg"}
    assert set(df["num_generations"]) == {0, 4, 16}
    # the RL budget in samples: G x steps x RL prompts (2 bandit prompts), infinite for exact PG
    grpo = df[df["rl_algorithm"] == "grpo"]
    assert (grpo["samples"] == grpo["num_generations"] * grpo["rl_steps"] * 2).all()
    assert np.isinf(df[df["rl_algorithm"] == "exact_pg"]["samples"]).all()


def test_selection_rejects_unstable_configurations():
    """A configuration whose validation score moves by more than the tolerance under the float-level
    perturbation is never selected, however good; within the tolerance it competes."""
    df = pd.DataFrame(
        rows("sft", 0, "val", "rl", 0.50)
        + rows("sft", 0, "val_perturbed", "rl", 0.505)
        + rows("sft", 1, "val", "rl", 0.90)
        + rows("sft", 1, "val_perturbed", "rl", 0.60)  # chaotic: moves by 0.3
    )
    sel = analysis.select_configs(df, stability_tol=0.02)
    assert sel["config_id"].tolist() == [0]
    scores = analysis.config_scores(df, stability_tol=0.02).set_index("config_id")
    assert scores["stable"].tolist() == [True, False]
    assert scores.at[1, "shift"] == pytest.approx(0.3) and scores.at[0, "shift"] == pytest.approx(0.005)
    assert analysis.select_configs(df)["config_id"].tolist() == [1]  # no tolerance: no filter
    assert analysis.select_configs(df, stability_tol=0.5)["config_id"].tolist() == [1]


def test_selections_at_a_grid_edge():
    out = []
    for cid, rl in enumerate((1.0, 4.0, 16.0)):
        out += [dict(r, rl_lr=rl) for r in rows("sft", cid, "val", "rl", 0.5 + 0.1 * (cid == 1))]
        out += [
            dict(r, rl_lr=rl, family="none", method="none")
            for r in rows("none", cid, "val", "rl", 0.5 + 0.1 * cid)
        ]
    sel = analysis.select_configs(pd.DataFrame(out)).set_index("family")
    assert sel.at["sft", "rl_lr"] == 4.0 and not sel.at["sft", "at_edge"]  # interior
    assert sel.at["none", "rl_lr"] == 16.0 and sel.at["none", "rl_at_edge"] and sel.at["none", "at_edge"]
    assert not sel["sft_at_edge"].any()  # one SFT learning rate: no interior, no edge counted


def test_exploration_predictor_is_a_within_cell_rank_correlation():
    """Across the configurations of a cell, a pre-RL measure that orders them as the post-RL result does
    gets rho = +1, one that orders them the other way -1; the mean over cells comes with its interval."""
    from toybench.analysis.exploration import cell_correlations, exploration_table

    out = []
    for cell_err in (0.0, 0.2):
        for cid in range(4):
            for seed in range(3):
                base = dict(
                    CELL, wrong_demo_frac=cell_err, family="sft", config_id=cid, split="test", seed=seed
                )
                out.append(
                    dict(
                        base,
                        stage="sft",
                        J=0.1 * cid,
                        entropy=1 - 0.1 * cid,
                        coverage=0.5,
                        **{"pass@1": 0.1 * cid},
                    )
                )
                out.append(dict(base, stage="rl", J=0.2 + 0.1 * cid * (1 + cell_err)))
    df = pd.DataFrame(out)
    c = cell_correlations(df).set_index(["wrong_demo_frac", "predictor"])["rho"]
    assert c[(0.0, "pass@1")] == pytest.approx(1.0) and c[(0.0, "entropy")] == pytest.approx(-1.0)
    assert c[(0.2, "entropy")] == pytest.approx(-1.0) and np.isnan(c[(0.0, "coverage")])  # constant
    t = exploration_table(df).set_index("predictor")
    assert t.at["entropy", "rho"] == pytest.approx(-1.0) and t.at["entropy", "cells"] == 2
    assert t.at["coverage", "cells"] == 0


def test_a_plateau_at_the_grid_end_is_not_an_edge():
    """At an end of the grid counts as an edge only when it beats the step size next to it by more than
    the tie: a flat optimum reaching into the grid says nothing about values beyond it."""
    out = []
    for cid, rl in enumerate((1.0, 4.0, 16.0)):
        # none: flat (every step size the same); sft: rises to the smallest step size
        out += [dict(r, rl_lr=rl, family="none", method="none") for r in rows("none", cid, "val", "rl", 0.5)]
        out += [dict(r, rl_lr=rl) for r in rows("sft", cid, "val", "rl", 0.9 - 0.1 * cid)]
    sel = analysis.select_configs(pd.DataFrame(out)).set_index("family")
    assert sel.at["none", "rl_lr"] == 1.0 and sel.at["none", "rl_at_end"]
    assert not sel.at["none", "rl_at_edge"] and sel.at["none", "rl_edge"] == ""
    assert sel.at["sft", "rl_lr"] == 1.0 and sel.at["sft", "rl_edge"] == "low" and sel.at["sft", "at_edge"]
    # a tie as wide as the rise makes the rise a plateau, and the smallest step size still wins
    wide = analysis.select_configs(pd.DataFrame(out), tie=0.15).set_index("family")
    assert wide.at["sft", "rl_lr"] == 1.0 and wide.at["sft", "rl_at_end"] and not wide.at["sft", "at_edge"]
