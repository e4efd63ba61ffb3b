"""The SFT baselines of issue 21 in the method registry and at the two toy scales: their specs and
facts, PSFT's snapshot, and the limits that make them another method's exact trajectory."""

import copy

import numpy as np
import pytest
import torch

from toybench import losses as L
from toybench.methods import Method
from toybench.tabular import ReasoningTree
from toybench.tabular.pipeline import PipelineConfig, metric_names, run_method

NEW = ("asft", "sft_kl", "prob", "psft", "prift", "chord_phi")
SPECS = [
    "asft",
    "asft@0.5",
    "sft_kl,lam=0.3",
    "prob@0.5",
    "psft,epsilon=0.2,refresh=10",
    "prift@prob",
    "prift@mass,threshold=0.3",
    "chord_phi",
]


@pytest.mark.parametrize("spec", SPECS)
def test_specs_parse_and_print_back(spec):
    m = Method.parse(spec)
    assert Method.parse(str(m)) == m
    assert m.kind in NEW


def test_constants_defaults_and_facts():
    a = Method.parse("asft")
    assert a["lam"] == 0.1 and a.needs_base and not a.needs_teacher and a.aux == "base"
    assert Method.parse("sft_kl@0.3")["lam"] == 0.3 and Method.parse("sft_kl").needs_base
    p = Method.parse("prob@0.5")
    assert p["alpha"] == 0.5 and str(p) == "prob@0.5" and str(Method.parse("prob")) == "prob@1"
    assert not p.needs_base and p.aux is None
    s = Method.parse("psft,epsilon=0.2,refresh=10")
    assert (s["epsilon"], s["refresh"]) == (0.2, 10) and s.needs_teacher and s.aux == "teacher"
    assert (Method.parse("psft")["epsilon"], Method.parse("psft")["refresh"]) == (0.28, 8)
    r = Method.parse("prift@mass")
    assert r["weight"] == "mass" and r["threshold"] == 0.5 and r.needs_base and str(r) == "prift@mass"
    c = Method.parse("chord_phi")
    assert not (c.needs_base or c.needs_teacher or c.needs_behavior_logp)


@pytest.mark.parametrize(
    "bad",
    [
        "asft@-1",
        "prob@-0.5",
        "psft,refresh=0",
        "psft@nan",
        "prift@median",
        "prift,threshold=2",
        "chord_phi@1",
    ],
)
def test_bad_specs_raise_naming_the_spec(bad):
    with pytest.raises(ValueError, match="method"):
        Method.parse(bad)


def test_registry_loss_is_the_losses_function():
    g = torch.Generator().manual_seed(0)
    z, zb, zt = (torch.randn(2, 3, 5, generator=g, dtype=torch.float64) for _ in range(3))
    y = torch.randint(0, 5, (2, 3), generator=g)
    mask = torch.ones(2, 3)

    def loss(spec):
        return Method.parse(spec).loss(z, y, mask, base_logits=zb, teacher_logits=zt)

    torch.testing.assert_close(loss("asft@0.3"), L.asft_loss(z, y, zb, lam=0.3))
    torch.testing.assert_close(loss("sft_kl"), L.sft_kl_loss(z, y, zb, lam=0.1))
    torch.testing.assert_close(loss("prob@0.5"), L.prob_loss(z, y, alpha=0.5))
    old = L.logprobs(zt, y)  # PSFT's pi_old is the snapshot, which rides in the teacher slot
    torch.testing.assert_close(loss("psft,epsilon=0.2"), L.psft_loss(z, y, old, epsilon=0.2))
    torch.testing.assert_close(loss("prift@mass,threshold=0.3"), L.prift_loss(z, y, zb, "mass", 0.3))
    torch.testing.assert_close(loss("chord_phi"), L.chord_phi_loss(z, y))
    with pytest.raises(ValueError, match="base_logits"):
        Method.parse("asft").loss(z, y, mask)
    with pytest.raises(ValueError, match="teacher_logits"):
        Method.parse("psft").loss(z, y, mask)


def test_psft_snapshot_is_the_model_refreshed_every_refresh_steps():
    m = Method.parse("psft,refresh=3")
    assert [s for s in range(1, 10) if m.ema_due(s)] == [3, 6, 9]
    model = torch.nn.Linear(2, 2)
    snap = m.init_state(model).teacher
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(snap.weight, model.weight)
    m.ema_update(snap, model)  # keep 0: an exact copy
    assert torch.equal(snap.weight, model.weight) and not snap.weight.requires_grad
    params = torch.randn(4)
    t = m.init_state(params).teacher
    assert torch.equal(m.ema_update(t, params + 1), params + 1)
    curio = Method.parse("curio,ema_every=5")  # CurioSFT's EMA is unchanged by the new schedule
    assert [s for s in range(1, 11) if curio.ema_due(s)] == [5, 10]


# ----------------------------------------------------------------------------- the tabular scale
CFG = PipelineConfig(sft_steps=4, rl_steps=3, rl_lr=2.0, sft_lr=2.0)


def _tree():
    return ReasoningTree([0, 1], num_prompts=3, V=3, H=3, data_source="behavior")


def _metrics(df):
    return df[metric_names(CFG)].to_numpy()


@pytest.mark.parametrize("spec", SPECS)
def test_every_new_method_runs_on_the_tree(spec):
    df = run_method(_tree(), spec, CFG)
    assert len(df) == 2 * (CFG.sft_steps + 1 + CFG.rl_steps + 1)
    assert np.isfinite(_metrics(df)).all()
    sft = df[df.stage == "sft"]
    assert not np.allclose(sft[sft.step == 0]["J"].to_numpy(), sft[sft.step == CFG.sft_steps]["J"].to_numpy())


@pytest.mark.parametrize(
    "spec,same_as",
    [
        ("psft,refresh=1", "sft"),  # a snapshot per step: the ratio is 1, the gradient SFT's
        ("prob@0", "sft"),
        ("sft_kl@0", "sft"),
        ("asft@0", "dft"),
        ("prob@1", "dft"),  # 1 - p has DFT's gradient
    ],
)
def test_limits_reproduce_another_methods_whole_run(spec, same_as):
    sc = _tree()
    np.testing.assert_allclose(
        _metrics(run_method(sc, spec, CFG)), _metrics(run_method(sc, same_as, CFG)), atol=1e-6
    )


def test_the_limits_are_not_vacuous():
    sc = _tree()
    ref = _metrics(run_method(sc, "sft", CFG))
    for spec in ("psft,refresh=4,epsilon=0.05", "prob@0.5", "sft_kl@1", "prift@prob", "chord_phi"):
        assert np.abs(_metrics(run_method(sc, spec, CFG)) - ref).max() > 1e-4, spec


def test_psft_snapshot_refresh_changes_the_run():
    sc = _tree()
    a = _metrics(run_method(sc, "psft,refresh=2,epsilon=0.05", CFG))
    b = _metrics(run_method(sc, "psft,refresh=4,epsilon=0.05", CFG))
    assert np.abs(a - b).max() > 1e-6


# ----------------------------------------------------------------------------- the tiny transformer
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from toybench.tiny import prepare
    from toybench.tiny.config import quick_config

    torch.set_num_threads(1)
    small = dict(
        n_layer=1, n_embd=32, pretrain_texts=500, pretrain_steps=20, sft_steps=4, rl_steps=2, rl_eval_every=1
    )
    small |= dict(post_sft_steps=2, post_sft_eval_every=1, eval_samples=4, n_eval_puzzles=8, seeds=1)
    cfg = quick_config(**small)
    return prepare(cfg, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def _params(m) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in m.parameters()])


@pytest.mark.parametrize("spec", SPECS)
def test_every_new_method_trains_the_tiny_transformer(tiny, spec):
    from toybench.tiny import run_sft

    model = copy.deepcopy(tiny.base).requires_grad_(True)
    recs = run_sft(model, tiny.sft_data, spec, tiny.cfg, seed=0, steps=2)
    assert all(np.isfinite(r["train_loss"]) for r in recs[:-1])
    assert not torch.equal(_params(tiny.base), _params(model))


def test_tiny_psft_with_a_snapshot_per_step_is_sft(tiny):
    from toybench.tiny import run_sft

    out = {}
    for spec in ("sft", "psft,refresh=1", "psft,refresh=3,epsilon=0.01"):
        model = copy.deepcopy(tiny.base).requires_grad_(True)
        run_sft(model, tiny.sft_data, spec, tiny.cfg, seed=0, steps=3)
        out[spec] = _params(model)
    torch.testing.assert_close(out["psft,refresh=1"], out["sft"], rtol=0, atol=1e-6)
    assert (out["psft,refresh=3,epsilon=0.01"] - out["sft"]).abs().max() > 1e-5


# ----------------------------------------------------------------------------- the report
def test_report_runs_the_baselines_as_families_with_the_same_k():
    from toybench.report import ReportConfig, resolve, run_map
    from toybench.report.config import BASELINE_FAMILIES, DEFAULT_METHODS

    assert (
        not set(BASELINE_FAMILIES) & set(ReportConfig().methods) and ReportConfig().methods == DEFAULT_METHODS
    )
    cfg = resolve(
        ReportConfig(
            skip_theorems=True,
            seeds=2,
            val_seeds=1,
            lr_grid=(0.5, 2.0),
            knob_lrs=(1.0,),
            rl_lrs=(2.0,),
            rl_algorithms=("exact_pg",),
            settings=("tree",),
            methods=("none", "sft", *BASELINE_FAMILIES),
            wrong_demo_fracs=(0.0,),
            base_correct_masses=(0.2,),
            rl_budgets=(2,),
            pipeline=PipelineConfig(sft_steps=3),
            tree_prompts=3,
            tree_V=3,
            tree_H=3,
        )
    )
    df, _ = run_map(cfg)
    k = df.groupby("family")["config_id"].nunique()
    assert set(k.index) == {"none", "sft", *BASELINE_FAMILIES} and (k.drop("none") == 2).all()
    want = {"asft", "asft@1", "sft_kl", "sft_kl@1", "prob@0.5", "prob@2", "psft@0.1", "psft", "prift@prob"}
    assert want | {"prift@mass", "chord_phi"} <= set(df["method"])
    assert set(df[df.family == "chord_phi"]["sft_lr"]) == {0.5, 2.0}  # no knob: the K learning rates
    assert np.isfinite(df[df.stage == "rl"]["J"]).all()


@pytest.mark.parametrize(
    "kw, field",
    [(dict(prift_weights=("prob", "median")), "prift_weights"), (dict(asft_lams=(-1.0, 1.0)), "asft_lams")],
)
def test_report_rejects_bad_baseline_knobs_naming_them(kw, field):
    from toybench.report import ReportConfig, resolve

    with pytest.raises(ValueError, match=field):
        resolve(ReportConfig(quick=True, **kw))


def test_value_is_numeric_or_none_so_results_frames_stay_numeric():
    assert Method.parse("prift@mass").value is None and Method.parse("pear_token@self").value is None
    assert Method.parse("prob@0.5").value == 0.5 and Method.parse("psft").value == 0.28
    df = run_method(_tree(), "prift@mass", PipelineConfig(sft_steps=1, rl_steps=1))
    assert df["value"].isna().all() and df["value"].dtype.kind == "f"
