"""The method registry: spelling, canonical round trip, errors, needs, state and the one EMA update."""

from __future__ import annotations

import pytest
import torch

from toybench import losses as L
from toybench.methods import LOSS_TYPES, Method, loss_type_reduction

SPECS = [
    "none",
    "sft",
    "dft",
    "curio",
    "gift@3",
    "gift@inf",
    "entropy_sft@0.3",
    "pear_token",
    "pear_block",
    "pear_sequence",
    "pear_token@self",
    "gift@3,smooth=0.1",
    "curio,alpha=0.5,ema_every=5,ema_keep=0.01",
    "pear_block,block_size=2,gamma=0.999,token_clip=-0.08:0.3",
    "entropy_sft@0.3,top_k=5",
]


@pytest.mark.parametrize("spec", SPECS)
def test_canonical_spec_round_trips(spec):
    m = Method.parse(spec)
    assert Method.parse(str(m)) == m
    assert str(Method.parse(str(m))) == str(m)


def test_short_spellings_and_keywords():
    assert str(Method.parse("gift@2")) == "gift@2" and str(Method.parse("gift")) == "gift@20"
    assert Method.parse("gift,beta=3") == Method.parse("gift@3")
    assert str(Method.parse("curio,alpha=1,ema_every=10")) == "curio,ema_every=10"
    m = Method.parse("pear_block,block_size=2,token_clip=-0.1:0.2")
    assert m["block_size"] == 2 and m["token_clip"] == (-0.1, 0.2)
    assert str(m) == "pear_block,block_size=2,token_clip=-0.1:0.2"


@pytest.mark.parametrize(
    "spec",
    ["bogus", "gift@-1", "entropy_sft@nan", "gift@3,foo=1", "curio,ema_every=1.5", "sft@2",
     "pear_block,block_size=0", "pear_token,token_clip=1", "pear_token@other", "curio,alpha",
     "curio,tau_min=2,tau_max=1.5"],
)  # fmt: skip
def test_invalid_specs_raise_naming_the_spec(spec):
    with pytest.raises(ValueError, match="method '" + spec.split(",")[0].split("@")[0]):
        Method.parse(spec)


def test_needs():
    assert Method.parse("gift@3").needs_base and Method.parse("gift@3").aux == "base"
    assert Method.parse("curio").needs_teacher and Method.parse("curio").aux == "teacher"
    assert Method.parse("pear_token").needs_behavior_logp
    assert not Method.parse("pear_token@self").needs_behavior_logp
    assert not any(
        getattr(Method.parse("sft"), n) for n in ("needs_base", "needs_teacher", "needs_behavior_logp")
    )


def test_loss_is_the_losses_function():
    g = torch.Generator().manual_seed(0)
    z, zb = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    y, mask = torch.randint(0, 5, (2, 3), generator=g), torch.ones(2, 3)
    m = Method.parse("gift@3,smooth=0.1")
    torch.testing.assert_close(
        m.loss(z, y, mask, base_logits=zb), L.gift_loss(z, y, zb, beta=3.0, smooth=0.1)
    )
    beh = torch.randn(2, 3, generator=g)
    m = Method.parse("pear_block,block_size=2,gamma=0.9")
    want = L.pear_weights(L.logprobs(z, y), beh, mask, "block", 2, 0.9) * L.sft_loss(z, y)
    torch.testing.assert_close(m.loss(z, y, mask, behavior_logp=beh), want)
    with pytest.raises(ValueError, match="base_logits"):
        Method.parse("gift@3").loss(z, y, mask)


def test_ema_update_tensor_equals_module():
    m = Method.parse("curio,ema_keep=0.3")
    net, other = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    state = m.init_state(net)
    assert state.base is None and not state.teacher.weight.requires_grad
    t = m.init_state(net.weight).teacher
    m.ema_update(state.teacher, other)
    t = m.ema_update(t, other.weight)
    torch.testing.assert_close(state.teacher.weight, t)
    torch.testing.assert_close(t, 0.3 * net.weight.detach() + 0.7 * other.weight.detach())
    assert [s for s in range(1, 13) if Method.parse("curio").ema_due(s)] == [5, 10]


def test_loss_types_map_to_reductions():
    assert loss_type_reduction("grpo") == "seq_mean" and loss_type_reduction("dr_grpo") == "constant"
    assert set(LOSS_TYPES.values()) <= set(L.REDUCE_MODES)
    with pytest.raises(ValueError, match="loss_type"):
        loss_type_reduction("ppo")


# ----------------------------------------------------------------------------- every kind's wiring
def _inputs(V=5):
    g = torch.Generator().manual_seed(1)
    z = 2 * torch.randn(2, 4, V, generator=g, dtype=torch.float64)
    aux = 2 * torch.randn(2, 4, V, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (2, 4), generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 1]])
    beh = L.logprobs(z, y) + 1.5 * torch.randn(2, 4, generator=g, dtype=torch.float64)
    return z, aux, y, mask, beh


_CURIO = dict(pivot=0.8, gain=0.7, slope=3.0, tau_min=1.05, tau_max=2.0, top_k=3, floor=0.01)
_PEAR = dict(gamma=0.9, token_clip=(-0.05, 0.1), total_clip=(-0.05, 0.05))
_PEAR_SPEC = "gamma=0.9,token_clip=-0.05:0.1,total_clip=-0.05:0.05"


def _want(spec, z, aux, y, mask, beh):
    """The losses-module call each spec stands for, written out by hand."""
    nll = L.sft_loss(z, y)
    return {
        "sft": nll,
        "dft": L.dft_loss(z, y),
        "entropy_sft@0.3,top_k=2": L.entropy_sft_loss(z, y, coef=0.3, top_k=2),
        "entropy_sft@0.3,rho=0.5": L.entropy_sft_loss(z, y, coef=0.3, rho=0.5, mask=mask),
        "gift@3,smooth=0.1": L.gift_loss(z, y, aux, beta=3.0, smooth=0.1),
        "gift_seq@2": L.gift_loss(z, y, aux, beta=0.0),
        "curio,alpha=0.5," + ",".join(f"{k}={v}" for k, v in _CURIO.items()): L.curio_loss(
            z, y, aux, tau=L.entropy_guided_temperature(aux, **_CURIO), alpha=0.5
        ),
        f"pear_token,{_PEAR_SPEC}": L.pear_weights(-nll, beh, mask, "token", **_PEAR) * nll,
        f"pear_sequence,{_PEAR_SPEC}": L.pear_weights(-nll, beh, mask, "sequence", **_PEAR) * nll,
        f"pear_block,block_size=2,{_PEAR_SPEC}": L.pear_weights(-nll, beh, mask, "block", 2, **_PEAR) * nll,
        f"pear_token@self,{_PEAR_SPEC}": L.pear_weights(-nll, -nll, mask, "token", **_PEAR) * nll,
    }[spec]


@pytest.mark.parametrize(
    "spec",
    ["sft", "dft", "entropy_sft@0.3,top_k=2", "entropy_sft@0.3,rho=0.5", "gift@3,smooth=0.1", "gift_seq@2",
     "curio,alpha=0.5," + ",".join(f"{k}={v}" for k, v in _CURIO.items()), f"pear_token,{_PEAR_SPEC}",
     f"pear_sequence,{_PEAR_SPEC}", f"pear_block,block_size=2,{_PEAR_SPEC}", f"pear_token@self,{_PEAR_SPEC}"],
)  # fmt: skip
def test_every_kind_loss_is_its_losses_call_with_its_constants(spec):
    z, aux, y, mask, beh = _inputs()
    m = Method.parse(spec)
    kw = dict(base_logits=aux, teacher_logits=aux, behavior_logp=beh, sequence_target=aux)
    got = m.loss(z, y, mask, **kw)
    torch.testing.assert_close(got, _want(spec, z, aux, y, mask, beh), rtol=1e-12, atol=1e-12)
    # the non-default constants matter on this input (so dropping one is seen)
    default = Method(m.kind, tuple((n, Method.parse(m.kind)[n]) for n, _ in m.constants))
    if m.constants and m != default and m.kind != "gift_seq":
        assert (got - default.loss(z, y, mask, **kw)).abs().max() > 1e-6


def test_pear_total_clip_binds_on_this_input():
    z, _, y, mask, beh = _inputs()
    nll = L.sft_loss(z, y)
    loose = {**_PEAR, "total_clip": (-10.0, 5.0)}
    m = Method.parse(f"pear_token,{_PEAR_SPEC}")
    got = m.loss(z, y, mask, behavior_logp=beh)
    assert (got - L.pear_weights(-nll, beh, mask, "token", **loose) * nll).abs().max() > 1e-6


def test_pear_block_size_only_for_the_block_level():
    z, _, y, mask, beh = _inputs()
    nll = L.sft_loss(z, y)
    for level in ("token", "sequence"):  # no block_size constant; the loss does not depend on one
        got = Method.parse(f"pear_{level}").loss(z, y, mask, behavior_logp=beh)
        torch.testing.assert_close(got, L.pear_weights(-nll, beh, mask, level) * nll, rtol=0, atol=0)


def test_entropy_sft_mask_reaches_the_loss_only_when_rho_below_one():
    z, _, y, mask, _ = _inputs()
    # rho < 1: the entropy threshold is taken over counted positions only (mask matters)
    m = Method.parse("entropy_sft@0.3,rho=0.5")
    full = torch.ones_like(mask)
    assert (m.loss(z, y, mask) - m.loss(z, y, full)).abs().max() > 1e-6
    # rho = 1: position-wise; an out-of-range target gives NaN at its own position (as sft does),
    # never a plausible loss and no cross-position effect
    bad = y.clone()
    bad[0, 1] = 7
    for spec in ("sft", "entropy_sft@0.3"):
        out = Method.parse(spec).loss(z, bad, mask)
        assert torch.isnan(out[0, 1]) and torch.isfinite(out.flatten()[torch.arange(8) != 1]).all()


@pytest.mark.parametrize(
    "spec, call, match",
    [
        ("none", "loss", "^method 'none' has no SFT loss$"),
        ("gift_seq@2", "token_loss", "'gift_seq@2' needs the exact per-position Gibbs target"),
        ("gift_seq@2", "loss", "'gift_seq@2' needs the exact per-position Gibbs target"),
        ("gift@3", "loss", "method 'gift@3' needs base_logits"),
        ("curio,alpha=0.5", "loss", "method 'curio@0.5' needs teacher_logits"),
        ("pear_block,block_size=2", "loss", "method 'pear_block,block_size=2' needs behavior_logp"),
    ],
)
def test_missing_inputs_raise_naming_the_method(spec, call, match):
    z, _, y, mask, _ = _inputs()
    m = Method.parse(spec)
    with pytest.raises(ValueError, match=match):
        m.loss(z, y, mask) if call == "loss" else m.token_loss(z, y)


def test_token_level():
    m = Method.parse("sft")
    assert m.token_level("tiny") is m
    with pytest.raises(ValueError, match=r"^tiny: method 'gift_seq@3' needs the exact per-position"):
        Method.parse("gift_seq@3").token_level("tiny")


def test_init_state_copies_what_each_kind_needs():
    w = torch.randn(3, 2, requires_grad=True)
    gift = Method.parse("gift@3").init_state(w)
    assert gift.teacher is None and not gift.base.requires_grad
    torch.testing.assert_close(gift.base, w.detach(), rtol=0, atol=0)
    with torch.no_grad():
        w.add_(1.0)  # a copy, not a view of the live parameters
    assert (gift.base - w.detach()).abs().min() > 0.5
    curio = Method.parse("curio").init_state(w)
    assert curio.base is None and curio.teacher is not None
    plain = Method.parse("sft").init_state(w)
    assert plain.base is None and plain.teacher is None
    net = torch.nn.Linear(2, 2)
    base = Method.parse("gift_seq@1").init_state(net).base
    assert base is not net and not base.training and not any(p.requires_grad for p in base.parameters())


# ----------------------------------------------------------------------------- spelling edges
def test_optional_int_none_and_its_case():
    assert Method.parse("entropy_sft@0.3,top_k=none")["top_k"] is None
    assert Method.parse("entropy_sft@0.3,top_k=NONE")["top_k"] is None
    assert Method.parse("entropy_sft@0.3,top_k=none") == Method.parse("entropy_sft@0.3")
    with pytest.raises(ValueError, match="top_k='none' is not an integer >= 1"):
        Method.parse("curio,top_k=none")  # curio's top_k is a plain int


@pytest.mark.parametrize(
    "spec, match",
    [
        (3, r"method 3: a method spec is a string like 'gift@3'"),
        ("bogus", r"\(spelling kind\[@value\]\[,key=value\]\)$"),
        ("gift,foo=1", "gift takes: beta, smooth$"),
        ("sft,foo=1", "sft takes: none$"),
        ("gift,beta", "keyword 'beta' needs a value"),
        ("gift,foo", "unknown keyword 'foo'"),
        ("gift,beta=3=4", r"beta='3=4' is not"),
    ],
)
def test_spec_error_messages(spec, match):
    with pytest.raises(ValueError, match=match):
        Method.parse(spec)


def test_equal_curio_temperature_bounds_are_allowed_and_unknown_constant_is_a_key_error():
    m = Method.parse("curio,tau_min=1.3,tau_max=1.3")
    assert m["tau_min"] == m["tau_max"] == 1.3
    with pytest.raises(KeyError, match="method 'sft' has no constant 'beta'"):
        Method.parse("sft")["beta"]
