"""Which way the logged KL to base goes: KL(pi || pi_base), computed both ways by hand on a case
where the two directions differ (docs/methods.md §3.3: ``kl_base`` is KL(pi || pi_base) over sequences)."""

from __future__ import annotations

import numpy as np
import torch

from theory import mdp
from toybench import metrics
from toybench.tabular import ReasoningTree
from toybench.tabular.dynamics import kl_to_reference, leaf_kl
from toybench.tabular.pipeline import PipelineConfig, evaluate

F64 = torch.float64


def _both_directions(z, zb):
    """Sequence KL(pi || base) and KL(base || pi) by hand from leaf probabilities (theory.mdp)."""
    P, Q = mdp.leaf_probs(mdp.policy(z)), mdp.leaf_probs(mdp.policy(zb))
    return (P * np.log(P / Q)).sum(-1), (Q * np.log(Q / P)).sum(-1)


def test_metrics_kl_divergence_is_kl_p_to_q():
    p, q = np.array([0.9, 0.05, 0.05]), np.array([0.3, 0.3, 0.4])
    fwd, rev = (p * np.log(p / q)).sum(), (q * np.log(q / p)).sum()
    assert abs(fwd - rev) > 0.1  # the case tells the directions apart
    got = metrics.kl_divergence(torch.tensor(np.log(p)), torch.tensor(np.log(q))).item()
    assert abs(got - fwd) < 1e-12


def test_pipeline_kl_base_is_kl_pi_to_base_over_sequences():
    sc = ReasoningTree([0, 1], num_prompts=2, V=3, H=3)
    sc.base_logits = sc.base_logits.double()
    g = torch.Generator().manual_seed(0)
    z = sc.base_logits + 2.0 * torch.randn(sc.base_logits.shape, generator=g, dtype=F64)
    m = evaluate(sc, z, PipelineConfig(), per_prompt=True)
    rl = sc.rl_prompts.numpy()
    fwd, rev = _both_directions(z[:, rl].numpy(), sc.base_logits[:, rl].numpy())  # (S, P_rl)
    assert np.abs(fwd - rev).min() > 0.05
    np.testing.assert_allclose(m["kl_base"].numpy(), fwd, rtol=1e-10)
    assert m["kl_base"].shape == (2, len(rl))
    # the mean over prompts is what run_method logs
    np.testing.assert_allclose(evaluate(sc, z, PipelineConfig())["kl_base"].numpy(), fwd.mean(1), rtol=1e-10)


def test_exact_kl_penalty_is_kl_pi_to_ref_and_its_gradient():
    # the exact-PG KL term (dynamics.leaf_kl / kl_to_reference): value KL(pi || ref), and its
    # gradient is that of KL(pi || ref), not of KL(ref || pi)
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 4, 3)) * 1.5  # V = 3, H = 2: N = 4 nodes
    zr = rng.normal(size=(2, 4, 3)) * 1.5
    fwd, rev = _both_directions(z, zr)
    assert np.abs(fwd - rev).min() > 0.05
    zt = torch.tensor(z, requires_grad=True)
    kl = kl_to_reference(zt, torch.tensor(zr))
    np.testing.assert_allclose(kl.detach().numpy(), fwd, rtol=1e-10)
    np.testing.assert_allclose(mdp.leaf_kl(mdp.policy(z), mdp.policy(zr)), fwd, rtol=1e-10)
    (grad,) = torch.autograd.grad(kl.sum(), zt)
    # finite differences of the hand forward KL
    h, fd = 1e-6, np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[idx] = h
        fd[idx] = (_both_directions(z + e, zr)[0] - _both_directions(z - e, zr)[0])[idx[0]] / (2 * h)
    np.testing.assert_allclose(grad.numpy(), fd, atol=1e-7)
    # and leaf_kl's arguments are (policy, reference) in that order
    lp = torch.tensor(np.log(mdp.leaf_probs(mdp.policy(z))))
    lr = torch.tensor(np.log(mdp.leaf_probs(mdp.policy(zr))))
    np.testing.assert_allclose(leaf_kl(lp, lr).numpy(), fwd, rtol=1e-10)
