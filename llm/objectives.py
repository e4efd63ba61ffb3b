"""Per-token objectives of the LLM loops: ``toybench.losses`` functions bound to a run's options.

Nothing is re-implemented here: each entry is a closure over the scalar options of ONE function of
``toybench.losses`` (or ``toybench.metrics``), in the form ``fn(logits, *aux_logits, targets=...)``
that :func:`llm.chunked.chunked_per_token` applies chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from toybench import losses, metrics

TokenFn = Callable[..., torch.Tensor]

#: SFT methods needing a frozen model's logits (chunk-aligned ``aux``): which copy.
AUX_MODEL = {"gift": "base", "curio": "teacher"}


def sft_token_fn(
    method: str,
    *,
    entropy_coef: float = 0.1,
    gift_beta: float = 5.0,
    gift_smooth: float = 0.0,
    curio_alpha: float = 1.0,
) -> TokenFn:
    """The per-token SFT loss of ``method`` (PEAR: the NLL, weighted outside by ``pear_weights``)."""
    if method in ("sft", "pear"):
        return lambda z, targets: losses.sft_loss(z, targets)
    if method == "entropy_sft":
        return lambda z, targets: losses.entropy_sft_loss(z, targets, coef=entropy_coef)
    if method == "gift":
        return lambda z, z_base, targets: losses.gift_loss(
            z, targets, z_base, beta=gift_beta, smooth=gift_smooth
        )
    if method == "curio":

        def curio(z: torch.Tensor, z_teacher: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            tau = losses.entropy_guided_temperature(z_teacher)  # (1, N) per-token teacher temperature
            return losses.curio_loss(z, targets, z_teacher, tau, alpha=curio_alpha)

        return curio
    if method == "dft":
        return lambda z, targets: losses.dft_loss(z, targets)
    raise ValueError(f"method must be one of sft, entropy_sft, gift, curio, pear, dft; got {method!r}")


def logp_fn(z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log pi(y_t) of the given tokens (``toybench.losses.logprobs``)."""
    return losses.logprobs(z, targets)


def entropy_fn(temperature: float = 1.0) -> TokenFn:
    """Per-token entropy at the sampling temperature (``toybench.metrics.entropy``)."""
    return lambda z: metrics.entropy(z, temperature=temperature)


__all__ = ["AUX_MODEL", "entropy_fn", "logp_fn", "sft_token_fn"]
