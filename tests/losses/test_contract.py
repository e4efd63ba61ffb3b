"""Every shipped loss through the public loss-contract kit (``toybench.testing``), and proof that
the kit fails, naming the property, on losses broken in the usual ways."""

import pytest
import torch

from toybench import losses as L
from toybench import testing as K

N = 4  # hypothesis examples per property: the kit is derandomised, so this is a fixed sample


def _weighted_sft_grad(G, logits, targets):
    """d/dz of sum_t sg[G_t] (-log pi(y_t)) = G_t (pi - e_y): the declared gradient of a
    stop-gradient-weighted SFT loss (DFT: G = pi(y); PEAR: its weights)."""
    p = logits.softmax(-1)
    return G[..., None] * (p - torch.nn.functional.one_hot(targets, p.shape[-1]).to(p.dtype))


def _dft_grad(logits, targets):
    return _weighted_sft_grad(L.logprobs(logits, targets).exp(), logits, targets)


def _pear(level):
    def fn(logits, targets, behavior_logp, mask):
        G = L.pear_weights(L.logprobs(logits, targets), behavior_logp, mask, level=level, block_size=2)
        return G * L.sft_loss(logits, targets)

    return fn


def _pear_grad(level):
    def grad(logits, targets, behavior_logp, mask):
        G = L.pear_weights(L.logprobs(logits, targets), behavior_logp, mask, level=level, block_size=2)
        return _weighted_sft_grad(G, logits, targets)

    return grad


def _kl(kind):
    return lambda z, y, logp, ref_logp: L.kl_penalty(logp, ref_logp, kind)


# name -> (fn, needs, kit options)
SHIPPED = {
    "sft": (L.sft_loss, (), {}),
    "sft_mask_ignore_index": (
        lambda z, y, mask: L.sft_loss(z, y, mask=mask),
        ("mask",),
        {"masked_targets": -100},
    ),
    "entropy_sft": (lambda z, y: L.entropy_sft_loss(z, y, coef=0.3), (), {}),
    "entropy_sft_topk": (lambda z, y: L.entropy_sft_loss(z, y, coef=0.3, top_k=2), (), {}),
    "entropy_sft_rho": (
        lambda z, y, mask: L.entropy_sft_loss(z, y, coef=0.3, mask=mask, rho=0.5),
        ("mask",),
        {
            "skip": {
                "position_independence": "rho < 1: the entropy threshold is a quantile over the batch",
                "masked_equals_sliced": "rho < 1: the entropy threshold is a quantile over the batch",
                "gradcheck": "the quantile threshold is detached (a selection, not a function)",
            }
        },
    ),
    "gift": (
        lambda z, y, base_logits: L.gift_loss(z, y, base_logits, beta=2.0, smooth=0.01),
        ("base_logits",),
        {"masked_targets": -100},
    ),
    "gift_beta_inf": (
        lambda z, y, base_logits: L.gift_loss(z, y, base_logits, beta=float("inf")),
        ("base_logits",),
        {},
    ),
    "curio_fixed_tau": (
        lambda z, y, teacher_logits: L.curio_loss(z, y, teacher_logits, tau=1.3, alpha=0.7),
        ("teacher_logits",),
        {"masked_targets": -100},
    ),
    "curio_tensor_tau": (
        lambda z, y, teacher_logits, tau: L.curio_loss(z, y, teacher_logits, tau=tau),
        ("teacher_logits", "tau"),
        {},
    ),
    "curio_entropy_guided_tau": (
        lambda z, y, teacher_logits: L.curio_loss(
            z, y, teacher_logits, tau=L.entropy_guided_temperature(teacher_logits, top_k=3)
        ),
        ("teacher_logits",),
        {"rtol": 1e-6, "atol": 1e-6},  # bisection: a comparison at a tie may flip under a shift
    ),
    "dft": (L.dft_loss, (), {"grad": _dft_grad}),  # sg[pi(y)]: checked against its declared gradient
    **{
        f"pear_{level}": (
            _pear(level),
            ("behavior_logp", "mask"),
            {
                "skip": {"position_independence": "PEAR weights multiply the log-ratios of later tokens"},
                "grad": _pear_grad(level),
            },
        )
        for level in L.PEAR_LEVELS
    },
    "policy_gradient": (lambda z, y, adv: L.policy_gradient_loss(L.logprobs(z, y), adv), ("adv",), {}),
    "clipped_surrogate": (
        lambda z, y, old_logp, adv: L.clipped_surrogate_loss(
            L.logprobs(z, y), old_logp, adv, eps_low=0.2, eps_high=0.28
        ),
        ("old_logp", "adv"),
        {},
    ),
    **{
        f"kl_{kind}": (
            _kl(kind),
            ("logp", "ref_logp"),
            {},
        )
        for kind in L.KL_KINDS
    },
}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_loss_keeps_the_contract(name):
    fn, needs, opts = SHIPPED[name]
    K.check_loss_contract(fn, needs, max_examples=N, **opts)


# ----------------------------------------------------------------------------- broken losses
def _raw_logit(z, y):  # not a log-probability: moves with a constant added to the logits
    return -z.gather(-1, y[..., None])[..., 0]


def _mean_over_T(z, y):  # reduces inside the loss: masked positions leak into counted ones
    return L.sft_loss(z, y).mean(dim=1, keepdim=True).expand(y.shape).contiguous()


def _reads_next_position(z, y):  # off by one: position t scores the logits of t + 1
    return L.sft_loss(torch.cat([z[:, 1:], z[:, -1:]], dim=1), y)


def _live_teacher(z, y, teacher_logits):  # distils toward a teacher that is not detached
    d = torch.log_softmax(z, -1) - torch.log_softmax(teacher_logits, -1)
    return L.sft_loss(z, y) + 0.5 * (d**2).sum(-1)


def _wrong_gradient(z, y):  # right value, gradient of the normaliser cut
    lse = torch.logsumexp(z, -1, keepdim=True).detach()
    return -(z - lse).gather(-1, y[..., None])[..., 0]


def _per_sequence(z, y):  # returns [B], not [B, T]
    return L.sft_loss(z, y).sum(1)


def _nan_at_extremes(z, y):  # naive softmax: overflows at the 1e4 logits
    p = torch.exp(z) / torch.exp(z).sum(-1, keepdim=True)
    return -torch.log(p.gather(-1, y[..., None])[..., 0])


BROKEN = [
    ("shift_invariance", _raw_logit, (), {}),
    ("position_independence", _mean_over_T, (), {}),
    (
        "masked_equals_sliced",
        _mean_over_T,
        (),
        {"skip": {"position_independence": "to reach the next property"}},
    ),
    ("position_independence", _reads_next_position, (), {}),
    ("detached", _live_teacher, ("teacher_logits",), {}),
    ("gradcheck", _wrong_gradient, (), {}),
    ("shape_dtype", _per_sequence, (), {}),
    ("finite", _nan_at_extremes, (), {}),
]


@pytest.mark.parametrize("prop,fn,needs,opts", BROKEN, ids=[f"{b[1].__name__}-{b[0]}" for b in BROKEN])
def test_kit_fails_broken_loss_naming_the_property(prop, fn, needs, opts):
    with pytest.raises(AssertionError, match=rf"^\[{prop}\]"):
        K.check_loss_contract(fn, needs, max_examples=N, **opts)


def test_kit_rejects_unknown_names_and_silent_skips():
    with pytest.raises(ValueError, match="unknown property"):
        K.check_loss_contract(L.sft_loss, skip={"shift": "typo"})
    with pytest.raises(ValueError, match="needs a reason"):
        K.check_loss_contract(L.sft_loss, skip={"gradcheck": ""})
    with pytest.raises(ValueError, match="unknown aux"):
        K.check_loss_contract(L.sft_loss, needs=("teacher",))
