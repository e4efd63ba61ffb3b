"""Property tests of theory.mdp (numpy) on hypothesis-generated prefix-tree MDPs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory import bandit as tb
from theory import mdp

TREES = st.tuples(st.integers(2, 4), st.integers(1, 3), st.integers(0, 2**31 - 1))


def tree_property(max_examples: int, *more):
    """A hypothesis property over random trees ``args = (V, H, seed)``, then ``more`` strategies."""
    return lambda test: settings(max_examples=max_examples, deadline=None)(given(TREES, *more)(test))


def _instance(V, H, seed, batch=2):
    rng = np.random.default_rng(seed)
    N = mdp.num_internal(V, H)
    return rng, rng.normal(size=(batch, N, V)), rng.normal(size=(batch, N, V)), rng.random((batch, V**H))


def test_indexing_breadth_first():
    V, H = 3, 3
    nodes = mdp.all_path_nodes(V, H)
    seqs = mdp.all_sequences(V, H)
    assert mdp.num_internal(V, H) == 13
    assert mdp.offsets(V, H).tolist() == [0, 1, 4, 13]
    for leaf in (0, 5, 26):
        y = seqs[leaf]
        assert mdp.leaf_index(y, V) == leaf
        assert nodes[leaf].tolist() == mdp.path_nodes(y, V).tolist()
        assert nodes[leaf, 2] == mdp.node_index(y[:2], V)
    assert mdp.horizon_of(13, 3) == 3


def test_indexing_matches_toybench_geometry():
    pytest.importorskip("torch")
    from toybench.tabular.envs import TreeGeometry

    g = TreeGeometry(3, 4)
    assert np.array_equal(g.path_nodes.numpy(), mdp.all_path_nodes(3, 4))
    assert np.array_equal(g.path_tokens.numpy(), mdp.all_sequences(3, 4))


@tree_property(25)
def test_leaf_probs_are_products_along_paths(args):
    V, H, seed = args
    _, z, _, _ = _instance(V, H, seed)
    pi = mdp.policy(z)
    P = mdp.leaf_probs(pi)
    direct = np.prod(pi[:, mdp.all_path_nodes(V, H), mdp.all_sequences(V, H)], axis=-1)
    np.testing.assert_allclose(P, direct, atol=1e-14)
    np.testing.assert_allclose(P.sum(-1), 1.0, atol=1e-12)
    d = mdp.occupancy(pi)
    off = mdp.offsets(V, H)
    for t in range(H):  # each depth is a distribution over prefixes
        np.testing.assert_allclose(d[:, off[t] : off[t + 1]].sum(-1), 1.0, atol=1e-12)


@tree_property(20)
def test_policy_gradient_matches_finite_differences(args):
    V, H, seed = args
    rng, z, _, R = _instance(V, H, seed, batch=1)
    g = mdp.policy_gradient(z, R)
    h = 1e-6
    for _ in range(3):
        s, a = rng.integers(z.shape[1]), rng.integers(V)
        e = np.zeros_like(z)
        e[0, s, a] = h
        fd = (mdp.expected_return(mdp.policy(z + e), R) - mdp.expected_return(mdp.policy(z - e), R)) / (2 * h)
        assert abs(fd[0] - g[0, s, a]) < 1e-8
    Vs, _ = mdp.state_values(mdp.policy(z), R)
    np.testing.assert_allclose(Vs[:, 0], mdp.expected_return(mdp.policy(z), R), atol=1e-12)


@tree_property(25)
def test_sequence_kl_chain_rule_with_unvisited_prefixes(args):
    V, H, seed = args
    rng, zp, z, _ = _instance(V, H, seed)
    zp = np.where(rng.random(zp.shape) < 0.3, -np.inf, zp)
    zp[..., 0] = 0.0
    p, pi = mdp.policy(zp), mdp.policy(z)
    np.testing.assert_allclose(mdp.sequence_kl(p, pi), mdp.leaf_kl(p, pi), atol=1e-12)
    ce = mdp.sequence_cross_entropy(p, pi)
    np.testing.assert_allclose(ce, mdp.sequence_entropy(p) + mdp.sequence_kl(p, pi), atol=1e-12)


@tree_property(25)
def test_sft_rate_cov_form_equals_gradient_inner_product(args):
    V, H, seed = args
    _, zp, z, R = _instance(V, H, seed)
    p = mdp.policy(zp)
    np.testing.assert_allclose(mdp.sft_rate_cov(p, z, R), mdp.sft_rate_along_pg(p, z, R), atol=1e-14)


def test_h1_reduces_to_bandit_closed_forms():
    rng = np.random.default_rng(0)
    V = 5
    p, pi, r = tb.softmax(rng.normal(size=(4, V))), tb.softmax(rng.normal(size=(4, V))), rng.random((4, V))
    P, Z = p[:, None, :], np.log(pi)[:, None, :]
    np.testing.assert_allclose(mdp.sft_rate_cov(P, Z, r), tb.sft_loss_rate_under_rl(pi, p, r), atol=1e-14)
    np.testing.assert_allclose(mdp.sft_second_order(P, r), tb.sft_loss_curvature_at_optimum(p, r), atol=1e-14)
    np.testing.assert_allclose(mdp.policy_gradient(Z, r)[:, 0], tb.policy_gradient(pi, r), atol=1e-14)
    y = np.array([2])
    q = np.exp(mdp.token_gift_logits(np.log(p[:1])[:, None, :], y, 2.5, smooth=0.1))[0, 0]
    np.testing.assert_allclose(q, tb.gift_target(p[0], 2, 2.5, smooth=0.1), atol=1e-12)


@tree_property(20, st.floats(0.0, 6.0))
def test_gibbs_target_is_the_tilted_sequence_distribution(args, beta):
    V, H, seed = args
    _, z, _, R = _instance(V, H, seed)
    star = mdp.leaf_probs(np.exp(mdp.gibbs_logits(z, R, beta)))
    tilted = mdp.leaf_probs(mdp.policy(z)) * np.exp(beta * R)
    np.testing.assert_allclose(star, tilted / tilted.sum(-1, keepdims=True), atol=1e-12)


@tree_property(20, st.floats(0.01, 8.0))
def test_sequence_tilt_closed_form_and_gap(args, beta):
    V, H, seed = args
    rng, z, _, _ = _instance(V, H, seed)
    y = rng.integers(0, V, size=H)
    exact = mdp.sequence_gibbs_tilt(z, y, beta)
    np.testing.assert_allclose(exact, mdp.sequence_gibbs_tilt_closed_form(z, y, beta), atol=1e-9)
    token = mdp.token_gift_tilt(z, y, beta)
    np.testing.assert_allclose(token, beta, atol=1e-9)
    assert np.all(exact[:, :-1] < beta)  # strictly below beta before the last position
    np.testing.assert_allclose(exact[:, -1], beta, atol=1e-9)


def test_kl_regularised_optimum_over_sequences_is_the_cumulant():
    rng = np.random.default_rng(1)
    V, H = 3, 3
    p = mdp.policy(rng.normal(size=(3, mdp.num_internal(V, H), V)))
    R = rng.random((3, V**H))
    star = np.exp(mdp.gibbs_logits(np.log(p), R, 1.7))
    np.testing.assert_allclose(mdp.sequence_kl(p, star), tb.cumulant(mdp.leaf_probs(p), R, 1.7), atol=1e-12)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="V"):
        mdp.TreeMDP(1, 2, np.zeros(1))
    with pytest.raises(ValueError, match="R"):
        mdp.TreeMDP(2, 2, np.zeros(3))
    with pytest.raises(ValueError, match="beta"):
        mdp.gibbs_logits(np.zeros((1, 2)), np.zeros(2), -1.0)
    with pytest.raises(ValueError, match="logits"):
        mdp.occupancy(np.ones((5, 2)))  # 5 rows is not a complete binary tree
    with pytest.raises(ValueError, match="vocabulary"):
        mdp.node_index([3], 3)


def test_treemdp_wrapper():
    rng = np.random.default_rng(0)
    env = mdp.TreeMDP.random(2, 3, rng, batch=(4,), binary=True)
    z = rng.normal(size=(4, env.num_internal, 2))
    assert env.J(z).shape == (4,)
    assert env.policy_gradient(z).shape == z.shape
    assert set(np.unique(env.R)) <= {0.0, 1.0}
