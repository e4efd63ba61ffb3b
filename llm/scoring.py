"""Scoring token sequences with a causal LM: hidden states, chunked per-token values, held-out NLL.

``score`` runs the decoder once (or reuses ``hidden``) and applies a per-token function of
``toybench.losses`` / ``toybench.metrics`` to ``logits / temperature`` chunk by chunk
(:func:`llm.chunked.chunked_per_token`), so the ``[B, T, V]`` logits never exist in full. The
temperature is TRL's: GRPO samples at ``T`` and scores (old, current and reference log-probs, and
the entropy) under the same ``logits / T``, so the trained policy is the sampling policy.

:func:`sft_token_loss` is the position-wise SFT loss of a method (``Method.token_loss``; PEAR's weights
are applied after it by ``toybench.objectives.sft_per_token``) by one of :data:`LOSS_IMPLS` (``--loss-impl``):
``chunked`` (``score`` with ``toybench.losses`` unchanged: every method spec), ``fused``
(:func:`llm.fused.fused_token_loss`: one vocabulary sweep per chunk, analytic gradients; the specs
its kernels implement, see :func:`llm.objectives.fused_unsupported`) or ``naive`` (full
``[B, T, V]`` logits, for small vocabularies and checks).
"""

from __future__ import annotations

import torch

from llm.chunked import chunked_per_token, final_hidden, full_per_token, output_weight
from llm.config import LOSS_IMPLS
from llm.data import Example, collate, sft_ids
from llm.fused import fused_token_loss
from llm.objectives import logp_fn, sft_token_fn
from toybench.losses import reduce
from toybench.methods import Method


def hidden_states(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Final hidden states of the positions that predict ``targets``: ``[B, T-1, D]``."""
    return final_hidden(model, batch["input_ids"], batch["attention_mask"])[:, :-1]


def tempered(fn, temperature: float):
    """``fn`` applied to every logits argument divided by ``temperature`` (``fn`` itself at 1)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if temperature == 1.0:
        return fn
    return lambda *logits, **kw: fn(*(z / temperature for z in logits), **kw)


def score(
    model,
    batch: dict[str, torch.Tensor],
    fn,
    aux_models=(),
    chunk_size: int = 1024,
    with_targets: bool = True,
    hidden: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-token ``fn(logits / temperature, ...)`` over ``batch``, ``[B, T-1]`` (0 off the mask).

    ``aux_models`` (frozen) contribute chunk-aligned logits (divided by the same temperature); pass
    ``hidden`` to reuse a forward.
    """
    h = hidden_states(model, batch) if hidden is None else hidden  # (B, T-1, D)
    aux = aux_pairs(aux_models, batch)
    token_args = {"targets": batch["targets"]} if with_targets else {}
    return chunked_per_token(
        tempered(fn, temperature),
        h,
        output_weight(model),
        aux=aux,
        token_args=token_args,
        mask=batch["loss_mask"],
        chunk_size=chunk_size,
    )


def aux_pairs(aux_models, batch: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(hidden [B, T-1, D_a], output weight)`` of each frozen model on ``batch``, without gradient."""
    with torch.no_grad():
        return [(hidden_states(m, batch), output_weight(m)) for m in aux_models]


def sft_token_loss(
    model,
    batch: dict[str, torch.Tensor],
    method: str | Method,
    aux_models=(),
    chunk_size: int = 1024,
    impl: str = "chunked",
) -> torch.Tensor:
    """Position-wise SFT loss of ``method`` over ``batch``, ``[B, T-1]`` (0 off the mask), by ``impl``.

    The three implementations give the same values and gradients up to float rounding (tested for
    sft, gift, curio, entropy_sft); ``aux_models`` are GIFT's frozen base / CurioSFT's teacher.
    """
    if impl == "liger":  # --use-liger-kernel on an NLL method (llm.liger; the sft loop picks it)
        from llm.liger import liger_token_nll

        return liger_token_nll(model, batch, chunk_size)
    if impl == "chunked":
        return score(model, batch, sft_token_fn(method), aux_models=aux_models, chunk_size=chunk_size)
    if impl not in LOSS_IMPLS:
        raise ValueError(f"impl must be one of {LOSS_IMPLS}, got {impl!r}")
    h, w, aux, mask = (
        hidden_states(model, batch),
        output_weight(model),
        aux_pairs(aux_models, batch),
        batch["loss_mask"],
    )
    if impl == "fused":
        return fused_token_loss(
            method, h, w, targets=batch["targets"], aux=aux, mask=mask, chunk_size=chunk_size
        )
    per_token = full_per_token(sft_token_fn(method), h, w, aux=aux, token_args={"targets": batch["targets"]})
    return per_token * mask


@torch.no_grad()
def heldout_sft_loss(
    model, tok, examples: list[Example], chunk_size: int, batch_size: int = 32, enable_thinking=False
):
    """Token-mean NLL of the expert responses of ``examples`` (the decoupling probe)."""
    device = next(model.parameters()).device
    tot, cnt = 0.0, 0.0
    for s in range(0, len(examples), batch_size):
        batch = collate(
            [sft_ids(tok, ex, enable_thinking) for ex in examples[s : s + batch_size]], tok.pad_token_id
        )
        batch = {k: v.to(device) for k, v in batch.items()}
        logp = score(model, batch, logp_fn, chunk_size=chunk_size)
        tot += float(reduce(-logp, batch["loss_mask"], "sum"))
        cnt += float(batch["loss_mask"].sum())
    return tot / max(cnt, 1.0)


__all__ = [
    "LOSS_IMPLS",
    "aux_pairs",
    "heldout_sft_loss",
    "hidden_states",
    "score",
    "sft_token_loss",
    "tempered",
]
