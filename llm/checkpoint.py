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

Lean outputs: a checkpoint written mid-run holds everything resuming needs (the weights as trained,
``optim.pt``, the extra models); one written with ``optimizer=None`` is *lean* (``state.json`` says
``"lean": true``): weights only, in ``weights_dtype`` (the base model's dtype), no optimizer state, no
extra model. It cannot continue training, only mark where a finished run ended and be loaded as a
model. :func:`slim_checkpoint` turns a full checkpoint into a lean one and :func:`export_final`
hard-links a checkpoint's model files into ``final/`` (one copy on disk; a copy where links fail).
Before every write :func:`check_free_space` compares the bytes about to be written with the free
space and raises :class:`DiskSpaceError` (one line naming the bytes needed) instead of filling the disk.

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
from safetensors.torch import load_file, save_file, save_model

#: Files whose presence in ``out`` marks an earlier run there.
RUN_MARKERS = ("config.json", "metrics.jsonl", "checkpoint", "final", "eval.json", "results.csv")


class CheckpointError(ValueError):
    """No intact checkpoint to resume from although checkpoint files exist (the CLI exits 2)."""


class DiskSpaceError(CheckpointError):
    """Not enough free disk space for a save (raised before writing anything; the CLI exits 2)."""


#: Files of a step directory that are training state, not part of the Hugging Face model directory.
TRAINING_FILES = ("optim.pt", "rng.pt", "state.json", "manifest.json")


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
    for d in out.glob("seed-*"):  # ``pipeline --seeds N``: one pipeline tree per seed
        if d.is_dir() and (d / "base" / "config.json").is_file():
            shutil.rmtree(d)
    for f in ("summary.csv", "paired.csv", "decoupling.csv", "report.md"):
        (out / f).unlink(missing_ok=True)


_STAGES = ("sft", "grpo", "eval_sft", "eval_grpo")


def _step(p: Path) -> int:
    return int(p.name.rsplit("-", 1)[1])


def weights(model: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The model's state dict without tied duplicates (the first name of a shared tensor is kept, as
    Hugging Face saves it), floating tensors cast to ``dtype`` (None: as they are)."""
    out, seen = {}, set()
    for k, v in model.state_dict().items():
        key = (v.data_ptr(), v.dtype, tuple(v.shape)) if v.numel() else (k,)
        if key in seen:
            continue
        seen.add(key)
        v = v.detach()
        out[k] = v.to(dtype) if dtype is not None and v.is_floating_point() else v
    return out


def weight_bytes(model: torch.nn.Module, dtype: torch.dtype | None = None) -> int:
    """Bytes of the model's (untied) tensors when saved in ``dtype`` (None: their own dtype)."""
    size = torch.tensor([], dtype=dtype).element_size() if dtype is not None else None
    return sum(
        v.numel() * (size if size and v.is_floating_point() else v.element_size())
        for v in weights(model).values()
    )


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the optimizer's state tensors (AdamW: two moments per parameter)."""
    return sum(
        t.numel() * t.element_size()
        for st in optimizer.state.values()
        for t in st.values()
        if isinstance(t, torch.Tensor)
    )


def check_free_space(where: str | Path, need: int, what: str) -> None:
    """Raise :class:`DiskSpaceError` when ``where``'s file system has less than ``need`` bytes (plus a
    5% and 16 MB margin) free; ``what`` names the save in the one-line message."""
    where = Path(where)
    probe = where if where.exists() else next(p for p in where.parents if p.exists())
    free = shutil.disk_usage(probe).free
    want = int(need * 1.05) + (16 << 20)
    if free < want:
        raise DiskSpaceError(
            f"not enough free disk space to save {what} under {where}: it needs about {want:,} bytes "
            f"({want / 1e9:.2f} GB), {free:,} bytes ({free / 1e9:.2f} GB) are free. Free some space, "
            "or lower --save-total-limit / raise --ckpt-every."
        )


def save_weights(model: torch.nn.Module, directory: str | Path, dtype: torch.dtype | None = None) -> None:
    """The model as a Hugging Face directory (``config.json``, ``model.safetensors``...) with its
    floating tensors in ``dtype`` (None: as trained); ``config.json`` records that dtype."""
    directory = Path(directory)
    if not hasattr(model, "save_pretrained"):
        sd = {k: v.contiguous() for k, v in weights(model, dtype).items()}
        save_file(sd, str(directory / "model.safetensors"), metadata={"format": "pt"})
        return
    if dtype is None:
        model.save_pretrained(directory, safe_serialization=True)
        return
    keep = model.config.dtype
    try:
        model.save_pretrained(directory, safe_serialization=True, state_dict=weights(model, dtype))
    finally:
        model.config.dtype = keep
    _config_dtype(directory, dtype)


def _config_dtype(directory: Path, dtype: torch.dtype) -> None:
    """Record ``dtype`` as the weights' dtype in ``directory/config.json`` (if there is one)."""
    f = directory / "config.json"
    if f.is_file():
        conf = json.loads(f.read_text())
        conf["dtype"] = str(dtype).removeprefix("torch.")
        f.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")


def _manifest(directory: Path) -> None:
    sizes = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}
    (directory / "manifest.json").write_text(json.dumps(sizes))


def export_final(step_dir: str | Path, final: str | Path) -> Path:
    """``final`` as the Hugging Face model of checkpoint ``step_dir`` (every file but the training
    state and the extra models), hard-linked where the file system allows (one copy on disk), copied
    otherwise; written under a temporary name and swapped in."""
    step_dir, final = Path(step_dir), Path(final)
    extra = set(json.loads((step_dir / "state.json").read_text()).get("extra", ()))
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in sorted(step_dir.iterdir()):
        if f.is_file() and f.name not in TRAINING_FILES and f.stem not in extra:
            try:
                os.link(f, tmp / f.name)
            except OSError:
                shutil.copy2(f, tmp / f.name)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def slim_checkpoint(path: str | Path, dtype: torch.dtype | None = None) -> None:
    """Make checkpoint ``path`` lean: drop ``optim.pt`` and the extra models, cast the weights to
    ``dtype`` (None: keep them), rewrite the manifest (last, so a crash leaves it unverifiable, never
    silently wrong)."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    for name in ["optim.pt", *(f"{e}.safetensors" for e in state.get("extra", ()))]:
        (path / name).unlink(missing_ok=True)
    f = path / "model.safetensors"
    if dtype is not None:
        with safe_open(str(f), framework="pt") as src:
            meta = src.metadata() or {"format": "pt"}
        sd = load_file(str(f))
        if any(v.is_floating_point() and v.dtype != dtype for v in sd.values()):
            sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
            save_file(sd, str(f.with_name(f.name + ".tmp")), metadata=meta)
            os.replace(f.with_name(f.name + ".tmp"), f)
            conf = (
                json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else None
            )
            if conf is not None:
                conf["dtype"] = str(dtype).removeprefix("torch.")
                (path / "config.json").write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
    (path / "state.json").write_text(json.dumps(state | {"lean": True, "extra": []}))
    _manifest(path)


def save_checkpoint(
    root: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler,
    state: dict,
    extra_models: dict[str, torch.nn.Module] | None = None,
    keep: int = 2,
    tokenizer=None,
    weights_dtype: torch.dtype | None = None,
) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically (an HF model directory, plus the training
    state); keep the newest ``keep`` steps up to this one. Returns the step directory.

    ``optimizer=None``: a lean checkpoint (weights in ``weights_dtype``, no optimizer state, no extra
    model; see the module docstring). The free space is checked first (:class:`DiskSpaceError`)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lean = optimizer is None
    extra_models = {} if lean else (extra_models or {})
    need = weight_bytes(model, weights_dtype) + sum(weight_bytes(m) for m in extra_models.values())
    check_free_space(root, need + (0 if lean else optimizer_bytes(optimizer)), f"checkpoint step {step}")
    for stale in root.glob(".tmp-step-*"):  # left by an interrupted save
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    tmp.mkdir()
    save_weights(model, tmp, weights_dtype)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    for name, m in extra_models.items():
        save_model(m, str(tmp / f"{name}.safetensors"))
    if not lean:
        opt_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        torch.save(opt_state, tmp / "optim.pt")
    rs = rng_state()
    torch.save({k: v for k, v in rs.items() if k != "python"}, tmp / "rng.pt")
    meta = {"step": step, "python_rng": rs["python"], **state, "lean": lean, "extra": sorted(extra_models)}
    (tmp / "state.json").write_text(json.dumps(meta))
    _manifest(tmp)
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
        state = json.loads((path / "state.json").read_text())
        state["step"]  # noqa: B018 -- a state without a step is unreadable
        lean = bool(state.get("lean", False))
    except (OSError, ValueError, KeyError, TypeError):
        return "no readable manifest.json/state.json (incomplete write)"
    for name, size in sizes.items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            return f"{name} is missing or has the wrong size (truncated?)"
    for name in ("model", *(() if lean else extra)):
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


def is_lean(path: str | Path) -> bool:
    """Whether checkpoint ``path`` is lean (weights only: it cannot continue training)."""
    return bool(json.loads((Path(path) / "state.json").read_text()).get("lean", False))


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
    """Load a checkpoint into the given objects (safetensors / ``weights_only=True``); returns its state.

    A lean checkpoint loads the weights only (its state says ``"lean": true``; the caller decides
    whether that is enough)."""
    path = Path(path)
    device = next(model.parameters()).device
    lean = is_lean(path)
    _load_weights(model, path / "model.safetensors", device)
    for name, m in ({} if lean else extra_models or {}).items():
        _load_weights(m, path / f"{name}.safetensors", device)
    if not lean and (optimizer is not None or scheduler is not None):
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
    "DiskSpaceError",
    "RUN_MARKERS",
    "Resumed",
    "TRAINING_FILES",
    "check_free_space",
    "existing_run",
    "export_final",
    "is_lean",
    "optimizer_bytes",
    "save_weights",
    "slim_checkpoint",
    "weight_bytes",
    "weights",
    "latest_checkpoint",
    "load_checkpoint",
    "prepare_out",
    "resume_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "verify_checkpoint",
]
