"""The SFT baselines of issue 21 (ASFT and SFT+KL, the probability family, PSFT, PriFT, CHORD's phi
term): float64 oracles written in numpy, independently of the torch code (values and logit
gradients), the loss-contract kit on each, and the limits that tie them to SFT and DFT.

Every logit gradient below is of the form w (pi - e_y) + lam (pi - b), derived by hand
(docs/methods.md §1.8-1.12), and compared with autograd through ``toybench.losses``.
"""

import numpy as np
import pytest
import torch

from toybench import losses as L
from toybench import testing as K

B, T, V = 4, 3, 6
ATOL = 1e-10
N = 4  # hypothesis examples per contract property (derandomised)
STOP_GRAD = "sg[.] by design: finite differences see the stop-gradient factor move"


# ----------------------------------------------------------------------------- numpy oracles
def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _onehot(y, V):
    return np.eye(V)[y]


def _instance(seed, scale=2.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=scale, size=(B, T, V))
    zb = rng.normal(scale=scale, size=(B, T, V))
    y = rng.integers(0, V, size=(B, T))
    return z, zb, y


def _np_py(z, y):
    return np.take_along_axis(_np_softmax(z), y[..., None], -1)[..., 0]


def _np_kl(zb, z):
    b, p = _np_softmax(zb), _np_softmax(z)
    return (b * (np.log(b) - np.log(p))).sum(-1)


def _weighted_grad(z, y, w, lam=0.0, zb=None):
    """w (pi - e_y) + lam (pi - b), per position: (B, T, V)."""
    p = _np_softmax(z)
    g = w[..., None] * (p - _onehot(y, z.shape[-1]))
    if lam:
        g = g + lam * (p - _np_softmax(zb))
    return g


def _np_prift_w(zb, y, kind, threshold=0.5):
    b = _np_softmax(zb)
    b_y = np.take_along_axis(b, y[..., None], -1)[..., 0]
    if kind == "prob":
        return b_y
    u = np.zeros_like(b_y)
    for idx in np.ndindex(*y.shape):  # plain loop: the definition, token by token
        row, yy = b[idx], y[idx]
        u[idx] = row[yy] + sum(row[v] for v in range(len(row)) if row[v] < row[yy])
    return (u >= threshold).astype(float)


def _value_and_grad(fn, z):
    logits = torch.tensor(z, requires_grad=True)
    out = fn(logits)
    out.sum().backward()
    return out.detach().numpy(), logits.grad.numpy()


def _t(a):
    return torch.tensor(a)


# ----------------------------------------------------------------------------- oracles
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("lam", [0.0, 0.1, 1.0])
def test_asft_and_sft_kl_match_oracle(seed, lam):
    z, zb, y = _instance(seed)
    py, kl = _np_py(z, y), _np_kl(zb, z)
    val, grad = _value_and_grad(lambda x: L.asft_loss(x, _t(y), _t(zb), lam=lam), z)
    np.testing.assert_allclose(val, -py * np.log(py) + lam * kl, atol=ATOL)
    np.testing.assert_allclose(grad, _weighted_grad(z, y, py, lam, zb), atol=ATOL)
    val, grad = _value_and_grad(lambda x: L.sft_kl_loss(x, _t(y), _t(zb), lam=lam), z)
    np.testing.assert_allclose(val, -np.log(py) + lam * kl, atol=ATOL)
    np.testing.assert_allclose(grad, _weighted_grad(z, y, np.ones_like(py), lam, zb), atol=ATOL)


def test_base_kl_is_kl_base_to_policy_not_the_reverse():
    z, zb, _ = _instance(7)
    got = L.base_kl(_t(z), _t(zb)).numpy()
    np.testing.assert_allclose(got, _np_kl(zb, z), atol=ATOL)
    assert np.abs(got - _np_kl(z, zb)).max() > 1e-3  # the direction matters on this instance
    assert (L.base_kl(_t(z), _t(z)).abs() < 1e-12).all()


def test_base_kl_zero_base_mass_counts_zero_and_gradient_goes_to_policy_only():
    zb = torch.tensor([[[0.0, float("-inf"), 1.0]]], dtype=torch.float64)  # b(1) = 0
    z = torch.tensor([[[0.3, -2.0, 0.1]]], dtype=torch.float64, requires_grad=True)
    zb_leaf = zb.clone().requires_grad_(True)
    kl = L.base_kl(z, zb_leaf)
    assert torch.isfinite(kl).all()
    kl.sum().backward()
    assert zb_leaf.grad is None or (zb_leaf.grad == 0).all()
    b, p = torch.softmax(zb, -1), torch.softmax(z.detach(), -1)
    torch.testing.assert_close(z.grad, p - b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 1.0, 3.0])
def test_prob_family_matches_oracle(seed, alpha):
    z, _, y = _instance(seed)
    py = _np_py(z, y)
    want = -np.log(py) if alpha == 0 else (1 - py**alpha) / alpha
    val, grad = _value_and_grad(lambda x, a=alpha: L.prob_loss(x, _t(y), alpha=a), z)
    np.testing.assert_allclose(val, want, atol=ATOL)
    np.testing.assert_allclose(grad, _weighted_grad(z, y, py**alpha), atol=ATOL)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("eps", [0.28, 0.1, 0.5])
def test_psft_matches_oracle_on_both_sides_of_the_clip(seed, eps):
    z, _, y = _instance(seed)
    rng = np.random.default_rng(100 + seed)
    py = _np_py(z, y)
    r = np.exp(rng.permutation(np.linspace(-1.5, 1.5, py.size))).reshape(py.shape)  # in and out of the clip
    old = np.log(py / r)
    val, grad = _value_and_grad(lambda x: L.psft_loss(x, _t(y), _t(old), epsilon=eps), z)
    np.testing.assert_allclose(val, -np.minimum(r, np.clip(r, 1 - eps, 1 + eps)), atol=ATOL)
    live = r <= 1 + eps  # with advantage 1 only the upper clip stops the gradient
    assert live.any() and (~live).any() and (r < 1 - eps).any()
    np.testing.assert_allclose(grad, _weighted_grad(z, y, np.where(live, r, 0.0)), atol=ATOL)


@pytest.mark.parametrize("eps_low", [0.0, 0.2, 0.9])
def test_psft_is_the_clipped_surrogate_at_advantage_one_whatever_the_lower_clip(eps_low):
    z, _, y = _instance(9)
    logp = L.logprobs(_t(z), _t(y))
    old = logp.detach() + torch.tensor(np.random.default_rng(9).uniform(-1, 1, size=logp.shape))
    want = L.clipped_surrogate_loss(logp, old, torch.ones(B), eps_low=eps_low, eps_high=0.28)
    torch.testing.assert_close(L.psft_loss(_t(z), _t(y), old, epsilon=0.28), want, atol=0, rtol=0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind,threshold", [("prob", 0.5), ("mass", 0.5), ("mass", 0.2), ("mass", 0.9)])
def test_prift_matches_oracle(seed, kind, threshold):
    z, zb, y = _instance(seed, scale=1.0)
    w = _np_prift_w(zb, y, kind, threshold)
    if kind == "mass":
        assert 0 < w.sum() < w.size or threshold != 0.5  # both outcomes occur at the default threshold
    got_w = L.prift_weights(_t(zb), _t(y), kind, threshold).numpy()
    np.testing.assert_allclose(got_w, w, atol=ATOL)
    py = _np_py(z, y)
    val, grad = _value_and_grad(lambda x: L.prift_loss(x, _t(y), _t(zb), kind, threshold), z)
    np.testing.assert_allclose(val, -w * np.log(py), atol=ATOL)
    np.testing.assert_allclose(grad, _weighted_grad(z, y, w), atol=ATOL)


def test_prift_mass_by_hand():
    b = torch.tensor([0.45, 0.35, 0.2], dtype=torch.float64)
    zb = b.log().expand(1, 3, 3).contiguous()  # (1, 3, 3): the same base row at three positions
    y = torch.tensor([[0, 1, 2]])
    # u = 1.0 (argmax), 0.35 + 0.2 = 0.55, 0.2 (the tail)
    assert L.prift_weights(zb, y, "mass").tolist() == [[1.0, 1.0, 0.0]]
    assert L.prift_weights(zb, y, "mass", threshold=0.56).tolist() == [[1.0, 0.0, 0.0]]
    assert L.prift_weights(zb, y, "mass", threshold=0.0).tolist() == [[1.0, 1.0, 1.0]]
    tie = torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64).log().expand(1, 1, 3).contiguous()
    # ties with y (other than y) are not in u: u = 0.4 + 0.2 = 0.6 (it would be 1.0 with them)
    assert L.prift_weights(tie, torch.tensor([[0]]), "mass", threshold=0.59).item() == 1.0
    assert L.prift_weights(tie, torch.tensor([[0]]), "mass", threshold=0.61).item() == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_chord_phi_matches_oracle_with_the_weight_detached(seed):
    z, _, y = _instance(seed)
    py = _np_py(z, y)
    val, grad = _value_and_grad(lambda x: L.chord_phi_loss(x, _t(y)), z)
    np.testing.assert_allclose(val, -py * (1 - py) * np.log(py), atol=ATOL)
    np.testing.assert_allclose(grad, _weighted_grad(z, y, py * (1 - py)), atol=ATOL)

    # the gradient of the same value with phi NOT detached is different: the sg[.] is real
    def live(x):
        logp = L.logprobs(x, _t(y))
        return -(logp.exp() * (1 - logp.exp())) * logp

    _, grad_live = _value_and_grad(live, z)
    assert np.abs(grad_live - grad).max() > 1e-3


# ----------------------------------------------------------------------------- limits
def _grads(fn, z):
    return _value_and_grad(fn, z)[1]


@pytest.mark.parametrize("seed", range(3))
def test_prob_family_tends_to_sft_as_alpha_goes_to_zero(seed):
    z, _, y = _instance(seed)
    sft_val, sft_grad = _value_and_grad(lambda x: L.sft_loss(x, _t(y)), z)
    logp = np.log(_np_py(z, y))
    errs = []
    for alpha in (1e-1, 1e-2, 1e-3, 1e-4, 1e-6):
        val, grad = _value_and_grad(lambda x, a=alpha: L.prob_loss(x, _t(y), alpha=a), z)
        # (1 - e^{a l}) / a = -l - a l^2 / 2 + ...: the gap is at most a l^2 / 2 (l = log p <= 0)
        assert ((sft_val - val) <= alpha * logp**2 / 2 + 1e-12).all() and (val <= sft_val + 1e-12).all()
        errs.append(np.abs(val - sft_val).max())
        np.testing.assert_allclose(grad, sft_grad, atol=alpha * np.abs(logp).max() + 1e-12)
    assert all(b < a for a, b in zip(errs, errs[1:]))  # converges monotonically
    assert errs[-1] < 1e-4
    val0, grad0 = _value_and_grad(lambda x: L.prob_loss(x, _t(y), alpha=0.0), z)
    np.testing.assert_array_equal(val0, sft_val)
    np.testing.assert_array_equal(grad0, sft_grad)


@pytest.mark.parametrize("seed", range(3))
def test_prob_at_one_has_dft_gradient_and_value_one_minus_p(seed):
    z, _, y = _instance(seed)
    val, grad = _value_and_grad(lambda x: L.prob_loss(x, _t(y), alpha=1.0), z)
    np.testing.assert_allclose(grad, _grads(lambda x: L.dft_loss(x, _t(y)), z), atol=ATOL)
    np.testing.assert_allclose(val, 1 - _np_py(z, y), atol=ATOL)


@pytest.mark.parametrize("seed", range(3))
def test_sft_kl_at_lam_zero_is_sft_and_asft_at_lam_zero_is_dft(seed):
    z, zb, y = _instance(seed)
    for fn, ref in ((L.sft_kl_loss, L.sft_loss), (L.asft_loss, L.dft_loss)):
        val, grad = _value_and_grad(lambda x, f=fn: f(x, _t(y), _t(zb), lam=0.0), z)
        rval, rgrad = _value_and_grad(lambda x, r=ref: r(x, _t(y)), z)
        np.testing.assert_array_equal(val, rval)
        np.testing.assert_allclose(grad, rgrad, atol=ATOL)


@pytest.mark.parametrize("seed", range(3))
def test_asft_is_dft_plus_lam_kl_exactly(seed):
    z, zb, y = _instance(seed)
    lam = 0.37
    got = L.asft_loss(_t(z), _t(y), _t(zb), lam=lam)
    want = L.dft_loss(_t(z), _t(y)) + lam * L.base_kl(_t(z), _t(zb))
    torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("seed", range(3))
def test_psft_at_the_snapshot_has_the_sft_gradient(seed):
    z, _, y = _instance(seed)
    old = L.logprobs(_t(z), _t(y)).detach()  # p_old = p: one step per snapshot
    val, grad = _value_and_grad(lambda x: L.psft_loss(x, _t(y), old), z)
    np.testing.assert_allclose(val, -np.ones_like(val), atol=ATOL)
    np.testing.assert_allclose(grad, _grads(lambda x: L.sft_loss(x, _t(y)), z), atol=ATOL)


def test_psft_far_above_the_clip_has_no_gradient():
    z, _, y = _instance(3)
    old = L.logprobs(_t(z), _t(y)).detach() - 1.0  # r = e > 1 + eps_high
    val, grad = _value_and_grad(lambda x: L.psft_loss(x, _t(y), old, epsilon=0.28), z)
    np.testing.assert_allclose(val, -1.28 * np.ones_like(val), atol=ATOL)
    assert np.abs(grad).max() == 0


def test_prift_with_a_one_hot_base_is_sft_on_the_base_argmax_only():
    z, _, y = _instance(5)
    zb = np.full((B, T, V), -1e4)
    np.put_along_axis(zb, y[..., None], 0.0, -1)  # the base puts all its mass on y
    for kind in L.PRIFT_KINDS:
        torch.testing.assert_close(L.prift_loss(_t(z), _t(y), _t(zb), kind), L.sft_loss(_t(z), _t(y)))


# ----------------------------------------------------------------------------- the contract kit
CONTRACT = {
    "asft": (lambda z, y, base_logits: L.asft_loss(z, y, base_logits, lam=0.3), ("base_logits",), STOP_GRAD),
    "sft_kl": (lambda z, y, base_logits: L.sft_kl_loss(z, y, base_logits, lam=0.3), ("base_logits",), None),
    "base_kl": (lambda z, y, base_logits: L.base_kl(z, base_logits), ("base_logits",), None),
    "prob_0": (lambda z, y: L.prob_loss(z, y, alpha=0.0), (), None),
    "prob_half": (lambda z, y: L.prob_loss(z, y, alpha=0.5), (), None),
    "prob_1": (lambda z, y: L.prob_loss(z, y, alpha=1.0), (), None),
    "psft": (lambda z, y, old_logp: L.psft_loss(z, y, old_logp), ("old_logp",), None),
    "prift_prob": (lambda z, y, base_logits: L.prift_loss(z, y, base_logits, "prob"), ("base_logits",), None),
    "prift_mass": (lambda z, y, base_logits: L.prift_loss(z, y, base_logits, "mass"), ("base_logits",), None),
    "chord_phi": (L.chord_phi_loss, (), STOP_GRAD),
}


@pytest.mark.parametrize("name", list(CONTRACT))
def test_new_loss_keeps_the_contract(name):
    fn, needs, gradcheck_skip = CONTRACT[name]
    skip = {"gradcheck": gradcheck_skip} if gradcheck_skip else None
    K.check_loss_contract(fn, needs, skip=skip, max_examples=N)


def test_ignore_index_targets_at_masked_positions_do_not_leak():
    cases = (
        (lambda z, y, mask, base_logits: L.asft_loss(z, y, base_logits, mask=mask), ("mask", "base_logits")),
        (lambda z, y, mask: L.prob_loss(z, y, alpha=0.5, mask=mask), ("mask",)),
        (
            lambda z, y, mask, base_logits: L.prift_loss(z, y, base_logits, "mass", mask=mask),
            ("mask", "base_logits"),
        ),
        (lambda z, y, mask, old_logp: L.psft_loss(z, y, old_logp, mask=mask), ("mask", "old_logp")),
        (lambda z, y, mask: L.chord_phi_loss(z, y, mask=mask), ("mask",)),
    )
    for i, (fn, needs) in enumerate(cases):
        skip = {"gradcheck": STOP_GRAD} if i in (0, 4) else None
        K.check_loss_contract(fn, needs, masked_targets=-100, max_examples=N, skip=skip)


# ----------------------------------------------------------------------------- bad arguments
def test_bad_arguments_raise_naming_them():
    z, zb, y = (torch.tensor(a) for a in _instance(0))
    with pytest.raises(ValueError, match="lam"):
        L.asft_loss(z, y, zb, lam=-0.1)
    with pytest.raises(ValueError, match="lam"):
        L.sft_kl_loss(z, y, zb, lam=float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        L.prob_loss(z, y, alpha=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        L.prob_loss(z, y, alpha=float("inf"))
    with pytest.raises(ValueError, match="epsilon"):
        L.psft_loss(z, y, L.logprobs(z, y), epsilon=float("nan"))
    with pytest.raises(ValueError, match="old_logp"):
        L.psft_loss(z, y, L.logprobs(z, y)[:, :1])
    with pytest.raises(ValueError, match="kind"):
        L.prift_weights(zb, y, "median")
    with pytest.raises(ValueError, match="threshold"):
        L.prift_weights(zb, y, "mass", threshold=1.5)
    with pytest.raises(ValueError, match="base_logits"):
        L.base_kl(z, zb[:, :1])
    bad = y.clone()
    bad[0, 0] = -100
    with pytest.raises(ValueError, match=r"targets must lie in \[0, V\)"):
        L.prift_loss(z, bad, zb, mask=torch.ones_like(y))
