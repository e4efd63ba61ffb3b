"""`toybench report`: bad configs fail at start; a tiny run writes every artefact; replot needs no re-run."""

import dataclasses
import json

import pandas as pd
import pytest
import torch

from toybench.report import FAMILIES, ReportConfig, replot, resolve, run_report
from toybench.tabular.pipeline import PipelineConfig

# the smallest map: two test seeds, K = 2 configurations, a 3-token tree of horizon 3
TINY = dict(
    skip_theorems=True, seeds=2, lr_grid=(0.5, 2.0), knob_lrs=(1.0,), rl_lrs=(1.0, 4.0), num_generations=(4,),
    sft_early_steps=1, tree_prompts=3, tree_V=3, tree_H=3,
)  # fmt: skip


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(pipeline=PipelineConfig(sft_steps=-1)), "sft_steps"),
        (dict(rl_budgets=(-5, 10)), "rl_budgets"),
        (dict(methods=("none", "sft", "magic")), "methods"),
        (dict(methods=("sft", "gift")), "methods"),
        (dict(knob_lrs=(1.0, 2.0)), "knob_lrs"),  # 2 knob values x 2 lrs != K = 2
        (dict(rl_lrs=(0.0, 1.0)), "rl_lrs"),
        (dict(rl_algorithms=("grpo", "ppo")), "rl_algorithms"),
        (dict(num_generations=(1, 4)), "num_generations"),
        (dict(sft_early_steps=40), "sft_early_steps"),
        (dict(pear_clips=("paper", "loose")), "pear_clips"),
        (dict(min_effect=-0.1), "min_effect"),
        (dict(wrong_demo_fracs=(0.0, 1.5)), "wrong_demo_fracs"),
        (dict(gift_betas=(-1.0, 2.0)), "gift_betas"),  # names the flag typed (was: "methods")
        (dict(pipeline=PipelineConfig(pass_k=(1, 128)), eval_samples=64), "pass_k"),
        (dict(headline_k=8), "headline_k"),
        (dict(settings=("bandit", "atari")), "settings"),
        (dict(seeds=1), "seeds"),
        (dict(pipeline=PipelineConfig(rl_algorithm="ppo")), "rl_algorithm"),
    ],
)
def test_bad_config_fails_at_start(kw, field, tmp_path):
    with pytest.raises(ValueError, match=field):
        run_report(ReportConfig(out=tmp_path / "r", skip_theorems=True, **kw))
    assert not (tmp_path / "r").exists()  # nothing was run or written


def test_quick_preset_shrinks_budgets():
    cfg = resolve(ReportConfig(quick=True))
    assert (
        cfg.seeds <= 4 and cfg.pipeline.sft_steps <= 8 and cfg.pipeline.rl_steps == max(cfg.rl_budgets) <= 16
    )
    assert (
        len(cfg.wrong_demo_fracs) >= 3 and 0.0 in cfg.wrong_demo_fracs and len(cfg.base_correct_masses) >= 2
    )


def test_tiny_report_end_to_end(tmp_path):
    cfg = ReportConfig(
        out=tmp_path,
        val_seeds=2,
        settings=("bandit", "tree_offpolicy"),
        wrong_demo_fracs=(0.0, 0.3),
        base_correct_masses=(0.01, 0.2),
        rl_budgets=(2, 4),
        pipeline=PipelineConfig(sft_steps=3),
        bandit_prompts=4,
        bandit_V=8,
        methods=FAMILIES,  # every family, gift_seq and dft included
        **TINY,
    )
    path = run_report(cfg)
    assert path == tmp_path / "report.md"
    text = path.read_text()
    assert "## Map: `bandit`" in text and "selected: " in text and "Holm families" in text
    for section in (
        "Base competence",
        "CANNOT measure generalisation",
        "selections on an edge",
        "PEAR's offline",
    ):
        assert section in text
    assert "## GIFT: what the token approximation costs" in text  # gift and gift_seq share tree_offpolicy
    for key in ("(a)", "(b)", "(c)", "(d)"):
        assert f"**{key}" in text
    df = pd.read_csv(tmp_path / "results.csv")
    for col in ("wrong_demo_frac", "base_correct_mass", "rl_steps", "split", "method", "config_id", "family"):
        assert col in df.columns
    assert set(df["split"]) == {"val", "test", "val_perturbed"} and set(df["rl_steps"]) == {2, 4}
    assert set(df[df.setting == "bandit"]["base_correct_mass"]) == {0.01, 0.2}
    assert set(df["wrong_demo_frac"]) == {0.0, 0.3}
    # every SFT family gets K = 2 SFT configurations x the 2 RL step sizes (none: the RL grid alone)
    k = df.groupby(["setting", "family"])["config_id"].nunique()
    assert (k.drop("none", level="family") == 4).all() and (k.xs("none", level="family") == 2).all()
    assert "pear" in set(df[df.setting == "tree_offpolicy"]["family"])
    assert {"curio", "curio@0.5"} <= set(df["method"]) and "gift@2" in set(df["method"])
    # SFT strength apart from the RL step size: every family shares the RL grid
    assert df.groupby("family")["rl_lr"].agg(set).map(lambda x: x == {1.0, 4.0}).all()
    assert df[df.family == "none"]["sft_lr"].isna().all() and set(df[df.family == "sft"]["sft_lr"]) == {
        0.5,
        2.0,
    }
    # sampled RL and exact PG side by side; early-stopped SFT runs fewer SFT steps
    assert set(zip(df["rl_algorithm"], df["num_generations"])) == {("grpo", 4), ("exact_pg", 0)}
    assert set(df[df.family == "sft_early"]["sft_steps"]) == {1} and set(
        df[df.family == "sft"]["sft_steps"]
    ) == {3}
    sel = pd.read_csv(tmp_path / "selections.csv")
    assert {"setting", "family", "config_id", "sft_lr", "rl_lr", "at_edge"} <= set(sel.columns)
    assert len(sel) == len(df[["setting", "rl_algorithm", "num_generations", "wrong_demo_frac",
                               "base_correct_mass", "rl_steps", "family"]].drop_duplicates())  # fmt: skip
    # validation and test seeds are disjoint
    assert not set(df[df.split == "val"]["seed"]) & set(df[df.split == "test"]["seed"])
    assert set(df[df.split == "val_perturbed"]["seed"]) == set(df[df.split == "val"]["seed"])
    conf = json.loads((tmp_path / "config.json").read_text())
    assert conf["seeds"] == 2 and "timing" in conf
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert {"phase_bandit.png", "phase_tree_offpolicy.png"} <= set(pngs)
    headline = (tmp_path / "headline.md").read_text()
    assert "| setting | measures | rl |" in headline and headline in text
    # replot rebuilds figures and report.md from the saved records alone
    for p in tmp_path.glob("*.png"):
        p.unlink()
    path.unlink()
    replot(tmp_path)
    assert path.read_text() == text and sorted(p.name for p in tmp_path.glob("*.png")) == pngs


def test_replot_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="results.csv"):
        replot(tmp_path)


def test_shared_settings_report_held_out_prompts_and_the_trees_run_gift_seq():
    from toybench.report import run_map

    cfg = resolve(
        ReportConfig(
            val_seeds=1,
            settings=("tree", "tree_shared"),
            methods=("none", "sft", "gift", "gift_seq"),
            wrong_demo_fracs=(0.0,),
            base_correct_masses=(0.01, 0.2),
            rl_budgets=(2,),
            pipeline=PipelineConfig(sft_steps=2),
            shared_tree_prompts=6,
            **TINY,
        )
    )
    df, _ = run_map(cfg)
    shared, tree = df[df.setting == "tree_shared"], df[df.setting == "tree"]
    assert set(shared["eval_prompts"]) == {"held-out"} and set(tree["eval_prompts"]) == {"rl_train"}
    # J is on the held-out prompts, the RL prompts' J is kept as train_J; the per-prompt tree has neither
    assert (shared["J"] - shared["train_J"]).abs().max() > 1e-3 and tree["train_J"].isna().all()
    assert {"gift_seq@2", "gift_seq@8"} <= set(df["method"]) and "eval_J" not in df
    assert set(df["base_correct_mass"]) == {0.01, 0.2}
    # SFT learning rate and RL step size are separate knobs; none tunes the shared RL grid alone
    assert (
        set(df[df.family == "none"]["rl_lr"]) == {1.0, 4.0} and df[df.family == "none"]["sft_lr"].isna().all()
    )
    assert set(zip(df[df.family == "sft"]["sft_lr"], df[df.family == "sft"]["rl_lr"])) == {
        (a, b) for a in (0.5, 2.0) for b in (1.0, 4.0)
    }


def test_a_diverged_configuration_gets_nan_rows_and_is_never_selected():
    from toybench import analysis
    from toybench.report.runs import _run_configs, make_scenario

    cfg = resolve(
        ReportConfig(
            settings=("bandit_shared",),
            rl_budgets=(2,),
            pipeline=PipelineConfig(sft_steps=3),
            shared_prompts=8,
            **TINY,
        )
    )
    sc = make_scenario(cfg, "bandit_shared", [0, 1, 2], 0.0, 0.005)
    # an infinite step size makes the parameters non-finite (NaN metrics); step size 1 does not. (Step
    # size 100, used here before, does not diverge: its float32 J was 1 + 1 ulp, which the metrics rejected.)
    ones, inf = torch.ones(3), float("inf")
    df, esc = _run_configs(
        sc, "entropy_sft@0.1", cfg.pipeline, [(0, 1.0, 1.0), (1, inf, inf)], cfg, torch.arange(3), ones
    )
    bad = df[df.seed >= 3]
    assert bad["diverged"].all() and bad["J"].isna().all() and not df[df.seed < 3]["diverged"].any()
    assert esc[esc.seed >= 3]["initial"].isna().all() and len(esc) == 2 * len(esc[esc.seed < 3])
    rows = df[df.stage == "rl"].assign(
        setting="s",
        wrong_demo_frac=0.0,
        base_correct_mass=0.005,
        rl_steps=2,
        family="entropy_sft",
        split="val",
        rl_algorithm="exact_pg",
        num_generations=0,
    )
    rows["config_id"] = (rows["seed"] >= 3).astype(int)
    rows.loc[rows.config_id == 1, "J"] = rows.loc[rows.config_id == 1, "J"].fillna(2.0).where(rows.seed != 4)
    assert analysis.select_configs(rows)["config_id"].tolist() == [0]  # NaN on one seed is enough


def _edge_frame(split: str, scores: dict[float, float], seeds=range(2)) -> pd.DataFrame:
    cell = dict(setting="bandit", rl_algorithm="grpo", num_generations=4, wrong_demo_frac=0.0)
    return pd.DataFrame(
        [
            dict(cell, base_correct_mass=0.01, rl_steps=2, family="sft", method="sft", config_id=i,
                 sft_lr=0.5, rl_lr=rl, split=split, seed=s, stage="rl", J=j)
            for i, (rl, j) in enumerate(scores.items())
            for s in seeds
        ]
    )  # fmt: skip


def test_the_rl_grid_is_extended_past_a_rising_edge_on_validation_rows_only():
    from toybench.methods import Method
    from toybench.report.runs import extension_jobs

    cfg = resolve(ReportConfig(**dict(TINY, rl_lrs=(1.0, 4.0, 16.0))))
    jobs = [("bandit", "grpo", 4, "sft", Method.parse("sft"), [(0, 0.5, 1.0), (1, 0.5, 4.0), (2, 0.5, 16.0)])]
    rising = _edge_frame("val", {1.0: 0.5, 4.0: 0.6, 16.0: 0.7})
    (new,) = extension_jobs(cfg, rising, jobs)
    assert new[:4] == ("bandit", "grpo", 4, "sft") and new[5] == [(3, 0.5, 64.0)]  # 16 x 16/4, next id
    falling = _edge_frame("val", {1.0: 0.7, 4.0: 0.6, 16.0: 0.5})
    assert extension_jobs(cfg, falling, jobs)[0][5] == [(3, 0.5, 0.25)]
    flat = _edge_frame("val", {1.0: 0.7, 4.0: 0.7005, 16.0: 0.7})
    assert extension_jobs(cfg, flat, jobs) == []  # interior (within the tie): nothing to extend
    # test rows that would put the optimum on the edge change nothing: the grid is fixed on validation
    leak = pd.concat([flat, _edge_frame("test", {1.0: 0.0, 4.0: 0.0, 16.0: 1.0}, range(2, 6))])
    assert extension_jobs(cfg, leak, jobs) == []
    assert extension_jobs(dataclasses.replace(cfg, rl_lrs=(1.0, 4.0)), rising, jobs) == []  # no interior


def test_the_map_is_the_same_on_two_worker_processes_and_extends_its_rl_grid():
    from toybench.report import run_map

    cfg = resolve(
        ReportConfig(
            val_seeds=1,
            settings=("bandit",),
            methods=("none", "sft"),
            wrong_demo_fracs=(0.0,),
            base_correct_masses=(0.01,),
            rl_budgets=(2,),
            rl_algorithms=("exact_pg",),
            pipeline=PipelineConfig(sft_steps=2),
            bandit_prompts=2,
            bandit_V=4,
            bandit_correct=1,
            **dict(TINY, rl_lrs=(0.25, 0.5, 1.0), seeds=2),
        )
    )
    one, esc1 = run_map(dataclasses.replace(cfg, workers=1))
    two, esc2 = run_map(dataclasses.replace(cfg, workers=2))
    pd.testing.assert_frame_equal(one, two)
    pd.testing.assert_frame_equal(esc1, esc2)
    # two RL steps of tiny step sizes: larger is better, so the grid grows upward round by round
    grid = sorted(set(one[one.family == "sft"]["rl_lr"]))
    assert grid[:3] == [0.25, 0.5, 1.0] and len(grid) > 3 and grid[3] == 2.0
    assert sorted(set(one[one.family == "none"]["rl_lr"]))[:3] == [0.25, 0.5, 1.0]
