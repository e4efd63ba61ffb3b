"""Environment contract: one test over every environment, plus the knobs and the tree indexing oracle."""

import numpy as np
import pytest
import torch

from theory import mdp
from toybench.metrics import entropy
from toybench.tabular import MultiAnswerBandit, ReasoningTree, SharedBandit, SharedTree, TreeGeometry

SEEDS = [3, 4, 5]
ENVS = {
    "bandit": lambda **kw: MultiAnswerBandit(SEEDS, num_prompts=6, V=12, num_correct=3, **kw),
    "bandit_beta": lambda **kw: MultiAnswerBandit(SEEDS, num_prompts=6, V=12, data_source="behavior", **kw),
    "shared": lambda **kw: SharedBandit(SEEDS, num_prompts=10, sft_prompts=4, V=10, d=4, **kw),
    "tree": lambda **kw: ReasoningTree(SEEDS, num_prompts=4, V=4, H=4, **kw),
    "tree_beta": lambda **kw: ReasoningTree(SEEDS, num_prompts=4, V=4, H=4, data_source="behavior", **kw),
    "tree_shared": lambda **kw: SharedTree(SEEDS, num_prompts=6, sft_prompts=3, V=3, H=3, k=3, **kw),
}


@pytest.mark.parametrize("name", ENVS)
def test_environment_contract(name):
    sc = ENVS[name]()
    S, P, L = sc.reward.shape
    g = sc.geometry
    assert S == len(SEEDS) and L == g.num_leaves
    assert sc.base_logits.shape == (S, P, g.num_nodes, g.V) == sc.behavior_logits.shape
    assert set(sc.reward.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(sc.optimal_value(), torch.ones(S, P))  # every prompt is solvable
    J = sc.exact_J(sc.base_logits)
    assert ((J > 0) & (J < 1)).all()  # pi_base has mass on correct and on wrong answers
    assert not torch.allclose(sc.behavior_logits, sc.base_logits)  # pi_beta != pi_base
    n = sc.demo_leaves.shape[-1]
    assert sc.demo_leaves.shape == (S, len(sc.sft_prompts), n)
    assert ((sc.demo_leaves >= 0) & (sc.demo_leaves < L)).all()
    assert sc.demo_behavior_logp.shape == (S, len(sc.sft_prompts), n, g.H)
    assert torch.isfinite(sc.demo_behavior_logp).all() and (sc.demo_behavior_logp <= 1e-6).all()
    assert sc.heldout.shape == (S, len(sc.rl_prompts), L)
    torch.testing.assert_close(sc.heldout.sum(-1), torch.ones(S, len(sc.rl_prompts)))
    # seeded: the same seeds give the same instance; seed s does not depend on the other seeds
    again = ENVS[name]()
    assert torch.equal(again.reward, sc.reward) and torch.equal(again.demo_leaves, sc.demo_leaves)


def test_seed_instance_independent_of_batch():
    a = ReasoningTree([4], num_prompts=3, V=3, H=3)
    b = ReasoningTree([2, 4], num_prompts=3, V=3, H=3)
    assert torch.equal(a.base_logits[0], b.base_logits[1]) and torch.equal(a.demo_leaves[0], b.demo_leaves[1])


@pytest.mark.parametrize("name", ["bandit", "tree", "shared"])
def test_wrong_demo_fraction_knob(name):
    for unit in ("prompt", "demo"):
        good = ENVS[name](wrong_demo_frac=0.0, error_unit=unit)
        bad = ENVS[name](wrong_demo_frac=1.0, error_unit=unit)
        r = lambda sc: torch.gather(sc.reward[:, sc.sft_prompts], 2, sc.demo_leaves)  # noqa: E731
        assert (r(good) == 1).all() and (r(bad) == 0).all()
    # expert data is concentrated on one correct answer per prompt
    sc = ENVS[name](wrong_demo_frac=0.0)
    assert (sc.demo_leaves == sc.demo_leaves[..., :1]).all()


def test_demos_per_prompt_and_disjoint_prompts():
    sc = SharedBandit([0], num_prompts=12, sft_prompts=5, V=8, d=3, demos_per_prompt=3)
    assert sc.demo_leaves.shape == (1, 5, 3)
    assert set(sc.sft_prompts.tolist()).isdisjoint(sc.rl_prompts.tolist())
    assert sc.features.shape == (1, 12 + 16, 1, 8, 3)  # + 16 held-out eval prompts (default)
    # shared parameters: the base logits are theta0 . phi
    torch.testing.assert_close(torch.einsum("spnvd,sd->spnv", sc.features, sc.theta0), sc.base_logits)
    tab = MultiAnswerBandit([0], num_prompts=4, V=8)
    assert torch.equal(tab.sft_prompts, tab.rl_prompts)


def test_tree_fork_is_high_entropy_execution_is_not():
    sc = ReasoningTree([0, 1], num_prompts=6, V=5, H=5, exec_margin=4.0)
    g = sc.geometry
    H_root = entropy(sc.base_logits[:, :, 0]).mean()
    # execution nodes on a successful path: the nodes visited by the expert's demonstrations
    nodes = g.path_nodes[sc.demo_leaves[..., 0]][..., 1:-1]  # (S, P, H-2)
    z = torch.gather(sc.base_logits, 2, nodes[..., None].expand(-1, -1, -1, g.V))
    assert entropy(z).mean() < 0.5 * H_root


def test_geometry_matches_theory_oracle():
    V, H = 3, 4
    g = TreeGeometry(V, H)
    np.testing.assert_array_equal(g.path_nodes.numpy(), mdp.all_path_nodes(V, H))
    np.testing.assert_array_equal(g.path_tokens.numpy(), mdp.all_sequences(V, H))
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, g.num_nodes, V))
    R = rng.integers(0, 2, size=(2, g.num_leaves)).astype(float)
    J = (g.leaf_token_logp(torch.tensor(z)).sum(-1).exp() * torch.tensor(R)).sum(-1)
    np.testing.assert_allclose(J.numpy(), mdp.expected_return(mdp.policy(z), R), rtol=1e-10)


def test_token_logp_from_leaf_dist_recovers_policy():
    g = TreeGeometry(3, 3)
    z = torch.randn(2, g.num_nodes, 3, dtype=torch.float64)
    tok = g.leaf_token_logp(z)  # (2, L, H)
    torch.testing.assert_close(g.token_logp_from_leaf_dist(tok.sum(-1).exp()), tok)


def test_enumeration_of_a_large_tree():
    # 10^5 leaves in one vectorised pass (its time is not asserted: timings under load are not a test)
    g = TreeGeometry(10, 5)
    z = torch.randn(1, 1, g.num_nodes, 10, dtype=torch.float64)
    logp = g.leaf_token_logp(z).sum(-1)
    assert logp.shape == (1, 1, 100_000)
    torch.testing.assert_close(logp.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    # a few leaves by hand along their paths (theory.mdp's indexing)
    lsm = torch.log_softmax(z[0, 0], -1)
    for leaf in (0, 12_345, 99_999):
        y = [int(c) for c in f"{leaf:05d}"]  # V = 10: the leaf index is the sequence in base 10
        want = sum(lsm[mdp.node_index(y[:t], 10), y[t]] for t in range(5))
        torch.testing.assert_close(logp[0, 0, leaf], want)


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: MultiAnswerBandit([0], num_correct=0), "num_correct"),
        (lambda: MultiAnswerBandit([0], base_correct_mass=1.5), "base_correct_mass"),
        (lambda: MultiAnswerBandit([0], wrong_demo_frac=-0.1), "wrong_demo_frac"),
        (lambda: MultiAnswerBandit([0], demos_per_prompt=0), "demos_per_prompt"),
        (lambda: MultiAnswerBandit([0], data_source="web"), "data_source"),
        (lambda: SharedBandit([0], num_prompts=4, sft_prompts=4), "sft_prompts"),
        (lambda: ReasoningTree([0], H=2), "H"),
        (lambda: ReasoningTree([0], V=4, num_good=4), "num_good"),
        (lambda: ReasoningTree([0], error_unit="token"), "error_unit"),
    ],
)
def test_bad_arguments_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_occupancy_matches_theory_oracle():
    g = TreeGeometry(3, 3)
    z = torch.randn(2, g.num_nodes, 3, dtype=torch.float64)
    q = g.leaf_token_logp(z).sum(-1).exp()
    np.testing.assert_allclose(g.occupancy(q).numpy(), mdp.occupancy(mdp.policy(z.numpy())), atol=1e-12)


def test_leaf_logp_equals_sum_of_token_logp():
    g = TreeGeometry(4, 3)
    z = torch.randn(2, 3, g.num_nodes, 4, dtype=torch.float64)
    torch.testing.assert_close(g.leaf_logp(z), g.leaf_token_logp(z).sum(-1))
