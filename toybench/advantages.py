"""Group-relative advantages for GRPO and its variants (docs/methods.md §2.1).

A_i = (r_i - mean_g r) / (scale + eps) for the G samples of one prompt. The ``scale`` switch
is the whole difference between GRPO (group std), Lite-PPO style batch std, and Dr. GRPO
(no division). Pure function; no reduction, no device sync.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["group_advantages", "ADV_SCALES"]

ADV_SCALES = ("group", "batch", "none")


def group_advantages(rewards: Tensor, scale: str = "group", eps: float = 1e-6) -> Tensor:
    """Group-centred advantages.

    A_{n,i} = (r_{n,i} - mean_i r_{n,i}) / (s + eps), with
      scale="group": s = std_i r_{n,i} (GRPO; unbiased std, so G >= 2),
      scale="batch": s = std of all rewards in the batch (centred per group, scaled per batch),
      scale="none":  s = 1 and no eps (Dr. GRPO).
    A group whose rewards are all equal gets zeros (never NaN).

    Args:
        rewards: ``[N, G]`` (N prompts, G samples each), float.
        scale: "group" | "batch" | "none".
        eps: added to the scale.
    Returns:
        ``[N, G]``.

    >>> A = group_advantages(torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64))
    >>> [[round(a, 4) for a in row] for row in A.tolist()]
    [[0.7071, -0.7071], [0.0, 0.0]]
    """
    if not isinstance(rewards, Tensor):
        raise ValueError(f"rewards must be a torch.Tensor, got {type(rewards).__name__}")
    if rewards.ndim != 2:
        raise ValueError(f"rewards must have shape [N, G], got {tuple(rewards.shape)}")
    if scale not in ADV_SCALES:
        raise ValueError(f"scale must be one of {ADV_SCALES}, got {scale!r}")
    if not (eps >= 0 and math.isfinite(eps)):  # NaN fails both
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    r = rewards if rewards.is_floating_point() else rewards.float()
    centred = r - r.mean(dim=1, keepdim=True)  # (N, G)
    if scale == "none":
        return centred
    if scale == "group":
        if r.shape[1] < 2:
            raise ValueError(f"rewards needs a group size G >= 2 for scale='group', got G={r.shape[1]}")
        s = r.std(dim=1, keepdim=True)
    else:
        s = r.std() if r.numel() > 1 else torch.zeros((), dtype=r.dtype, device=r.device)
    return centred / (s + eps)
