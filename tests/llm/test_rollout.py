"""The rollout: on-device sampling (temperature, top-k, top-p), EOS ids, min_new_tokens, the
``truncated`` flag, determinism, and the decode loop against HF ``generate`` on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from llm.data import arith_splits, prompt_ids
from llm.loading import load_model, load_tokenizer
from llm.rollout import (
    Completion,
    HFGenerator,
    Rollout,
    Sampling,
    eos_ids,
    filter_logits,
    generate,
    sample_next,
)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    model, tok = load_model(str(tiny_dir), "cpu"), load_tokenizer(str(tiny_dir))
    model.eval()
    prompts = [prompt_ids(tok, e) for e in arith_splits(0, 4, 6)["eval"][:3]]
    prompts[1] = prompts[1][4:]  # different lengths: left padding is exercised
    prompts[2] = prompts[2][:-3] + prompts[2][-2:]
    assert len({len(p) for p in prompts}) == 3
    return model, tok, prompts


def _never(tok) -> int:
    """A token id the tiny model never emits in these tests: an EOS that never stops anything."""
    return tok.convert_tokens_to_ids("<unk>")


def _chi2_pvalue_ok(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> float:
    """Pearson chi-square statistic over the cells with enough expected mass, normalised by its dof
    (~1 under the null; the thresholds below are > 6 sigma for these dofs)."""
    n = counts.sum()
    exp = probs * n
    keep = exp >= min_expected
    assert counts[~keep].sum() <= max(5 * (~keep).sum(), 10)  # negligible cells stay negligible
    stat = ((counts[keep] - exp[keep]) ** 2 / exp[keep]).sum()
    dof = int(keep.sum()) - 1
    return float(stat) / max(dof, 1), dof


# --- the sampling step, on explicit logits --------------------------------------------------------


def test_filter_logits_matches_transformers_warpers():
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 40, generator=g)
    x[0, :5] = 2.0  # ties at the k-th value are kept by both
    for k, p in [(5, 1.0), (0, 0.7), (7, 0.9), (1, 1.0), (0, 0.05)]:
        ref = x.clone()
        if k:
            ref = TopKLogitsWarper(k)(None, ref)
        if p < 1:
            ref = TopPLogitsWarper(p)(None, ref)
        assert torch.equal(filter_logits(x, k, p).isinf(), ref.isinf()), (k, p)


def test_filter_logits_by_hand():
    x = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert filter_logits(x, top_k=2).isfinite().tolist() == [[True, True, False, False]]
    # nucleus 0.75: 0.5 alone < 0.75, 0.5 + 0.3 covers it -> two tokens; 0.8 -> three (0.95)
    assert filter_logits(x, top_p=0.75).isfinite().tolist() == [[True, True, False, False]]
    assert filter_logits(x, top_p=0.85).isfinite().tolist() == [[True, True, True, False]]
    assert filter_logits(x, top_p=0.01).isfinite().tolist() == [[True, False, False, False]]


@pytest.mark.parametrize("T,k,p", [(1.0, 0, 1.0), (1.7, 0, 1.0), (0.6, 0, 1.0), (1.3, 3, 1.0), (1.0, 0, 0.8)])
def test_sample_next_draws_from_tempered_filtered_softmax(T, k, p):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    s = Sampling(temperature=T, top_k=k, top_p=p, eos_token_ids=(0,))
    n = 60_000
    draws = sample_next(logits.expand(n, -1), s, torch.Generator().manual_seed(1))
    counts = torch.bincount(draws, minlength=6).double()
    target = filter_logits((logits / T)[None], k, p)[0].softmax(-1).double()
    assert counts[target == 0].sum() == 0  # filtered tokens are never drawn
    stat, dof = _chi2_pvalue_ok(counts, target)
    assert stat < 1 + 6 * math.sqrt(2 / dof), (stat, dof)
    # and the draw is NOT from the untempered softmax when T != 1 (the test can fail)
    if T != 1.0 and k == 0:
        wrong, _ = _chi2_pvalue_ok(counts, logits.softmax(-1).double())
        assert wrong > 50


def test_greedy_is_argmax_and_sampling_validates():
    logits = torch.randn(8, 11, generator=torch.Generator().manual_seed(3))
    assert torch.equal(sample_next(logits, Sampling(greedy=True, eos_token_ids=(0,))), logits.argmax(-1))
    for bad in (
        dict(temperature=0.0),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(top_k=-1),
        dict(max_completion_length=0),
        dict(min_new_tokens=9, max_completion_length=8),
        dict(eos_token_ids=()),
    ):
        with pytest.raises(ValueError):
            Sampling(**{"eos_token_ids": (0,), **bad})


# --- the decode loop on the tiny model ------------------------------------------------------------


def _hf_generate(model, tok, prompts, L, eos, **kw):
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), tok.pad_token_id)
    att = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, P - len(p) :], att[i, P - len(p) :] = torch.tensor(p), 1
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=att,
            max_new_tokens=L,
            eos_token_id=list(eos),
            pad_token_id=tok.pad_token_id,
            **kw,
        )
    return out[:, P:].tolist()


@pytest.mark.parametrize("fast", [True, False])
def test_greedy_equals_hf_generate_and_uncached_argmax(tiny, fast):
    model, tok, prompts = tiny
    eos = eos_ids(model, tok)
    L = 24
    ours = HFGenerator(model, batch_size=2, fast=fast).generate(
        prompts, 1, Sampling(L, greedy=True, eos_token_ids=eos, pad_token_id=tok.pad_token_id)
    )
    ref = _hf_generate(model, tok, prompts, L, eos, do_sample=False)
    for (c,), r in zip(ours, ref):
        n = len(c.ids)
        assert list(c.ids) == r[:n] and all(t == tok.pad_token_id for t in r[n:])
    # an independent reference: no cache, no padding, argmax of the full forward at every step
    for p, (c,) in zip(prompts, ours):
        seq = list(p)
        with torch.no_grad():
            for _ in range(len(c.ids)):
                seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
        assert tuple(seq[len(p) :]) == c.ids


def test_first_token_is_drawn_from_tempered_model_softmax(tiny):
    model, tok, prompts = tiny
    p, T, n = prompts[0], 1.6, 6000
    s = Sampling(1, temperature=T, eos_token_ids=(_never(tok),), pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    (group,) = HFGenerator(model, batch_size=n).generate([p], n, s)
    counts = torch.bincount(
        torch.tensor([c.ids[0] for c in group]), minlength=model.config.vocab_size
    ).double()
    with torch.no_grad():
        logits = model(torch.tensor([p])).logits[0, -1]
    stat, dof = _chi2_pvalue_ok(counts, (logits / T).softmax(-1).double())
    assert stat < 1 + 6 * math.sqrt(2 / dof), (stat, dof)


def test_eos_ids_stop_and_truncated_flag(tiny):
    model, tok, prompts = tiny
    L, pad = 16, tok.pad_token_id
    free = HFGenerator(model).generate(
        prompts, 1, Sampling(L, greedy=True, eos_token_ids=(_never(tok),), pad_token_id=pad)
    )
    assert all(c.truncated and len(c.ids) == L for (c,) in free)
    row = free[0][0].ids
    a, b = row[2], row[5]  # two stop ids: whichever comes first ends the completion
    (c,) = HFGenerator(model).generate(
        prompts[:1], 1, Sampling(L, greedy=True, eos_token_ids=(b, a), pad_token_id=pad)
    )[0]
    first = min(row.index(a), row.index(b))
    assert c.ids == row[: first + 1] and not c.truncated
    # min_new_tokens: the stop ids are masked for the first m steps, so the completion is longer
    m = first + 2
    (c,) = HFGenerator(model).generate(
        prompts[:1], 1, Sampling(L, greedy=True, eos_token_ids=(a, b), pad_token_id=pad, min_new_tokens=m)
    )[0]
    assert len(c.ids) > m - 1 and not set(c.ids[:m]) & {a, b}
    assert c.truncated == (c.ids[-1] not in (a, b))


def test_min_new_tokens_forces_length_when_sampling(tiny):
    model, tok, prompts = tiny
    eos = eos_ids(model, tok)
    L = 12
    s = Sampling(L, temperature=1.0, min_new_tokens=L, eos_token_ids=eos, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    out = HFGenerator(model).generate(prompts, 4, s)
    assert all(len(c.ids) == L and not set(c.ids) & set(eos) and c.truncated for g in out for c in g)
    # without the floor the pretrained tiny model does stop early on its own (the test can fail)
    torch.manual_seed(0)
    free = HFGenerator(model).generate(
        prompts, 4, Sampling(L, eos_token_ids=eos, pad_token_id=tok.pad_token_id)
    )
    assert any(not c.truncated and len(c.ids) < L for g in free for c in g)


def test_seeded_sampling_is_deterministic(tiny):
    model, tok, prompts = tiny
    s = Sampling(
        16,
        temperature=1.2,
        top_k=8,
        top_p=0.9,
        eos_token_ids=eos_ids(model, tok),
        pad_token_id=tok.pad_token_id,
    )

    def draw(seed):
        return HFGenerator(model, rng=torch.Generator().manual_seed(seed)).generate(prompts, 3, s)

    assert draw(5) == draw(5) and draw(5) != draw(6)
    torch.manual_seed(9)
    a = HFGenerator(model).generate(prompts, 3, s)
    torch.manual_seed(9)
    assert HFGenerator(model).generate(prompts, 3, s) == a


def test_generate_wrapper_uses_all_eos_ids_and_a_pluggable_engine(tiny):
    model, tok, _ = tiny
    exs = arith_splits(0, 4, 6)["eval"][:2]
    gc_eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tok.pad_token_id, tok.eos_token_id]
    try:
        assert eos_ids(model, tok) == (tok.pad_token_id, tok.eos_token_id)
    finally:
        model.generation_config.eos_token_id = gc_eos

    seen = {}

    class Engine:  # satisfies the Generator protocol: what a vLLM adapter would implement
        def generate(self, prompts_ids, n, sampling):
            seen.update(prompts=prompts_ids, n=n, sampling=sampling)
            return [
                [Completion((7, sampling.eos_token_ids[0]), False), Completion((7, 7), True)]
                for _ in prompts_ids
            ]

    out = generate(
        model, tok, exs, 2, temperature=0.7, top_p=0.9, top_k=5, max_completion_length=2, engine=Engine()
    )
    s = seen["sampling"]
    assert (s.temperature, s.top_p, s.top_k, s.max_completion_length) == (0.7, 0.9, 5, 2)
    assert seen["prompts"] == [prompt_ids(tok, e) for e in exs] and seen["n"] == 2
    r = out[1][1]
    assert isinstance(r, Rollout) and r.truncated and r.response_ids == (7, 7)
    assert r.seq == (list(r.prompt_ids) + [7, 7], [0] * len(r.prompt_ids) + [1, 1])
    assert not out[0][0].truncated


def test_generate_greedy_end_to_end(tiny):
    model, tok, _ = tiny
    exs = arith_splits(0, 4, 6)["eval"][:2]
    a = generate(model, tok, exs, 1, greedy=True, max_completion_length=20)
    b = generate(model, tok, exs, 1, greedy=True, max_completion_length=20, batch_size=1)
    assert a == b  # batching and padding do not change the greedy path
    assert all(r.text == tok.decode(list(r.response_ids), skip_special_tokens=True) for g in a for r in g)


# --- the static-KV decoder (CUDA-graph replay on GPU: tests/llm/test_gpu.py) ----------------------


def test_static_decoder_samples_like_the_hf_forward(tiny):
    """Same generator, same draws: the static decoder's logits match the HF forward's so closely
    that the sampled tokens agree one for one (temperature, top-k and top-p on)."""
    model, tok, prompts = tiny
    s = Sampling(
        20,
        temperature=1.3,
        top_k=12,
        top_p=0.95,
        eos_token_ids=eos_ids(model, tok),
        pad_token_id=tok.pad_token_id,
    )

    def draw(fast):
        return HFGenerator(model, rng=torch.Generator().manual_seed(4), fast=fast).generate(prompts, 4, s)

    a = draw(True)
    assert a == draw(False)
    assert len({c.ids for g in a for c in g}) > 3  # really sampled: the draws differ


def _nudge(model, prompt, target, steps=3):
    """A few AdamW steps pushing ``target`` up after every prefix of ``prompt`` (changes greedy paths)."""
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
    ids = torch.tensor([prompt])
    for _ in range(steps):
        loss = -model(ids).logits.log_softmax(-1)[..., target].mean()
        loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("autocast", [False, True])
def test_cached_decoder_sees_optimizer_steps(tiny_dir, tiny, autocast):
    """The decoder (KV cache, and on GPU its graph) is kept across calls; its weight buffers (fused,
    in bf16 under autocast) are refreshed from the parameters at every call, so a step is never missed."""
    import contextlib

    import llm.rollout as rollout

    _, tok, prompts = tiny
    model = load_model(str(tiny_dir), "cpu")
    s = Sampling(12, greedy=True, eos_token_ids=(_never(tok),), pad_token_id=tok.pad_token_id)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else contextlib.nullcontext
    gen = HFGenerator(model)
    with ctx():
        before = gen.generate(prompts, 2, s)
        dec = rollout._DECODERS[model]
        assert dec.w[0]["qkv"].dtype == (torch.bfloat16 if autocast else torch.float32)  # bf16 under autocast
        assert gen.generate(prompts, 2, s) == before and rollout._DECODERS[model] is dec  # reused
    model.train()
    _nudge(model, prompts[0], target=tok.convert_tokens_to_ids("7"))
    model.eval()
    with ctx():
        after = gen.generate(prompts, 2, s)
        assert rollout._DECODERS[model] is dec  # the same cache and buffers ...
        rollout._DECODERS.clear()
        fresh = gen.generate(prompts, 2, s)
    assert after == fresh and after != before  # ... saw the new weights


def test_auto_batch_size_takes_the_whole_call_when_it_fits(tiny):
    from llm.rollout import auto_batch_size

    model, _, prompts = tiny
    assert auto_batch_size(model, 48, 40) == 48  # a few KB per sequence: everything fits
    assert auto_batch_size(model, 48, 40, frac=1e-12) == 1  # never below one sequence
    c = model.config
    per_seq = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 40 * 4 + 24 * c.vocab_size
    free = auto_batch_size(model, 10**9, 40) * per_seq / 0.5  # the budget it used, back out
    assert 10 * per_seq < free  # plausibly the machine's free memory, not a constant


def test_auto_batch_size_counts_the_kv_cache_in_the_compute_dtype(tiny, monkeypatch):
    """fp32 weights: an fp32 cache (4 bytes) without autocast, a bf16 one (2 bytes) under bf16
    autocast (an fp32 evaluation once planned a bf16 cache and ran out of GPU memory)."""
    from llm.rollout import auto_batch_size

    model, _, _ = tiny
    c = model.config
    kv = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 40
    monkeypatch.setattr("os.sysconf", lambda name: {"SC_AVPHYS_PAGES": 10**6}.get(name, 1))  # 1 MB free
    fp32 = auto_batch_size(model, 10**9, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = auto_batch_size(model, 10**9, 40)
    assert fp32 == int(0.5 * 10**6) // (kv * 4 + 24 * c.vocab_size)
    assert bf16 == int(0.5 * 10**6) // (kv * 2 + 24 * c.vocab_size) > fp32


def test_large_decoder_is_released_after_the_call(tiny, monkeypatch):
    import llm.rollout as rollout

    model, tok, prompts = tiny
    s = Sampling(6, greedy=True, eos_token_ids=eos_ids(model, tok), pad_token_id=tok.pad_token_id)
    a = HFGenerator(model).generate(prompts, 2, s)
    assert model in rollout._DECODERS  # a few KB: kept for the next call
    monkeypatch.setattr(rollout, "KEEP_FRACTION", 0.0)
    assert HFGenerator(model).generate(prompts, 2, s) == a
    assert model not in rollout._DECODERS  # over the share: freed after the call
