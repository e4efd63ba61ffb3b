"""Field validation shared by every toybench config: one helper, each error naming the field.

Configs are flat dataclasses parsed at the entry point (tyro); they validate themselves by
listing their fields by kind, e.g. ``require(cfg, non_negative=("sft_steps",), positive=("sft_lr",))``.
Every comparison is written so that NaN fails it (``not (x > 0)``, never ``x <= 0``).
Also the one process setting the entry points apply, ``reuse_freed_memory``.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import ctypes.util
import dataclasses
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "require",
    "fill_defaults",
    "prepare_out_dir",
    "deferred_validation",
    "validation_deferred",
    "reuse_freed_memory",
]


def require(
    cfg: object,
    *,
    non_negative: Iterable[str] = (),
    positive: Iterable[str] = (),
    at_least: Mapping[str, float] | None = None,
    within: Mapping[str, tuple[float, float]] | None = None,
    probability: Iterable[str] = (),
    one_of: Mapping[str, Collection[Any]] | None = None,
    prefix: str = "",
) -> None:
    """Raise ``ValueError`` naming the first field of ``cfg`` that breaks its rule.

    Args:
        cfg: a dataclass (fields read as attributes) or a mapping of argument names to values.
        non_negative: fields that must be >= 0.   positive: fields that must be > 0.
        at_least: ``{field: lo}``, each must be >= lo.
        within: ``{field: (lo, hi)}``, each must lie in the closed interval [lo, hi].
        probability: fields that must lie in [0, 1].
        one_of: ``{field: choices}``, each must be one of the choices.
        prefix: prepended to the field names in messages (e.g. ``"pipeline."`` for a nested config).

    >>> require({"lr": float("nan")}, positive=("lr",))
    Traceback (most recent call last):
    ...
    ValueError: lr must be > 0, got nan
    """
    get = cfg.__getitem__ if isinstance(cfg, Mapping) else lambda name: getattr(cfg, name)

    def fail(name: str, rule: str) -> None:
        raise ValueError(f"{prefix}{name} must be {rule}, got {get(name)!r}")

    for name in non_negative:
        if not get(name) >= 0:
            fail(name, ">= 0")
    for name in positive:
        if not get(name) > 0:
            fail(name, "> 0")
    for name, lo in (at_least or {}).items():
        if not get(name) >= lo:
            fail(name, f">= {lo}")
    for name, (lo, hi) in (within or {}).items():
        if not lo <= get(name) <= hi:
            fail(name, f"in [{lo}, {hi}]")
    for name in probability:
        if not 0 <= get(name) <= 1:
            fail(name, "in [0, 1]")
    for name, choices in (one_of or {}).items():
        if get(name) not in choices:
            fail(name, f"one of {tuple(choices)}")


def fill_defaults(cfg, preset: Mapping[str, Any]):
    """``cfg`` with each field of ``preset`` replaced, but only where ``cfg`` still holds the field's default.

    This is how ``--quick`` works: it fills what the user did not set and never overrides a flag the user
    typed (a flag set to exactly its default value counts as not set).

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     steps: int = 100
    ...     lr: float = 1.0
    >>> fill_defaults(C(lr=0.5), {"steps": 5, "lr": 2.0})
    C(steps=5, lr=0.5)
    """
    defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    changes = {k: v for k, v in preset.items() if k in defaults and getattr(cfg, k) == defaults[k]}
    return dataclasses.replace(cfg, **changes)


def prepare_out_dir(path: str | Path, name: str = "out") -> Path:
    """Create the output directory ``path`` and check that it is writable, before any computation.

    Raises ``ValueError`` naming ``name`` when ``path`` is a file, lies under a file, or cannot be written.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{name} {str(p)!r} is a file, not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".toybench-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"{name} {str(p)!r} is not a writable directory ({err.strerror})") from None
    return p


_DEFERRED = contextvars.ContextVar("toybench_deferred_validation", default=False)


@contextlib.contextmanager
def deferred_validation():
    """Inside this block, configs that validate in ``__post_init__`` skip it (their ``validate`` runs later).

    The CLI parses under it so that a bad nested value is reported by ``resolve`` as one line naming the
    flag, instead of failing inside the argument parser.
    """
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def validation_deferred() -> bool:
    """Whether the caller runs inside :func:`deferred_validation`."""
    return _DEFERRED.get()


def reuse_freed_memory() -> bool:
    """Let glibc's malloc keep freed blocks of up to 32 MiB for reuse instead of returning them.

    The vectorised tabular runs allocate tensors of 10-30 MB at every step; by default glibc serves
    those with fresh ``mmap`` pages, so each step pays a page fault per 4 KiB touched (about 1 s of
    system time in a 540-seed tree run). With ``M_MMAP_THRESHOLD`` at its 32 MiB maximum and a
    1 GiB ``M_TRIM_THRESHOLD`` the heap keeps those blocks and the next step reuses them. Results
    are unchanged (only where memory comes from); the process may hold up to 1 GiB of freed heap.
    Called by the ``toybench`` entry point. Returns False where there is no glibc (macOS, musl).
    """
    path = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(path).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))
