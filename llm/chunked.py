"""Chunked-vocabulary losses: hidden states -> logits chunk by chunk, recomputed in backward.

At V = 151,936 a full ``[B, T, V]`` fp32 logits tensor (and its gradient) does not fit: 8,192 tokens
already take 5 GB per copy. :func:`chunked_per_token` flattens the ``B*T`` token rows, and for each
chunk of ``chunk_size`` rows computes ``logits = hidden @ W^T`` in float32 and applies an UNCHANGED
per-token function of ``toybench.losses`` (``fn(logits[1, N, V], *aux_logits, **token_args[1, N])
-> [1, N]``). Each chunk runs under ``torch.utils.checkpoint`` so only its inputs are kept and its
logits are rebuilt in backward: peak memory is ``O(chunk_size * V)`` whatever ``B * T`` is.

Frozen models (GIFT's base, CurioSFT's EMA teacher) enter as ``aux`` pairs ``(hidden, weight)``:
their logits are produced for the same rows of the same chunk under ``no_grad`` (chunk-aligned), so
they never exist in full either. ``mask`` (optional) drops rows that do not count (prompt, padding)
before any logits are made; those positions get the value 0.

Nothing here knows about any particular loss: the losses stay in ``toybench.losses``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

TokenFn = Callable[..., torch.Tensor]


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits -> float32 (float32/float64 kept, so float64 tests stay exact)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _chunk_value(
    fn: TokenFn, names: tuple[str, ...], n_aux: int, h: torch.Tensor, w: torch.Tensor, *rest: torch.Tensor
) -> torch.Tensor:
    """Per-token values of one chunk: rows ``h`` (N, D), weights ``w`` (V, D) -> (N,)."""
    logits = _upcast(F.linear(h, w))[None]  # (1, N, V)
    aux_logits = []
    for i in range(n_aux):
        with torch.no_grad():
            aux_logits.append(_upcast(F.linear(rest[2 * i], rest[2 * i + 1]))[None])  # (1, N, V)
    token_args = {k: v[None] for k, v in zip(names, rest[2 * n_aux :])}  # (1, N) each
    out = fn(logits, *aux_logits, **token_args)  # (1, N)
    if out.shape != logits.shape[:2]:
        raise ValueError(
            f"fn must return per-token values of shape {tuple(logits.shape[:2])}, got {tuple(out.shape)}"
        )
    return out[0]


def flatten_rows(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    *,
    aux: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    token_args: Mapping[str, torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
    chunk_size: int = 1024,
):
    """Check the wrapper's inputs and keep the counted rows: ``(rows, h [N, D], aux, token_args)``.

    ``rows`` is None (all ``B*T`` rows) or the ``(N,)`` indices where ``mask`` is nonzero; ``aux``
    comes back as detached ``[(h_a [N, D_a], w_a)]``, ``token_args`` as ``{name: [N]}``. Shared
    with :mod:`llm.fused`.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, T, D], got shape {tuple(hidden.shape)}")
    B, T, D = hidden.shape
    if weight.dim() != 2 or weight.shape[1] != D:
        raise ValueError(f"weight must be [V, {D}], got shape {tuple(weight.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    token_args = dict(token_args or {})
    for k, v in token_args.items():
        if v.shape[:2] != (B, T):
            raise ValueError(f"token_args[{k!r}] must be [B, T] = {(B, T)}, got {tuple(v.shape)}")
    for i, (h_a, w_a) in enumerate(aux):
        if h_a.shape[:2] != (B, T) or w_a.shape[0] != weight.shape[0] or w_a.shape[1] != h_a.shape[-1]:
            raise ValueError(
                f"aux[{i}] must be ([B, T, D_a], [V, D_a]), got {tuple(h_a.shape)}, {tuple(w_a.shape)}"
            )
    rows = None
    if mask is not None:
        if mask.shape != (B, T):
            raise ValueError(f"mask must be [B, T] = {(B, T)}, got {tuple(mask.shape)}")
        rows = mask.reshape(-1).nonzero().squeeze(1)  # (N,) one sync per call, not per token

    def flat(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(B * T, *x.shape[2:])
        return x if rows is None else x.index_select(0, rows)

    aux_flat = [(flat(h_a.detach()), w_a.detach()) for h_a, w_a in aux]
    return rows, flat(hidden), aux_flat, {k: flat(v) for k, v in token_args.items()}


def scatter_rows(values: torch.Tensor, rows: torch.Tensor | None, bt: Sequence[int]) -> torch.Tensor:
    """Per-row values ``(N,)`` back to ``[B, T]``, 0 at rows not in ``rows`` (differentiable)."""
    B, T = bt
    if rows is None:
        return values.view(B, T)
    out = values.new_zeros(B * T)
    return out.index_put((rows,), values).view(B, T)


def chunked_per_token(
    fn: TokenFn,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    *,
    aux: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    token_args: Mapping[str, torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Per-token values ``fn(hidden @ weight^T, ...)`` computed ``chunk_size`` tokens at a time.

    Equals ``fn(logits, *[h_a @ w_a^T for (h_a, w_a) in aux], **token_args)`` on the full tensors
    (value and gradient, up to float rounding) at positions where ``mask`` is 1, and 0 elsewhere.

    Args:
        fn: a per-token function of ``toybench.losses`` (or a lambda binding its scalar options).
        hidden: final hidden states ``[B, T, D]`` (trainable path).
        weight: output embedding ``[V, D]``.
        aux: frozen ``(hidden [B, T, D_a], weight [V, D_a])`` pairs; their logits are passed to
            ``fn`` positionally after ``logits``, computed without gradient.
        token_args: ``[B, T]`` tensors passed to ``fn`` by keyword (e.g. ``targets``).
        mask: ``[B, T]``; rows with 0 are skipped (value 0). None = all rows.
        chunk_size: rows per chunk.

    Returns:
        ``[B, T]`` float32 per-token values.
    """
    rows, h, aux_pairs, token_args = flatten_rows(
        hidden, weight, aux=aux, token_args=token_args, mask=mask, chunk_size=chunk_size
    )
    aux_flat = [t for pair in aux_pairs for t in pair]
    names = tuple(token_args)
    args_flat = list(token_args.values())
    n = h.shape[0]
    pieces = []
    for s in range(0, n, chunk_size):
        e = min(s + chunk_size, n)
        ins = [h[s:e], weight]
        for i in range(len(aux)):
            ins += [aux_flat[2 * i][s:e], aux_flat[2 * i + 1]]
        ins += [a[s:e] for a in args_flat]
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            pieces.append(checkpoint(_chunk_value, fn, names, len(aux), *ins, use_reentrant=False))
        else:
            pieces.append(_chunk_value(fn, names, len(aux), *ins))
    values = torch.cat(pieces) if pieces else _upcast(hidden.new_zeros(0))  # (N,)
    return scatter_rows(values, rows, hidden.shape[:2])


def full_per_token(
    fn: TokenFn,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    *,
    aux: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    token_args: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The naive reference: full ``[B, T, V]`` logits, then ``fn`` (for tests and benchmarks only)."""
    logits = _upcast(F.linear(hidden, weight))  # (B, T, V)
    with torch.no_grad():
        aux_logits = [_upcast(F.linear(h_a, w_a)) for h_a, w_a in aux]  # (B, T, V) each
    return fn(logits, *aux_logits, **dict(token_args or {}))


def final_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last-layer hidden states (after the final norm) of a HF causal LM: ``[B, T, D]``.

    Runs the decoder only, so the ``[B, T, V]`` logits are never built.
    """
    out = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state  # (B, T, D)


def output_weight(model) -> torch.Tensor:
    """The output embedding ``[V, D]`` (tied or not); models with an lm_head bias are rejected."""
    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ValueError("output embedding with a bias is not supported by the chunked losses")
    return head.weight


__all__ = [
    "chunked_per_token",
    "final_hidden",
    "flatten_rows",
    "full_per_token",
    "output_weight",
    "scatter_rows",
]
