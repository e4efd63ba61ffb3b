"""Distributed helpers for ``torchrun`` (gloo on CPU, nccl on GPU); no-ops in a single process.

Design choice: gradients are summed across ranks by one flat float32 all-reduce after backward
(bf16 gradients of a pure-bf16 run are upcast first, so the sum over ranks is not rounded to 8
bits) instead of wrapping the model in ``DistributedDataParallel``. The chunked loss calls the
decoder and the output embedding separately (outside ``model.forward``), which DDP's forward
hooks would not see; an explicit all-reduce is exact, and the loss is normalised by GLOBAL
token/sequence counts so that the summed gradient equals the single-process gradient of the same global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Rank, world size and local rank of this process (0, 1, 0 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (env ``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)  # before NCCL init: each rank owns its GPU
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks (in place; returns ``x``)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    """Max of ``x`` over ranks (in place; returns ``x``)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-shaped ``x`` of every rank along dim 0 (rank order)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum ``p.grad`` over ranks with one flat float32 all-reduce (missing grads count as zero)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone()
        offset += n


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


__all__ = [
    "DistInfo",
    "all_gather_cat",
    "all_reduce_max",
    "all_reduce_sum",
    "barrier",
    "init_distributed",
    "shutdown",
    "sum_gradients",
]
