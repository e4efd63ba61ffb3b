"""Exact error messages (they are part of the contract: the argument first, then what it must be
and what it got) and edge cases of ``toybench.losses`` found by mutation testing: dtypes, the
documented defaults (README, "The loss contract"), boundary values that are allowed, the rho < 1
entropy bonus, PEAR partial blocks."""

import inspect
import math

import numpy as np
import pytest
import torch

from toybench import losses as L
from toybench.losses.sft import _entropy_from_logits

Z = torch.zeros(2, 3, 5)
Y = torch.zeros(2, 3, dtype=torch.long)
P = torch.zeros(2, 3)
MASK = torch.ones(2, 3)
NAN = float("nan")
F64 = torch.float64

MESSAGES = [
    ("L.sft_loss([0.0], Y)", "logits must be a torch.Tensor, got list"),
    ("L.sft_loss(Z, [0])", "targets must be a torch.Tensor, got list"),
    (
        "L.sft_loss(Z, torch.zeros(2, 4, dtype=torch.long))",
        "targets must have shape [B, T] = (2, 3), got (2, 4)",
    ),
    ("L.sft_loss(Z, Y, mask=torch.ones(3, 3))", "mask must have the shape of targets (2, 3), got (3, 3)"),
    ("L.sft_loss(Z, Y, mask=[1])", "mask must be a torch.Tensor, got list"),
    ("L.entropy_sft_loss(Z, Y, coef=NAN)", "coef must be finite and >= 0, got nan"),
    ("L.entropy_sft_loss(Z, Y, coef=0.1, rho=0.0)", "rho must lie in (0, 1], got 0.0"),
    ("L.entropy_sft_loss(Z, Y, coef=0.1, rho=0.5)", "mask is required when rho < 1"),
    (
        "L.entropy_sft_loss(Z, Y, coef=0.1, rho=0.5, mask=torch.ones(3, 3))",
        "mask must have the shape of targets (2, 3), got (3, 3)",
    ),
    ("L.gift_target([0.0], Y, beta=1.0)", "base_logits must be a torch.Tensor, got list"),
    (
        "L.gift_loss(Z, Y, torch.zeros(2, 3, 4), beta=1.0)",
        "base_logits must have the shape of logits (2, 3, 5), got (2, 3, 4)",
    ),
    ("L.entropy_guided_temperature([0.0])", "teacher_logits must be a torch.Tensor, got list"),
    ("L.entropy_guided_temperature(Z, tau_min=NAN)", "tau_min must be finite and > 0, got nan"),
    ("L.entropy_guided_temperature(Z, tau_max=float('inf'))", "tau_max must be finite, got inf"),
    ("L.entropy_guided_temperature(Z, pivot=NAN)", "pivot must be finite, got nan"),
    ("L.entropy_guided_temperature(Z, gain=NAN)", "gain must be finite, got nan"),
    ("L.entropy_guided_temperature(Z, slope=NAN)", "slope must be finite, got nan"),
    ("L.entropy_guided_temperature(Z, floor=NAN)", "floor must be finite, got nan"),
    (
        "L.curio_loss(Z, Y, torch.zeros(1, 3, 5), tau=1.2)",
        "teacher_logits must have the shape of logits (2, 3, 5), got (1, 3, 5)",
    ),
    ("L.curio_loss(Z, Y, Z, tau=1.2, alpha=NAN)", "alpha must be finite and >= 0, got nan"),
    ("L.curio_loss(Z, Y, Z, tau=0.0)", "tau must be finite and > 0, got 0.0"),
    (
        "L.curio_loss(Z, Y, Z, tau=torch.ones(3, 2))",
        "tau must be a float or have shape [B, T] = (2, 3), got (3, 2)",
    ),
    ("L.pear_weights([0.0], P, MASK)", "logp must be a torch.Tensor, got list"),
    ("L.pear_weights(torch.zeros(6), P, MASK)", "logp must have shape [B, T], got (6,)"),
    (
        "L.pear_weights(P, torch.zeros(2, 4), MASK)",
        "behavior_logp must have the shape of logp (2, 3), got (2, 4)",
    ),
    ("L.pear_weights(P, P, torch.ones(3, 3))", "mask must have the shape of logp (2, 3), got (3, 3)"),
    (
        "L.pear_weights(P, P, MASK, token_clip=(1.0, -1.0))",
        "token_clip must be (low, high) with low <= high, got (1.0, -1.0)",
    ),
    (
        "L.pear_weights(P, P, MASK, total_clip=(1.0, -1.0))",
        "total_clip must be (low, high) with low <= high, got (1.0, -1.0)",
    ),
    ("L.policy_gradient_loss(torch.zeros(6), torch.zeros(6))", "logp must have shape [B, T], got (6,)"),
    ("L.policy_gradient_loss(P, [0.0])", "adv must be a torch.Tensor, got list"),
    ("L.clipped_surrogate_loss(torch.zeros(6), P, torch.zeros(2))", "logp must have shape [B, T], got (6,)"),
    (
        "L.clipped_surrogate_loss(P, torch.zeros(2, 2), torch.zeros(2))",
        "old_logp must have the shape of logp (2, 3), got (2, 2)",
    ),
    ("L.clipped_mask(torch.zeros(6), P, torch.zeros(2))", "logp must have shape [B, T], got (6,)"),
    (
        "L.clipped_mask(P, torch.zeros(2, 2), torch.zeros(2))",
        "old_logp must have the shape of logp (2, 3), got (2, 2)",
    ),
    ("L.clipped_mask(P, [0.0], torch.zeros(2))", "old_logp must be a torch.Tensor, got list"),
    ("L.kl_penalty(torch.zeros(6), P)", "logp must have shape [B, T], got (6,)"),
    ("L.kl_penalty(P, torch.zeros(1, 3))", "ref_logp must have the shape of logp (2, 3), got (1, 3)"),
    ("L.reduce(torch.zeros(6), MASK)", "per_token must have shape [B, T], got (6,)"),
    ("L.reduce(P, torch.ones(2, 2))", "mask must have the shape of per_token (2, 3), got (2, 2)"),
    ("L.reduce([0.0], MASK)", "per_token must be a torch.Tensor, got list"),
]


@pytest.mark.parametrize("call,message", MESSAGES, ids=[m[0] for m in MESSAGES])
def test_error_message_is_exact(call, message):
    with pytest.raises(ValueError) as e:
        eval(call, {"L": L, "torch": torch, "Z": Z, "Y": Y, "P": P, "MASK": MASK, "NAN": NAN})
    assert str(e.value) == message


DESIGN_DEFAULTS = {
    L.gift_target: {"smooth": 0.0},
    L.gift_loss: {"smooth": 0.0},
    L.entropy_guided_temperature: dict(
        pivot=1.2, gain=0.5, slope=2.0, tau_min=1.1, tau_max=1.5, top_k=512, floor=0.03, iters=20
    ),
    L.curio_loss: {"alpha": 1.0},
    L.pear_weights: dict(
        level="token", block_size=4, gamma=0.999, token_clip=(-0.08, 0.3), total_clip=(-10.0, 5.0)
    ),
    L.clipped_surrogate_loss: {"eps_low": 0.2, "eps_high": 0.2},
    L.clipped_mask: {"eps_low": 0.2, "eps_high": 0.2},
    L.kl_penalty: {"kind": "k3"},
    L.reduce: {"mode": "token_mean", "constant": None},
    L.entropy_sft_loss: {"top_k": None, "mask": None, "rho": 1.0},
}


@pytest.mark.parametrize("fn", list(DESIGN_DEFAULTS), ids=lambda f: f.__name__)
def test_defaults_are_those_of_design_md(fn):
    params = inspect.signature(fn).parameters
    for name, value in DESIGN_DEFAULTS[fn].items():
        assert params[name].default == value, (fn.__name__, name)


def test_half_precision_is_upcast_and_aux_follows_logp_dtype():
    z = torch.zeros(1, 2, 3, dtype=torch.bfloat16)
    y = torch.zeros(1, 2, dtype=torch.long)
    assert L.sft_loss(z, y).dtype == torch.float32
    logp = torch.full((1, 2), -0.5)  # float32
    adv = torch.ones(1, dtype=F64)
    assert L.policy_gradient_loss(logp, adv).dtype == torch.float32
    assert L.clipped_surrogate_loss(logp, logp, adv).dtype == torch.float32
    zt = torch.zeros(1, 2, 3, dtype=F64)
    assert L.curio_loss(z.float(), y, zt, tau=1.2).dtype == torch.float32
    assert L.gift_loss(z.float(), y, zt, beta=1.0).dtype == torch.float32


def test_boundary_values_that_are_allowed():
    y = torch.zeros(1, 1, dtype=torch.long)
    z = torch.tensor([[[1.0, 0.0, -1.0]]], dtype=F64)
    # top_k = 1: a single logit has zero entropy
    assert L.entropy_sft_loss(z, y, coef=0.5, top_k=1).item() == pytest.approx(L.sft_loss(z, y).item())
    # smooth = 1: the base is uniform
    q = L.gift_target(z, y, beta=math.log(3.0), smooth=1.0)[0, 0]
    np.testing.assert_allclose(q.tolist(), [0.6, 0.2, 0.2], rtol=1e-12)
    # tau_min == tau_max, top_k = 1, iters = 1
    t = L.entropy_guided_temperature(z, tau_min=1.3, tau_max=1.3)
    assert t.item() == 1.3
    assert 1.1 <= L.entropy_guided_temperature(z, top_k=1).item() <= 1.5
    assert 1.1 <= L.entropy_guided_temperature(z, iters=1).item() <= 1.5
    # PEAR clips with low == high
    G = L.pear_weights(
        torch.tensor([[0.5, -0.5]]),
        torch.zeros(1, 2),
        torch.ones(1, 2),
        gamma=1.0,
        token_clip=(0.1, 0.1),
        total_clip=(0.1, 0.1),
    )
    np.testing.assert_allclose(G[0].tolist(), [math.exp(0.1), math.exp(0.1)], rtol=1e-6)
    for bad in ({"rho": 1.5}, {"rho": 0.0}):
        with pytest.raises(ValueError, match="^rho must lie in"):
            L.entropy_sft_loss(z, y, coef=0.1, mask=torch.ones(1, 1), **bad)
    with pytest.raises(ValueError, match="^gamma must lie in"):
        L.pear_weights(P, P, MASK, gamma=1.5)
    with pytest.raises(ValueError, match="^top_k must be >= 1"):
        L.entropy_guided_temperature(z, top_k=0)
    with pytest.raises(ValueError, match="^iters must be >= 1"):
        L.entropy_guided_temperature(z, iters=0)


def test_floor_is_inclusive():
    z = torch.tensor([[[10.0, 0.0, 0.0, 0.0]]], dtype=F64)
    H = float(_entropy_from_logits(z))
    assert L.entropy_guided_temperature(z, floor=H).item() == 1.1


def test_entropy_sft_rho_bonus_on_the_top_entropy_fraction_by_hand():
    # 4 positions, position 3 masked; entropies H0 < H1 < H2 over counted; rho = 0.5 -> threshold =
    # median of (H0, H1, H2) = H1 (torch.quantile, linear) -> bonus at positions 1 and 2 only.
    z = torch.tensor([[[4.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], dtype=F64)
    y = torch.zeros(1, 4, dtype=torch.long)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    H = _entropy_from_logits(z)[0]
    nll = L.sft_loss(z, y)[0]
    got = L.entropy_sft_loss(z, y, coef=0.5, mask=mask, rho=0.5)[0]
    expect = nll - 0.5 * torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=F64) * H
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)
    # an all-masked batch gets no bonus at all (and no error)
    torch.testing.assert_close(L.entropy_sft_loss(z, y, coef=0.5, mask=torch.zeros(1, 4), rho=0.5), nll[None])


def test_pear_block_partial_last_block():
    # L = 3 response tokens, block_size = 2: blocks {0, 1}, {2}; the last block ends at L - 1 = 2
    logp = torch.tensor([[0.1, 0.2, 0.3]], dtype=F64)
    G = L.pear_weights(
        logp,
        torch.zeros_like(logp),
        torch.ones(1, 3),
        level="block",
        block_size=2,
        gamma=0.5,
        token_clip=(-1.0, 1.0),
        total_clip=(-10.0, 10.0),
    )
    np.testing.assert_allclose(G[0].tolist(), [0.5 * math.exp(0.3), 0.5 * math.exp(0.3), 1.0], rtol=1e-12)


def test_clipped_mask_with_nonzero_old_logp_and_zero_or_small_advantages():
    old = torch.tensor([[-1.0, -1.0, -1.0, -1.0]], dtype=F64)
    logp = old + torch.log(torch.tensor([[1.5, 1.5, 0.5, 0.5]], dtype=F64))  # ratios 1.5, 1.5, 0.5, 0.5
    adv = torch.tensor([[0.0, 0.5, 0.0, 0.5]], dtype=F64)
    # A = 0 is never clipped; A = 0.5 > 0 is clipped only above 1 + eps_high
    assert L.clipped_mask(logp, old, adv)[0].tolist() == [False, True, False, False]
    adv_neg = torch.tensor([[-0.5, -0.5, -0.5, -0.5]], dtype=F64)
    assert L.clipped_mask(logp, old, adv_neg)[0].tolist() == [False, False, True, True]


def test_defaults_used_when_omitted_equal_design_values():
    """Calls WITHOUT the keywords equal calls with the documented default values (the signature test above
    reads the declared defaults; this one checks the defaults actually used)."""
    rng = np.random.default_rng(1)
    scale = torch.tensor([0.05, 0.3, 1.0, 3.0, 8.0, 20.0], dtype=F64)[None, :, None]
    zt = torch.tensor(rng.normal(size=(2, 6, 600))) * scale  # V > 512: top_k matters; varied entropy
    zt[0, 0] = -1e4
    zt[0, 0, :2] = torch.tensor([2.0, 0.0])  # two live tokens, H ~ 0.37 in (0.03, 1.03): interior solve
    explicit = dict(pivot=1.2, gain=0.5, slope=2.0, tau_min=1.1, tau_max=1.5, top_k=512, floor=0.03, iters=20)
    tau = L.entropy_guided_temperature(zt)
    assert torch.equal(tau, L.entropy_guided_temperature(zt, **explicit))
    assert ((tau > 1.1) & (tau < 1.5)).any()  # interior solves: iters and top_k show in the bits
    z = torch.tensor(rng.normal(size=(2, 6, 600)))
    y = torch.tensor(rng.integers(0, 600, size=(2, 6)))
    assert torch.equal(L.gift_loss(z, y, zt, beta=2.0), L.gift_loss(z, y, zt, beta=2.0, smooth=0.0))
    assert torch.equal(L.curio_loss(z, y, zt, tau=1.3), L.curio_loss(z, y, zt, tau=1.3, alpha=1.0))
    logp = torch.tensor(rng.normal(scale=0.3, size=(2, 9)))
    beh = torch.tensor(rng.normal(scale=0.3, size=(2, 9)))
    m = torch.ones(2, 9)
    assert torch.equal(
        L.pear_weights(logp, beh, m, level="block"), L.pear_weights(logp, beh, m, level="block", block_size=4)
    )
    assert torch.equal(
        L.pear_weights(logp, beh, m),
        L.pear_weights(logp, beh, m, "token", 4, 0.999, token_clip=(-0.08, 0.3), total_clip=(-10.0, 5.0)),
    )
    assert torch.equal(L.kl_penalty(logp, beh), L.kl_penalty(logp, beh, kind="k3"))
    adv = torch.tensor([1.0, -1.0], dtype=F64)
    assert torch.equal(
        L.clipped_surrogate_loss(logp, beh, adv), L.clipped_surrogate_loss(logp, beh, adv, 0.2, 0.2)
    )


def test_token_mean_with_one_counted_token_is_that_token():
    x = torch.tensor([[3.0, 5.0]], dtype=F64)
    assert L.reduce(x, torch.tensor([[0, 1]])).item() == 5.0


def test_clipped_mask_at_ratio_one_with_zero_eps_is_not_clipped():
    # the gradient flows there (see the oracle test at eps = 0), so the mask must say "not clipped"
    logp = torch.tensor([[-0.5, -1.0]], dtype=F64)
    for adv in (torch.tensor([1.0]), torch.tensor([-1.0])):
        assert not L.clipped_mask(logp, logp, adv.double(), eps_low=0.0, eps_high=0.0).any()
