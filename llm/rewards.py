"""Reward functions, as TRL's ``reward_funcs``: built-ins and ``module:function`` plug-ins.

A reward function is called once per batch of completions as
``f(completions=[str, ...], prompts=[str, ...], **columns) -> list[float]`` where ``columns`` are the
dataset's other columns (always ``answer``, and ``puzzle`` for the arith task, None where absent),
one value per completion (a prompt's value repeated for each of its samples), like TRL passes them;
extra keywords must be accepted (``**kwargs``). Model output is untrusted: rewards parse it, never
``eval`` it.

``None`` means "this function does not score this completion" (TRL's convention, e.g. a math reward
on a code prompt of a multi-task dataset): the weighted sum over functions skips it, as TRL's
``nansum`` does, and a completion no function scores gets 0 with a warning (as TRL). Anything else
that is not one finite number per completion is an error naming the function and what it returned:
an exception, NaN or inf (unlike TRL, which would skip a NaN silently: here it is a bug to report),
a value that is not a number, the wrong number of values. :mod:`llm.validate` calls every function
once on a few completions before the model loads, so these surface as one line and exit 2.

Built-ins are the same kind of object: ``answer`` (the final number of the completion equals the
``answer`` column, GSM8K style) and ``arith`` (the make-target verifier of the generated puzzles).
With no ``--reward`` the data's own verifier is used (arith puzzles, else ``answer``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llm.data import Example, number_reward
from toybench.tasks import arith


def answer_reward(completions: list[str], answer: list, **_) -> list[float]:
    """1.0 when a completion's final number equals its ``answer`` (as numbers), else 0.0."""
    return [0.0 if a is None else number_reward(c, str(a)) for c, a in zip(completions, answer)]


def arith_reward(completions: list[str], puzzle: list, **_) -> list[float]:
    """The make-target verifier's 0/1 reward of each completion for its puzzle."""
    return [
        0.0 if p is None else arith.verify(p, arith.extract_answer(c)).reward
        for c, p in zip(completions, puzzle)
    ]


BUILTINS: dict[str, Callable[..., list[float]]] = {"answer": answer_reward, "arith": arith_reward}


def load_reward(spec: str) -> Callable[..., list[float]]:
    """The reward function a spec names: a built-in, ``module:function`` (imported, with the current
    directory on the path) or ``path/to/file.py:function``. ValueError naming the spec otherwise."""
    if spec in BUILTINS:
        return BUILTINS[spec]
    mod_name, sep, fn_name = spec.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise ValueError(f"{spec!r} is neither a built-in {tuple(BUILTINS)} nor module:function")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise ValueError(f"{spec!r}: file {mod_name!r} does not exist")
            module_spec = importlib.util.spec_from_file_location(f"_sftrl_reward_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(mod_name)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 -- the user's module: any import failure is bad input
        raise ValueError(f"{spec!r}: cannot import {mod_name!r} ({type(e).__name__}: {e})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ValueError(f"{spec!r}: {mod_name!r} has no function {fn_name!r}")
    return fn


def default_reward(examples: Sequence[Example]) -> str | None:
    """The built-in verifier of the data: ``arith`` for puzzles, ``answer`` when answers exist, else None."""
    if any(e.puzzle is not None for e in examples):
        return "arith"
    if any(e.answer is not None for e in examples):
        return "answer"
    return None


@dataclass
class Rewards:
    """Weighted sum of reward functions (the ``--reward`` / ``--reward-weights`` of a run)."""

    specs: tuple[str, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.specs):
            raise ValueError(f"{len(self.specs)} reward functions but {len(self.weights)} weights")
        self.funcs = [load_reward(s) for s in self.specs]

    @staticmethod
    def of(cfg, examples: Sequence[Example]) -> Rewards | None:
        """The run's rewards: ``cfg.reward`` (weights ``cfg.reward_weights``, default 1), else the
        data's built-in verifier; None when there is none (the data cannot be rewarded)."""
        specs = tuple(cfg.reward)
        if not specs:
            d = default_reward(examples)
            specs = () if d is None else (d,)
        if not specs:
            return None
        return Rewards(specs, tuple(cfg.reward_weights) or (1.0,) * len(specs))

    def columns(self, examples: Sequence[Example], repeat: int = 1) -> dict[str, list]:
        """The dataset columns of ``examples`` as TRL passes them: one entry per completion."""
        names = sorted({k for e in examples for k in e.columns})
        cols = {k: [e.columns.get(k) for e in examples for _ in range(repeat)] for k in names}
        cols["answer"] = [e.answer for e in examples for _ in range(repeat)]
        cols["puzzle"] = [e.puzzle for e in examples for _ in range(repeat)]
        return cols

    def per_function(
        self, examples: Sequence[Example], completions: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """``[function][flat completion]`` rewards of ``completions[i][j]`` (the j-th sample of
        example i); NaN where a function returned None (it does not score that completion)."""
        n = len(completions[0]) if completions else 0
        flat = [c for g in completions for c in g]
        prompts = [_prompt_text(e) for e in examples for _ in range(n)]
        kw = self.columns(examples, n)
        out = []
        for spec, fn in zip(self.specs, self.funcs):
            try:
                vals = fn(completions=flat, prompts=prompts, **_accepted(fn, kw))
            except Exception as e:  # noqa: BLE001 -- the user's function: any failure is reported as its own
                raise RewardError(f"reward {spec!r} raised {type(e).__name__}: {e}") from e
            out.append(_checked(spec, vals, len(flat)))
        return out

    def __call__(
        self, examples: Sequence[Example], completions: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """``[example][sample]`` weighted sums over the functions that scored each completion."""
        per = self.per_function(examples, completions)
        n = len(completions[0]) if completions else 0
        total, unscored = [], []
        for i in range(len(examples) * n):
            scored = [(w, f[i]) for w, f in zip(self.weights, per) if not math.isnan(f[i])]
            if not scored:
                unscored.append(i)
            total.append(sum(w * v for w, v in scored))
        if unscored:
            first = _prompt_text(examples[unscored[0] // n])[:80]
            warnings.warn(
                f"every reward function returned None for {len(unscored)} of {len(total)} completions "
                f"(the first of prompt {first!r}): their reward is 0",
                stacklevel=2,
            )
        return [total[i * n : (i + 1) * n] for i in range(len(examples))]


class RewardError(ValueError):
    """A reward function failed or returned something other than one number (or None) per completion."""


def _checked(spec: str, vals, n: int) -> list[float]:
    """``vals`` as ``n`` floats, NaN for None; :class:`RewardError` naming ``spec`` otherwise."""
    if vals is None or isinstance(vals, str | bytes) or not hasattr(vals, "__len__"):
        raise RewardError(f"reward {spec!r} returned {_show(vals)}, not a list of {n} values")
    vals = list(vals)
    if len(vals) != n:
        raise RewardError(f"reward {spec!r} returned {len(vals)} values for {n} completions (one each)")
    out = []
    for i, v in enumerate(vals):
        try:
            x = math.nan if v is None else float(v)
        except (TypeError, ValueError):
            raise RewardError(
                f"reward {spec!r} returned {_show(v)} for completion {i}: not a number (or None)"
            ) from None
        if v is not None and not math.isfinite(x):
            raise RewardError(
                f"reward {spec!r} returned {x} for completion {i}: non-finite "
                "(return None for a completion it does not score)"
            )
        out.append(x)
    return out


def _show(v) -> str:
    r = repr(v)
    return f"{type(v).__name__} {r[:60]}{'...' if len(r) > 60 else ''}"


def _prompt_text(e: Example) -> str:
    return "\n".join(m["content"] for m in e.messages)


def _accepted(fn, kw: dict) -> dict:
    """``kw`` restricted to what ``fn`` accepts (all of it when it takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return kw
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return kw
    names = {p.name for p in params}
    return {k: v for k, v in kw.items() if k in names}


__all__ = [
    "BUILTINS",
    "RewardError",
    "Rewards",
    "answer_reward",
    "arith_reward",
    "default_reward",
    "load_reward",
]
