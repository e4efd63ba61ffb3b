"""Field validation shared by every toybench config: one helper, each error naming the field.

Configs are flat dataclasses parsed at the entry point (tyro); they validate themselves by
listing their fields by kind, e.g. ``require(cfg, non_negative=("sft_steps",), positive=("sft_lr",))``.
Every comparison is written so that NaN fails it (``not (x > 0)``, never ``x <= 0``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

__all__ = ["require"]


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
