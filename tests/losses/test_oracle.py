"""Oracle equivalence in float64: autograd through toybench.losses == theory.bandit closed forms.

Bandit setting: T = 1, one row per prompt. Each test builds random logits, takes the autograd
gradient of the SUM of per-token losses w.r.t. the logits, and compares it with the numpy
closed form of ``theory.bandit`` (written independently of the torch code).
"""

import numpy as np
import pytest
import torch

import theory.bandit as tb
from toybench import losses as L

B, V = 7, 6
ATOL = 1e-10


def _instance(seed: int, scale: float = 2.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=scale, size=(B, V))
    y = rng.integers(0, V, size=B)
    return z, y


def _grad(loss_fn, z: np.ndarray) -> np.ndarray:
    logits = torch.tensor(z[:, None, :], dtype=torch.float64, requires_grad=True)  # (B, 1, V)
    loss_fn(logits).sum().backward()
    return logits.grad[:, 0, :].numpy()


def _t(y: np.ndarray) -> torch.Tensor:
    return torch.tensor(y[:, None], dtype=torch.long)  # (B, 1)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    "loss, closed_form",
    [(L.sft_loss, tb.sft_token_grad), (L.dft_loss, tb.grad_dft)],
    ids=["sft_is_pi_minus_onehot", "dft"],
)
def test_target_only_loss_gradient(seed, loss, closed_form):
    z, y = _instance(seed)
    np.testing.assert_allclose(_grad(lambda x: loss(x, _t(y)), z), closed_form(z, y), atol=ATOL)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("coef", [0.0, 0.1, 1.0])
def test_entropy_sft_gradient(seed, coef):
    z, y = _instance(seed)
    got = _grad(lambda x: L.entropy_sft_loss(x, _t(y), coef=coef), z)
    np.testing.assert_allclose(got, tb.grad_entropy_sft(z, y, coef), atol=ATOL)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("beta", [0.0, 0.5, 3.0, 20.0])
@pytest.mark.parametrize("smooth", [0.0, 0.01, 0.3])
def test_gift_gradient_and_target(seed, beta, smooth):
    z, y = _instance(seed)
    zb, _ = _instance(seed + 100)
    base = torch.tensor(zb[:, None, :])
    got = _grad(lambda x: L.gift_loss(x, _t(y), base, beta=beta, smooth=smooth), z)
    np.testing.assert_allclose(got, tb.grad_gift(z, y, zb, beta, smooth), atol=ATOL)
    q = L.gift_target(base, _t(y), beta=beta, smooth=smooth)[:, 0].numpy()
    np.testing.assert_allclose(q, tb.gift_target(tb.softmax(zb), y, beta, smooth), atol=ATOL)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_curio_gradient_fixed_tau(seed, alpha):
    z, y = _instance(seed)
    zbar, _ = _instance(seed + 50)
    tau = 1.3
    teacher = torch.tensor(zbar[:, None, :])
    got = _grad(lambda x: L.curio_loss(x, _t(y), teacher, tau=tau, alpha=alpha), z)
    np.testing.assert_allclose(got, tb.grad_curio(z, y, zbar, tau, alpha), atol=ATOL)


def test_curio_gradient_per_token_tau():
    z, y = _instance(11)
    zbar, _ = _instance(12)
    tau = np.linspace(1.1, 1.5, B)
    teacher = torch.tensor(zbar[:, None, :])
    tau_t = torch.tensor(tau[:, None])
    got = _grad(lambda x: L.curio_loss(x, _t(y), teacher, tau=tau_t, alpha=1.0), z)
    np.testing.assert_allclose(got, tb.grad_curio(z, y, zbar, tau, 1.0), atol=ATOL)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("level", ["token", "block", "sequence"])
def test_pear_weighted_sft_gradient(seed, level):
    # A length-3 sequence per row; gradient of sum_t sg[G_t] * nll_t w.r.t. every position's logits.
    rng = np.random.default_rng(seed)
    T = 3
    z = rng.normal(size=(B, T, V))
    y = rng.integers(0, V, size=(B, T))
    logits = torch.tensor(z, requires_grad=True)
    targets = torch.tensor(y)
    mask = torch.ones(B, T)
    behavior = torch.tensor(rng.normal(scale=0.2, size=(B, T))) + L.logprobs(logits, targets).detach()
    G = L.pear_weights(L.logprobs(logits, targets), behavior, mask, level=level, block_size=2)
    (G * L.sft_loss(logits, targets)).sum().backward()
    expect = tb.grad_weighted_sft(z, y, G.numpy())
    np.testing.assert_allclose(logits.grad.numpy(), expect, atol=ATOL)
    assert not G.requires_grad


@pytest.mark.parametrize("seed", range(5))
def test_policy_gradient_loss_expectation_is_exact_pg(seed):
    # One row per answer a, weight pi_a, adv = r_a - J: the `sum` of pi_a * l_a has gradient -pi*(r - J).
    rng = np.random.default_rng(seed)
    z = rng.normal(size=V)
    r = rng.uniform(size=V)
    logits = torch.tensor(np.tile(z, (V, 1))[:, None, :], requires_grad=True)  # (V, 1, V): row a samples a
    answers = torch.arange(V)[:, None]
    pi = tb.softmax(z)
    adv = torch.tensor(r - pi @ r)
    per_token = torch.tensor(pi)[:, None] * L.policy_gradient_loss(L.logprobs(logits, answers), adv)
    L.reduce(per_token, torch.ones(V, 1), mode="sum").backward()
    grad_z = logits.grad[:, 0, :].sum(0).numpy()  # all rows share the same logits
    np.testing.assert_allclose(-grad_z, tb.policy_gradient(pi, r), atol=ATOL)


@pytest.mark.parametrize("eps", [(0.2, 0.2), (0.2, 0.28), (0.0, 0.0)])
def test_clipped_surrogate_gradient_at_ratio_one_equals_pg(eps):
    rng = np.random.default_rng(3)
    z = torch.tensor(rng.normal(size=(B, 4, V)), requires_grad=True)
    y = torch.tensor(rng.integers(0, V, size=(B, 4)))
    adv = torch.tensor(rng.normal(size=B))
    logp = L.logprobs(z, y)
    (g_clip,) = torch.autograd.grad(L.clipped_surrogate_loss(logp, logp.detach(), adv, *eps).sum(), z)
    logp = L.logprobs(z, y)
    (g_pg,) = torch.autograd.grad(L.policy_gradient_loss(logp, adv).sum(), z)
    # With eps = 0 both branches of min() coincide at ratio 1; the gradient must still flow.
    np.testing.assert_allclose(g_clip.numpy(), g_pg.numpy(), atol=ATOL)


def test_clipped_surrogate_blocks_gradient_outside_trust_region():
    logp = torch.tensor([[0.5, -0.5]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 2, dtype=torch.float64)
    adv = torch.tensor(
        [[1.0, -1.0]], dtype=torch.float64
    )  # ratio e^0.5 > 1.2 with A > 0; e^-0.5 < 0.8 with A < 0
    L.clipped_surrogate_loss(logp, old, adv).sum().backward()
    assert torch.all(logp.grad == 0)
    assert L.clipped_mask(logp, old, adv).all()


def test_kl_penalty_forms():
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.5, -1.0]], dtype=torch.float64)
    d = (ref - logp).numpy()
    np.testing.assert_allclose(L.kl_penalty(logp, ref, "k1").numpy(), -d)
    np.testing.assert_allclose(L.kl_penalty(logp, ref, "k2").numpy(), d**2 / 2)
    np.testing.assert_allclose(L.kl_penalty(logp, ref, "k3").numpy(), np.exp(d) - d - 1)
    assert (L.kl_penalty(logp, ref, "k3") >= 0).all()


def test_k3_is_unbiased_for_kl():
    # E_{a~pi}[k3] = KL(pi || ref) exactly, by enumeration.
    rng = np.random.default_rng(0)
    pi, ref = tb.softmax(rng.normal(size=V)), tb.softmax(rng.normal(size=V))
    k3 = L.kl_penalty(torch.tensor(np.log(pi))[None], torch.tensor(np.log(ref))[None], "k3")[0].numpy()
    np.testing.assert_allclose(pi @ k3, tb.kl(pi, ref), atol=1e-12)
