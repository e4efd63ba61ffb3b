"""Decoding behaviours of ``llm.rollout``, each pinned by values worked out by hand from what the
behaviour should be: temperature before top-p (and top-k before top-p); ``min_new_tokens`` masks
every EOS id for exactly that many steps (none at 0); every EOS id of a list-valued generation
config is a stop id."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import llm.rollout as R
from llm.rollout import HFGenerator, Sampling, eos_ids, filter_logits, sample_next


def test_temperature_is_applied_before_top_p():
    """p = (.5, .3, .2), top_p = 0.7. At T = 1 the nucleus drops 0.2 (ascending cumsum .2 <= .3).
    At T = 100 the tempered softmax is ~uniform, p^(1/100) normalised = (.3350, .3333, .3317):
    ascending cumsum (.3317, .6650, 1) never <= .3, so nothing is dropped and token 2 is drawn a
    third of the time. Filtering before tempering would drop token 2 at every temperature."""
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    n = 30_000
    draws = sample_next(
        logits.expand(n, -1),
        Sampling(temperature=100.0, top_p=0.7, eos_token_ids=(9,)),
        torch.Generator().manual_seed(0),
    )
    frac = (draws == 2).double().mean().item()
    want = 0.2**0.01 / sum(p**0.01 for p in (0.5, 0.3, 0.2))  # 0.3317
    assert abs(frac - want) < 4 * math.sqrt(want * (1 - want) / n), (frac, want)
    at_1 = sample_next(
        logits.expand(n, -1),
        Sampling(temperature=1.0, top_p=0.7, eos_token_ids=(9,)),
        torch.Generator().manual_seed(0),
    )
    assert not bool((at_1 == 2).any())  # at T = 1 token 2 is outside the nucleus


def test_top_k_is_applied_before_top_p():
    """p = (.4, .3, .2, .1), top_k = 2, top_p = 0.5. Top-k first keeps (.4, .3), renormalised
    (.571, .429): ascending cumsum .429 <= .5 drops token 1, leaving token 0 alone. Top-p first
    would keep (.4, .3) (ascending cumsum .1, .3 <= .5 drop tokens 3 and 2) and top-k keep both."""
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    assert filter_logits(logits, top_k=2, top_p=0.5).isfinite().tolist() == [[True, False, False, False]]


class _ScriptedStep:
    """Stands in for the model step of ``HFGenerator``: every step returns the same logits row
    (vocabulary 6) for every sequence, so greedy decoding is worked out by hand."""

    ROW = torch.tensor([0.0, 1.0, 0.5, -1.0, 3.0, 2.0])  # token 4 best, then 5, then 1

    def __init__(self, model, B, max_len):
        self.B = B

    def prefill(self, ids, att, pos):
        return self.ROW.expand(self.B, -1).clone()

    def decode(self, ids, att, pos):
        return self.ROW.expand(self.B, -1).clone()


@pytest.fixture()
def scripted(monkeypatch):
    monkeypatch.setattr(R, "_HFStep", _ScriptedStep)
    model = torch.nn.Linear(1, 1)  # parameters (device) and train/eval only; fast=False uses _HFStep
    return HFGenerator(model, fast=False)


@pytest.mark.parametrize("m", [0, 1, 3])
def test_min_new_tokens_masks_every_eos_for_exactly_m_steps(scripted, m):
    """EOS ids (4, 5) are the two best tokens. For t < m both are masked, so greedy picks token 1;
    at t = m token 4 is free and ends the completion: ids = (1,) * m + (4,), not truncated.
    m = 0 masks nothing: the first token is already the EOS 4."""
    s = Sampling(max_completion_length=8, greedy=True, min_new_tokens=m, eos_token_ids=(4, 5))
    ((c,),) = scripted.generate([[3, 3]], 1, s)
    assert c.ids == (1,) * m + (4,) and not c.truncated


def test_the_second_eos_id_stops_and_is_masked_too(scripted):
    """EOS ids (5, 4): the stop list's second id (4) is the model's favourite, so it alone ends the
    completion at once; with min_new_tokens = 2 both 4 and 5 are masked, token 1 fills two steps."""
    ((c,),) = scripted.generate(
        [[3]], 1, Sampling(max_completion_length=8, greedy=True, eos_token_ids=(5, 4))
    )
    assert c.ids == (4,) and not c.truncated
    s = Sampling(max_completion_length=8, greedy=True, min_new_tokens=2, eos_token_ids=(5, 4))
    ((c,),) = scripted.generate([[3]], 1, s)
    assert c.ids == (1, 1, 4)


def test_every_eos_id_of_a_list_valued_generation_config():
    """Qwen3: generation_config.eos_token_id = [151645, 151643], tokenizer EOS 151645. The stop ids
    are both list entries, in order, once each: (151645, 151643)."""
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[151645, 151643]))
    tok = SimpleNamespace(eos_token_id=151645)
    assert eos_ids(model, tok) == (151645, 151643)
    model.generation_config.eos_token_id = 7  # an int, and a tokenizer EOS that differs
    assert eos_ids(model, SimpleNamespace(eos_token_id=3)) == (7, 3)
