"""Hypothesis property tests of the loss contract on generated instances (float64).

Instances: random B, T, V, masks, and logits that include extreme values (+-1e4).
"""

import itertools
import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toybench import advantages as A
from toybench import losses as L
from toybench import metrics as M

settings.register_profile(
    "toybench", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("toybench")


@st.composite
def instances(draw, max_v: int = 7):
    B = draw(st.integers(1, 3))
    T = draw(st.integers(1, 5))
    V = draw(st.integers(2, max_v))
    seed = draw(st.integers(0, 2**31 - 1))
    extreme = draw(st.booleans())
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=3.0, size=(B, T, V))
    zb = rng.normal(scale=3.0, size=(B, T, V))
    if extreme:  # plant +-1e4 logits
        z[rng.random(z.shape) < 0.3] = 1e4 * rng.choice([-1, 1])
        zb[rng.random(zb.shape) < 0.3] = -1e4
    y = rng.integers(0, V, size=(B, T))
    mask = rng.random((B, T)) < 0.7
    return (torch.tensor(z), torch.tensor(y), torch.tensor(mask.astype(np.float64)), torch.tensor(zb), rng)


def _all_losses(z, y, zb):
    tau = L.entropy_guided_temperature(zb)
    return {
        "sft": L.sft_loss(z, y),
        "entropy_sft": L.entropy_sft_loss(z, y, coef=0.3),
        "entropy_sft_topk": L.entropy_sft_loss(z, y, coef=0.3, top_k=2),
        "gift": L.gift_loss(z, y, zb, beta=2.0, smooth=0.01),
        "curio": L.curio_loss(z, y, zb, tau=tau),
        "dft": L.dft_loss(z, y),
    }


@given(instances())
def test_losses_finite(inst):
    z, y, mask, zb, _ = inst
    for name, v in _all_losses(z, y, zb).items():
        assert v.shape == y.shape, name
        assert torch.isfinite(v).all(), name


@given(instances(), st.floats(-100, 100))
def test_invariant_to_logit_shift(inst, c):
    z, y, mask, zb, _ = inst
    a = _all_losses(z, y, zb)
    b = _all_losses(z + c, y, zb + c)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-9, atol=1e-8, msg=name)


def _sliced_reduce(x: torch.Tensor, mask: torch.Tensor, mode: str, constant: float) -> float:
    """Naive reference: keep only counted positions, row by row, in plain Python."""
    rows = [[float(v) for v, m in zip(xr, mr) if m] for xr, mr in zip(x, mask)]
    flat = [v for r in rows for v in r]
    if mode == "sum":
        return sum(flat)
    if mode == "token_mean":
        return sum(flat) / len(flat) if flat else 0.0
    if mode == "constant":
        return sum(flat) / constant
    seq = [sum(r) / len(r) for r in rows if r]
    return sum(seq) / len(seq) if seq else 0.0


@given(
    instances(), st.sampled_from(L.REDUCE_MODES), st.sampled_from([float("nan"), float("inf"), -float("inf")])
)
def test_masked_equals_sliced_and_no_leak(inst, mode, poison):
    z, y, mask, zb, _ = inst
    per_token = L.sft_loss(z, y)
    poisoned = torch.where(mask.bool(), per_token, torch.full_like(per_token, poison))
    const = 17.0
    expect = _sliced_reduce(per_token, mask, mode, const)
    for x in (per_token, poisoned):
        got = L.reduce(x, mask, mode=mode, constant=const).item()
        assert math.isclose(got, expect, rel_tol=1e-9, abs_tol=1e-9)


@given(instances())
def test_poisoned_logits_at_masked_positions_never_leak(inst):
    z, y, mask, zb, _ = inst
    bad = torch.where(mask.bool()[..., None], z, torch.full_like(z, float("nan")))
    for fn in (L.sft_loss, L.dft_loss, lambda a, b: L.entropy_sft_loss(a, b, coef=0.5)):
        clean = L.reduce(fn(z, y), mask, "token_mean")
        dirty = L.reduce(fn(bad, y), mask, "token_mean")
        torch.testing.assert_close(clean, dirty)
    logp = L.logprobs(bad, y)
    G = L.pear_weights(logp, torch.zeros_like(logp), mask, level="token")
    assert torch.isfinite(G).all()


@given(instances())
def test_gift_large_beta_is_sft_and_zero_beta_is_base(inst):
    z, y, mask, zb, _ = inst
    z1 = z.clone().requires_grad_(True)
    z2 = z.clone().requires_grad_(True)
    g = L.gift_loss(z1, y, zb, beta=1e6)
    s = L.sft_loss(z2, y)
    torch.testing.assert_close(g, s, rtol=1e-10, atol=1e-10)
    g.sum().backward()
    s.sum().backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(L.gift_target(zb, y, beta=0.0), torch.softmax(zb, -1))
    torch.testing.assert_close(
        L.gift_loss(z, y, zb, beta=float("inf")), L.sft_loss(z, y), rtol=1e-10, atol=1e-10
    )


@given(instances(), st.floats(0.0, 8.0), st.sampled_from([0.0, 0.05]))
def test_gift_target_is_stationary_point(inst, beta, smooth):
    z, y, mask, zb, _ = inst
    q = L.gift_target(zb, y, beta=beta, smooth=smooth)
    logits = torch.log(q).clamp_min(-1e300).requires_grad_(True)
    L.gift_loss(logits, y, zb, beta=beta, smooth=smooth).sum().backward()
    torch.testing.assert_close(logits.grad, torch.zeros_like(logits.grad), atol=1e-10, rtol=0)


@given(instances())
def test_curio_alpha_zero_is_sft(inst):
    z, y, mask, zb, _ = inst
    torch.testing.assert_close(L.curio_loss(z, y, zb, tau=1.3, alpha=0.0), L.sft_loss(z, y))


@given(instances(max_v=40), st.floats(1.0, 1.4), st.floats(0.05, 0.6))
def test_entropy_guided_temperature_in_range_and_hits_target(inst, tau_min, width):
    _, _, _, _, rng = inst
    B, T, V = 3, 4, int(rng.integers(2, 40))
    zbar = torch.tensor(rng.normal(scale=rng.uniform(0.1, 6.0), size=(B, T, V)))
    tau_max = tau_min + width
    kw = dict(pivot=1.2, gain=0.5, slope=2.0, tau_min=tau_min, tau_max=tau_max, top_k=16, floor=0.03)
    tau = L.entropy_guided_temperature(zbar, **kw)
    assert tau.shape == (B, T)
    assert ((tau >= tau_min) & (tau <= tau_max)).all()
    zk = torch.topk(zbar, min(16, V), dim=-1).values
    H = M.entropy(zk)
    H_star = H + 0.5 * torch.sigmoid(2.0 * (H - 1.2))
    H_at_tau = M.entropy(zk / tau[..., None])
    H_full = M.entropy(zbar)
    interior = (tau > tau_min) & (tau < tau_max) & (H_full > 0.03)
    assert torch.allclose(H_at_tau[interior], H_star[interior], atol=1e-5)
    # clamped only when the target is out of reach inside [tau_min, tau_max]
    at_max = (tau == tau_max) & (H_full > 0.03)
    assert (M.entropy(zk / tau_max)[at_max] <= H_star[at_max] + 1e-9).all()
    at_min = (tau == tau_min) & (H_full > 0.03)
    assert (M.entropy(zk / tau_min)[at_min] >= H_star[at_min] - 1e-9).all()


@given(instances(), st.sampled_from(["token", "block", "sequence"]), st.integers(1, 4))
def test_pear_weights_one_on_policy_at_gamma_one(inst, level, block):
    z, y, mask, zb, _ = inst
    logp = L.logprobs(z, y)
    G = L.pear_weights(logp, logp.clone(), mask, level=level, block_size=block, gamma=1.0)
    torch.testing.assert_close(G, mask)


@given(instances(), st.floats(0.5, 1.0))
def test_pear_block_size_one_is_token_level(inst, gamma):
    z, y, mask, zb, rng = inst
    logp = L.logprobs(z, y)
    beh = logp + torch.tensor(rng.normal(scale=0.2, size=logp.shape))
    kw = dict(gamma=gamma, token_clip=(-0.5, 0.5), total_clip=(-3.0, 3.0))
    torch.testing.assert_close(
        L.pear_weights(logp, beh, mask, level="block", block_size=1, **kw),
        L.pear_weights(logp, beh, mask, level="token", **kw),
    )


def test_pear_weights_hand_computed():
    # one row, response tokens at positions 1..4 (position 0 is prompt), rho = [.1, .2, .3, .05] unclipped
    logp = torch.tensor([[9.0, 0.1, 0.2, 0.3, 0.05]], dtype=torch.float64)
    beh = torch.zeros_like(logp)
    mask = torch.tensor([[0, 1, 1, 1, 1]])
    kw = dict(gamma=0.9, token_clip=(-1.0, 1.0), total_clip=(-10.0, 10.0))
    tok = L.pear_weights(logp, beh, mask, level="token", **kw)[0].tolist()
    expect = [0.0, 0.9**3 * math.exp(0.55), 0.9**2 * math.exp(0.35), 0.9 * math.exp(0.05), 1.0]
    assert np.allclose(tok, expect)
    blk = L.pear_weights(logp, beh, mask, level="block", block_size=2, **kw)[0].tolist()
    assert np.allclose(blk, [0.0, 0.9**2 * math.exp(0.35), 0.9**2 * math.exp(0.35), 1.0, 1.0])
    seq = L.pear_weights(logp, beh, mask, level="sequence", **kw)[0].tolist()
    assert np.allclose(seq, [0.0] + [math.exp(0.65)] * 4)


@given(st.integers(1, 9).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_pass_at_k_equals_exhaustive_subset_average(nc):
    n, c = nc
    outcomes = [1] * c + [0] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        brute = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
        assert math.isclose(M.pass_at_k(n, c, k), brute, abs_tol=1e-12)
    vals = [M.pass_at_k(n, c, k) for k in range(1, n + 1)]
    assert all(0.0 <= v <= 1.0 for v in vals)
    assert all(a <= b + 1e-15 for a, b in zip(vals, vals[1:]))


def test_pass_at_k_vectorised_and_no_shortcut_bug():
    # c >= k does NOT imply pass@k = 1 (it does only when n - c < k)
    assert M.pass_at_k(10, 3, 2) < 1.0
    out = M.pass_at_k(np.array([10, 10, 5]), np.array([0, 3, 5]), 2)
    assert out.shape == (3,) and out[0] == 0.0 and out[2] == 1.0
    p = np.array([0.0, 0.3, 1.0])
    np.testing.assert_allclose(M.pass_at_k_exact(p, 4), 1 - (1 - p) ** 4)
    torch.testing.assert_close(M.pass_at_k_exact(torch.tensor(p), 4), torch.tensor(1 - (1 - p) ** 4))


@given(st.integers(1, 5), st.integers(2, 6), st.integers(0, 2**31 - 1), st.sampled_from(A.ADV_SCALES))
def test_group_advantages_zero_mean_and_constant_groups(N, G, seed, scale):
    rng = np.random.default_rng(seed)
    r = torch.tensor(rng.integers(0, 2, size=(N, G)).astype(np.float64))
    r[0] = 1.0  # a constant group
    adv = A.group_advantages(r, scale=scale)
    assert torch.isfinite(adv).all()
    torch.testing.assert_close(adv.mean(dim=1), torch.zeros(N, dtype=torch.float64), atol=1e-12, rtol=0)
    assert (adv[0] == 0).all()


def test_group_advantages_scales():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    c = r - r.mean(1, keepdim=True)
    torch.testing.assert_close(A.group_advantages(r, "none"), c)
    torch.testing.assert_close(A.group_advantages(r, "group", eps=0.0), c / r.std(1, keepdim=True))
    torch.testing.assert_close(A.group_advantages(r, "batch", eps=0.0), c / r.std())


def test_metrics_entropy_coverage_kl():
    z = torch.log(torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64))
    assert math.isclose(M.entropy(z).item(), 1.5 * math.log(2))
    assert M.coverage(torch.softmax(z, -1), torch.tensor([[True, True, False]]), 0.3).item() == 1
    zq = torch.zeros_like(z)
    expect = float((torch.softmax(z, -1) * (torch.log_softmax(z, -1) - math.log(1 / 3))).sum())
    assert math.isclose(M.kl_divergence(z, zq).item(), expect)
