"""The fused losses equal the unfused chunked path (toybench.losses) in value and gradient, float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm.chunked import chunked_per_token
from llm.fused import _topk_values, fused_token_loss
from llm.objectives import logp_fn, sft_token_fn
from theory import bandit
from toybench.losses import reduce

B, T, D, V = 3, 5, 8, 97


def _inputs(seed: int = 0, v: int = V, d: int = D):
    g = torch.Generator().manual_seed(seed)
    h = (2 * torch.randn(B, T, d, generator=g, dtype=torch.float64)).requires_grad_(True)
    w = torch.randn(v, d, generator=g, dtype=torch.float64).requires_grad_(True)
    hb = 2 * torch.randn(B, T, d, generator=g, dtype=torch.float64)
    wb = torch.randn(v, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, v, (B, T), generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.3).double()
    mask[0, 0] = 1.0
    return h, w, hb, wb, y, mask


# method specs (toybench.methods spelling), each run fused and unfused
CASES = [
    "sft",
    "pear_token",
    "entropy_sft@0.3",
    "gift@2",
    "gift@2,smooth=0.05",
    "gift@0,smooth=1",
    "gift@20",
    "gift@inf",
    "curio",
    "curio,alpha=0.4",
    "dft",
    "logp",
]
IDS = CASES


def _unfused(method):
    return logp_fn if method == "logp" else sft_token_fn(method)


def _both(method, h, w, hb, wb, y, mask, chunk, block=4):
    aux = [(hb, wb)] if method.startswith(("gift", "curio")) else []
    ref = chunked_per_token(
        _unfused(method), h, w, aux=aux, token_args={"targets": y}, mask=mask, chunk_size=chunk
    )
    got = fused_token_loss(method, h, w, targets=y, aux=aux, mask=mask, chunk_size=chunk, block_rows=block)
    return ref, got


@pytest.mark.parametrize("method", CASES, ids=IDS)
@pytest.mark.parametrize("chunk", [1, 4, 1000])
@pytest.mark.parametrize("mode", ["token_mean", "weighted"])
def test_fused_equals_unfused(method, chunk, mode):
    h, w, hb, wb, y, mask = _inputs()
    ref, got = _both(method, h, w, hb, wb, y, mask, chunk, block=3)
    m = mask.bool()
    torch.testing.assert_close(got[m], ref[m], rtol=1e-10, atol=1e-10)
    assert torch.all(got[~m] == 0)
    # token_mean: the same dL/dl_t for every token (stashed dW path); weighted: PEAR-like per-token
    # weights and seq_mean (the recompute path)
    wts = torch.ones(B, T, dtype=torch.float64)
    red = "token_mean"
    if mode == "weighted":
        wts = torch.rand(B, T, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        red = "seq_mean"
    g_ref = torch.autograd.grad(reduce(ref * wts, mask, red), (h, w))
    g_got = torch.autograd.grad(reduce(got * wts, mask, red), (h, w))
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    assert g_ref[1].abs().sum() > 0  # the check can fail: gradients are not trivially zero


@pytest.mark.parametrize("method", ["entropy_sft", "gift", "curio", "dft"])
def test_fused_without_mask_and_grad_subsets(method):
    h, w, hb, wb, y, _ = _inputs(2)
    aux = [(hb, wb)] if method.startswith(("gift", "curio")) else []
    ref = chunked_per_token(sft_token_fn(method), h, w, aux=aux, token_args={"targets": y}, chunk_size=4)
    for need_h, need_w in ((True, False), (False, True)):
        hh, ww = h.detach().requires_grad_(need_h), w.detach().requires_grad_(need_w)
        got = fused_token_loss(method, hh, ww, targets=y, aux=aux, chunk_size=4)
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
        leaf = hh if need_h else ww
        (g,) = torch.autograd.grad(got.sum(), leaf)
        (g_ref,) = torch.autograd.grad(ref.sum(), h if need_h else w, retain_graph=True)
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-11)
    with torch.no_grad():
        torch.testing.assert_close(fused_token_loss(method, h, w, targets=y, aux=aux), ref)


def test_fused_curio_large_vocab_uses_block_topk():
    """V >= 8 * top_k: the teacher's top-512 logits come from the block-max pre-selection."""
    h, w, hb, wb, y, mask = _inputs(3, v=8500, d=4)
    ref, got = _both("curio", h, w, hb, wb, y, mask, chunk=6)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    g_ref = torch.autograd.grad(reduce(ref, mask, "token_mean"), (h, w))
    g_got = torch.autograd.grad(reduce(got, mask, "token_mean"), (h, w))
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("k", [1, 7, 512])
def test_block_topk_equals_topk(k):
    g = torch.Generator().manual_seed(k)
    u = torch.randn(5, 9001, generator=g, dtype=torch.float64)
    u[1] = torch.round(u[1] * 2)  # many ties
    u[2, -3:] = 50.0  # the largest values in the tail past the last whole block
    torch.testing.assert_close(_topk_values(u, k), torch.topk(u, k, dim=-1).values, rtol=0, atol=0)


def test_double_backward_retain_graph_recomputes():
    h, w, hb, wb, y, mask = _inputs(4)
    got = fused_token_loss("gift", h, w, targets=y, aux=[(hb, wb)], mask=mask, chunk_size=4)
    loss = reduce(got, mask, "token_mean")
    g1 = torch.autograd.grad(loss, (h, w), retain_graph=True)
    g2 = torch.autograd.grad(loss, (h, w))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_masked_rows_never_leak_nan():
    h, w, _, _, y, mask = _inputs()
    h = h.detach().clone()
    h[~mask.bool()] = float("nan")
    h.requires_grad_(True)
    out = fused_token_loss("entropy_sft", h, w, targets=y, mask=mask, chunk_size=3)
    loss = reduce(out, mask, "sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(h.grad).all() and torch.isfinite(w.grad).all()


def _logit_grad(method, z, y, zb=None):
    """dl/dz of one row per position via the fused path with W = I (hidden = logits)."""
    n, v = z.shape
    h = torch.tensor(z, dtype=torch.float64)[None].requires_grad_(True)
    eye = torch.eye(v, dtype=torch.float64)
    aux = [(torch.tensor(zb, dtype=torch.float64)[None], eye)] if zb is not None else []
    out = fused_token_loss(method, h, eye, targets=torch.tensor(y)[None], aux=aux, chunk_size=2)
    (g,) = torch.autograd.grad(out.sum(), h)
    return g[0].numpy()


def test_logit_gradients_match_bandit_closed_forms():
    rng = np.random.default_rng(0)
    z, zb = rng.normal(size=(5, 13)) * 2, rng.normal(size=(5, 13)) * 2
    y = rng.integers(0, 13, size=5)
    np.testing.assert_allclose(_logit_grad("sft", z, y), bandit.sft_token_grad(z, y), atol=1e-12)
    np.testing.assert_allclose(_logit_grad("dft", z, y), bandit.grad_dft(z, y), atol=1e-12)
    np.testing.assert_allclose(
        _logit_grad("entropy_sft@0.7", z, y), bandit.grad_entropy_sft(z, y, 0.7), atol=1e-12
    )
    np.testing.assert_allclose(
        _logit_grad("gift@1.5,smooth=0.1", z, y, zb),
        bandit.grad_gift(z, y, zb, 1.5, 0.1),
        atol=1e-12,
    )
    from toybench.losses import entropy_guided_temperature

    tau = entropy_guided_temperature(torch.tensor(zb)[None])[0].numpy()
    np.testing.assert_allclose(
        _logit_grad("curio,alpha=0.8", z, y, zb), bandit.grad_curio(z, y, zb, tau, 0.8), atol=1e-12
    )


def test_fused_float32_close_to_unfused():
    h, w, hb, wb, y, mask = _inputs(5)
    h32, w32 = h.detach().float().requires_grad_(True), w.detach().float().requires_grad_(True)
    aux = [(hb.float(), wb.float())]
    ref = chunked_per_token(sft_token_fn("gift"), h32, w32, aux=aux, token_args={"targets": y}, mask=mask)
    got = fused_token_loss("gift", h32, w32, targets=y, aux=aux, mask=mask)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["sft", "gift@3", "curio", "entropy_sft@0.2", "dft"])
def test_fused_bfloat16_several_chunks_close_to_float32(method):
    """bf16 hidden / weight over several chunks: float32 accumulation, gradients in the input dtype."""
    h, w, hb, wb, y, mask = _inputs(6)
    out = []
    for dt in (torch.float32, torch.bfloat16):
        hh, ww = h.detach().to(dt).requires_grad_(True), w.detach().to(dt).requires_grad_(True)
        aux = [(hb.to(dt), wb.to(dt))] if method.startswith(("gift", "curio")) else []
        got = fused_token_loss(method, hh, ww, targets=y, aux=aux, mask=mask, chunk_size=4, block_rows=3)
        reduce(got, mask, "token_mean").backward()
        assert hh.grad.dtype == dt and ww.grad.dtype == dt
        out.append((got.float(), hh.grad.float(), ww.grad.float()))
    for a, b in zip(*out):
        torch.testing.assert_close(b, a, rtol=0.05, atol=0.05 * float(a.abs().max()))


def test_fused_bad_inputs():
    h, w, hb, wb, y, mask = _inputs()
    with pytest.raises(ValueError, match="method"):
        fused_token_loss("nope", h, w, targets=y)
    with pytest.raises(ValueError, match="aux"):
        fused_token_loss("gift", h, w, targets=y)
    with pytest.raises(ValueError, match="aux"):
        fused_token_loss("sft", h, w, targets=y, aux=[(hb, wb)])
    with pytest.raises(ValueError, match="gift@-1"):
        fused_token_loss("gift@-1", h, w, targets=y, aux=[(hb, wb)])
    with pytest.raises(ValueError, match="top_k"):
        fused_token_loss("entropy_sft@0.1,top_k=3", h, w, targets=y)
    with pytest.raises(ValueError, match="temperature constants"):
        fused_token_loss("curio,tau_max=2", h, w, targets=y, aux=[(hb, wb)])
    with pytest.raises(ValueError, match="weight"):
        fused_token_loss("sft", h, w[:, :3], targets=y)
    with pytest.raises(ValueError, match="mask"):
        fused_token_loss("sft", h, w, targets=y, mask=mask[:, :2])
    with pytest.raises(ValueError, match="chunk_size"):
        fused_token_loss("sft", h, w, targets=y, chunk_size=0)


def test_fused_curio_floor_rule_on_peaked_teacher():
    """Teacher rows with full-vocabulary entropy <= 0.03 get tau_min (the exact-entropy fallback)."""
    h, w, hb, wb, y, mask = _inputs(6)
    hb = hb * torch.linspace(0.5, 40.0, T, dtype=torch.float64)[:, None]  # flat to one-hot teachers
    p = torch.softmax(hb @ wb.T, -1)
    H = -(p * p.clamp_min(1e-300).log()).sum(-1)
    assert (H <= 0.03).any() and (H > 0.03).any()
    ref, got = _both("curio", h, w, hb, wb, y, None, chunk=4)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
