"""The environments' sequence targets and shared settings: gift_seq (exact sequence Gibbs target),
PEAR's pi_beta, held-out prompts, the base-competence knob of the tree and the shared bandit."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from theory import mdp
from toybench import losses
from toybench.methods import Method
from toybench.tabular import (
    MultiAnswerBandit,
    PipelineConfig,
    ReasoningTree,
    Scenario,
    SharedBandit,
    SharedTree,
    TreeGeometry,
    run_method,
)
from toybench.tabular.pipeline import eval_constants, sequence_target
from toybench.tabular.policies import sequence_logits

CFG = PipelineConfig(sft_steps=4, rl_steps=3)


# ----------------------------------------------------------------------------- gift_seq
@pytest.mark.parametrize("V,H", [(2, 1), (3, 3), (4, 2)])
def test_gibbs_logp_matches_theory_oracle_float64(V, H):
    g = TreeGeometry(V, H)
    gen = torch.Generator().manual_seed(V * 10 + H)
    z = torch.randn(2, 3, g.num_nodes, V, generator=gen, dtype=torch.float64)
    R = torch.rand(2, 1, g.num_leaves, generator=gen, dtype=torch.float64)
    for beta in (0.0, 0.7, 5.0):
        np.testing.assert_allclose(
            g.gibbs_logp(z, R, beta).numpy(), mdp.gibbs_logits(z.numpy(), R.numpy(), beta), atol=1e-12
        )


def test_gibbs_target_by_hand():
    """Uniform base, V = 2, H = 2, demo (0, 0), beta = ln 3: q(demo) = 3/6, q(a_0 = 0) = 2/3, q(0 | 0) = 3/4.

    Token GIFT would tilt both positions by ln 3 (3/4 each); off the demo's path q is the base (1/2)."""
    g = TreeGeometry(2, 2)
    q = g.gibbs_logp(
        torch.zeros(g.num_nodes, 2, dtype=torch.float64), torch.eye(4, dtype=torch.float64)[0], math.log(3)
    )
    torch.testing.assert_close(
        q.exp(), torch.tensor([[2 / 3, 1 / 3], [3 / 4, 1 / 4], [1 / 2, 1 / 2]], dtype=torch.float64)
    )


def _float64(sc):
    fields = {f.name: getattr(sc, f.name) for f in dataclasses.fields(Scenario)}
    return Scenario(**dict(fields, base_logits=sc.base_logits.double()))


def test_sequence_target_is_the_exact_gibbs_conditional_at_the_demo_prefixes():
    sc = _float64(
        ReasoningTree(
            [0, 1], num_prompts=2, V=3, H=3, demos_per_prompt=3, wrong_demo_frac=0.5, error_unit="demo"
        )
    )
    beta, g = 2.0, sc.geometry
    got = sequence_target(sc, beta).reshape(2, 2, 3, g.H, g.V)
    for s in range(2):
        for p in range(2):
            for i in range(3):
                leaf = int(sc.demo_leaves[s, p, i])
                R = np.zeros(g.num_leaves)
                R[leaf] = 1.0
                oracle = mdp.gibbs_logits(sc.base_logits[s, p].numpy(), R, beta)  # (N, V)
                np.testing.assert_allclose(
                    got[s, p, i].numpy(), oracle[g.path_nodes[leaf].numpy()], atol=1e-12
                )
                # its log-odds tilt along the demo is the closed form log(1 + (e^beta - 1) P_base(suffix))
                y = g.path_tokens[leaf].numpy()
                np.testing.assert_allclose(
                    mdp.sequence_gibbs_tilt(sc.base_logits[s, p].numpy(), y, beta),
                    mdp.sequence_gibbs_tilt_closed_form(sc.base_logits[s, p].numpy(), y, beta),
                    atol=1e-10,
                )


def test_gift_seq_training_converges_to_the_sequence_gibbs_policy():
    """Gradient descent on gift_seq's loss over ONE demo reaches theory.mdp.gibbs_logits at every node
    (off the demo's path the target is pi_base, which no data moves); token GIFT does not."""
    g = TreeGeometry(3, 3)
    base = torch.randn(1, 1, g.num_nodes, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    leaf = torch.tensor([[[7]]])
    R = torch.nn.functional.one_hot(leaf[0, 0, 0], g.num_leaves).double()
    target = torch.gather(g.gibbs_logp(base, R, 2.0)[0, 0], 0, g.path_nodes[7][:, None].expand(-1, 3))[None]
    method = Method.parse("gift_seq@2")
    params = base.clone()
    for _ in range(600):
        params.requires_grad_(True)
        logits, targets = sequence_logits(params, leaf, g)
        loss = method.loss(logits, targets, torch.ones(1, g.H), sequence_target=target).sum()
        (grad,) = torch.autograd.grad(loss, params)
        params = params.detach() - 4.0 * grad
    oracle = mdp.gibbs_logits(base[0, 0].numpy(), R.numpy(), 2.0)
    np.testing.assert_allclose(torch.log_softmax(params[0, 0], -1).numpy(), oracle, atol=1e-6)
    token = mdp.token_gift_logits(base[0, 0].numpy(), g.path_tokens[7].numpy(), 2.0)
    assert np.abs(token - oracle).max() > 0.05  # the token approximation is a different policy


def test_gift_seq_spec_and_clear_errors_outside_the_tree():
    m = Method.parse("gift_seq@2")
    assert (m.kind, m["beta"], str(m), m.needs_base, m.needs_sequence_target) == (
        "gift_seq",
        2.0,
        "gift_seq@2",
        True,
        True,
    )
    assert Method.parse(str(Method.parse("gift_seq"))) == Method.parse("gift_seq@20")
    z, y = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="only the tabular pipeline"):
        m.token_loss(z, y, base_logits=z)  # the chunked LLM / tiny-transformer path
    with pytest.raises(ValueError, match="sequence_target"):
        m.loss(z, y, torch.ones(2, 3), base_logits=z)
    with pytest.raises(ValueError, match="beta"):
        Method.parse("gift_seq@-1")
    from toybench.tiny.config import TinyConfig

    with pytest.raises(ValueError, match="tiny transformer.*gift_seq@2.*only the tabular pipeline"):
        TinyConfig(methods=("sft", "gift_seq@2")).validate()
    assert Method.parse("gift@2").token_level("llm") == Method.parse("gift@2")


def test_gift_seq_at_horizon_one_is_token_gift():
    """At H = 1 the sequence target IS the token target (tilt beta at the last position)."""
    sc = MultiAnswerBandit([0, 1], num_prompts=4, V=8, num_correct=2)
    a, b = run_method(sc, "gift_seq@2", CFG), run_method(sc, "gift@2", CFG)
    np.testing.assert_allclose(a["J"], b["J"], atol=1e-6)
    np.testing.assert_allclose(a["sft_loss"], b["sft_loss"], atol=1e-5)


def test_gift_seq_differs_from_token_gift_on_the_tree():
    sc = ReasoningTree([0, 1], num_prompts=3, V=3, H=3)
    cfg = PipelineConfig(sft_steps=30, rl_steps=0)
    a, b = run_method(sc, "gift_seq@2", cfg), run_method(sc, "gift@2", cfg)
    end = lambda df: df[df.stage == "sft"].groupby("seed").kl_base.last().to_numpy()  # noqa: E731
    assert (end(a) < end(b)).all()  # the exact target stays closer to pi_base (token GIFT over-tilts, §4.6)


# ----------------------------------------------------------------------------- PEAR's pi_beta
def test_behavior_data_come_from_pi_beta_with_its_recorded_logprobs():
    sc = ReasoningTree([0, 1], num_prompts=4, V=4, H=4, data_source="behavior", wrong_demo_frac=0.0)
    g = sc.geometry
    tok = g.leaf_token_logp(sc.behavior_logits)  # (S, P, L, H): log pi_beta(y_t | y_<t)
    want = torch.gather(tok, 2, sc.demo_leaves[..., None].expand(-1, -1, -1, g.H))
    torch.testing.assert_close(sc.demo_behavior_logp, want)
    assert not torch.allclose(sc.behavior_logits, sc.base_logits)  # pi_beta != pi_base
    assert (
        (sc.demo_behavior_logp < -1e-3).any(-1).all()
    )  # stochastic: every demo had a token pi_beta could miss
    distinct = [len(set(sc.demo_leaves[s, p].tolist())) for s in range(2) for p in range(4)]
    assert max(distinct) > 1  # the data are not one deterministic answer per prompt
    assert not sc.behavior_deterministic.any()
    df = run_method(sc, "pear_token", CFG)
    assert not df.pear_degenerate.any()


def test_deterministic_expert_is_flagged_degenerate_and_every_rho_clips_low():
    sc = ReasoningTree([0, 1], num_prompts=4, V=4, H=4)  # expert data, error_unit="prompt"
    assert sc.behavior_deterministic.all() and (sc.demo_behavior_logp == 0).all()
    g = sc.geometry
    logits, targets = sequence_logits(sc.base_logits, sc.demo_leaves, g)
    logp = losses.logprobs(logits, targets)  # at the start of SFT: pi_theta = pi_base
    rho = (logp - sc.demo_behavior_logp.reshape(-1, g.H)).clamp(-0.08, 0.3)
    # rho_t = clip(log pi_theta(y_t), -0.08, 0.3) carries no pi_beta information and never up-weights;
    # it sits at the lower clip wherever pi_theta(y_t) < e^-0.08 (all but a few near-certain execution tokens)
    assert (rho <= 0).all() and (rho[logp < -0.08] == -0.08).all()
    assert (rho == -0.08).double().mean() > 0.9
    df = run_method(sc, "pear_sequence", CFG)
    assert df.pear_degenerate.all()
    assert not run_method(sc, "pear_sequence@self", CFG).pear_degenerate.any()  # no data log-probs used
    assert not run_method(sc, "sft", CFG).pear_degenerate.any()


# ----------------------------------------------------------------------------- held-out prompts
def test_shared_bandit_eval_prompts_are_held_out_and_leave_the_instance_unchanged():
    kw = dict(num_prompts=10, sft_prompts=4, V=10, d=4)
    sc, plain = SharedBandit([0, 1], eval_prompts=5, **kw), SharedBandit([0, 1], eval_prompts=0, **kw)
    assert plain.eval_prompts is None and sc.eval_prompts.tolist() == list(range(10, 15))
    assert not set(sc.eval_prompts.tolist()) & set(sc.sft_prompts.tolist() + sc.rl_prompts.tolist())
    for k in ("demo_leaves", "demo_behavior_logp", "heldout", "theta0"):
        assert torch.equal(getattr(sc, k), getattr(plain, k))
    assert torch.equal(sc.features[:, :10], plain.features) and torch.equal(sc.reward[:, :10], plain.reward)
    assert sc.eval_heldout.shape == (2, 5, 10)
    torch.testing.assert_close(sc.eval_heldout.sum(-1), torch.ones(2, 5))
    assert torch.equal(sc.optimal_value(), torch.ones(2, 15))
    df = run_method(sc, "sft", PipelineConfig(sft_steps=10, rl_steps=10))
    base_eval = sc.exact_J(sc.base_logits)[:, sc.eval_prompts].mean(1).double().numpy()
    np.testing.assert_allclose(df[df.global_step == 0].eval_J, base_eval, rtol=1e-5)
    assert (
        df[df.global_step == df.global_step.max()].eval_J.to_numpy() != base_eval
    ).all()  # shared theta moved
    assert "eval_J" not in run_method(plain, "sft", CFG)


def test_per_prompt_settings_cannot_measure_generalisation():
    for sc in (
        MultiAnswerBandit([0], num_prompts=3, V=6, num_correct=2),
        ReasoningTree([0], num_prompts=2, V=3, H=3),
    ):
        assert sc.eval_prompts is None
        with pytest.raises(ValueError, match="cannot measure generalisation"):
            eval_constants(sc, "eval")
        assert not any(c.startswith("eval_") for c in run_method(sc, "sft", CFG).columns)


# ----------------------------------------------------------------------------- base competence
def test_tree_base_correct_mass_sets_the_fork_mass_on_working_strategies():
    kw = dict(num_prompts=4, V=4, H=4)
    default, none = ReasoningTree([0, 1], **kw), ReasoningTree([0, 1], base_correct_mass=None, **kw)
    assert torch.equal(default.base_logits, none.base_logits)
    Js = []
    for m in (0.02, 0.3, 0.9):
        sc = ReasoningTree([0, 1], base_correct_mass=m, **kw)
        g = sc.geometry
        works = (sc.reward.reshape(2, 4, g.V, -1) > 0).any(-1)  # (S, P, V): strategies with a rewarded leaf
        mass = (torch.softmax(sc.base_logits[:, :, 0], -1) * works).sum(-1)
        torch.testing.assert_close(mass, torch.full((2, 4), m))
        assert torch.equal(sc.demo_leaves, default.demo_leaves) and torch.equal(sc.reward, default.reward)
        assert torch.equal(sc.base_logits[:, :, 1:], default.base_logits[:, :, 1:])  # only the fork moves
        Js.append(sc.exact_J(sc.base_logits).mean())
    assert Js[0] < Js[1] < Js[2] and Js[0] < 0.02


def test_shared_bandit_base_correct_mass_is_the_mean_mass_on_correct_answers():
    kw = dict(num_prompts=12, sft_prompts=6, V=10, d=4, eval_prompts=0)
    default = SharedBandit([0, 1], **kw)
    for m in (0.01, 0.5):
        sc = SharedBandit([0, 1], base_correct_mass=m, **kw)
        mass = (torch.softmax(sc.base_logits[:, :, 0], -1) * sc.correct).sum(-1).mean(1)
        torch.testing.assert_close(mass, torch.full((2,), m), atol=1e-5, rtol=0)
        assert torch.equal(sc.reward, default.reward) and torch.equal(sc.demo_leaves, default.demo_leaves)


@pytest.mark.parametrize(
    "make",
    [lambda m: ReasoningTree([0], base_correct_mass=m), lambda m: SharedBandit([0], base_correct_mass=m)],
)
def test_base_correct_mass_must_be_a_probability(make):
    with pytest.raises(ValueError, match="base_correct_mass"):
        make(1.5)


# ----------------------------------------------------------------------------- tree_shared
def _shared_tree(**kw):
    return SharedTree([0, 1], num_prompts=6, sft_prompts=3, V=3, H=3, k=3, eval_prompts=4, **kw)


def test_shared_tree_is_log_linear_with_held_out_prompts():
    sc = _shared_tree()
    S, P, L = sc.reward.shape
    assert P == 10 and sc.eval_prompts.tolist() == [6, 7, 8, 9]
    assert sc.features.shape == (2, 10, sc.geometry.num_nodes, 3, 2 + 3)
    torch.testing.assert_close(torch.einsum("spnvd,sd->spnv", sc.features, sc.theta0), sc.base_logits)
    assert torch.equal(sc.optimal_value(), torch.ones(2, 10))
    plain = SharedTree([0, 1], num_prompts=6, sft_prompts=3, V=3, H=3, k=3, eval_prompts=0)
    assert plain.eval_prompts is None and torch.equal(plain.demo_leaves, sc.demo_leaves)
    assert torch.equal(plain.base_logits, sc.base_logits[:, :6])
    # SFT on 3 prompts moves the policy on the 4 prompts nobody trains on (shared theta)
    df = run_method(sc, "gift_seq@2", PipelineConfig(sft_steps=10, rl_steps=5))
    e0, e1 = df[df.global_step == 0].eval_J.to_numpy(), df[df.global_step == 10].eval_J.to_numpy()
    assert (e0 != e1).all() and not df.pear_degenerate.any()


def test_shared_tree_base_correct_mass_and_expert_data():
    sc = _shared_tree(base_correct_mass=0.05, wrong_demo_frac=0.0)
    g = sc.geometry
    works = (sc.reward.reshape(2, 10, g.V, -1) > 0).any(-1)[:, :6]  # (S, P_train, V)
    mass = (torch.softmax(sc.base_logits[:, :6, 0], -1) * works).sum(-1).mean(1)
    torch.testing.assert_close(mass, torch.full((2,), 0.05), atol=1e-5, rtol=0)
    assert (torch.gather(sc.reward[:, sc.sft_prompts], 2, sc.demo_leaves) == 1).all()  # a correct expert
    assert (sc.demo_leaves == sc.demo_leaves[..., :1]).all() and sc.behavior_deterministic.all()
