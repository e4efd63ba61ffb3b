"""Tests of ``toybench.objectives``: the loss_type normaliser, the GRPO per-token loss, the SFT loss,
and the method facts the trainers read from a ``Method`` (row coupling, fused options)."""

import math

import pytest
import torch

from toybench import losses as L
from toybench.methods import KINDS, Method
from toybench.objectives import LOSS_TYPES, Counts, SFTInputs, grpo_per_token, normalise, sft_per_token

# 3 sequences x 3 positions; row 2 has no counted token; the masked entries are NaN (must not leak)
NAN = float("nan")
X = torch.tensor([[1.0, 2.0, NAN], [4.0, NAN, NAN], [NAN, 8.0, 9.0]], dtype=torch.float64)
M = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float64)
# S_i = 3, 4, 0; |m_i| = 2, 1, 0; N = 3 sequences, 3 counted tokens, length 4
BY_HAND = {
    "grpo": (3 / 2 + 4 / 1 + 0) / 3,
    "bnpo": 7 / 3,
    "dapo": 7 / 3,
    "dr_grpo": 7 / (3 * 4),
    "sum": 7.0,
}


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_normalise_by_hand_on_a_masked_batch(loss_type):
    got = normalise(X, M, loss_type, Counts.of(M, length=4))
    assert math.isclose(float(got), BY_HAND[loss_type], rel_tol=1e-12)
    # the reduce-mode spelling of the same normaliser gives the same number
    assert float(normalise(X, M, LOSS_TYPES[loss_type], Counts.of(M, length=4))) == float(got)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_normalise_micro_batch_shares_add_up_to_the_batch(loss_type):
    counts = Counts.of(M, length=4)  # the global counts, as llm's Normaliser sums them over pieces
    shares = normalise(X[:2], M[:2], loss_type, counts) + normalise(X[2:], M[2:], loss_type, counts)
    assert math.isclose(float(shares), BY_HAND[loss_type], rel_tol=1e-12)


def test_counts_of_a_batch():
    c = Counts.of(M)
    assert (c.rows, c.tokens, c.length, c.groups) == (3.0, 3.0, 3.0, 1)
    assert Counts.of(M, length=7, groups=3).length == 7.0


@pytest.mark.parametrize(
    "loss_type, want",
    # two independent groups (seeds) of 2 rows x 2 tokens each, every token counted:
    # group 0 = [[1, 2], [3, 4]], group 1 = [[5, 6], [7, 8]]; the loss is the SUM of the groups' losses
    [
        ("grpo", (1.5 + 3.5) / 2 + (5.5 + 7.5) / 2),
        ("dapo", 10 / 4 + 26 / 4),
        ("dr_grpo", 10 / (2 * 3) + 26 / (2 * 3)),  # length 3: per group 2 rows x 3
        ("sum", 36.0),
    ],
)
def test_normalise_sums_over_independent_groups(loss_type, want):
    x = torch.arange(1.0, 9.0, dtype=torch.float64).reshape(4, 2)
    m = torch.ones_like(x)
    assert math.isclose(
        float(normalise(x, m, loss_type, Counts.of(m, length=3, groups=2))), want, rel_tol=1e-12
    )


def test_normalise_rejects_unknown_names():
    with pytest.raises(ValueError, match="loss_type must be one of"):
        normalise(X, M, "ppo", Counts.of(M))


def test_grpo_per_token_by_hand():
    # ratios 1.5, 1.5, 0.5, 1.0 against advantages +1, -1, -1, +2; eps = 0.2, eps_high = 0.28
    old = torch.zeros(4, 1, dtype=torch.float64)
    logp = torch.log(torch.tensor([[1.5], [1.5], [0.5], [1.0]], dtype=torch.float64)).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, -1.0, 2.0], dtype=torch.float64)
    per = grpo_per_token(logp, old, None, adv, epsilon=0.2, epsilon_high=0.28)
    want = [-1.28, 1.5, 0.8, -2.0]  # -min(r A, clip(r) A)
    torch.testing.assert_close(per[:, 0], torch.tensor(want, dtype=torch.float64))
    (g,) = torch.autograd.grad(per.sum(), logp)
    # clipped (r > 1 + eps_high with A > 0; r < 1 - eps with A < 0): no gradient; else -A r
    torch.testing.assert_close(g[:, 0], torch.tensor([0.0, 1.5, 0.0, -2.0], dtype=torch.float64))


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_grpo_per_token_adds_the_kl_term(kind):
    logp = torch.tensor([[-1.0, -0.5]], dtype=torch.float64)
    ref = torch.tensor([[-0.7, -0.9]], dtype=torch.float64)
    adv = torch.tensor([0.0])
    d = ref - logp
    kl = logp - ref if kind == "k1" else torch.exp(d) - d - 1  # k1 = log pi - log ref; k3 = e^d - d - 1
    got = grpo_per_token(logp, None, ref, adv, epsilon=0.2, epsilon_high=0.2, kl_coef=0.3, kl_kind=kind)
    torch.testing.assert_close(got, 0.3 * kl)
    # no KL without a reference or with kl_coef 0
    assert (grpo_per_token(logp, None, None, adv, epsilon=0.2, epsilon_high=0.2, kl_coef=0.3) == 0).all()
    assert (grpo_per_token(logp, None, ref, adv, epsilon=0.2, epsilon_high=0.2) == 0).all()


def _sft_batch():
    torch.manual_seed(0)
    z = torch.randn(2, 3, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (2, 3))
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    return z, y, mask


def test_sft_per_token_applies_pear_weights_once_whatever_computed_the_token_loss():
    z, y, mask = _sft_batch()
    m = Method.parse("pear_token,gamma=0.9")
    beh = torch.full((2, 3), -1.0, dtype=torch.float64)
    nll = L.sft_loss(z, y)
    want = L.pear_weights(-nll, beh, mask, level="token", gamma=0.9) * nll
    got = sft_per_token(m, SFTInputs(mask, y, z, behavior_logp=beh))
    torch.testing.assert_close(got, want)
    # llm's kernels give the position-wise loss themselves: the same weights are applied to it
    given = sft_per_token(m, SFTInputs(mask, behavior_logp=beh, token_loss=nll))
    torch.testing.assert_close(given, want)
    # no weights for a method without them
    torch.testing.assert_close(sft_per_token(Method.parse("sft"), SFTInputs(mask, token_loss=nll)), nll)


def test_sft_per_token_gift_seq_is_the_cross_entropy_to_the_target():
    z, y, mask = _sft_batch()
    target = torch.log_softmax(torch.randn(2, 3, 5, dtype=torch.float64), -1)
    got = sft_per_token(Method.parse("gift_seq@2"), SFTInputs(mask, y, z, sequence_target=target))
    torch.testing.assert_close(got, -(target.exp() * torch.log_softmax(z, -1)).sum(-1))
    with pytest.raises(ValueError, match="needs the exact per-position Gibbs target"):
        sft_per_token(Method.parse("gift_seq@2"), SFTInputs(mask, y, z))


def test_method_facts_come_from_the_family():
    coupled = [
        s for s in ("entropy_sft@0.1", "entropy_sft@0.1,rho=0.5", "sft", "gift@3", "curio", "pear_block")
    ]
    assert [Method.parse(s).couples_rows for s in coupled] == [False, True, False, False, False, False]
    assert Method.parse("curio").fused_options() == (
        "curio",
        {"curio_alpha": 1.0, "curio_top_k": 512, "curio_floor": 0.03, "curio_tau_min": 1.1},
    )
    assert Method.parse("gift@5,smooth=0.1").fused_options() == (
        "gift",
        {"gift_beta": 5.0, "gift_smooth": 0.1},
    )
    for spec in ("curio,top_k=8", "entropy_sft@0.1,rho=0.5", "entropy_sft@0.1,top_k=3", "gift_seq@2", "none"):
        with pytest.raises(ValueError, match="fused path"):
            Method.parse(spec).fused_options()
    assert set(KINDS) >= {"none", "sft", "dft", "entropy_sft", "gift", "gift_seq", "curio", "pear_token"}
