"""The map's statistics on synthetic frames whose answer is known: Holm, selection on
validation only, paired effects, claim outcomes, the computed condition, the best method per cell."""

import numpy as np
import pandas as pd
import pytest

from toybench import analysis

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
