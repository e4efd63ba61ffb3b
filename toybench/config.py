"""The one config rulebook of both command lines (``toybench`` and ``llm``): field rules, the
``--quick`` fill, the output-directory check. A leaf: standard library only (no torch, no kernels, no disk
access while validating).

A config is a dataclass; its rules are a table ``{field: Rule}`` checked by :func:`check`, which raises
:class:`ConfigError` naming the first bad field (a ``ValueError``; ``llm`` renders the name as its flag).
``require(cfg, positive=("sft_lr",), ...)`` builds such a table from lists of field names. Every rule is
written so that NaN fails it (``v > 0``, never ``not v <= 0``).

``--quick`` means one thing everywhere: :func:`fill_quick` fills the preset into the fields whose flag is
absent from the command line (:func:`given_flags`); a flag you type, even at its default value, wins.
Also the one process setting the entry points apply, ``reuse_freed_memory``.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import ctypes.util
import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "Rule",
    "ConfigError",
    "at_least",
    "within",
    "one_of",
    "POSITIVE",
    "check",
    "require",
    "given_flags",
    "fill_quick",
    "prepare_out_dir",
    "deferred_validation",
    "validation_deferred",
    "reuse_freed_memory",
]


@dataclass(frozen=True)
class Rule:
    """A check of one field: ``ok(value)`` must hold, else ``<field> must be <want>, got <value>``."""

    ok: Callable[[Any], bool]
    want: str


def at_least(lo: float, note: str = "") -> Rule:
    """``value >= lo`` (``note`` is added to the message, e.g. ``"(0 = off)"``)."""
    return Rule(lambda v: v >= lo, f">= {lo} {note}".rstrip())


def within(lo: float, hi: float, want: str | None = None) -> Rule:
    """``lo <= value <= hi`` (``want`` overrides the wording, e.g. for an open end)."""
    return Rule(lambda v: lo <= v <= hi, want or f"in [{lo}, {hi}]")


def one_of(choices: Collection[Any], want: str | None = None) -> Rule:
    """``value in choices``."""
    return Rule(lambda v: v in choices, want or f"one of {tuple(choices)}")


POSITIVE = Rule(lambda v: v > 0, "> 0")


class ConfigError(ValueError):
    """Bad input, naming the field (``pipeline.sft_lr must be > 0, got -1.0``); with ``as_flag`` the
    name is written as the flag (``--pipeline.sft-lr ...``). The CLIs print it as one line, exit 2."""

    as_flag: ClassVar[bool] = False

    def __init__(self, field: str, msg: str) -> None:
        self.field, self.msg = field, msg
        name = "--" + field.replace("_", "-") if self.as_flag else field
        super().__init__(f"{name} {msg}")


def check(
    cfg: object, rules: Mapping[str, Rule], prefix: str = "", error: type[ConfigError] = ConfigError
) -> None:
    """Raise ``error`` naming the first field of ``cfg`` (a dataclass or a mapping) that breaks its rule;
    fields ``cfg`` lacks are skipped, so one table serves several configs.

    >>> check({"lr": float("nan")}, {"lr": POSITIVE})
    Traceback (most recent call last):
    ...
    toybench.config.ConfigError: lr must be > 0, got nan
    """
    for name, rule in rules.items():
        if isinstance(cfg, Mapping):
            if name not in cfg:
                continue
            v = cfg[name]
        elif hasattr(cfg, name):
            v = getattr(cfg, name)
        else:
            continue
        if not rule.ok(v):
            raise error(prefix + name, f"must be {rule.want}, got {v!r}")


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
    """:func:`check` with a rule table built from lists of field names, in this order.

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
    toybench.config.ConfigError: lr must be > 0, got nan
    """
    for rules in (
        {n: _at_least(0) for n in non_negative},
        {n: POSITIVE for n in positive},
        {n: _at_least(lo) for n, lo in (at_least or {}).items()},
        {n: _within(lo, hi) for n, (lo, hi) in (within or {}).items()},
        {n: _within(0, 1) for n in probability},
        {n: _one_of(c) for n, c in (one_of or {}).items()},
    ):
        check(cfg, rules, prefix)


_at_least, _within, _one_of = at_least, within, one_of  # the names require's keywords shadow


def given_flags(argv: Iterable[str]) -> set[str]:
    """Dotted field names of the flags present in ``argv`` (``--sft.n-train=3`` -> ``sft.n_train``;
    ``--no-tiny`` -> ``tiny``), so that presets never override what the user set.

    >>> sorted(given_flags(["--quick", "--pipeline.sft-steps=3", "--no-tiny", "x"]))
    ['no_tiny', 'pipeline.sft_steps', 'quick', 'tiny']
    """
    out = set()
    for a in argv:
        if not a.startswith("--") or a == "--":
            continue
        name = a[2:].split("=", 1)[0].replace("-", "_")
        head, _, last = name.rpartition(".")
        if last.startswith("no_"):
            out.add(f"{head}.{last[3:]}" if head else last[3:])
        out.add(name)
    return out


def fill_quick(cfg, preset: Mapping[str, Any], given: Collection[str] | None, prefix: str = ""):
    """``cfg`` with the ``--quick`` preset filled into the fields the user did not set: those whose dotted
    flag name is not in ``given`` (from :func:`given_flags`), or, with ``given=None`` (the Python API, no
    command line), those still at their dataclass default. A preset value that is a mapping fills the
    nested config of that field. Returns ``(cfg, dotted names of the fields it changed)``; preset keys
    ``cfg`` lacks, or whose value ``cfg`` already holds, are skipped.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     steps: int = 100
    ...     lr: float = 1.0
    >>> fill_quick(C(lr=1.0), {"steps": 5, "lr": 2.0}, given={"lr"})
    (C(steps=5, lr=1.0), ['steps'])
    """
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    changes, filled = {}, []
    for name, value in preset.items():
        if name not in fields:
            continue
        if isinstance(value, Mapping):
            changes[name], sub = fill_quick(getattr(cfg, name), value, given, f"{prefix}{name}.")
            filled += sub
        elif getattr(cfg, name) == value:
            continue  # nothing to fill (and nothing to record)
        elif (prefix + name) not in given if given is not None else _at_default(cfg, fields[name]):
            changes[name] = value
            filled.append(prefix + name)
    return dataclasses.replace(cfg, **changes), filled


def _at_default(cfg, f: dataclasses.Field) -> bool:
    if f.default is not dataclasses.MISSING:
        return getattr(cfg, f.name) == f.default
    if f.default_factory is not dataclasses.MISSING:
        return getattr(cfg, f.name) == f.default_factory()
    return False


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
