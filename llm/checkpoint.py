"""Atomic, resumable checkpoints: safetensors weights, optimizer/scheduler, RNG and data position.

Layout under ``<out>/checkpoint``: one directory per saved step (``step-000050``) holding
``model.safetensors`` (and one file per extra model, e.g. the CurioSFT EMA teacher),
``optim.pt`` (optimizer + scheduler state, read with ``weights_only=True``), ``rng.pt`` and
``state.json`` (step, data position, anything JSON). A step directory is written under a temporary
name and renamed when complete; the file ``LATEST`` (replaced atomically) names the newest complete
one, so a crash mid-write leaves the previous checkpoint intact. Older step directories are removed
only after ``LATEST`` moved on.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state() -> dict:
    """Torch (CPU and CUDA) and Python RNG states."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    state: dict,
    extra_models: dict[str, torch.nn.Module] | None = None,
    keep: int = 1,
) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically; keep the newest ``keep`` of them."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    for name, m in (extra_models or {}).items():
        save_model(m, str(tmp / f"{name}.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
    rs = rng_state()
    torch.save({k: v for k, v in rs.items() if k != "python"}, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "python_rng": rs["python"], **state}))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(root / "LATEST", final.name)
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint directory under ``root``, or None."""
    pointer = Path(root) / "LATEST"
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    extra_models: dict[str, torch.nn.Module] | None = None,
    restore_rng: bool = True,
) -> dict:
    """Load a checkpoint into the given objects (safetensors / ``weights_only=True``); returns its state."""
    path = Path(path)
    device = next(model.parameters()).device
    load_model(model, str(path / "model.safetensors"), device=str(device))
    for name, m in (extra_models or {}).items():
        load_model(m, str(path / f"{name}.safetensors"), device=str(device))
    if optimizer is not None or scheduler is not None:
        opt = torch.load(path / "optim.pt", map_location=device, weights_only=True)
        if optimizer is not None:
            optimizer.load_state_dict(opt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(opt["scheduler"])
    state = json.loads((path / "state.json").read_text())
    if restore_rng:
        rs = torch.load(path / "rng.pt", weights_only=True)
        set_rng_state({**rs, "python": state["python_rng"]})
    return state


__all__ = ["latest_checkpoint", "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]
