"""`toybench report`: bad configs fail at start; a tiny run writes every artefact; replot needs no re-run."""

import json

import pandas as pd
import pytest

from toybench.report import ReportConfig, replot, resolve, run_report
from toybench.tabular.pipeline import PipelineConfig


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(pipeline=PipelineConfig(sft_steps=-1)), "sft_steps"),
        (dict(pipeline=PipelineConfig(rl_steps=-5)), "rl_steps"),
        (dict(methods=("none", "sft", "magic")), "methods"),
        (dict(gift_betas=(-1.0,)), "methods"),
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
    assert cfg.seeds <= 4 and cfg.pipeline.sft_steps <= 8 and cfg.pipeline.rl_steps <= 12


def test_tiny_report_end_to_end(tmp_path):
    cfg = ReportConfig(
        out=tmp_path,
        skip_theorems=True,
        seeds=2,
        settings=("bandit", "tree_offpolicy"),
        entropy_coefs=(0.3,),
        gift_betas=(1.0, 8.0),
        pear_levels=("token",),
        pipeline=PipelineConfig(sft_steps=3, rl_steps=4),
        bandit_prompts=4,
        bandit_V=8,
        tree_prompts=3,
        tree_V=3,
        tree_H=3,
    )
    path = run_report(cfg)
    assert path == tmp_path / "report.md"
    text = path.read_text()
    for key in ("(a)", "(b)", "(c)", "(d)", "(e)"):
        assert f"## {key}" in text
    assert text.count("reproduce") >= 5 and "![" in text
    df = pd.read_csv(tmp_path / "results.csv")
    n_methods = {"bandit": 7, "tree_offpolicy": 8}  # none sft curio dft entropy gift x2 (+ pear_token)
    assert len(df) == sum(n * 2 * (3 + 1 + 4 + 1) for n in n_methods.values())
    assert {"setting", "method", "seed", "stage", "step", "J", "pass@64", "kl_base"} <= set(df.columns)
    conf = json.loads((tmp_path / "config.json").read_text())
    assert conf["seeds"] == 2 and "timing" in conf
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert {"fig_a_ranking.png", "fig_c_gift.png", "fig_d_pear.png", "fig_e_escape.png"} <= set(pngs)
    # replot rebuilds figures and report.md from the saved records alone
    for p in tmp_path.glob("*.png"):
        p.unlink()
    path.unlink()
    replot(tmp_path)
    assert path.read_text() == text and sorted(p.name for p in tmp_path.glob("*.png")) == pngs


def test_replot_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="results.csv"):
        replot(tmp_path)
