"""Fused chunked full-vocabulary losses: one pass per chunk, analytic logit gradients, no ``[N, V]``.

:func:`fused_token_loss` gives the same per-token values (and gradients w.r.t. hidden states and the
output embedding) as ``chunked_per_token(sft_token_fn(method, ...), ...)``, but per chunk of rows it
does ONE sweep over the vocabulary:

1. ``z = h @ W^T`` into a reused ``[R, V]`` buffer (``torch.matmul(..., out=)``);
2. row sub-blocks of ``block_rows`` rows turn ``z`` IN PLACE into the per-token statistics the
   loss needs (``log pi_y``; per method ``sum pi log pi``, the base's ``sum p'_base z``, the
   teacher's ``log q_y``) and then into the analytic logit gradient ``dl_t/dz_t = c_t dz'_t``,
   with at most two ``[block_rows, V]`` scratch buffers. One softmax kernel gives ``pi`` and,
   with two max reads, ``logsumexp(z) = max z - log max pi`` (``max pi >= 1/V``: no underflow),
   so no second exp sweep is needed (:func:`_softmax_lse_`; entropy-SFT, which needs ``log pi``
   itself, keeps the log-softmax). The per-row factor ``c_t`` (DFT's ``pi_y``, CurioSFT's ``w``,
   entropy-SFT's ``c``, backward's ``g_t``) is never swept over ``[R, V]``: it scales the
   ``[R, D]`` sides of the matmuls below;
3. ``dh = c * (dz' @ W)`` and ``dW += dz'^T (c * h)`` (two more matmuls), stashed for backward.

So no ``[R, V]`` tensor outlives its chunk and nothing V-wide is kept for backward: the stash is
``dh`` ``[N, D]`` and ``dW`` ``[V, D]`` (the size of ``W.grad`` itself). Forward + backward cost 3
matmuls per chunk (the checkpointed path of :mod:`llm.chunked` costs 4 plus autograd's elementwise
graph). Why not recompute logits in backward instead (reasoned, not measured): that adds a
matmul per chunk, two for GIFT/CurioSFT whose frozen logits would be rebuilt too, while the
stash costs one ``[V, D]`` buffer, the size of the gradient autograd must return anyway.

Backward gets ``g_t = dL/dl_t``. ``dh`` is scaled per row (exact). ``dW`` was summed over rows with
``g = 1``, so it is exact only when ``g`` is the same for every counted token (``token_mean``,
``sum``, ``constant`` reductions): then it is scaled by that scalar. Otherwise (PEAR weights,
``seq_mean``) backward recomputes the chunks with ``dz_t`` scaled by ``g_t`` (correct, slower). A
second backward through the same graph (``retain_graph=True``) also takes that recompute path.

Memory. ``chunk_size`` bounds the V-wide rows alive at once, for every method: GIFT needs the base
and the model logits side by side, so it runs ``chunk_size // 2`` rows per chunk; CurioSFT reduces
the teacher's logits to three numbers per token (temperature, ``log q_t(y_t)``, full entropy)
before the model's logits overwrite the same buffer. Scratch: up to two ``[block_rows, V]``
buffers (entropy-SFT: pi and pi log pi; GIFT: one) and CurioSFT's top-k pre-selection
(``256 x 2 sqrt(V top_k)``). Peak ~ ``(chunk_size + 2 * block_rows) * V`` floats + the stash.

Formulas (``L = log pi = log_softmax(z)``, ``H = -sum pi L``; gradients checked against
``theory.bandit``'s numpy closed forms in the tests):
  sft, pear      l = -log pi_y                                 dz = pi - e_y
  logp           l = log pi_y                                  dz = e_y - pi
  dft            l = -sg[pi_y] log pi_y                        dz = pi_y (pi - e_y)
  entropy_sft    l = -log pi_y - c H                           dz = c [pi (L + H + 1/c) - e_y / c]
  gift           l = -sum_k q_k L_k                            dz = pi - q
                   = -[(sum_k p's_k z_k - lse - p's_y L_y) / Z + q_y L_y]   (sum_k p's_k = 1)
                 q = p's e^{beta [k=y]} / Z, p's = (1-s) p_base + s/V, Z = 1 + (e^beta - 1) p's_y
  curio          l = -log pi_y + alpha/2 (log pi_y - log q_y)^2, dz = w (pi - e_y),
                 w = 1 - alpha (log pi_y - log q_y), q = softmax(zbar / tau)
Why statistics and not ``toybench.losses`` on the chunk: those functions build 3-5 ``[R, V]``
temporaries each (log-softmax, exp, products), which is exactly the time and memory this module
removes. The formulas above are therefore written a second time; what guards them against drifting
from ``toybench.losses`` is ``tests/llm/test_fused.py``: values and gradients equal the unfused
path in float64 for every method, with masks and aux inputs. CurioSFT's temperature is NOT
re-derived: ``toybench.losses.entropy_guided_temperature`` itself runs on the teacher's exact top-k
logits (found here by a block-max pre-selection instead of ``topk`` over all V), and only its
full-vocabulary entropy floor is applied here (that one needs all V logits): exactly, on the rows
where the bound ``H >= log sum_topk e^(z - max)`` cannot rule it out.

On CPU the temperature bisection (``[R, top_k]`` tensors) runs on one thread: on busy cores the
2-thread version spent most of CurioSFT's time waiting (see :func:`_one_thread`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from llm.chunked import flatten_rows, scatter_rows
from toybench import losses
from toybench.methods import Method

METHODS = ("sft", "pear", "entropy_sft", "gift", "curio", "dft", "logp")
#: rows per top-k pre-selection step (its scratch is ~2 sqrt(V top_k) floats per row)
TOPK_ROWS = 256


@dataclass(frozen=True)
class _Opts:
    method: str
    coef: float
    beta: float
    smooth: float
    alpha: float
    tau: tuple[int, float, float]  # CurioSFT's (top_k, floor, tau_min), the method's own constants
    rows: int  # rows per chunk (V-wide buffer rows)
    block: int  # rows per elementwise sub-block


def _acc(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _logits_into(out: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    if h.dtype == out.dtype and w.dtype == out.dtype:
        return torch.matmul(h, w.t(), out=out)
    return out.copy_(F.linear(h, w))


def _dot_rows(a: torch.Tensor, b: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """Row-wise inner products of two ``[b, V]`` tensors through the scratch ``tmp`` (2 passes;
    ``bmm`` on ``[b, 1, V] x [b, V, 1]`` measured 2-3x slower on CPU)."""
    return torch.mul(a, b, out=tmp).sum(-1)


@contextmanager
def _one_thread(device: torch.device):
    """Small ``[R, top_k]`` work on one CPU thread: with busy cores, 2-thread ops on 262k-element
    tensors mostly wait for each other (measured: the temperature bisection took ~2/3 of the
    CurioSFT time). No effect on accelerators."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x <= 0."""
    return torch.log(-torch.expm1(x))


def _softmax_(x: torch.Tensor) -> torch.Tensor:
    """softmax over the last dim, in place (one fused kernel; the row is read before it is written)."""
    return torch.ops.aten._softmax.out(x, -1, False, out=x)


def _log_softmax_(x: torch.Tensor) -> torch.Tensor:
    """log-softmax over the last dim, in place."""
    return torch.ops.aten._log_softmax.out(x, -1, False, out=x)


def _topk_values(u: torch.Tensor, k: int) -> torch.Tensor:
    """``torch.topk(u, k).values`` (sorted, same multiset of values) via block maxima.

    Split the first ``nb * bs`` entries of a row into ``nb >= k`` strided blocks of ``bs`` entries
    ``{j, j + nb, j + 2 nb, ...}``: the top-k entries all lie in the k blocks with the largest
    maxima or in the tail past ``nb * bs``. Two small topk calls (over ``nb`` block maxima and
    ``k bs`` candidates, balanced by ``bs = sqrt(V / k)``) replace one over V.
    """
    b, V = u.shape
    bs = int(math.sqrt(V / k))
    if bs < 2:
        return torch.topk(u, min(k, V), dim=-1).values
    nb = V // bs
    main = u[:, : nb * bs].reshape(b, bs, nb)
    idx = main.amax(1).topk(k, dim=-1).indices  # (b, k) blocks with the largest maxima
    cand = main.gather(2, idx[:, None, :].expand(b, bs, k)).reshape(b, bs * k)
    cand = torch.cat([cand, u[:, nb * bs :]], dim=1)
    return torch.topk(cand, k, dim=-1).values


def _curio_teacher(o: _Opts, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Teacher logits ``t`` [R, V] (destroyed) -> log q_t(y_t) at the entropy-guided temperature."""
    R, V = t.shape
    top_k, floor, tau_min = o.tau
    k = min(top_k, V)
    zk = torch.cat([_topk_values(t[i : i + TOPK_ROWS], k) for i in range(0, R, TOPK_ROWS)])  # (R, k)
    # toybench's own solver on the exact top-k logits; its floor rule needs the full-V entropy,
    # so it is switched off there (entropy >= 0 > -1) and applied here.
    with _one_thread(t.device):
        tau = losses.entropy_guided_temperature(zk[None], top_k=k, floor=-1.0)[0]
    # H_full >= -log max pi >= log sum_topk e^(z - max): the floor (H_full <= floor) can only bite
    # where that bound is <= floor; the exact full-vocabulary entropy is computed for those rows only.
    bound = torch.logsumexp(zk - zk[:, :1], dim=-1)
    near = (bound <= floor + 1e-4).nonzero().squeeze(1)
    if near.numel():
        lp = torch.log_softmax(t.index_select(0, near), dim=-1)
        H = -(lp.exp() * lp).sum(-1)
        tau[near] = torch.where(H <= floor, torch.full_like(H, tau_min), tau[near])
    # log q(y) = (z_y - m) / tau - log sum_k e^((z_k - m) / tau)
    inv = 1.0 / tau
    m = zk[:, 0]
    logq = (t.gather(1, y[:, None])[:, 0] - m) * inv
    for i in range(0, R, o.block):
        u, iv = t[i : i + o.block], inv[i : i + o.block, None]
        torch.addcmul(-m[i : i + o.block, None] * iv, u, iv, out=u).exp_()
        logq[i : i + o.block] -= u.sum(-1).log()
    return logq


def _softmax_lse_(z: torch.Tensor) -> torch.Tensor:
    """Logits ``z`` [b, V] -> ``pi`` in place (one softmax kernel); returns ``logsumexp(z)`` [b].

    ``max pi = e^(m - lse) = 1 / sum e^(z - m) >= 1 / V`` (``m`` the row max), so ``lse = m -
    log max pi`` never underflows: two cheap max reads replace the log-softmax + exp pair (a second
    transcendental sweep over ``[b, V]``)."""
    m = z.amax(-1)
    _softmax_(z)
    return m - z.amax(-1).log()


def _rows(
    o: _Opts,
    z: torch.Tensor,
    y: torch.Tensor,
    aux: torch.Tensor | None,
    logq: torch.Tensor | None,
    grad: bool,
    tmp: torch.Tensor | None,
    tmp2: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One sub-block: model logits ``z`` [b, V] -> (per-token values [b], row factors ``c`` [b] or None).

    If ``grad``, ``z`` becomes ``dz / c`` (``c`` None: 1): the factor is applied to the ``[b, D]``
    sides of the gradient matmuls (``dh`` rows, ``h`` rows for ``dW``), not in a sweep over
    ``[b, V]``. ``aux``: the base logits of the same rows (GIFT, destroyed); ``logq``: CurioSFT's
    log q_t(y_t); ``tmp``, ``tmp2``: [b, V] scratch.
    """
    V = z.shape[1]
    yc = y[:, None]
    m = o.method
    if m == "entropy_sft":  # coef > 0 here (coef 0 runs as sft)
        L = _log_softmax_(z)  # log pi
        logp = L.gather(1, yc)[:, 0]
        p = torch.exp(L, out=tmp)
        H = -_dot_rows(p, L, tmp2)
        val = -logp - o.coef * H
        if grad:  # dz = pi (1 + c (L + H)) - e_y = c [pi (L + H + 1/c) - e_y / c]
            L.add_((H + 1.0 / o.coef)[:, None]).mul_(p)
            L.scatter_add_(1, yc, torch.full_like(logp[:, None], -1.0 / o.coef))
            return val, torch.full_like(logp, o.coef)
        return val, None
    zy = z.gather(1, yc)[:, 0]
    if m == "gift":  # smoothed base distribution p's, in place in `aux`
        _softmax_(aux)
        if o.smooth > 0:
            aux.mul_(1.0 - o.smooth).add_(o.smooth / V)
        pz = _dot_rows(aux, z, tmp)  # sum_k p's_k z_k, read before z turns into pi
        lse = _softmax_lse_(z)
        logp = zy - lse
        py = aux.gather(1, yc)[:, 0]
        log_py = py.log()
        logZ = torch.logaddexp(_log1mexp(log_py), log_py + o.beta)
        invZ = torch.exp(-logZ)
        qy = torch.exp(log_py + o.beta - logZ)
        # sum_k q_k log pi_k, q = p's / Z off the target, q_y at the target; sum_k p's_k = 1
        val = -((pz - lse - py * logp) * invZ + qy * logp)
        if grad:  # dz = pi - q
            z.addcmul_(aux, -invZ[:, None])
            z.scatter_add_(1, yc, (py * invZ - qy)[:, None])
        return val, None
    # sft / pear / dft / curio / logp: dz = c (pi - e_y) with a per-row c
    logp = zy - _softmax_lse_(z)  # z is pi now
    if m in ("sft", "pear"):
        val, c = -logp, None
    elif m == "logp":
        val, c = logp, torch.full_like(logp, -1.0)
    elif m == "dft":
        py = logp.exp()
        val, c = -py * logp, py
    else:  # curio
        gap = logp - logq
        val, c = -logp + 0.5 * o.alpha * gap**2, 1.0 - o.alpha * gap
    if grad:
        z.scatter_add_(1, yc, torch.full_like(logp[:, None], -1.0))
    return val, c


def _grad_matmuls(z, fac, hc, w, dh, dw, first: bool) -> None:
    """``dh = (fac * z) @ W`` into ``dh`` and ``dw (+)= (fac * z)^T h``, the row factors applied on the
    ``[R, D]`` sides; ``first``: ``dw`` is written, not accumulated."""
    if dh is not None:
        if z.dtype == dh.dtype and w.dtype == dh.dtype:
            torch.matmul(z, w, out=dh)
        else:
            dh.copy_(z.to(w.dtype) @ w)
        if fac is not None:
            dh.mul_(fac[:, None])
    if dw is not None:
        hs = hc.to(dw.dtype) if fac is None else hc.to(dw.dtype) * fac[:, None].to(dw.dtype)
        zt = z.t().to(dw.dtype)
        if first:
            torch.matmul(zt, hs, out=dw)
        else:
            dw.addmm_(zt, hs)


def _run(
    o: _Opts,
    h: torch.Tensor,
    w: torch.Tensor,
    ah: torch.Tensor | None,
    aw: torch.Tensor | None,
    y: torch.Tensor,
    *,
    want_dh: bool,
    want_dw: bool,
    scale: torch.Tensor | None = None,
):
    """All chunks: per-token values [N] and (if asked) dh [N, D], dW [V, D] for dL/dl_t = scale or 1."""
    N, V = h.shape[0], w.shape[0]
    dt = _acc(h.dtype)
    vals = torch.empty(N, dtype=dt, device=h.device)
    grad = want_dh or want_dw
    dh = torch.empty(N, w.shape[1], dtype=dt, device=h.device) if want_dh else None
    dw, write_dw = None, False
    if want_dw:  # the first chunk writes it (no zero fill) unless a dtype cast is needed
        write_dw = w.dtype == _acc(w.dtype) and h.dtype == _acc(w.dtype) and N > 0
        dw = (torch.empty if write_dw else torch.zeros)(V, w.shape[1], dtype=_acc(w.dtype), device=w.device)
    R = max(1, min(o.rows, N))
    buf = torch.empty(R, V, dtype=dt, device=h.device)
    abuf = torch.empty(R, V, dtype=dt, device=h.device) if o.method == "gift" else None
    fac = torch.empty(R, dtype=dt, device=h.device)
    blk = min(o.block, R)
    n_tmp = {"entropy_sft": 2, "gift": 1}.get(o.method, 0)
    tmps = [torch.empty(blk, V, dtype=dt, device=h.device) for _ in range(n_tmp)] + [None, None]
    for s in range(0, N, R):
        e = min(s + R, N)
        hc, yc = h[s:e], y[s:e]
        z = buf[: e - s]
        logq = None
        if o.method == "curio":
            logq = _curio_teacher(o, _logits_into(z, ah[s:e], aw), yc)
        if o.method == "gift":
            _logits_into(abuf[: e - s], ah[s:e], aw)
        _logits_into(z, hc, w)
        scaled = scale is not None  # any row factor in this chunk
        for i in range(0, e - s, o.block):
            j = min(i + o.block, e - s)
            vals[s + i : s + j], c = _rows(
                o,
                z[i:j],
                yc[i:j],
                None if abuf is None else abuf[i:j],
                None if logq is None else logq[i:j],
                grad,
                *[None if x is None else x[: j - i] for x in tmps[:2]],
            )
            if c is None:
                fac[i:j].fill_(1.0)
            else:
                fac[i:j].copy_(c)
                scaled = True
        if scale is not None:
            fac[: e - s].mul_(scale[s:e])
        if grad:
            f = fac[: e - s] if scaled else None
            _grad_matmuls(z, f, hc, w, dh[s:e] if want_dh else None, dw, first=s == 0 and write_dw)
    return vals, dh, dw


class _Fused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, ah, aw, y, o):
        want_dh, want_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        vals, dh, dw = _run(o, h, w, ah, aw, y, want_dh=want_dh, want_dw=want_dw)
        ctx.o = o
        ctx.stash = [dh, dw]  # ctx attributes, not saved tensors: backward hands them on unshared
        ctx.save_for_backward(h, w, ah, aw, y)
        return vals

    @staticmethod
    def backward(ctx, g):
        h, w, ah, aw, y = ctx.saved_tensors
        dh, dw = ctx.stash
        ctx.stash = [None, None]
        want_dh, want_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (want_dh and dh is None) or (want_dw and dw is None):  # second backward: recompute all
            _, dh, dw = _run(ctx.o, h, w, ah, aw, y, want_dh=want_dh, want_dw=want_dw, scale=g)
            return dh, dw, None, None, None, None
        g = g.to(dh.dtype if dh is not None else dw.dtype)
        if dh is not None:
            dh = dh.mul_(g[:, None]).to(h.dtype)
        if dw is not None:
            if g.numel() == 0:
                dw = dw.zero_()
            elif bool((g == g[0]).all()):  # one device sync per backward, not per token
                dw = dw.mul_(g[0])
            else:
                dw = _run(ctx.o, h, w, ah, aw, y, want_dh=False, want_dw=True, scale=g)[2]
            dw = dw.to(w.dtype)
        return dh, dw, None, None, None, None


def _fused_options(method: str | Method) -> tuple[str, dict]:
    """A method spec (or ``"logp"``) -> the fused kind and its constants (``Method.fused_options``).

    Only the constants the fused kernels implement are accepted; others (entropy-SFT ``top_k`` /
    ``rho < 1``, non-default CurioSFT temperature constants) raise ValueError naming the spec, so a
    spec never silently runs with different constants than it says (use ``chunked_per_token``).
    Constants of other kinds are neutral placeholders the kernel of this kind never reads."""
    opts = {"entropy_coef": 0.0, "gift_beta": 0.0, "gift_smooth": 0.0, "curio_alpha": 0.0}
    opts |= {"curio_top_k": 1, "curio_floor": 0.0, "curio_tau_min": 1.0, "n_aux": 0}
    if method == "logp":
        return "logp", opts
    m = Method.parse(method)
    kind, own = m.fused_options()
    return kind, opts | own | {"n_aux": int(m.aux is not None)}


def fused_token_loss(
    method: str | Method,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    *,
    targets: torch.Tensor,
    aux: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    mask: torch.Tensor | None = None,
    chunk_size: int = 1024,
    block_rows: int = 32,
) -> torch.Tensor:
    """Per-token loss of ``method`` on ``hidden @ weight^T``, fused; ``[B, T]``, 0 where ``mask`` is 0.

    Same values and gradients as ``chunked_per_token(sft_token_fn(method), hidden, weight, aux=aux,
    token_args={"targets": targets}, mask=mask)``. ``method`` is a ``toybench.methods`` spec
    (``sft``, ``pear_*`` (the NLL), ``entropy_sft@c``, ``gift@beta,smooth=s``, ``curio,alpha=a``
    with the default temperature constants, ``dft``) or ``"logp"`` (log pi(y_t), for scoring).
    ``aux``: GIFT's frozen base / CurioSFT's teacher as one ``(hidden [B, T, D_a], weight [V, D_a])``
    pair. ``chunk_size``: V-wide rows alive at once; ``block_rows``: rows per in-cache elementwise
    sub-block.
    """
    method, opts = _fused_options(method)
    entropy_coef, gift_beta = opts["entropy_coef"], opts["gift_beta"]
    gift_smooth, curio_alpha = opts["gift_smooth"], opts["curio_alpha"]
    if len(aux) != opts["n_aux"]:
        raise ValueError(f"method {method!r} takes {opts['n_aux']} aux pair(s), got {len(aux)}")
    if entropy_coef < 0:
        raise ValueError(f"entropy_coef must be >= 0, got {entropy_coef}")
    if not gift_beta >= 0:
        raise ValueError(f"gift_beta must be >= 0, got {gift_beta}")
    if not 0.0 <= gift_smooth <= 1.0:
        raise ValueError(f"gift_smooth must lie in [0, 1], got {gift_smooth}")
    if curio_alpha < 0:
        raise ValueError(f"curio_alpha must be >= 0, got {curio_alpha}")
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    if method == "gift" and gift_beta == float("inf"):  # one-hot target: plain SFT
        method, aux = "sft", ()
    if method == "entropy_sft" and entropy_coef == 0:  # no entropy term: plain SFT
        method = "sft"
    rows, h, flat_aux, args = flatten_rows(
        hidden, weight, aux=aux, token_args={"targets": targets}, mask=mask, chunk_size=chunk_size
    )
    y = args["targets"].clamp(0, weight.shape[0] - 1)
    ah, aw = flat_aux[0] if flat_aux else (None, None)
    o = _Opts(
        method,
        float(entropy_coef),
        float(gift_beta),
        float(gift_smooth),
        float(curio_alpha),
        (int(opts["curio_top_k"]), float(opts["curio_floor"]), float(opts["curio_tau_min"])),
        max(1, chunk_size // 2) if method == "gift" else chunk_size,
        block_rows,
    )
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        vals = _Fused.apply(h, weight, ah, aw, y, o)
    else:
        with torch.no_grad():
            vals = _run(o, h, weight, ah, aw, y, want_dh=False, want_dw=False)[0]
    return scatter_rows(vals, rows, hidden.shape[:2])


__all__ = ["METHODS", "fused_token_loss"]
