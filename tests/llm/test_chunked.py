"""Every loss through the chunked wrapper equals the unchunked loss, in value and gradient."""

from __future__ import annotations

import pytest
import torch

from llm.chunked import chunked_per_token, full_per_token
from llm.objectives import entropy_fn, logp_fn, sft_token_fn
from toybench.losses import reduce

B, T, D, V = 3, 5, 8, 11


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, T, D, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, D, generator=g, dtype=torch.float64, requires_grad=True)
    hb = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    wb = torch.randn(V, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (B, T), generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.3).double()
    mask[0, 0] = 1.0
    return h, w, hb, wb, y, mask


CASES = [
    ("sft", sft_token_fn("sft"), 0),
    ("entropy_sft", sft_token_fn("entropy_sft@0.3"), 0),
    ("gift", sft_token_fn("gift@2,smooth=0.05"), 1),
    ("curio", sft_token_fn("curio"), 1),
    ("dft", sft_token_fn("dft"), 0),
    ("logp", logp_fn, 0),
]


@pytest.mark.parametrize("name,fn,n_aux", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_chunked_equals_full(name, fn, n_aux, chunk):
    h, w, hb, wb, y, mask = _inputs()
    aux = [(hb, wb)] * n_aux
    full = full_per_token(fn, h, w, aux=aux, token_args={"targets": y})
    lf = reduce(full, mask, "token_mean")
    gh_f, gw_f = torch.autograd.grad(lf, (h, w))
    ch = chunked_per_token(fn, h, w, aux=aux, token_args={"targets": y}, mask=mask, chunk_size=chunk)
    lc = reduce(ch, mask, "token_mean")
    gh_c, gw_c = torch.autograd.grad(lc, (h, w))
    m = mask.bool()
    torch.testing.assert_close(ch[m], full[m], rtol=1e-10, atol=1e-10)
    assert torch.all(ch[~m] == 0)
    torch.testing.assert_close(gh_c, gh_f, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(gw_c, gw_f, rtol=1e-9, atol=1e-10)
    assert gw_f.abs().sum() > 0  # the check can fail: gradients are not trivially zero


def test_chunked_entropy_and_no_mask():
    h, w, *_ = _inputs(1)
    fn = entropy_fn(0.7)
    ch = chunked_per_token(fn, h, w, chunk_size=2)
    torch.testing.assert_close(ch, full_per_token(fn, h, w))


def test_chunked_detects_wrong_aux_and_shapes():
    h, w, hb, wb, y, mask = _inputs()
    with pytest.raises(ValueError, match="weight"):
        chunked_per_token(logp_fn, h, w[:, :3], token_args={"targets": y})
    with pytest.raises(ValueError, match="targets"):
        chunked_per_token(logp_fn, h, w, token_args={"targets": y[:, :2]})
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_per_token(logp_fn, h, w, token_args={"targets": y}, chunk_size=0)
    with pytest.raises(ValueError, match="mask"):
        chunked_per_token(logp_fn, h, w, token_args={"targets": y}, mask=mask[:, :2])


def test_masked_rows_never_leak_nan():
    h, w, _, _, y, mask = _inputs()
    h = h.detach().clone()
    h[~mask.bool()] = float("nan")
    h.requires_grad_(True)
    out = chunked_per_token(logp_fn, h, w, token_args={"targets": y}, mask=mask, chunk_size=3)
    loss = reduce(out, mask, "sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(h.grad).all()
