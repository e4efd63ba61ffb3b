"""toybench.tabular.dynamics (torch, the shared losses) against the oracles of theory.mdp / theory.bandit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from theory import bandit as tb
from theory import mdp
from toybench import losses as L
from toybench.tabular import dynamics as dyn

torch.set_num_threads(1)


def _tree(V=3, H=3, I=4, seed=0):
    rng = np.random.default_rng(seed)
    N = mdp.num_internal(V, H)
    z, zp, R = rng.normal(size=(I, N, V)), rng.normal(size=(I, N, V)), rng.random((I, V**H))
    t = lambda x: torch.as_tensor(x, dtype=torch.float64)
    return z, zp, R, t(z), t(zp), t(R)


@pytest.mark.parametrize("V,H", [(4, 1), (3, 3), (2, 4)])
def test_exact_pg_surrogate_gradient_is_minus_policy_gradient(V, H):
    z, _, R, zt, _, Rt = _tree(V, H)
    zt.requires_grad_(True)
    (g,) = torch.autograd.grad(dyn.pg_surrogate(zt, Rt).sum(), zt)
    np.testing.assert_allclose(-g.numpy(), mdp.policy_gradient(z, R), atol=1e-14)
    np.testing.assert_allclose(
        dyn.expected_return(zt, Rt).detach().numpy(), mdp.expected_return(mdp.policy(z), R), atol=1e-14
    )


def test_population_losses_match_the_oracle():
    z, zp, _, zt, zpt, _ = _tree()
    p, pi = mdp.policy(zp), mdp.policy(z)
    L = dyn.sft_population_loss(zt, torch.as_tensor(mdp.leaf_probs(p)))
    np.testing.assert_allclose(L.numpy(), mdp.sequence_cross_entropy(p, pi), atol=1e-13)
    kl = dyn.kl_to_reference(zt, zpt)
    np.testing.assert_allclose(kl.numpy(), mdp.sequence_kl(pi, p), atol=1e-13)
    zt.requires_grad_(True)
    (g,) = torch.autograd.grad(dyn.sft_population_loss(zt, torch.as_tensor(mdp.leaf_probs(p))).sum(), zt)
    np.testing.assert_allclose(g.numpy(), mdp.sft_population_grad(p, pi), atol=1e-14)


def test_natural_pg_step_is_the_advantage():
    rng = np.random.default_rng(0)
    pi, r = tb.softmax(rng.normal(size=(5, 4))), rng.random((5, 4))
    z0 = torch.as_tensor(np.log(pi))[:, None]
    z1, _ = dyn.run(z0, lambda z: dyn.pg_surrogate(z, torch.as_tensor(r)), 1, 1e-2, natural=True)
    step = (z1 - z0)[:, 0].numpy() / 1e-2
    np.testing.assert_allclose(step, tb.natural_gradient(pi, r), atol=1e-12)


def test_grpo_gradient_is_unbiased_up_to_the_group_factor():
    # Dr. GRPO (scale="none"): E[grad] = (1 - 1/G) dJ/dz exactly; many copies of one bandit average it
    rng = np.random.default_rng(0)
    V, G, copies = 4, 4, 20000
    z = torch.as_tensor(rng.normal(size=(1, 1, V))).expand(copies, 1, V).clone().requires_grad_(True)
    r = torch.as_tensor(rng.random((1, V))).expand(copies, V)
    gen = torch.Generator().manual_seed(0)
    (g,) = torch.autograd.grad(dyn.grpo_surrogate(z, r, G, gen, scale="none").sum(), z)
    exact = (1 - 1 / G) * tb.policy_gradient(tb.softmax(z[0, 0].detach().numpy()), r[0].numpy())
    se = g[:, 0].std(0).numpy() / np.sqrt(copies)
    assert np.all(np.abs(-g[:, 0].mean(0).numpy() - exact) < 5 * se + 1e-12)


def test_grpo_is_reproducible_with_a_seeded_generator():
    _, _, _, zt, _, Rt = _tree()

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return dyn.run(zt, lambda z: dyn.grpo_surrogate(z, Rt, 4, gen), 5, 0.3)[0]

    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, zt)  # parameters changed


def test_gift_training_converges_to_the_token_target():
    V, H = 3, 3
    rng = np.random.default_rng(2)
    base = rng.normal(size=(2, mdp.num_internal(V, H), V))
    y = np.array([1, 0, 2])
    zb = torch.as_tensor(base)
    leaf = torch.full((2,), mdp.leaf_index(y, V))
    z, _ = dyn.run(zb, lambda x: dyn.gift_demo_loss(x, zb, leaf, 2.0), 1500, 2.0)
    np.testing.assert_allclose(
        torch.softmax(z, -1).numpy(), np.exp(mdp.token_gift_logits(base, y, 2.0)), atol=1e-6
    )


def test_run_records_and_validates():
    _, _, _, zt, _, Rt = _tree()
    z, rec = dyn.run(
        zt,
        lambda z: dyn.pg_surrogate(z, Rt),
        6,
        0.1,
        record=lambda z: dyn.expected_return(z, Rt),
        record_every=2,
    )
    assert rec.shape == (4, zt.shape[0])
    assert torch.all(rec[-1] > rec[0])  # small exact PG steps increase J
    with pytest.raises(ValueError, match="lr"):
        dyn.run(zt, lambda z: dyn.pg_surrogate(z, Rt), 1, 0.0)
    with pytest.raises(ValueError, match="state_weight"):
        dyn.run(zt, lambda z: dyn.pg_surrogate(z, Rt), 1, 0.1, natural=True, state_weight=torch.ones(3))
    with pytest.raises(ValueError, match="z"):
        dyn.geometry(torch.zeros(2, 5, 2))
    with pytest.raises(ValueError, match="group_size"):
        dyn.grpo_surrogate(zt, Rt, 1, torch.Generator())


# ------------------------------------------------------------------ values by hand (mutation-found gaps)
def _hand_leaf(z):
    """Leaf probabilities of tabular logits by theory.mdp, (I, N, V) -> (I, L)."""
    return mdp.leaf_probs(mdp.policy(z))


def test_geometry_is_built_and_cached_from_a_cold_cache():
    dyn._GEOMS.clear()
    g = dyn.geometry(torch.zeros(2, 13, 3))
    assert (g.V, g.H, g.num_leaves) == (3, 3, 27) and dyn.geometry(torch.zeros(1, 13, 3)) is g
    assert dyn.geometry(torch.zeros(1, 1, 5)).H == 1  # the bandit is the tree with H = 1
    with pytest.raises(ValueError, match=r"^z must have shape \(I, N, V\), got \(4, 3\)$"):
        dyn.geometry(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="z has 5 nodes, not"):
        dyn.geometry(torch.zeros(2, 5, 2))


def test_leaf_pg_surrogate_and_leaf_kl_values_on_batched_leading_axes():
    # (S, P, L) inputs: every leading index is its own instance (the pipeline's layout)
    rng = np.random.default_rng(3)
    z = rng.normal(size=(6, 4, 3)) * 1.5  # 6 instances, V = 3, H = 2
    zr = rng.normal(size=(6, 4, 3))
    R = rng.random((6, 9)) * (rng.random((6, 9)) > 0.4)  # with zero rewards
    P, Q = _hand_leaf(z), _hand_leaf(zr)
    J = (P * R).sum(-1, keepdims=True)
    pg = (P * -(R - J) * np.log(P)).sum(-1).reshape(2, 3)
    kl = (P * np.log(P / Q)).sum(-1).reshape(2, 3)
    lp = torch.tensor(np.log(P)).reshape(2, 3, 9)
    lq = torch.tensor(np.log(Q)).reshape(2, 3, 9)
    np.testing.assert_allclose(
        dyn.leaf_pg_surrogate(lp, torch.tensor(R).reshape(2, 3, 9)).numpy(), pg, rtol=1e-10
    )
    np.testing.assert_allclose(dyn.leaf_kl(lp, lq).numpy(), kl, rtol=1e-10)
    # and the gradient of the batched surrogate is -dJ per instance (theory.mdp)
    zt = torch.tensor(z, requires_grad=True)
    loss = dyn.leaf_pg_surrogate(dyn.leaf_logp(zt).reshape(2, 3, 9), torch.tensor(R).reshape(2, 3, 9))
    (grad,) = torch.autograd.grad(loss.sum(), zt)
    np.testing.assert_allclose(-grad.numpy(), mdp.policy_gradient(z, R), atol=1e-10)
    np.testing.assert_allclose(dyn.expected_return(zt, torch.tensor(R)).detach().numpy(), J[:, 0], rtol=1e-10)


def test_population_and_demo_losses_per_instance_by_hand():
    z, zp, _, zt, zpt, _ = _tree(V=3, H=2, I=5)  # I = 5 != H = 2 != L = 9
    P_data = _hand_leaf(zp)
    got = dyn.sft_population_loss(zt, torch.tensor(P_data)).numpy()
    np.testing.assert_allclose(got, -(P_data * np.log(_hand_leaf(z))).sum(-1), rtol=1e-10)
    nodes, seqs = mdp.all_path_nodes(3, 2), mdp.all_sequences(3, 2)
    y = torch.tensor([0, 4, 8, 2, 5])
    beta, smooth = 2.0, 0.3
    got = dyn.gift_demo_loss(zt, zpt, y, beta, smooth).numpy()
    want = [
        sum(
            L.gift_loss(
                zt[i, nodes[y[i], t]][None, None], torch.tensor([[seqs[y[i], t]]]),
                zpt[i, nodes[y[i], t]][None, None], beta, smooth,
            ).item()
            for t in range(2)
        )
        for i in range(5)
    ]  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert np.abs(got - dyn.gift_demo_loss(zt, zpt, y, beta).numpy()).max() > 1e-6  # smooth matters


def test_grpo_surrogate_value_per_instance_by_hand(monkeypatch):
    _, _, _, zt, _, Rt = _tree(V=3, H=2, I=3)
    seen, real = [], torch.multinomial

    def recording(*a, **kw):
        out = real(*a, **kw)
        seen.append(out)
        return out

    monkeypatch.setattr(torch, "multinomial", recording)
    G = 2  # the smallest group size is allowed
    got = dyn.grpo_surrogate(zt, Rt, G, torch.Generator().manual_seed(0)).numpy()
    y = seen[0].numpy()  # (I, G)
    r = np.take_along_axis(Rt.numpy(), y, 1)
    A = (r - r.mean(1, keepdims=True)) / (r.std(1, ddof=1, keepdims=True) + 1e-6)
    logP = np.log(np.take_along_axis(_hand_leaf(zt.numpy()), y, 1))
    np.testing.assert_allclose(got, -(A * logP).sum(1) / G, rtol=1e-9)


def test_run_steps_and_record_every():
    _, _, _, zt, _, Rt = _tree(V=3, H=2, I=2)
    obj = lambda z: dyn.pg_surrogate(z, Rt)  # noqa: E731
    z0, rec = dyn.run(zt, obj, 0, 0.1, record=lambda z: dyn.expected_return(z, Rt))
    assert torch.equal(z0, zt) and rec.shape == (1, 2)  # zero steps is allowed
    _, rec1 = dyn.run(zt, obj, 4, 0.1, record=lambda z: dyn.expected_return(z, Rt))  # default every step
    _, rec2 = dyn.run(zt, obj, 4, 0.1, record=lambda z: dyn.expected_return(z, Rt), record_every=2)
    assert rec1.shape == (5, 2) and rec2.shape == (3, 2)
    torch.testing.assert_close(rec2, rec1[::2])
    with pytest.raises(ValueError, match=r"state_weight must have shape \(2, 4\), got \(2,\)"):
        dyn.run(zt, obj, 1, 0.1, natural=True, state_weight=torch.ones(2))


def test_natural_step_with_a_state_weight_by_hand():
    # one natural step: z <- z - lr * grad / (w(s) pi(a|s)); nodes with w(s) = 0 do not move
    z, _, R, zt, _, Rt = _tree(V=3, H=2, I=2)  # I = 2, N = 4
    w = torch.tensor([[1.0, 0.5, 0.0, 2.0], [0.0, 1.0, 1.0, 0.25]], dtype=torch.float64)
    z1, _ = dyn.run(zt, lambda z: dyn.pg_surrogate(z, Rt), 1, 0.3, natural=True, state_weight=w)
    g = mdp.policy_gradient(z, R)  # dJ/dz, non-zero at every node
    assert np.abs(g).min() > 0
    fisher = w.numpy()[..., None] * mdp.policy(z)
    want = np.where(fisher > 0, z + 0.3 * g / np.where(fisher > 0, fisher, 1.0), z)
    np.testing.assert_allclose(z1.numpy(), want, rtol=1e-9, atol=1e-12)
    # without a state weight the Fisher weight is 1 at every node
    z1u, _ = dyn.run(zt, lambda z: dyn.pg_surrogate(z, Rt), 1, 0.3, natural=True)
    np.testing.assert_allclose(z1u.numpy(), z + 0.3 * g / mdp.policy(z), rtol=1e-9)
