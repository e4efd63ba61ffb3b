"""Method registry: an SFT method name -> its per-token loss, built from ``toybench.losses``.

Names are ``kind`` or ``kind@value`` (the value is the method's one swept constant):

==================  =========================================================================
``none``            no SFT (RL starts from pi_base)
``sft``             standard SFT, ``sft_loss``
``entropy_sft@c``   ``entropy_sft_loss`` with coef c (default 0.1)
``gift@beta``       ``gift_loss`` with inverse temperature beta (default 20, the code default)
``curio``           ``curio_loss`` with the EMA teacher's ``entropy_guided_temperature``
``curio@alpha``     the same with alpha != 1
``pear_token``      ``pear_weights(level="token")`` times ``sft_loss`` (also ``pear_block``,
``pear_sequence``)  ``pear_sequence``); ``pear_token@self`` uses the current policy as pi_beta
``dft``             ``dft_loss``
==================  =========================================================================

This module only chooses and wires losses; it contains no loss formula of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from toybench import losses

__all__ = ["MethodSpec", "parse_method", "KINDS", "method_loss"]

KINDS = (
    "none",
    "sft",
    "entropy_sft",
    "gift",
    "curio",
    "pear_token",
    "pear_block",
    "pear_sequence",
    "dft",
)
_DEFAULTS = {"entropy_sft": 0.1, "gift": 20.0, "curio": 1.0}


@dataclass(frozen=True)
class MethodSpec:
    """A parsed method name: ``kind``, its swept constant ``value`` and PEAR's behaviour source."""

    name: str
    kind: str
    value: float | None = None
    pear_self: bool = False

    @property
    def needs_teacher(self) -> bool:
        return self.kind == "curio"

    @property
    def pear_level(self) -> str | None:
        return self.kind.removeprefix("pear_") if self.kind.startswith("pear_") else None


def parse_method(name: str) -> MethodSpec:
    """Parse ``kind`` or ``kind@value``; raise ValueError naming ``method`` when unknown.

    >>> parse_method("gift@2").value, parse_method("sft").kind
    (2.0, 'sft')
    """
    kind, _, arg = name.partition("@")
    if kind not in KINDS:
        raise ValueError(f"method {name!r} is unknown; kinds are {KINDS} (optionally kind@value)")
    if kind.startswith("pear_"):
        if arg not in ("", "self"):
            raise ValueError(f"method {name!r}: PEAR takes no value except '@self'")
        return MethodSpec(name, kind, None, pear_self=arg == "self")
    if arg == "":
        return MethodSpec(name, kind, _DEFAULTS.get(kind))
    if kind not in _DEFAULTS:
        raise ValueError(f"method {name!r}: {kind} takes no '@value'")
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(f"method {name!r}: value {arg!r} is not a number") from None
    if value < 0:
        raise ValueError(f"method {name!r}: value must be >= 0")
    return MethodSpec(name, kind, value)


def method_loss(
    spec: MethodSpec,
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    base_logits: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    behavior_logp: torch.Tensor | None = None,
    pear_block_size: int = 4,
    pear_gamma: float = 0.999,
    gift_smooth: float = 0.0,
) -> torch.Tensor:
    """Per-token SFT loss of a method, ``[B, T]`` (unreduced; reduce with ``losses.reduce``).

    Args:
      logits: [B, T, V] trained policy; targets, mask: [B, T].
      base_logits: [B, T, V] frozen pi_base (GIFT).
      teacher_logits: [B, T, V] EMA teacher (CurioSFT).
      behavior_logp: [B, T] log pi_beta of the data tokens (PEAR, unless ``@self``).
    """
    k = spec.kind
    if k == "none":
        raise ValueError("method 'none' has no SFT loss")
    if k == "sft":
        return losses.sft_loss(logits, targets)
    if k == "entropy_sft":
        return losses.entropy_sft_loss(logits, targets, coef=spec.value)
    if k == "gift":
        return losses.gift_loss(logits, targets, base_logits, beta=spec.value, smooth=gift_smooth)
    if k == "curio":
        tau = losses.entropy_guided_temperature(teacher_logits)
        return losses.curio_loss(logits, targets, teacher_logits, tau=tau, alpha=spec.value)
    if k == "dft":
        return losses.dft_loss(logits, targets)
    # PEAR: sg[G_t] * l_t with the token NLL as l_t.
    logp = losses.logprobs(logits, targets)  # (B, T)
    beh = logp.detach() if spec.pear_self else behavior_logp
    G = losses.pear_weights(
        logp, beh, mask, level=spec.pear_level, block_size=pear_block_size, gamma=pear_gamma
    )
    return G * losses.sft_loss(logits, targets)
