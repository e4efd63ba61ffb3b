"""Tests of the tiny causal transformer: causality, KV cache, overfitting, and loss gradients
through the model's logits against the closed forms of ``theory.bandit``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from theory import bandit as tb
from toybench import losses, metrics
from toybench.methods import Method
from toybench.tiny.model import GPT, GPTConfig, KVCache, completion_entropy, completion_logprobs, generate

torch.set_num_threads(1)
CFG = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16)


def _model(seed: int = 0, dtype=torch.float32, cfg: GPTConfig = CFG) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg).to(dtype)


def test_forward_shape_and_causality():
    m = _model()
    x = torch.randint(0, 11, (3, 12))
    logits = m(x)
    assert logits.shape == (3, 12, 11)
    for t in (0, 5, 11):
        y = x.clone()
        y[:, t:] = torch.randint(0, 11, (3, 12 - t))
        # changing tokens at positions >= t never changes logits at positions < t
        assert torch.equal(m(y)[:, :t], logits[:, :t])
    assert not torch.allclose(m(y)[:, 11], logits[:, 11])


def test_kv_cache_matches_full_recompute():
    m = _model(dtype=torch.float64)
    x = torch.randint(0, 11, (2, 13))
    full = m(x)
    cache = KVCache(CFG, 2, torch.device("cpu"), torch.float64)
    parts = [m(x[:, :6], cache), m(x[:, 6:7], cache), m(x[:, 7:10], cache), m(x[:, 10:], cache)]
    torch.testing.assert_close(torch.cat(parts, 1), full)
    assert cache.pos == 13


def test_sampler_with_and_without_cache_agree_and_masks():
    m = _model(1)
    prompt = torch.randint(3, 11, (64, 5))
    a = generate(m, prompt, 8, 0.9, eos_id=2, generator=torch.Generator().manual_seed(0))
    b = generate(m, prompt, 8, 0.9, eos_id=2, generator=torch.Generator().manual_seed(0), use_cache=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    comp, mask = a
    assert comp.shape == mask.shape == (64, 8)
    for row, mrow in zip(comp.tolist(), mask.tolist()):
        if 2 in row:
            e = row.index(2)
            assert mrow == [1] * (e + 1) + [0] * (7 - e)  # mask covers up to and including eos
            assert all(t == 0 for t in row[e + 1 :])  # pads after eos
        else:
            assert mrow == [1] * 8


def test_sampler_temperature_limits_and_errors():
    m = _model(2)
    prompt = torch.randint(3, 11, (4, 5))
    g = torch.Generator().manual_seed(0)
    greedy, _ = generate(m, prompt, 1, temperature=1e-4, eos_id=99, generator=g)
    assert torch.equal(greedy[:, 0], m(prompt)[:, -1].argmax(-1))
    with pytest.raises(ValueError, match="temperature"):
        generate(m, prompt, 3, temperature=0.0)
    with pytest.raises(ValueError, match="block_size"):
        generate(m, prompt, 20)
    with pytest.raises(ValueError, match="idx"):
        m(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="n_embd"):
        GPTConfig(n_embd=10, n_head=4)


def test_can_overfit_a_tiny_batch():
    m = _model(3)
    prompt = torch.randint(3, 11, (4, 4))
    comp = torch.randint(3, 11, (4, 6))
    mask = torch.ones_like(comp)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(150):
        _, logits = completion_logprobs(m, prompt, comp)
        loss = losses.reduce(losses.sft_loss(logits, comp), mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_helpers_reuse_losses_and_metrics():
    m = _model(4)
    prompt, comp = torch.randint(3, 11, (3, 4)), torch.randint(3, 11, (3, 5))
    logp, logits = completion_logprobs(m, prompt, comp)
    full = m(torch.cat([prompt, comp], 1))
    torch.testing.assert_close(logits, full[:, 3:-1])
    torch.testing.assert_close(logp, losses.logprobs(full[:, 3:-1], comp))
    torch.testing.assert_close(completion_entropy(m, prompt, comp), metrics.entropy(full[:, 3:-1]))


# ---------------------------------------------------------------------------------------------
# One-token task: the gradient of each loss w.r.t. the model's logits equals theory's closed form.
# ---------------------------------------------------------------------------------------------
def _one_token(seed: int):
    torch.manual_seed(seed)
    m = _model(seed, torch.float64)
    prompt = torch.randint(3, 11, (5, 4))
    y = torch.randint(0, 11, (5, 1))
    logits = m(prompt)[:, -1:].detach().requires_grad_(True)  # (B, 1, V): the model's logits
    other = (m(prompt.flip(1))[:, -1:] * 1.5).detach()  # a second model-made logit tensor
    return logits, y, other


@pytest.mark.parametrize("name", ["sft", "entropy_sft@0.3", "gift@2", "dft", "curio", "pear_token@self"])
def test_loss_gradients_through_model_logits_match_theory(name):
    logits, y, other = _one_token(7)
    spec = Method.parse(name)
    mask = torch.ones_like(y)
    kw = {}
    if spec.kind == "gift":
        kw["base_logits"] = other
    if spec.kind == "curio":
        kw["teacher_logits"] = other
    per_token = spec.loss(logits, y, mask, **kw)  # (B, 1)
    (g,) = torch.autograd.grad(per_token.sum(), logits)
    z, yy, zo = logits.detach()[:, 0].numpy(), y[:, 0].numpy(), other[:, 0].numpy()
    if spec.kind == "sft":
        want = tb.sft_token_grad(z, yy)
    elif spec.kind == "entropy_sft":
        want = tb.grad_entropy_sft(z, yy, coef=0.3)
    elif spec.kind == "gift":
        want = tb.grad_gift(z, yy, zo, beta=2.0)
    elif spec.kind == "dft":
        want = tb.grad_dft(z, yy)
    elif spec.kind == "curio":
        tau = losses.entropy_guided_temperature(other)[:, 0].numpy()
        want = tb.grad_curio(z, yy, zo, tau)
    else:  # PEAR on one token: G = gamma^0 exp(0) = 1, a weighted SFT gradient
        want = tb.grad_weighted_sft(z, yy, np.ones(len(yy)))
    np.testing.assert_allclose(g[:, 0].numpy(), want, rtol=1e-8, atol=1e-10)


def test_policy_gradient_through_model_logits_matches_theory():
    logits, y, _ = _one_token(8)
    adv = torch.randn(5, dtype=torch.float64)
    logp = losses.logprobs(logits, y)
    (g,) = torch.autograd.grad(losses.policy_gradient_loss(logp, adv).sum(), logits)
    # -A log pi(y) has logit gradient A (pi - e_y) = theory's weighted SFT gradient with w = A
    want = tb.grad_weighted_sft(logits.detach()[:, 0].numpy(), y[:, 0].numpy(), adv.numpy())
    np.testing.assert_allclose(g[:, 0].numpy(), want, rtol=1e-8, atol=1e-10)
    # and its expectation over y ~ pi is minus the exact softmax policy gradient
    z = logits.detach()[0, 0].numpy()
    pi, r = tb.softmax(z), np.linspace(0, 1, 11)
    expected = sum(pi[a] * tb.grad_weighted_sft(z, np.array(a), r[a] - pi @ r) for a in range(11))
    np.testing.assert_allclose(-expected, tb.policy_gradient(pi, r), atol=1e-12)
