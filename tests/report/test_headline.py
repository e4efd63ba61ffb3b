"""headline.md's computed parts: outcome counts per map with shared settings first, and the regime
question (a soft SFT method above both plain and early-stopped SFT by more than the margin)."""

import pandas as pd

from toybench.analysis import MapAnalysis
from toybench.report.headline import map_order, outcome_counts, regime_sentence, soft_regime


def analysis_with(verdicts: pd.DataFrame, held_out=("bandit_shared",)) -> MapAnalysis:
    test = pd.DataFrame(
        {"setting": ["bandit", "bandit_shared"], "eval_prompts": ["rl_train", "held-out"]}
    ).query("setting in @verdicts.setting")
    test.loc[test.setting.isin(held_out), "eval_prompts"] = "held-out"
    empty = pd.DataFrame()
    return MapAnalysis(empty, test, empty, empty, empty, verdicts, empty, empty, empty, 0.02)


def verdict(setting, algo, G, claim, outcome, vs_early="inconclusive", err=0.0):
    return dict(
        setting=setting, rl_algorithm=algo, num_generations=G, wrong_demo_frac=err, base_correct_mass=0.01,
        rl_steps=80, claim=claim, outcome=outcome, outcome_vs_sft_early=vs_early, vs_sft="+0.1",
        vs_sft_early="+0.05",
    )  # fmt: skip


def test_outcome_counts_put_shared_settings_first_and_count_each_outcome():
    v = pd.DataFrame(
        [
            verdict("bandit", "exact_pg", 0, "c", "refuted"),
            verdict("bandit", "grpo", 4, "c", "reproduces"),
            verdict("bandit", "grpo", 4, "c", "equivalent", err=0.2),
            verdict("bandit_shared", "grpo", 4, "c", "not testable"),
        ]
    )
    a = analysis_with(v)
    assert map_order(a) == [("bandit_shared", "grpo", 4), ("bandit", "grpo", 4), ("bandit", "exact_pg", 0)]
    t = outcome_counts(a)
    assert t["setting"].tolist() == ["bandit_shared", "bandit", "bandit"]
    assert (
        t["measures"].tolist()[0].startswith("generalisation")
        and t["measures"].tolist()[1] == "optimisation (escape)"
    )
    assert t["(c)"].tolist() == ["1N", "1R 1E", "1F"]


def test_regime_needs_both_plain_and_early_stopped_sft_beaten():
    only_sft = pd.DataFrame([verdict("bandit", "grpo", 4, "c", "reproduces", vs_early="equivalent")])
    a = analysis_with(only_sft)
    assert soft_regime(a).empty and "does not exist" in regime_sentence(a)
    both = pd.DataFrame([verdict("bandit", "grpo", 16, "b", "reproduces", vs_early="reproduces")])
    r = soft_regime(analysis_with(both))
    assert r["claim"].tolist() == ["b"] and "in 1 cell(s)" in regime_sentence(analysis_with(both))
    # claim (d) (PEAR) is not a soft SFT method's claim; (a) is not a family's
    pear = pd.DataFrame([verdict("bandit", "grpo", 16, "d", "reproduces", vs_early="reproduces")])
    assert soft_regime(analysis_with(pear)).empty
