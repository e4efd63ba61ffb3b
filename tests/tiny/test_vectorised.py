"""The seed-vectorised path (``GPTStack``, ``run_seeds``) equals the loop over seeds, seed by seed.

With S = 1 the stacked pipeline gives the loop's result for the same seed; with S = 2 each seed
gives its own S = 1 result, to float tolerance (sampled tokens, and so rewards and pass@k, exactly).
"""

from __future__ import annotations

import math

import pytest
import torch
from test_tiny import METHODS, _cfg  # the tiny pipeline settings of the smoke tests

from toybench.tiny import prepare, run_method
from toybench.tiny.model import (
    GPT,
    GPTConfig,
    GPTStack,
    clip_grad_norm_per_seed,
    completion_logprobs,
    generate,
)
from toybench.tiny.pipeline import run_seeds

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return prepare(_cfg(), cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def _models(n: int) -> list[GPT]:
    torch.manual_seed(0)
    return [GPT(GPTConfig(block_size=24)) for _ in range(n)]


def test_stack_forward_and_unstack_equal_each_model():
    models = _models(3)
    stack = GPTStack(models)
    idx = torch.randint(0, 24, (3, 4, 10))
    logits = stack(idx)
    assert logits.shape == (3, 4, 10, 24)
    for s, m in enumerate(models):
        torch.testing.assert_close(logits[s], m(idx[s]))
        torch.testing.assert_close(stack.unstack(s)(idx[s]), m(idx[s]))
    with pytest.raises(ValueError, match="seeds"):
        stack(idx[:2])
    with pytest.raises(ValueError, match=r"\[S, B, T\]"):
        stack(idx[0])


def test_stack_gradients_and_clipping_are_per_copy():
    models = _models(2)
    stack = GPTStack(models)
    prompt, comp = torch.randint(3, 24, (2, 5, 6)), torch.randint(3, 24, (2, 5, 8))
    logp, _ = completion_logprobs(stack, prompt, comp)
    (logp.sum(dim=(1, 2)) * torch.tensor([1.0, 30.0])).sum().backward()  # copy 1: a big gradient
    clip_grad_norm_per_seed(stack, 1.0)
    for s, (m, w) in enumerate(zip(models, [1.0, 30.0])):
        lp, _ = completion_logprobs(m, prompt[s], comp[s])
        (w * lp.sum()).backward()
        clip_grad_norm_per_seed(m, 1.0)  # torch.nn.utils.clip_grad_norm_
        for name, g in zip(stack.names, stack.weights):
            torch.testing.assert_close(g.grad[s], dict(m.named_parameters())[name].grad, atol=1e-6, rtol=1e-5)


def test_stacked_sampling_draws_what_each_seed_draws_alone():
    """Per-seed generators, including a seed whose rows all finish early (it then draws nothing)."""
    models = _models(2)
    stack = GPTStack(models)
    prompt = torch.randint(3, 24, (2, 2, 6))
    eos, early = 5, False
    for trial in range(60):
        gens = [torch.Generator().manual_seed(100 * trial + s) for s in range(2)]
        comp, mask = generate(stack, prompt, 14, 1.5, eos_id=eos, generator=gens)
        for s, m in enumerate(models):
            c, k = generate(
                m, prompt[s], 14, 1.5, eos_id=eos, generator=torch.Generator().manual_seed(100 * trial + s)
            )
            assert torch.equal(comp[s], c) and torch.equal(mask[s], k)
        lengths = mask.sum(-1).amax(-1)  # (S,) longest row per seed
        early |= bool(lengths.min() < 14 and lengths.max() == 14)
        if early:
            # the early seed's generator is where its own run left it: next draws agree too
            nxt = [torch.rand(1, generator=g) for g in gens]
            for s, m in enumerate(models):
                g = torch.Generator().manual_seed(100 * trial + s)
                generate(m, prompt[s], 14, 1.5, eos_id=eos, generator=g)
                assert torch.equal(nxt[s], torch.rand(1, generator=g))
            break
    assert early, "no trial had one seed finish before the other"
    with pytest.raises(ValueError, match="generators"):
        generate(stack, prompt, 4, generator=[torch.Generator()])


def _assert_runs_close(a: tuple[list[dict], dict], b: tuple[list[dict], dict]) -> None:
    (rec_a, sum_a), (rec_b, sum_b) = a, b
    assert len(rec_a) == len(rec_b)
    for x, y in [*zip(rec_a, rec_b), (sum_a, sum_b)]:
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float) and not (math.isnan(x[k]) and math.isnan(y[k])):
                assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-5), k
            elif not isinstance(x[k], float):
                assert x[k] == y[k], k


@pytest.mark.parametrize("method", METHODS)
def test_one_stacked_seed_equals_the_loop(setup, method):
    loop = run_method(setup, method, 3)
    (vec,) = run_seeds(setup, method, [3])
    assert vec[1]["seed"] == 3 and vec[1]["method"] == method
    _assert_runs_close(loop, vec)


@pytest.mark.parametrize("method", ["gift@3", "curio", "pear_token"])
def test_two_stacked_seeds_each_equal_their_own_run(setup, method):
    both = run_seeds(setup, method, [0, 1])
    for s in (0, 1):
        _assert_runs_close(run_seeds(setup, method, [s])[0], both[s])
    assert both[0][1]["rl_pass@1"] != both[1][1]["rl_pass@1"] or both[0][0] != both[1][0]  # seeds differ


def test_stacked_grpo_with_kl_and_dr_grpo_and_base_behaviour(tmp_path):
    cfg = _cfg(kl_coef=0.1, loss_type="dr_grpo", pear_behavior="base")
    setup = prepare(cfg, cache_dir=tmp_path, progress=False)
    both = run_seeds(setup, "pear_token", [0, 1])
    for s in (0, 1):
        _assert_runs_close(run_method(setup, "pear_token", s), both[s])
