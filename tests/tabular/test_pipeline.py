"""Pipeline: smoke tests with tiny budgets, the exact-PG oracle, invariances, vectorised == per-seed loop."""

import numpy as np
import pandas as pd
import pytest
import torch

from theory import mdp
from toybench.methods import Method
from toybench.tabular import MultiAnswerBandit, ReasoningTree, SharedBandit
from toybench.tabular.pipeline import (
    PipelineConfig,
    _DemoRows,
    _sft_loss,
    exact_pg_loss,
    metric_names,
    run_method,
    sequence_target,
)
from toybench.tabular.policies import LogLinearPolicy, TabularPolicy, make_policy, sequence_logits

TINY = PipelineConfig(sft_steps=3, rl_steps=3, rl_lr=2.0)


def tree(seeds=(0, 1), **kw):
    return ReasoningTree(list(seeds), num_prompts=3, V=3, H=3, **kw)


def bandit(seeds=(0, 1), **kw):
    return MultiAnswerBandit(list(seeds), num_prompts=4, V=8, num_correct=2, **kw)


@pytest.mark.parametrize(
    "method",
    ["none", "sft", "entropy_sft@0.3", "gift@2", "curio", "dft", "pear_token", "pear_block", "pear_sequence"],
)
def test_every_method_runs_on_the_tree(method):
    df = run_method(tree(data_source="behavior"), method, TINY)
    assert len(df) == 2 * (TINY.sft_steps + 1 + TINY.rl_steps + 1)
    assert set(metric_names(TINY)) <= set(df.columns)
    assert np.isfinite(df[metric_names(TINY)].to_numpy()).all()
    assert ((df["J"] >= 0) & (df["J"] <= 1)).all()
    if method == "none":  # no SFT: the SFT stage records the unchanged base policy
        sft = df[df.stage == "sft"]
        assert np.allclose(sft.groupby("seed")["J"].std(), 0)


@pytest.mark.parametrize(
    "make", [bandit, lambda **kw: SharedBandit([0, 1], num_prompts=8, sft_prompts=4, V=6, d=3, **kw)]
)
def test_sft_lowers_heldout_loss_and_rl_raises_reward(make):
    df = run_method(make(wrong_demo_frac=0.0), "sft", PipelineConfig(sft_steps=10, rl_steps=10, rl_lr=0.5))
    sft, rl = df[df.stage == "sft"], df[df.stage == "rl"]
    first, last = sft[sft.step == 0], sft[sft.step == 10]
    assert (last["sft_loss"].to_numpy() < first["sft_loss"].to_numpy()).all()
    assert (rl[rl.step == 10]["J"].to_numpy() > rl[rl.step == 0]["J"].to_numpy()).all()


def test_exact_pg_gradient_matches_theory_oracle():
    sc = tree(seeds=(0,))
    pol = TabularPolicy(sc)
    params = sc.base_logits.double().requires_grad_(True)
    sc.reward = sc.reward.double()
    loss = exact_pg_loss(sc, pol, params, None, PipelineConfig())
    (grad,) = torch.autograd.grad(loss, params)
    z = sc.base_logits[0].double().numpy()  # (P, N, V)
    R = sc.reward[0].numpy()  # (P, L)
    np.testing.assert_allclose(-grad[0].numpy(), mdp.policy_gradient(z, R), atol=1e-10)


def _metrics(df):
    return df[metric_names(TINY)].to_numpy()


def test_gift_at_large_beta_reproduces_sft():
    sc = tree()
    cfg = PipelineConfig(sft_steps=5, rl_steps=3, rl_lr=2.0)
    a, b = run_method(sc, "sft", cfg), run_method(sc, "gift@1000", cfg)
    np.testing.assert_allclose(_metrics(a), _metrics(b), atol=1e-5)
    c = run_method(sc, "gift@0.5", cfg)  # and a small beta does not (the test can fail)
    assert np.abs(_metrics(a) - _metrics(c)).max() > 1e-2


def test_pear_with_current_policy_as_behaviour_and_gamma_one_reproduces_sft():
    sc = tree(data_source="behavior")
    cfg = PipelineConfig(sft_steps=5, rl_steps=2, rl_lr=2.0)
    a = run_method(sc, "sft", cfg)
    for level in ("token", "block", "sequence"):
        np.testing.assert_allclose(
            _metrics(a), _metrics(run_method(sc, f"pear_{level}@self,gamma=1", cfg)), atol=1e-6
        )
    assert np.abs(_metrics(a) - _metrics(run_method(sc, "pear_token", cfg))).max() > 1e-4


@pytest.mark.parametrize("method", ["sft", "curio", "entropy_sft@0.3,rho=0.5"])  # rho < 1: quantile per seed
def test_vectorised_over_seeds_equals_per_seed_loop(method):
    cfg = PipelineConfig(sft_steps=4, rl_steps=4, kl_coef=0.1, rl_lr=2.0)
    seeds = [0, 1, 2]
    batch = run_method(tree(seeds), method, cfg)
    for i, s in enumerate(seeds):
        one = run_method(tree([s]), method, cfg)
        np.testing.assert_allclose(_metrics(batch[batch.seed == i]), _metrics(one), atol=1e-5)


@pytest.mark.parametrize(
    "make", [tree, lambda s: SharedBandit(list(s), num_prompts=8, sft_prompts=4, V=6, d=3)]
)
@pytest.mark.parametrize("algo", ["exact_pg", "grpo"])
def test_per_seed_learning_rates_equal_separate_runs(make, algo):
    """One run with per-seed step sizes == one run per step size (the report batches its lr grid)."""
    cfg = PipelineConfig(sft_steps=3, rl_steps=3, rl_algorithm=algo)
    lrs = [(0.5, 2.0), (3.0, 0.25)]
    seeds = [0, 0, 1, 1]  # the same instance twice, once per configuration
    sft_lrs = torch.tensor([lrs[i % 2][0] for i in range(4)])
    rl_lrs = torch.tensor([lrs[i % 2][1] for i in range(4)])
    batch = run_method(make(seeds), "gift@2", cfg, sft_lrs=sft_lrs, rl_lrs=rl_lrs)
    for i, s in enumerate(seeds):
        c = PipelineConfig(
            sft_steps=3, rl_steps=3, rl_algorithm=algo, sft_lr=lrs[i % 2][0], rl_lr=lrs[i % 2][1]
        )
        one = run_method(make([s]), "gift@2", c)
        if algo == "exact_pg":  # GRPO: by default seed index i draws stream i (see the test below)
            np.testing.assert_allclose(_metrics(batch[batch.seed == i]), _metrics(one), atol=1e-5)
    sft_end = batch[(batch.stage == "sft") & (batch.step == 3)]
    assert sft_end.set_index("seed")["J"].diff().abs().iloc[1] > 1e-4  # the two lrs differ


@pytest.mark.parametrize("algo", ["exact_pg", "grpo"])
def test_record_steps_keeps_those_rows_and_the_escape_times(algo):
    cfg = PipelineConfig(sft_steps=3, rl_steps=4, rl_algorithm=algo)
    sc = SharedBandit([0, 1], num_prompts=8, sft_prompts=4, V=6, d=3)
    full = run_method(sc, "gift@2", cfg, escape_threshold=0.5)
    some = run_method(sc, "gift@2", cfg, escape_threshold=0.5, record_steps={"sft": {3}, "rl": {1, 4}})
    keep = ((full.stage == "sft") & (full.step == 3)) | ((full.stage == "rl") & full.step.isin([1, 4]))
    pd.testing.assert_frame_equal(some, full[keep].reset_index(drop=True))
    pd.testing.assert_frame_equal(some.attrs["escape"], full.attrs["escape"])
    assert len(some) == 3 * 2 and "eval_J" in some
    with pytest.raises(ValueError, match="record_steps"):
        run_method(sc, "sft", cfg, record_steps={"rl": {99}})


def test_shared_parameters_move_rl_prompts_during_sft():
    sc = SharedBandit([0, 1], num_prompts=8, sft_prompts=4, V=6, d=3)
    assert isinstance(make_policy(sc), LogLinearPolicy)  # shared parameters, not a table
    df = run_method(sc, "sft", PipelineConfig(sft_steps=5, rl_steps=0))
    kl = df[(df.stage == "sft") & (df.step == 5)]["kl_base"]  # measured on the disjoint RL prompts
    assert (kl > 1e-3).all()


def test_grpo_runs_and_improves_reward():
    cfg = PipelineConfig(sft_steps=0, rl_steps=15, rl_algorithm="grpo", num_generations=8, rl_lr=1.0)
    df = run_method(bandit(seeds=(0, 1, 2)), "none", cfg)
    rl = df[df.stage == "rl"]
    assert rl[rl.step == 15]["J"].mean() > rl[rl.step == 0]["J"].mean() + 0.05
    for mode in ("bnpo", "dr_grpo", "sum"):
        out = run_method(
            bandit(),
            "none",
            PipelineConfig(sft_steps=0, rl_steps=2, rl_algorithm="grpo", loss_type=mode, rl_lr=2.0),
        )
        assert np.isfinite(_metrics(out)).all()


def test_kl_penalty_keeps_rl_near_its_start():
    sc = bandit()
    free = run_method(sc, "sft", PipelineConfig(sft_steps=3, rl_steps=8, rl_lr=2.0))
    tied = run_method(sc, "sft", PipelineConfig(sft_steps=3, rl_steps=8, kl_coef=1.0, rl_lr=2.0))
    move = lambda df: df[df.stage == "rl"].groupby("seed")["J"].agg(lambda x: x.iloc[-1] - x.iloc[0])  # noqa: E731
    assert (move(tied).abs() < move(free).abs()).all()


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(sft_steps=-1), "sft_steps"),
        (dict(rl_steps=-2), "rl_steps"),
        (dict(rl_algorithm="ppo"), "rl_algorithm"),
        (dict(loss_type="mean"), "loss_type"),
        (dict(num_generations=1), "num_generations"),
    ],
)
def test_bad_pipeline_config(kw, field):
    with pytest.raises(ValueError, match=field):
        run_method(bandit(), "sft", PipelineConfig(**kw))


def test_unknown_method():
    with pytest.raises(ValueError, match="method"):
        run_method(bandit(), "sft2", TINY)
    with pytest.raises(ValueError, match="method"):
        Method.parse("gift@hot")
    assert isinstance(run_method(bandit(), Method.parse("dft"), TINY), pd.DataFrame)


def _reference_sft_loss(sc, policy, params, teacher, spec):
    """The SFT loss over EVERY demonstration row (token sum, demo mean); per seed."""
    S, P_sft, n = sc.demo_leaves.shape
    seq = lambda z: sequence_logits(z[:, sc.sft_prompts], sc.demo_leaves, sc.geometry)  # noqa: E731
    logits, targets = seq(policy.node_logits(params))
    target = sequence_target(sc, spec["beta"]) if spec.needs_sequence_target else None
    inputs = dict(
        logits=logits,
        targets=targets,
        mask=torch.ones_like(targets, dtype=logits.dtype),
        base_logits=seq(sc.base_logits)[0],
        teacher_logits=seq(policy.node_logits(teacher))[0] if spec.needs_teacher else None,
        behavior_logp=sc.demo_behavior_logp.reshape(-1, sc.geometry.H),
        sequence_target=target,
    )
    # each seed on its own (rows are seed-major), as a run of that seed alone would see its batch
    block = P_sft * n
    loss = (
        sum(
            spec.loss(
                **{k: None if v is None else v[i * block : (i + 1) * block] for k, v in inputs.items()}
            ).sum()
            for i in range(S)
        )
        / n
    )
    return loss if isinstance(policy, TabularPolicy) else loss / P_sft


@pytest.mark.parametrize(
    "make",
    [
        lambda: tree((0, 1, 2), demos_per_prompt=6),
        lambda: tree((0, 1, 2), demos_per_prompt=6, data_source="behavior", wrong_demo_frac=0.3),
        lambda: SharedBandit([0, 1], num_prompts=8, sft_prompts=4, V=6, d=3, demos_per_prompt=6),
    ],
)
@pytest.mark.parametrize(
    "method", ["sft", "dft", "gift@2", "gift_seq@2", "curio", "pear_token", "entropy_sft@0.3,rho=0.5"]
)
def test_sft_loss_over_distinct_demos_equals_the_loss_over_every_demo(make, method):
    sc, spec = make(), Method.parse(method)
    policy = make_policy(sc)
    params = policy.init() + 0.3 * torch.randn(
        policy.init().shape, generator=torch.Generator().manual_seed(0)
    )
    teacher = policy.init()
    demo = _DemoRows.of(sc, not spec.couples_rows)
    B = sc.demo_leaves.numel()
    # expert demos repeat: the distinct rows are fewer (unless the loss couples rows, rho < 1)
    assert (len(demo.rows) < B) if not spec.couples_rows else (len(demo.rows) == B)
    assert demo.weight.sum() == B
    seq_target = sequence_target(sc, spec["beta"])[demo.rows] if spec.needs_sequence_target else None
    grads = []
    for fn in (
        lambda p: _sft_loss(sc, policy, p, teacher, spec, demo.logits(sc.base_logits), seq_target, demo),
        lambda p: _reference_sft_loss(sc, policy, p, teacher, spec),
    ):
        p = params.clone().requires_grad_(True)
        loss = fn(p)
        grads.append((loss.detach(), torch.autograd.grad(loss, p)[0]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make", [tree, lambda s: SharedBandit(list(s), num_prompts=8, sft_prompts=4, V=6, d=3)]
)
def test_prompt_and_path_logits_are_the_node_logits_there(make):
    sc = make((0, 1))
    policy = make_policy(sc)
    params = policy.init() + 0.5 * torch.randn(
        policy.init().shape, generator=torch.Generator().manual_seed(1)
    )
    z = policy.node_logits(params)
    for prompts in (sc.rl_prompts, torch.arange(z.shape[1]), torch.tensor([2, 0])):
        torch.testing.assert_close(policy.prompt_logits(params, prompts), z[:, prompts])
    demo = _DemoRows.of(sc)
    torch.testing.assert_close(demo.policy_logits(policy, params), demo.logits(z))


# ----------------------------------------------------------------------------- the frame, by hand
def test_frame_layout_and_identity_columns():
    sc = bandit()
    for spec, name, kind, value in [
        ("gift,beta=2", "gift,beta=2", "gift", 2.0),  # a string is kept as given
        (Method.parse("gift,beta=2"), "gift@2", "gift", 2.0),  # a Method gives its canonical spelling
        ("sft", "sft", "sft", np.nan),
    ]:
        df = run_method(sc, spec, TINY)
        cols = ["method", "kind", "value", "seed", "stage", "step", "global_step"]
        assert list(df.columns) == cols + metric_names(TINY) + ["pear_degenerate"]
        R = TINY.sft_steps + 1 + TINY.rl_steps + 1
        assert (df["method"] == name).all() and (df["kind"] == kind).all()
        np.testing.assert_array_equal(df["value"], np.full(2 * R, value))
        assert df["seed"].tolist() == [0, 1] * R
        assert df["stage"].tolist() == ["sft"] * 2 * (TINY.sft_steps + 1) + ["rl"] * 2 * (TINY.rl_steps + 1)
        steps = list(range(TINY.sft_steps + 1)) + list(range(TINY.rl_steps + 1))
        assert df["step"].tolist() == [s for s in steps for _ in range(2)]
        assert df["global_step"].tolist() == [g for g in range(R) for _ in range(2)]
        assert not df["pear_degenerate"].any()  # expert data are deterministic, but sft reads no rho


def test_pear_degenerate_column_sits_after_the_metrics_and_before_eval_columns():
    sc = SharedBandit([0, 1], num_prompts=8, sft_prompts=4, V=6, d=3, eval_prompts=3)
    df = run_method(sc, "pear_token", TINY)
    names = metric_names(TINY)
    i = list(df.columns).index("pear_degenerate")
    assert list(df.columns)[i - len(names) : i] == names
    assert list(df.columns)[i + 1 :] == [f"eval_{k}" for k in names]
    assert df["pear_degenerate"].tolist() == sc.behavior_deterministic[df["seed"]].tolist()


def test_eval_columns_are_the_eval_prompts_metrics_not_the_rl_ones():
    from toybench.tabular.pipeline import eval_constants, evaluate

    sc = SharedBandit([0, 1], num_prompts=8, sft_prompts=4, V=6, d=3, eval_prompts=3)
    df = run_method(sc, "sft", TINY)
    z0 = make_policy(sc).node_logits(make_policy(sc).init())
    want = evaluate(sc, z0, TINY, eval_constants(sc, "eval"))
    row = df[df.global_step == 0]
    for k in ("J", "sft_loss", "entropy", "kl_base"):
        np.testing.assert_allclose(row[f"eval_{k}"], want[k].double().numpy(), rtol=1e-6, atol=1e-7)
    assert np.abs(row["eval_J"].to_numpy() - row["J"].to_numpy()).max() > 1e-3


def test_evaluate_metrics_by_hand():
    from toybench.tabular.pipeline import evaluate

    sc = tree()
    sc.base_logits = sc.base_logits.double()
    sc.reward, sc.heldout = sc.reward.double(), sc.heldout.double()
    g = torch.Generator().manual_seed(2)
    z = sc.base_logits + torch.randn(sc.base_logits.shape, generator=g, dtype=torch.float64)
    cfg = PipelineConfig(coverage_threshold=0.02)
    m = evaluate(sc, z, cfg, per_prompt=True)
    rl = sc.rl_prompts.numpy()
    H, L = sc.geometry.H, sc.geometry.num_leaves
    P = mdp.leaf_probs(mdp.policy(z[:, rl].numpy()))  # (S, P_rl, L)
    Pb = mdp.leaf_probs(mdp.policy(sc.base_logits[:, rl].numpy()))
    R, D = sc.reward[:, rl].numpy(), sc.heldout.numpy()
    wrong = R == 0
    J = (P * R).sum(-1)
    fork = mdp.policy(z[:, rl].numpy())[:, :, 0]  # first-token distribution
    want = {
        "sft_loss": -(D * np.log(P)).sum(-1) / H,
        "J": J,
        "entropy": -(P * np.log(P)).sum(-1) / H,
        "entropy_fork": -(fork * np.log(fork)).sum(-1),
        "coverage": ((P > 0.02) & (R > 0)).sum(-1),
        "wrong_mass": (P * wrong).sum(-1),
        "implausible_mass": (P * (wrong & (Pb < 1 / L))).sum(-1),
        "kl_base": (P * np.log(P / Pb)).sum(-1),
        "pass@4": 1 - (1 - J) ** 4,
    }
    assert sc.heldout.shape[1] == len(rl) and len(rl) != L  # a wrong summed axis changes the shape
    for k, v in want.items():
        np.testing.assert_allclose(m[k].numpy(), v, rtol=1e-9, atol=1e-12, err_msg=k)
    assert 0 < want["implausible_mass"].min() and want["wrong_mass"].max() < 1


def test_escape_times_follow_the_rl_trajectory():
    sc = MultiAnswerBandit([0, 1], num_prompts=1, V=8, num_correct=2)  # one prompt: J per prompt = J
    cfg = PipelineConfig(sft_steps=3, rl_steps=6, rl_lr=2.0)
    df = run_method(sc, "sft", cfg, escape_threshold=0.85)
    esc = df.attrs["escape"]
    rl = df[df.stage == "rl"]
    assert list(esc["method"]) == ["sft", "sft"] and (esc["budget"] == 6).all()
    for s in (0, 1):
        J = rl[rl.seed == s]["J"].to_numpy()
        e = esc[esc.seed == s].iloc[0]
        assert e["initial"] == pytest.approx(J[0], rel=1e-6)
        hit = np.flatnonzero(J >= 0.85)
        assert e["reached"] == (hit.size > 0)
        assert e["steps"] == hit[0] if hit.size else np.isnan(e["steps"])
    assert esc["reached"].any() and (esc["initial"] < 0.85).all()  # the case has an escape to time
    assert "escape" not in run_method(sc, "sft", cfg).attrs


def test_exact_pg_rl_step_is_gradient_ascent_on_each_prompts_J():
    # tabular: one step z <- z + lr * dJ_x/dz_x per prompt (theory.mdp), independent of the prompt count
    sc = tree(seeds=(0,))
    cfg = PipelineConfig(sft_steps=0, rl_steps=1, rl_lr=1.5)
    df = run_method(sc, "none", cfg)
    z0 = sc.base_logits[0].double().numpy()  # (P, N, V)
    R = sc.reward[0].double().numpy()
    z1 = z0 + 1.5 * mdp.policy_gradient(z0, R)
    J1 = mdp.expected_return(mdp.policy(z1), R)  # (P,)
    rl = df[df.stage == "rl"]
    assert rl[rl.step == 1]["J"].item() == pytest.approx(J1[sc.rl_prompts.numpy()].mean(), rel=1e-5)


def test_exact_pg_loss_value_tabular_sums_prompts_shared_averages_them():
    for sc in (tree(seeds=(0,)), SharedBandit([0], num_prompts=8, sft_prompts=4, V=6, d=3)):
        pol = make_policy(sc)
        params = pol.init().double()
        sc.reward = sc.reward.double()
        if sc.features is not None:
            sc.features = sc.features.double()
        rl = sc.rl_prompts.numpy()
        z = pol.node_logits(params)[:, rl].detach().numpy()
        P = mdp.leaf_probs(mdp.policy(z))
        R = sc.reward[:, rl].numpy()
        J = (P * R).sum(-1, keepdims=True)
        per_prompt = (P * -(R - J) * np.log(P)).sum(-1)  # sg[P] * policy_gradient_loss(log P, R - J)
        want = per_prompt.sum() if sc.features is None else per_prompt.mean()
        got = exact_pg_loss(sc, pol, params, None, PipelineConfig()).item()
        assert got == pytest.approx(want, rel=1e-10)


def test_sft_loss_value_sums_tokens_and_averages_demos():
    from toybench.tabular.pipeline import _sft_loss

    for sc in (tree(seeds=(0, 1)), SharedBandit([0, 1], num_prompts=8, sft_prompts=4, V=6, d=3)):
        pol = make_policy(sc)
        params = pol.init()
        loss = _sft_loss(sc, pol, params, None, Method.parse("sft"), None).item()
        z = pol.node_logits(params)[:, sc.sft_prompts].double().numpy()  # (S, P_sft, N, V)
        logp_leaf = np.log(mdp.leaf_probs(mdp.policy(z)))  # (S, P_sft, L)
        demo = np.take_along_axis(logp_leaf, sc.demo_leaves.numpy(), 2)  # (S, P_sft, n)
        per_prompt = -demo.mean(-1)  # sequence NLL = sum over tokens; mean over a prompt's demos
        want = per_prompt.sum() if sc.features is None else per_prompt.mean(1).sum()
        assert loss == pytest.approx(want, rel=1e-5)


def test_grpo_is_seeded_by_grpo_seed():
    cfg = PipelineConfig(sft_steps=0, rl_steps=3, rl_algorithm="grpo", num_generations=4, rl_lr=2.0)
    a, b = run_method(bandit(), "none", cfg), run_method(bandit(), "none", cfg)
    np.testing.assert_array_equal(_metrics(a), _metrics(b))
    c = run_method(bandit(), "none", PipelineConfig(**{**cfg.__dict__, "grpo_seed": 1}))
    assert np.abs(_metrics(a) - _metrics(c)).max() > 1e-4
    assert len(a) == 2 * (0 + 1 + 3 + 1) and a[a.stage == "rl"]["step"].max() == 3
    # step 0 of RL is the start: J there equals J at the end of SFT (no update before recording)
    rl0, sft_end = a[(a.stage == "rl") & (a.step == 0)], a[(a.stage == "sft") & (a.step == 0)]
    np.testing.assert_array_equal(rl0["J"].to_numpy(), sft_end["J"].to_numpy())
    assert np.abs(a[(a.stage == "rl") & (a.step == 1)]["J"].to_numpy() - rl0["J"].to_numpy()).max() > 1e-4


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(sft_steps=-1), r"^cfg\.sft_steps"),
        (dict(sft_lr=0.0), r"^cfg\.sft_lr"),
        (dict(rl_lr=-1.0), r"^cfg\.rl_lr"),
        (dict(num_iterations=0), r"^cfg\.num_iterations"),
        (dict(loss_type="mean"), r"^cfg\.loss_type"),
        (dict(pass_k=()), r"^cfg\.pass_k must be non-empty positive ints, got \(\)"),
        (dict(pass_k=(0, 4)), r"^cfg\.pass_k must be non-empty positive ints"),
    ],
)
def test_pipeline_config_errors_carry_the_prefix(kw, match):
    with pytest.raises(ValueError, match=match):
        PipelineConfig(**kw).validate(prefix="cfg.")


def test_pipeline_config_smallest_valid_values():
    PipelineConfig(num_generations=2, num_iterations=1, sft_steps=0, rl_steps=0, pass_k=(1,)).validate()
    with pytest.raises(ValueError, match=r"^sft_steps"):
        PipelineConfig(sft_steps=-1).validate()  # no prefix by default


def test_escape_frame_by_hand():
    from toybench.tabular.pipeline import escape_frame

    # J [R=3, S=2, P=2]: (seed 0, prompt 0) reaches the threshold EXACTLY at step 1 (>= counts);
    # (0, 1) never; (1, 0) at step 2; (1, 1) already at step 0
    J = torch.tensor(
        [[[0.1, 0.2], [0.3, 0.9]], [[0.5, 0.2], [0.4, 0.9]], [[0.6, 0.3], [0.7, 0.9]]], dtype=torch.float64
    )
    e = escape_frame(J, 0.5, "m")
    assert e["seed"].tolist() == [0, 0, 1, 1] and e["prompt"].tolist() == [0, 1, 0, 1]
    np.testing.assert_array_equal(e["steps"], [1.0, np.nan, 2.0, 0.0])
    assert e["reached"].tolist() == [True, False, True, True]
    assert e["initial"].tolist() == [0.1, 0.2, 0.3, 0.9] and (e["budget"] == 2).all()


@pytest.mark.parametrize(
    "make", [tree, lambda s: SharedBandit(list(s), num_prompts=8, sft_prompts=4, V=6, d=3)]
)
def test_grpo_seed_alone_equals_the_seed_in_a_batch(make):
    """Sampled GRPO: with the seeds' own numbers as rollout streams, seed s run alone gives exactly the
    samples and the trajectory it gets in any batch (other seeds, other step sizes, other order)."""
    cfg = PipelineConfig(sft_steps=2, rl_steps=6, rl_algorithm="grpo", num_generations=4, rl_lr=2.0)
    seeds = [3, 1, 3, 2]  # seed 3 twice, at two step sizes
    lrs = torch.tensor([2.0, 1.0, 0.5, 2.0])
    batch = run_method(make(seeds), "sft", cfg, rl_lrs=lrs, rollout_seeds=torch.tensor(seeds))
    for i, s in enumerate(seeds):
        c = PipelineConfig(**{**cfg.__dict__, "rl_lr": float(lrs[i])})
        one = run_method(make([s]), "sft", c, rollout_seeds=torch.tensor([s]))
        np.testing.assert_allclose(_metrics(batch[batch.seed == i]), _metrics(one), atol=1e-5)
    # the stream matters: a different stream id gives a different trajectory
    other = run_method(make([3]), "sft", cfg, rollout_seeds=torch.tensor([4]))
    assert np.abs(_metrics(other) - _metrics(batch[batch.seed == 0])).max() > 1e-4


def test_grpo_common_random_numbers_across_methods():
    """Two methods on the same seeds meet the same uniforms: from the same start (lr 0 SFT) they sample
    the same leaves and end at the same point."""
    cfg = PipelineConfig(sft_steps=2, rl_steps=4, rl_algorithm="grpo", num_generations=4, sft_lr=1e-12)
    a = run_method(tree([0, 1]), "sft", cfg, rollout_seeds=torch.tensor([7, 8]))
    b = run_method(tree([0, 1]), "gift@2", cfg, rollout_seeds=torch.tensor([7, 8]))
    rl = lambda d: d[d.stage == "rl"]["J"].to_numpy()  # noqa: E731
    np.testing.assert_allclose(rl(a), rl(b), atol=1e-6)
