"""Hand-computed tests of the non-default branches (each written to fail a planted bug there).

Asymmetric clip range, ``reduce(.., "constant")`` without a constant, PEAR clips that bind,
the entropy-guided temperature's floor and clamps, entropy at a temperature != 1, and
stop-gradients checked with LIVE (requires_grad) teacher / base / old inputs.
"""

import math

import numpy as np
import pytest
import torch

from toybench import advantages as A
from toybench import losses as L
from toybench import metrics as M

F64 = torch.float64


# ----------------------------------------------------------------------------- clipped surrogate
def test_clipped_surrogate_asymmetric_eps_hand_values_and_gradient():
    eps_low, eps_high = 0.1, 0.3  # clip range [0.9, 1.3]
    ratio = torch.tensor([0.85, 0.95, 1.2, 1.35, 0.85, 0.95, 1.2, 1.35], dtype=F64)
    adv = torch.tensor([1.0] * 4 + [-1.0] * 4, dtype=F64)
    logp = ratio.log()[None].clone().requires_grad_(True)  # (1, 8), old_logp = 0
    old = torch.zeros(1, 8, dtype=F64)
    loss = L.clipped_surrogate_loss(logp, old, adv[None], eps_low=eps_low, eps_high=eps_high)
    # -min(r A, clip(r, 0.9, 1.3) A), by hand
    expect = [-0.85, -0.95, -1.2, -1.3, 0.9, 0.95, 1.2, 1.35]
    np.testing.assert_allclose(loss[0].detach().numpy(), expect, atol=1e-12)
    loss.sum().backward()
    # gradient -A r where the unclipped branch is active, 0 where the clip binds
    grad_expect = [-0.85, -0.95, -1.2, 0.0, 0.0, 0.95, 1.2, 1.35]
    np.testing.assert_allclose(logp.grad[0].numpy(), grad_expect, atol=1e-12)
    clipped = L.clipped_mask(logp, old, adv[None], eps_low=eps_low, eps_high=eps_high)[0].tolist()
    assert clipped == [False, False, False, True, True, False, False, False]


def test_clipped_surrogate_old_logp_and_adv_get_no_gradient():
    logp = torch.tensor([[-0.5, -1.0]], dtype=F64, requires_grad=True)
    old = torch.tensor([[-0.6, -0.9]], dtype=F64, requires_grad=True)
    adv = torch.tensor([0.7], dtype=F64, requires_grad=True)
    L.clipped_surrogate_loss(logp, old, adv, eps_low=0.1, eps_high=0.3).sum().backward()
    assert old.grad is None and adv.grad is None and logp.grad is not None
    L.policy_gradient_loss(logp, adv).sum().backward()
    assert adv.grad is None
    ref = old
    L.kl_penalty(logp, ref, "k3").sum().backward()
    assert ref.grad is None


# ----------------------------------------------------------------------------- reduce
def test_reduce_constant_default_is_b_times_t():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=F64)  # B = 2, T = 3 (B != T)
    m = torch.tensor([[1, 0, 1], [1, 1, 0]])
    assert L.reduce(x, m, "constant").item() == pytest.approx((1 + 3 + 4 + 5) / 6)
    assert L.reduce(x, m, "constant", constant=None).item() == pytest.approx(13 / 6)
    assert L.reduce(x, m, "constant", constant=4.0).item() == pytest.approx(13 / 4)
    # and the other modes on the same hand example
    assert L.reduce(x, m, "token_mean").item() == pytest.approx(13 / 4)
    assert L.reduce(x, m, "seq_mean").item() == pytest.approx(((1 + 3) / 2 + (4 + 5) / 2) / 2)
    assert L.reduce(x, m, "sum").item() == pytest.approx(13.0)


def test_reduce_seq_mean_skips_empty_rows_and_empty_mask_is_zero():
    x = torch.tensor([[1.0, 3.0], [float("nan"), 7.0], [2.0, 2.0]], dtype=F64)
    m = torch.tensor([[1, 1], [0, 0], [0, 1]])
    assert L.reduce(x, m, "seq_mean").item() == pytest.approx((2.0 + 2.0) / 2)
    for mode in L.REDUCE_MODES:
        assert L.reduce(x, torch.zeros_like(m), mode).item() == 0.0


# ----------------------------------------------------------------------------- PEAR with binding clips
def test_pear_token_and_total_clips_bind():
    # log-ratios [0.5, -0.5, 0.2, 0.01] at response positions 1..4 (position 0 is the prompt)
    logp = torch.tensor([[3.0, 0.5, -0.5, 0.2, 0.01]], dtype=F64)
    beh = torch.zeros_like(logp)
    mask = torch.tensor([[0, 1, 1, 1, 1]])
    kw = dict(gamma=0.9, token_clip=(-0.08, 0.3), total_clip=(0.05, 0.15))
    # token clip -> rho = [0.3, -0.08, 0.2, 0.01]
    # token level: sums after t = [0.13, 0.21, 0.01, 0] -> total clip [0.13, 0.15, 0.05, 0.05]
    tok = L.pear_weights(logp, beh, mask, level="token", **kw)[0].tolist()
    expect = [0.0, 0.9**3 * math.exp(0.13), 0.9**2 * math.exp(0.15), 0.9 * math.exp(0.05), math.exp(0.05)]
    np.testing.assert_allclose(tok, expect, rtol=1e-12)
    # block level, blocks {1, 2}, {3, 4}: after block 0 = 0.21 -> 0.15; after block 1 = 0 -> 0.05
    blk = L.pear_weights(logp, beh, mask, level="block", block_size=2, **kw)[0].tolist()
    b0, b1 = 0.9**2 * math.exp(0.15), math.exp(0.05)
    np.testing.assert_allclose(blk, [0.0, b0, b0, b1, b1], rtol=1e-12)
    # sequence level: total 0.43 -> 0.15, no decay
    seq = L.pear_weights(logp, beh, mask, level="sequence", **kw)[0].tolist()
    np.testing.assert_allclose(seq, [0.0] + [math.exp(0.15)] * 4, rtol=1e-12)


def test_pear_lower_token_clip_binds_on_negative_ratios():
    logp = torch.tensor([[-1.0, -0.05, -2.0]], dtype=F64)
    beh = torch.zeros_like(logp)
    mask = torch.ones(1, 3)
    G = L.pear_weights(
        logp, beh, mask, level="token", gamma=1.0, token_clip=(-0.08, 0.3), total_clip=(-10, 5)
    )
    # rho = [-0.08, -0.05, -0.08]; sums after t = [-0.13, -0.08, 0]
    np.testing.assert_allclose(G[0].tolist(), [math.exp(-0.13), math.exp(-0.08), 1.0], rtol=1e-12)


def test_pear_weights_detached_with_live_inputs():
    logp = torch.tensor([[-0.3, -0.2, -0.1]], dtype=F64, requires_grad=True)
    beh = torch.tensor([[-0.2, -0.4, -0.1]], dtype=F64, requires_grad=True)
    G = L.pear_weights(logp, beh, torch.ones(1, 3))
    assert not G.requires_grad


# ----------------------------------------------------------------------------- entropy-guided temperature
KW = dict(pivot=1.2, gain=0.5, slope=2.0, tau_min=1.1, tau_max=1.5, top_k=512, floor=0.03)


def test_entropy_guided_temperature_floor_branch():
    # H_full(z = [10, 0, 0, 0]) ~ 1.4e-3 <= floor: tau_min. Without the floor the target H* ~ 0.043
    # is out of reach below tau_max (H at tau 1.5 ~ 0.035), so the solve alone would give tau_max.
    z = torch.tensor([[[10.0, 0.0, 0.0, 0.0]]], dtype=F64)
    assert M.entropy(z).item() <= 0.03
    assert L.entropy_guided_temperature(z, **KW).item() == 1.1
    assert L.entropy_guided_temperature(z, **{**KW, "floor": 1e-4}).item() == 1.5
    # the floor is on the FULL-vocabulary entropy, not the top-k one
    z2 = torch.tensor([[[10.0] + [0.0] * 7]], dtype=F64)
    assert M.entropy(z2[..., :2]).item() < 1e-3 < M.entropy(z2).item()
    assert L.entropy_guided_temperature(z2, **{**KW, "top_k": 2, "floor": 1e-3}).item() == 1.5


def test_entropy_guided_temperature_clamps_exactly_at_the_bounds():
    # uniform logits: entropy log V at every tau < H* -> tau_max exactly
    z_uniform = torch.zeros(1, 1, 5, dtype=F64)
    assert L.entropy_guided_temperature(z_uniform, **KW).item() == 1.5
    # gain = 0: H* = H(z) < H(z / tau_min) for any tau_min > 1 -> tau_min exactly
    z = torch.tensor([[[2.0, 1.0, 0.0, -1.0]]], dtype=F64)
    assert L.entropy_guided_temperature(z, **{**KW, "gain": 0.0}).item() == 1.1
    # and an interior solution hits H* (not a bound)
    z3 = torch.tensor([[[3.0, 1.0, 0.0, -1.0, -2.0]]], dtype=F64)
    tau = L.entropy_guided_temperature(z3, **KW).item()
    H = M.entropy(z3).item()
    H_star = H + 0.5 / (1 + math.exp(-2.0 * (H - 1.2)))
    assert 1.1 < tau < 1.5
    assert M.entropy(z3 / tau).item() == pytest.approx(H_star, abs=1e-5)


def test_entropy_guided_temperature_uses_top_k():
    # top_k = 2 of [3, 0, 0, 0, 0]: the solve sees only [3, 0]
    z = torch.tensor([[[3.0, 0.0, 0.0, 0.0, 0.0]]], dtype=F64)
    zk = z[..., :2]
    tau = L.entropy_guided_temperature(z, **{**KW, "top_k": 2}).item()
    H = M.entropy(zk).item()
    H_star = H + 0.5 / (1 + math.exp(-2.0 * (H - 1.2)))
    if 1.1 < tau < 1.5:
        assert M.entropy(zk / tau).item() == pytest.approx(H_star, abs=1e-5)
    else:  # out of reach: the bound is the one the target lies beyond
        assert tau == (1.5 if M.entropy(zk / 1.5).item() <= H_star else 1.1)
    assert tau != L.entropy_guided_temperature(z, **KW).item()


# ----------------------------------------------------------------------------- entropy at temperature != 1
def test_entropy_at_temperature_two_by_hand():
    z = torch.tensor([2 * math.log(3.0), 0.0], dtype=F64)  # z / 2 = [log 3, 0] -> p = [3/4, 1/4]
    expect = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert M.entropy(z, temperature=2.0).item() == pytest.approx(expect, rel=1e-12)
    # temperature 0.5: z * 2 = [4 log 3, 0] -> p = [81/82, 1/82]
    p = np.array([81.0, 1.0]) / 82
    assert M.entropy(z, temperature=0.5).item() == pytest.approx(float(-(p * np.log(p)).sum()), rel=1e-12)


def test_entropy_sft_top_k_entropy_by_hand():
    # top_k = 2 of log[0.5, 0.3, 0.2]: renormalised [0.625, 0.375]
    z = torch.log(torch.tensor([[[0.5, 0.3, 0.2]]], dtype=F64))
    y = torch.tensor([[0]])
    H2 = -(0.625 * math.log(0.625) + 0.375 * math.log(0.375))
    got = L.entropy_sft_loss(z, y, coef=0.5, top_k=2).item()
    assert got == pytest.approx(-math.log(0.5) - 0.5 * H2, rel=1e-12)


# ----------------------------------------------------------------------------- stop-gradients, live teacher
def test_curio_teacher_and_tau_are_stop_gradiented_with_live_inputs():
    rng = np.random.default_rng(0)
    z = torch.tensor(rng.normal(size=(2, 3, 5)), requires_grad=True)
    teacher = torch.tensor(rng.normal(size=(2, 3, 5)), requires_grad=True)
    tau = torch.full((2, 3), 1.3, dtype=F64, requires_grad=True)
    y = torch.tensor(rng.integers(0, 5, size=(2, 3)))
    for t in (tau, 1.3, L.entropy_guided_temperature(teacher)):
        loss = L.curio_loss(z, y, teacher, tau=t, alpha=1.0)
        assert loss.requires_grad
        loss.sum().backward()
        assert teacher.grad is None and tau.grad is None
        assert z.grad is not None and torch.isfinite(z.grad).all()
        z.grad = None
    assert not L.entropy_guided_temperature(teacher).requires_grad


def test_curio_gradient_weight_matches_hand_formula_with_live_teacher():
    # logit gradient w (pi - e_y), w = 1 - alpha (log pi(y) - log q(y)); the teacher's own gradient is 0
    z = torch.tensor([[[1.0, 0.0, -1.0]]], dtype=F64, requires_grad=True)
    zbar = torch.tensor([[[0.0, 2.0, 0.5]]], dtype=F64, requires_grad=True)
    y = torch.tensor([[0]])
    tau, alpha = 1.4, 0.6
    L.curio_loss(z, y, zbar, tau=tau, alpha=alpha).sum().backward()
    pi = torch.softmax(z.detach(), -1)[0, 0]
    logq = torch.log_softmax(zbar.detach() / tau, -1)[0, 0, 0]
    w = 1 - alpha * (pi[0].log() - logq)
    expect = w * (pi - torch.tensor([1.0, 0.0, 0.0], dtype=F64))
    torch.testing.assert_close(z.grad[0, 0], expect, rtol=1e-12, atol=1e-12)
    assert zbar.grad is None


def test_gift_base_is_stop_gradiented_with_live_base():
    z = torch.zeros(1, 2, 4, dtype=F64, requires_grad=True)
    base = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]]], dtype=F64, requires_grad=True)
    y = torch.tensor([[1, 2]])
    L.gift_loss(z, y, base, beta=1.5, smooth=0.1).sum().backward()
    assert base.grad is None
    assert not L.gift_target(base, y, beta=1.5).requires_grad


def test_dft_weight_is_stop_gradiented():
    # d/dz of -sg[p] log p is p (pi - e_y), not the gradient of -p log p
    z = torch.tensor([[[0.3, -0.2, 1.0]]], dtype=F64, requires_grad=True)
    y = torch.tensor([[1]])
    L.dft_loss(z, y).sum().backward()
    pi = torch.softmax(z.detach(), -1)[0, 0]
    expect = pi[1] * (pi - torch.tensor([0.0, 1.0, 0.0], dtype=F64))
    torch.testing.assert_close(z.grad[0, 0], expect, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- advantages
def test_group_advantages_eps_is_added_to_the_scale():
    r = torch.tensor([[1.0, 0.0]], dtype=F64)  # std = 1/sqrt(2), centred = [0.5, -0.5]
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(
        A.group_advantages(r, "group", eps=0.25)[0].tolist(), [0.5 / (s + 0.25), -0.5 / (s + 0.25)]
    )
    rb = torch.tensor([[1.0, 0.0], [3.0, 3.0]], dtype=F64)
    sb = float(rb.std())
    np.testing.assert_allclose(
        A.group_advantages(rb, "batch", eps=0.1).tolist(), [[0.5 / (sb + 0.1), -0.5 / (sb + 0.1)], [0.0, 0.0]]
    )
    # "none": no division and no eps
    np.testing.assert_allclose(A.group_advantages(rb, "none", eps=0.1).tolist(), [[0.5, -0.5], [0.0, 0.0]])
    # integer rewards are accepted (as float)
    assert A.group_advantages(torch.tensor([[1, 0]]), "none").dtype == torch.float32
