"""Atomic, verified, resumable checkpoints; each step directory is also a Hugging Face model directory.

Layout under ``<out>/checkpoint``: one directory per saved step (``step-000050``) holding what
``save_pretrained`` writes (``config.json``, ``generation_config.json``, ``model.safetensors``) and the
tokenizer files, so ``AutoModelForCausalLM.from_pretrained("<out>/checkpoint/step-000050")`` loads it;
beside them one file per extra model (e.g. the CurioSFT EMA teacher, ``teacher.safetensors``),
``optim.pt`` (optimizer + scheduler state, read with ``weights_only=True``), ``rng.pt``,
``state.json`` (step, data position, anything JSON) and ``manifest.json`` (every file's size, written
last). A step directory is written under a temporary name and renamed when complete; ``LATEST``
(replaced atomically) names the newest one, so a crash mid-write leaves the previous checkpoint
intact. Only the newest ``keep`` intact steps at or before the one just written are kept.

Resuming (:func:`resume_checkpoint`) verifies a checkpoint before using it (manifest sizes, the
safetensors headers against the model's parameters, the optimizer file) and falls back to the
previous intact one with a message, moving the bad one aside as ``corrupt-step-...`` (never deleted).
A stale ``LATEST`` never restarts a run from step 0: with checkpoint files present but none intact,
:class:`CheckpointError` stops the run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_model

#: Files whose presence in ``out`` marks an earlier run there.
RUN_MARKERS = ("config.json", "metrics.jsonl", "checkpoint", "final", "eval.json", "results.csv")


class CheckpointError(ValueError):
    """No intact checkpoint to resume from although checkpoint files exist (the CLI exits 2)."""


@dataclass(frozen=True)
class Resumed:
    """What :func:`resume_checkpoint` loaded: the directory and its ``state.json``."""

    path: Path
    state: dict


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


def existing_run(out: str | Path) -> str:
    """The markers of an earlier run in ``out`` (``"config.json, checkpoint"``), or ``""``."""
    out = Path(out)
    return ", ".join(m for m in RUN_MARKERS if (out / m).exists()) if out.is_dir() else ""


def prepare_out(cfg) -> None:
    """With ``cfg.overwrite``: remove the earlier run's files from ``cfg.out`` (only its run markers
    and the pipeline's per-method directories that hold a ``config.json``), so nothing stale mixes in."""
    out = Path(cfg.out)
    if not (getattr(cfg, "overwrite", False) and out.is_dir()):
        return
    for m in RUN_MARKERS + ("completions.jsonl", "tensorboard", "wandb"):
        p = out / m
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for d in out.iterdir():
        if d.is_dir() and any(
            (d / s / "config.json").is_file() for s in ("sft", "grpo", "eval_sft", "eval_grpo")
        ):
            shutil.rmtree(d)
    for d in out.glob("base"):
        shutil.rmtree(d)


_STAGES = ("sft", "grpo", "eval_sft", "eval_grpo")


def _step(p: Path) -> int:
    return int(p.name.rsplit("-", 1)[1])


def _save_weights(model: torch.nn.Module, tmp: Path) -> None:
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(tmp, safe_serialization=True)
    else:
        save_model(model, str(tmp / "model.safetensors"))


def save_checkpoint(
    root: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    state: dict,
    extra_models: dict[str, torch.nn.Module] | None = None,
    keep: int = 2,
    tokenizer=None,
) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically (an HF model directory, plus the training
    state); keep the newest ``keep`` steps up to this one. Returns the step directory."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step-*"):  # left by an interrupted save
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    tmp.mkdir()
    _save_weights(model, tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    for name, m in (extra_models or {}).items():
        save_model(m, str(tmp / f"{name}.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
    rs = rng_state()
    torch.save({k: v for k, v in rs.items() if k != "python"}, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "python_rng": rs["python"], **state}))
    sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
    (tmp / "manifest.json").write_text(json.dumps(sizes))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(root / "LATEST", final.name)
    older = sorted((p for p in root.glob("step-*") if p.is_dir() and _step(p) < step), key=_step)
    for old in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    """The directory ``LATEST`` names if it is complete (has ``manifest.json``), else None."""
    pointer = Path(root) / "LATEST"
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    return path if (path / "manifest.json").is_file() else None


def verify_checkpoint(
    path: str | Path, model: torch.nn.Module | None = None, extra: tuple[str, ...] = ()
) -> str:
    """Why ``path`` is not an intact checkpoint (``""`` when it is): missing or truncated files,
    unreadable state, safetensors headers whose tensors do not match ``model``'s parameters."""
    path = Path(path)
    if not path.is_dir():
        return "missing"
    try:
        sizes = json.loads((path / "manifest.json").read_text())
        json.loads((path / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no readable manifest.json/state.json (incomplete write)"
    for name, size in sizes.items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            return f"{name} is missing or has the wrong size (truncated?)"
    for name in ("model", *extra):
        if f"{name}.safetensors" not in sizes:
            return f"{name}.safetensors is missing"
    if model is not None:
        want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        try:
            with safe_open(str(path / "model.safetensors"), framework="pt") as f:
                got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        except Exception as e:  # noqa: BLE001 -- any parse failure means corrupt
            return f"model.safetensors is unreadable ({type(e).__name__})"
        bad = [k for k, s in got.items() if want.get(k) != s]
        if bad or not got:
            return f"model.safetensors does not match the model (e.g. {bad[:1] or 'no tensors'})"
    return ""


def _load_weights(model: torch.nn.Module, file: Path, device) -> None:
    """Load a safetensors file into ``model``; missing keys are allowed only for tied parameters."""
    sd = load_file(str(file), device=str(device))
    res = model.load_state_dict(sd, strict=False)
    if res.unexpected_keys:
        raise ValueError(f"{file}: unexpected tensors {res.unexpected_keys[:3]}")
    params = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
    loaded = {params[k].data_ptr() for k in sd if k in params}
    untied = [k for k in res.missing_keys if k not in params or params[k].data_ptr() not in loaded]
    if untied:
        raise ValueError(f"{file}: missing tensors {untied[:3]}")


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
    _load_weights(model, path / "model.safetensors", device)
    for name, m in (extra_models or {}).items():
        _load_weights(m, path / f"{name}.safetensors", device)
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


def _candidates(root: Path) -> list[Path]:
    """``LATEST``'s target first, then every other step directory, newest first."""
    steps = sorted((p for p in root.glob("step-*") if p.is_dir()), key=_step, reverse=True)
    pointer = root / "LATEST"
    named = root / pointer.read_text().strip() if pointer.is_file() else None
    return ([named] if named is not None else []) + [p for p in steps if p != named]


def resume_checkpoint(
    root: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    extra_models: dict[str, torch.nn.Module] | None = None,
    log=print,
) -> Resumed | None:
    """Load the newest intact checkpoint under ``root``, falling back (with a message) past broken ones.

    None when ``root`` holds no checkpoint at all (a fresh start, said so). Broken ones are renamed
    ``corrupt-step-...`` and ``LATEST`` is pointed at the one loaded. Raises :class:`CheckpointError`
    when checkpoint files exist but none is intact (never a silent restart).
    """
    root = Path(root)
    cands = _candidates(root) if root.is_dir() else []
    if not cands:
        log(f"[resume] no checkpoint under {root}: starting from step 0")
        return None
    extra = tuple(extra_models or {})
    bad: list[tuple[Path, str]] = []
    for c in cands:
        why = verify_checkpoint(c, model, extra)
        if not why:
            try:
                state = load_checkpoint(c, model, optimizer, scheduler, extra_models)
            except Exception as e:  # noqa: BLE001 -- a file that verifies but does not load is corrupt too
                why = f"does not load ({type(e).__name__}: {str(e)[:120]})"
        if why:
            bad.append((c, why))
            continue
        for b, reason in bad:
            log(f"[resume] checkpoint {b.name} is not usable ({reason}); falling back to {c.name}")
            if b.is_dir():
                os.replace(b, b.with_name("corrupt-" + b.name))
        _atomic_write_text(root / "LATEST", c.name)
        log(f"[resume] resuming from {c} (step {state['step']})")
        return Resumed(c, state)
    reasons = "; ".join(f"{b.name}: {r}" for b, r in bad)
    raise CheckpointError(
        f"--resume: no intact checkpoint under {root} ({reasons}); nothing was changed. "
        "Pass --overwrite to start the run again."
    )


__all__ = [
    "CheckpointError",
    "RUN_MARKERS",
    "Resumed",
    "existing_run",
    "latest_checkpoint",
    "load_checkpoint",
    "prepare_out",
    "resume_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "verify_checkpoint",
]
