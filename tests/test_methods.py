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
