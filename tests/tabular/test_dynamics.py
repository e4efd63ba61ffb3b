"""toybench.tabular.dynamics (torch, the shared losses) against the oracles of theory.mdp / theory.bandit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from theory import bandit as tb
from theory import mdp
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
