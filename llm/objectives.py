"""Per-token objectives of the LLM loops: ``toybench.losses`` functions bound to a run's options.

Nothing is re-implemented here: each entry is a closure over ONE ``toybench.methods.Method`` or
function of ``toybench.losses`` (or ``toybench.metrics``), in the form
``fn(logits, *aux_logits, targets=...)`` that :func:`llm.chunked.chunked_per_token` applies chunk by chunk.
What a method needs and which fused kernel runs it are the method family's facts (``toybench.methods``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from toybench import losses, metrics
from toybench.methods import Method

TokenFn = Callable[..., torch.Tensor]


def sft_token_fn(method: str | Method) -> TokenFn:
    """The position-wise SFT loss of ``method`` (``Method.token_loss``; PEAR: the NLL, weighted
    outside by ``Method.weights``), with the frozen copy's logits (``method.aux``) as second input."""
    method = Method.parse(method)
    if method.kind == "none":
        raise ValueError("method 'none' has no SFT loss")
    if method.couples_rows:
        raise ValueError(
            f"method {str(method)!r}: its loss couples the rows of a batch (rho < 1), not chunks of it"
        )
    if method.aux == "base":
        return lambda z, z_base, targets: method.token_loss(z, targets, base_logits=z_base)
    if method.aux == "teacher":
        return lambda z, z_teacher, targets: method.token_loss(z, targets, teacher_logits=z_teacher)
    return lambda z, targets: method.token_loss(z, targets)


def logp_fn(z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log pi(y_t) of the given tokens (``toybench.losses.logprobs``)."""
    return losses.logprobs(z, targets)


def entropy_fn(temperature: float = 1.0) -> TokenFn:
    """Per-token entropy at the sampling temperature (``toybench.metrics.entropy``)."""
    return lambda z: metrics.entropy(z, temperature=temperature)


def fused_unsupported(method: str | Method) -> str | None:
    """Why ``--loss-impl fused`` cannot run ``method`` (its kernels implement only some constants:
    no entropy-SFT ``top_k``/``rho``, CurioSFT's default temperature constants), or None when it can.
    The method's family says so (``Method.fused_options``, which :func:`llm.fused.fused_token_loss`
    asks too); nothing is computed."""
    try:
        Method.parse(method).fused_options()
    except ValueError as e:
        return str(e)
    return None


__all__ = ["entropy_fn", "fused_unsupported", "logp_fn", "sft_token_fn"]
