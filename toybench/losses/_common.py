"""The shared pieces of the losses: the constants (modes, levels, kinds) and the argument checks and
numeric helpers every loss calls (shapes, finite knobs, targets, float upcast)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

REDUCE_MODES = ("token_mean", "seq_mean", "constant", "sum")
PEAR_LEVELS = ("token", "block", "sequence")
KL_KINDS = ("k1", "k2", "k3")
PRIFT_KINDS = ("prob", "mass")


def _check_logits(logits: Tensor, name: str = "logits") -> None:
    if not isinstance(logits, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 3:
        raise ValueError(f"{name} must have shape [B, T, V], got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {logits.dtype}")


def _check_targets(targets: Tensor, logits: Tensor) -> None:
    if not isinstance(targets, Tensor):
        raise ValueError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.shape != logits.shape[:2]:
        raise ValueError(
            f"targets must have shape [B, T] = {tuple(logits.shape[:2])}, got {tuple(targets.shape)}"
        )
    if targets.dtype != torch.long:
        raise ValueError(f"targets must be torch.long, got {targets.dtype}")


def _target_index(targets: Tensor, V: int, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(targets clamped into [0, V) for ``gather``, valid [B, T] bool); CPU: reject bad counted targets."""
    valid = (targets >= 0) & (targets < V)  # (B, T)
    if mask is not None:
        _check_same(mask, targets, "mask", "targets")
    if targets.device.type == "cpu" and mask is not None:  # value check only where it costs no sync
        bad = ~valid & (mask != 0)
        if bool(bad.any()):
            b, t = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"targets must lie in [0, V) = [0, {V}) at counted positions (mask != 0), "
                f"got targets[{b}, {t}] = {int(targets[b, t])}"
            )
    return targets.clamp(0, V - 1), valid


def _nan_where_invalid(loss: Tensor, valid: Tensor) -> Tensor:
    """NaN (zero gradient) where the target is out of range: never a plausible-looking loss."""
    return torch.where(valid, loss, torch.full_like(loss, float("nan")))


def _check_finite(x: float, name: str, low: float | None = None, strict: bool = False) -> None:
    """x must be a finite number (NaN and inf rejected), and >= low (> low if strict)."""
    ok = math.isfinite(x) and (low is None or (x > low if strict else x >= low))
    if not ok:
        bound = "" if low is None else f" and {'>' if strict else '>='} {low:g}"
        raise ValueError(f"{name} must be finite{bound}, got {x}")


def _check_same(x: Tensor, ref: Tensor, name: str, ref_name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(x.shape)}")


def _check_bt(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape [B, T], got {tuple(x.shape)}")


def _float(x: Tensor) -> Tensor:
    """Upcast half precision to float32; keep float32/float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _xlogy_safe(p: Tensor, logq: Tensor) -> Tensor:
    """p * log q with 0 * (-inf) = 0 in value and gradient (for -inf logits)."""
    return p * logq.clamp_min(torch.finfo(logq.dtype).min)


def _adv_bt(adv: Tensor, like: Tensor) -> Tensor:
    if not isinstance(adv, Tensor):
        raise ValueError(f"adv must be a torch.Tensor, got {type(adv).__name__}")
    if adv.shape == like.shape:
        return adv
    if adv.ndim == 1 and adv.shape[0] == like.shape[0]:
        return adv[:, None].expand_as(like)
    raise ValueError(f"adv must have shape [B] or [B, T] = {tuple(like.shape)}, got {tuple(adv.shape)}")
