"""Method registry: one SFT method spec -> its constants, its needs and its per-token loss.

Spelling (the same at every scale: tabular, tiny transformer, ``llm``)::

    kind[@value][,key=value]...        e.g.  gift@3,smooth=0.1   curio,alpha=0.5,ema_every=5
                                             pear_block,block_size=2,token_clip=-0.08:0.3

``@value`` sets the kind's main constant (GIFT's beta, entropy-SFT's coef, CurioSFT's alpha,
PEAR's behaviour source); ``key=value`` sets any constant by name (``gift,beta=3`` == ``gift@3``).
Pairs are written ``low:high``; ``inf`` and ``none`` (an unset optional int) are accepted.

==================  ================================================================================
``none``            no SFT (RL starts from pi_base)
``sft``             ``sft_loss``
``dft``             ``dft_loss``
``entropy_sft@c``   ``entropy_sft_loss``: coef=0.1, top_k=none, rho=1
``gift@beta``       ``gift_loss`` against a FROZEN base copy: beta=20 (the released code's default;
                    ``llm`` runs ``gift@5`` because beta 20 is ~SFT for confident models), smooth=0
``gift_seq@beta``   the EXACT sequence-level Gibbs target q(y) ∝ pi_base(y) exp(beta 1[y = demo]) as
                    per-position conditionals q(. | y_<t), the cross-entropy to them through
                    ``gift_loss`` at beta 0 (docs/methods.md §4.6): beta=20, tabular only (the target
                    needs the whole prefix tree, ``TreeGeometry.gibbs_logp``; elsewhere a ValueError)
``curio``           ``curio_loss`` against an EMA teacher with ``entropy_guided_temperature``:
                    alpha=1, ema_every=5, ema_keep=0.01 (teacher <- keep teacher + (1 - keep) model
                    every ``ema_every`` steps; the released code), pivot=1.2, gain=0.5, slope=2,
                    tau_min=1.1, tau_max=1.5, top_k=512, floor=0.03
``pear_token``      ``pear_weights(level=...)`` times ``sft_loss`` (also ``pear_block``,
                    ``pear_sequence``): gamma=0.999, token_clip=-0.08:0.3, total_clip=-10:5, and
                    for ``pear_block`` block_size=4 (docs/methods.md §1.5). ``@self``: pi_beta is the
                    current policy (no behaviour log-probs needed); the default ``@data`` needs them.
``asft@lam``        ``asft_loss`` (DFT + lam KL(pi_base || pi)) against a FROZEN base copy: lam=0.1
                    (docs/methods.md §1.8); ``sft_kl@lam`` is its ablation, ``sft_kl_loss``
``prob@alpha``      ``prob_loss`` (1 - pi(y)^alpha) / alpha: alpha=1 (§1.9)
``psft@epsilon``    ``psft_loss`` against a SNAPSHOT of the policy (the teacher slot, replaced by the
                    model after every ``refresh``-th step): epsilon=0.28, refresh=8 (§1.10)
``prift@weight``    ``prift_loss`` against a FROZEN base copy: weight=prob (or mass), threshold=0.5
                    (``mass`` only; §1.11)
``chord_phi``       ``chord_phi_loss`` (§1.12)
==================  ================================================================================

Defaults: one per constant, listed above. ``str(method)`` is the canonical spec: the kind, its
``@value`` (always for ``gift``, ``gift_seq``, ``entropy_sft``, ``prob`` and ``prift``, whose value
names the method; for
the others only when it differs from the default) and then every other constant that differs from its
default, in the order above; it parses back to an equal ``Method``.

Every fact about a kind lives in its :class:`Family` (one small class per kind, registered in
``_FAMILIES``): its constants and defaults, what it needs (``needs_base``, ``needs_teacher``,
``needs_behavior_logp``, ``needs_sequence_target``), whether its loss couples the rows of a batch
(``couples_rows``), its position-wise loss and weights, and its ``llm.fused`` kernel options.
:meth:`Method.init_state` makes the frozen copies for tensors and ``nn.Module`` alike and
:meth:`Method.ema_update` is the one EMA update. The per-token SFT loss is assembled from these by
``toybench.objectives.sft_per_token`` at every scale. This module only chooses and wires
``toybench.losses``; it contains no loss formula of its own.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from toybench import losses, objectives
from toybench.objectives import LOSS_TYPES, loss_type_reduction

__all__ = ["Family", "Method", "MethodState", "KINDS", "LOSS_TYPES", "loss_type_reduction"]


# ----------------------------------------------------------------------------- constants
@dataclass(frozen=True)
class _Const:
    name: str
    default: Any
    kind: str  # float | int | optint | pair | choice
    check: Callable[[Any], bool]
    rule: str  # what ``check`` demands, for the error message
    choices: tuple[str, ...] = ()


def _finite(x) -> bool:
    return math.isfinite(x)


_GE0 = (lambda x: _finite(x) and x >= 0, "a finite number >= 0")
_GT0 = (lambda x: _finite(x) and x > 0, "a finite number > 0")
_INT1 = (lambda x: x >= 1, "an integer >= 1")
_PAIR = (lambda p: _finite(p[0]) and _finite(p[1]) and p[0] <= p[1], "low:high with low <= high")


def _c(name, default, kind, rule, choices=()):
    return _Const(name, default, kind, rule[0], rule[1], choices)


_PEAR_COMMON = (
    _c("behavior", "data", "choice", (lambda s: True, "data or self"), ("data", "self")),
    _c("gamma", 0.999, "float", (lambda x: _finite(x) and 0 < x <= 1, "a number in (0, 1]")),
    _c("token_clip", (-0.08, 0.3), "pair", _PAIR),
    _c("total_clip", (-10.0, 5.0), "pair", _PAIR),
)

_CURIO_TAU = ("pivot", "gain", "slope", "tau_min", "tau_max", "top_k", "floor")
"""CurioSFT's constants of ``losses.entropy_guided_temperature``."""


# ----------------------------------------------------------------------------- the families
class Family:
    """One method family: its constants and every fact a trainer needs about it.

    ``consts``: the constants in canonical order (the first one is ``@value``); ``always_at``: whether
    ``str`` always writes ``@value``. ``needs_base`` / ``needs_teacher`` / ``needs_sequence_target``:
    the frozen pi_base (GIFT, ASFT, PriFT), the copy updated during SFT by :meth:`teacher_schedule`
    (CurioSFT's EMA teacher, PSFT's snapshot), the exact sequence-level target (tabular only). The
    methods below receive the resolved :class:`Method`. To add a family: subclass this, set
    its constants, write :meth:`token_loss` (and :meth:`fused` if ``llm.fused`` has a kernel for it),
    and register an instance in ``_FAMILIES``.
    """

    consts: tuple[_Const, ...] = ()
    always_at = False
    needs_base = False
    needs_teacher = False
    needs_sequence_target = False

    def check(self, m: Method, spec: str) -> None:
        """Rules across constants; ValueError naming ``spec``."""

    def needs_behavior_logp(self, m: Method) -> bool:
        """Needs log pi_beta of the data tokens."""
        return False

    def couples_rows(self, m: Method) -> bool:
        """Whether a row's loss depends on the other rows of its batch (then it needs the whole batch,
        with its mask: no row collapsing, no chunking over rows)."""
        return False

    def token_loss(self, m: Method, logits, targets, base_logits, teacher_logits, mask) -> torch.Tensor:
        """The position-wise loss ``[B, T]``."""
        raise ValueError(f"method {str(m)!r} has no SFT loss")

    def weights(self, m: Method, logp, behavior_logp, mask) -> torch.Tensor | None:
        """Detached per-token weights of the position-wise loss (None: none)."""
        return None

    def teacher_schedule(self, m: Method) -> tuple[int, float]:
        """``(every, keep)``: the teacher copy is updated to ``keep teacher + (1 - keep) model`` after
        every ``every``-th step (CurioSFT's EMA: its ema_every and ema_keep)."""
        return m["ema_every"], m["ema_keep"]

    def fused(self, m: Method) -> tuple[str, dict[str, float]]:
        """The ``llm.fused`` kernel that computes :meth:`token_loss` and its constants; ValueError
        naming the spec when the kernels do not implement this method's constants."""
        raise ValueError(f"method {str(m)!r}: the fused path has no kernel for it (use chunked_per_token)")


class _NoSFT(Family):
    """``none``: no SFT stage."""


class _SFT(Family):
    def token_loss(self, m, logits, targets, base_logits, teacher_logits, mask):
        return losses.sft_loss(logits, targets)

    def fused(self, m):
        return "sft", {}


class _DFT(Family):
    def token_loss(self, m, logits, targets, base_logits, teacher_logits, mask):
        return losses.dft_loss(logits, targets)

    def fused(self, m):
        return "dft", {}


class _EntropySFT(Family):
    consts = (
        _c("coef", 0.1, "float", _GE0),
        _c("top_k", None, "optint", (lambda x: x is None or x >= 1, "none or an integer >= 1")),
        _c("rho", 1.0, "float", (lambda x: _finite(x) and 0 < x <= 1, "a number in (0, 1]")),
    )
    always_at = True

    def couples_rows(self, m):
        return m["rho"] < 1  # the entropy term is kept on the batch's top-rho entropy quantile

    def token_loss(self, m, logits, targets, base_logits, teacher_logits, mask):
        kw = dict(top_k=m["top_k"], rho=m["rho"])
        if self.couples_rows(m):
            kw["mask"] = mask
        return losses.entropy_sft_loss(logits, targets, coef=m["coef"], **kw)

    def fused(self, m):
        if m["top_k"] is not None or self.couples_rows(m):
            raise ValueError(
                f"method {str(m)!r}: the fused path has no top_k / rho < 1 (use chunked_per_token)"
            )
        return "entropy_sft", {"entropy_coef": float(m["coef"])}


class _Gift(Family):
    consts = (
        _c("beta", 20.0, "float", (lambda x: x >= 0, "a number >= 0 (inf = SFT)")),
        _c("smooth", 0.0, "float", (lambda x: _finite(x) and 0 <= x <= 1, "a number in [0, 1]")),
    )
    always_at = True
    needs_base = True

    def token_loss(self, m, logits, targets, base_logits, teacher_logits, mask):
        if base_logits is None:
            raise ValueError(f"method {str(m)!r} needs base_logits")
        return losses.gift_loss(logits, targets, base_logits, beta=m["beta"], smooth=m["smooth"])

    def fused(self, m):
        return "gift", {"gift_beta": float(m["beta"]), "gift_smooth": float(m["smooth"])}


class _GiftSeq(Family):
    """The exact sequence-level Gibbs target: the loss is :meth:`Method.sequence_loss` on a target
    that only the tabular pipeline (the whole prefix tree) computes."""

    consts = (_c("beta", 20.0, "float", (lambda x: _finite(x) and x >= 0, "a finite number >= 0")),)
    always_at = True
    needs_base = True
    needs_sequence_target = True

    def token_loss(self, m, logits, targets, base_logits, teacher_logits, mask):
        raise ValueError(_NO_SEQUENCE_TARGET.format(str(m)))


class _Curio(Family):
    consts = (
        _c("alpha", 1.0, "float", _GE0),
        _c("ema_every", 5, "int", _INT1),
        _c("ema_keep", 0.01, "float", (lambda x: _finite(x) and 0 <= x <= 1, "a number in [0, 1]")),
        _c("pivot", 1.2, "float", (_finite, "a finite number")),
        _c("gain", 0.5, "float", (_finite, "a finite number")),
        _c("slope", 2.0, "float", (_finite, "a finite number")),
        _c("tau_min", 1.1, "float", _GT0),
        _c("tau_max", 1.5, "float", _GT0),
        _c("top_k", 512, "int", _INT1),
        _c("floor", 0.03, "float", _GE0),
    )
    needs_teacher = True

    def check(self, m, spec):
        if m["tau_max"] < m["tau_min"]:
            raise ValueError(f"method {spec!r}: tau_max must be >= tau_min")

    def token_loss(self, m, logits, targets, base_logits, teacher_logits, mask):
        if teacher_logits is None:
            raise ValueError(f"method {str(m)!r} needs teacher_logits")
        tau = losses.entropy_guided_temperature(teacher_logits, **{n: m[n] for n in _CURIO_TAU})
        return losses.curio_loss(logits, targets, teacher_logits, tau=tau, alpha=m["alpha"])

    def fused(self, m):
        default = {c.name: c.default for c in self.consts}
        if any(m[k] != default[k] for k in _CURIO_TAU):
            raise ValueError(
                f"method {str(m)!r}: the fused path uses the default temperature constants "
                f"({', '.join(_CURIO_TAU)}); use chunked_per_token for others"
            )
        tau = {f"curio_{k}": m[k] for k in ("top_k", "floor", "tau_min")}
        return "curio", {"curio_alpha": float(m["alpha"]), **tau}


class _Pear(Family):
    """PEAR at one ``level``: the NLL, weighted by ``losses.pear_weights``."""

    def __init__(self, level: str):
        self.level = level
        extra = (_c("block_size", 4, "int", _INT1),) if level == "block" else ()
        self.consts = _PEAR_COMMON[:1] + extra + _PEAR_COMMON[1:]

    def needs_behavior_logp(self, m):
        return m["behavior"] == "data"

    def token_loss(self, m, logits, targets, base_logits, teacher_logits, mask):
        return losses.sft_loss(logits, targets)

    def weights(self, m, logp, behavior_logp, mask):
        if m["behavior"] == "self":
            behavior_logp = logp.detach()
        elif behavior_logp is None:
            raise ValueError(f"method {str(m)!r} needs behavior_logp (or use @self)")
        kw = {"block_size": m["block_size"]} if self.level == "block" else {}
        return losses.pear_weights(
            logp,
            behavior_logp,
            mask,
            level=self.level,
            gamma=m["gamma"],
            token_clip=m["token_clip"],
            total_clip=m["total_clip"],
            **kw,
        )

    def fused(self, m):
        return "pear", {}  # the NLL; weighted by Method.weights


class _KLAnchored(Family):
    """ASFT (``asft``: DFT + lam KL(pi_base || pi)) and its ablation ``sft_kl`` (SFT + lam KL)."""

    consts = (_c("lam", 0.1, "float", _GE0),)
    needs_base = True

    def __init__(self, loss):
        self.loss = loss

    def token_loss(self, m, logits, targets, base_logits, teacher_logits, mask):
        if base_logits is None:
            raise ValueError(f"method {str(m)!r} needs base_logits")
        return self.loss(logits, targets, base_logits, lam=m["lam"])


class _Prob(Family):
    """The probability family (1 - pi(y)^alpha) / alpha: 0 is SFT, 1 has DFT's gradient."""

    consts = (_c("alpha", 1.0, "float", _GE0),)
    always_at = True

    def token_loss(self, m, logits, targets, base_logits, teacher_logits, mask):
        return losses.prob_loss(logits, targets, alpha=m["alpha"])


class _PSFT(Family):
    """PSFT: the clipped surrogate at advantage 1 against a snapshot of the policy, which is the
    teacher slot updated with keep 0 every ``refresh`` steps."""

    consts = (
        _c("epsilon", 0.28, "float", (lambda x: x >= 0, "a number >= 0 (inf = no clip)")),
        _c("refresh", 8, "int", _INT1),
    )
    needs_teacher = True

    def teacher_schedule(self, m):
        return m["refresh"], 0.0

    def token_loss(self, m, logits, targets, base_logits, teacher_logits, mask):
        if teacher_logits is None:
            raise ValueError(f"method {str(m)!r} needs teacher_logits (the policy snapshot)")
        old_logp = losses.logprobs(teacher_logits, targets).detach()
        return losses.psft_loss(logits, targets, old_logp, epsilon=m["epsilon"])


class _PriFT(Family):
    """PriFT: the NLL weighted by the frozen base (``prob``: b(y); ``mass``: a cumulative-mass mask)."""

    consts = (
        _c("weight", "prob", "choice", (lambda s: True, "prob or mass"), losses.PRIFT_KINDS),
        _c("threshold", 0.5, "float", (lambda x: _finite(x) and 0 <= x <= 1, "a number in [0, 1]")),
    )
    always_at = True
    needs_base = True

    def token_loss(self, m, logits, targets, base_logits, teacher_logits, mask):
        if base_logits is None:
            raise ValueError(f"method {str(m)!r} needs base_logits")
        return losses.prift_loss(logits, targets, base_logits, m["weight"], m["threshold"])


class _ChordPhi(Family):
    def token_loss(self, m, logits, targets, base_logits, teacher_logits, mask):
        return losses.chord_phi_loss(logits, targets)


#: kind -> its family (the one place every method fact lives)
_FAMILIES: dict[str, Family] = {
    "none": _NoSFT(),
    "sft": _SFT(),
    "dft": _DFT(),
    "entropy_sft": _EntropySFT(),
    "gift": _Gift(),
    "gift_seq": _GiftSeq(),
    "curio": _Curio(),
    "pear_token": _Pear("token"),
    "pear_block": _Pear("block"),
    "pear_sequence": _Pear("sequence"),
    "asft": _KLAnchored(losses.asft_loss),
    "sft_kl": _KLAnchored(losses.sft_kl_loss),
    "prob": _Prob(),
    "psft": _PSFT(),
    "prift": _PriFT(),
    "chord_phi": _ChordPhi(),
}
KINDS = tuple(_FAMILIES)


def _parse_value(c: _Const, text: str, spec: str) -> Any:
    bad = ValueError(f"method {spec!r}: {c.name}={text!r} is not {c.rule}")
    try:
        if c.kind == "choice":
            v = text
            if v not in c.choices:
                raise bad
        elif c.kind == "pair":
            lo, sep, hi = text.partition(":")
            if not sep:
                raise bad
            v = (float(lo), float(hi))
        elif c.kind in ("int", "optint"):
            if c.kind == "optint" and text.lower() == "none":
                v = None
            else:
                f = float(text)
                if not f.is_integer():
                    raise bad
                v = int(f)
        else:
            v = float(text)
    except (ValueError, OverflowError):
        raise bad from None
    if not c.check(v):
        raise bad
    return v


def _fmt(v: Any) -> str:
    if isinstance(v, tuple):
        return f"{v[0]:g}:{v[1]:g}"
    if isinstance(v, float):
        return f"{v:g}"
    return "none" if v is None else str(v)


# ----------------------------------------------------------------------------- the method
_NO_SEQUENCE_TARGET = (
    "method {!r} needs the exact per-position Gibbs target over whole sequences (sequence_target), which "
    "only the tabular pipeline (toybench.tabular, which enumerates the prefix tree) computes; use "
    "gift@beta, the token approximation, at the other scales"
)


@dataclass
class MethodState:
    """A method's frozen copies: ``base`` (pi_base: GIFT, ASFT, PriFT) and ``teacher`` (updated during SFT:
    CurioSFT's EMA teacher, PSFT's snapshot); None if unused."""

    base: Any = None
    teacher: Any = None


@dataclass(frozen=True)
class Method:
    """One SFT method with every constant resolved. Build with :meth:`parse`.

    >>> m = Method.parse("gift@3,smooth=0.1")
    >>> m.kind, m["beta"], m["smooth"], str(m), m.needs_base
    ('gift', 3.0, 0.1, 'gift@3,smooth=0.1', True)
    >>> str(Method.parse("curio,alpha=1,ema_every=10"))
    'curio,ema_every=10'
    """

    kind: str
    constants: tuple[tuple[str, Any], ...] = ()
    """(name, value) of every constant of the kind, in canonical order."""

    # -- parsing ---------------------------------------------------------------------------------
    @staticmethod
    def parse(spec: str | Method) -> Method:
        """Parse ``kind[@value][,key=value]...``; ValueError naming ``spec`` when invalid."""
        if isinstance(spec, Method):
            return spec
        if not isinstance(spec, str):
            raise ValueError(f"method {spec!r}: a method spec is a string like 'gift@3'")
        head, *pairs = spec.strip().split(",")
        kind, at, value = head.partition("@")
        if kind not in _FAMILIES:
            raise ValueError(
                f"method {spec!r}: unknown kind {kind!r}; kinds are {KINDS} "
                "(spelling kind[@value][,key=value])"
            )
        fam = _FAMILIES[kind]
        consts = fam.consts
        vals = {c.name: c.default for c in consts}
        by_name = {c.name: c for c in consts}
        if at:
            if not consts:
                raise ValueError(f"method {spec!r}: {kind} takes no '@value'")
            vals[consts[0].name] = _parse_value(consts[0], value, spec)
        for p in pairs:
            key, eq, text = p.partition("=")
            key = key.strip()
            if key in by_name and not eq:
                raise ValueError(f"method {spec!r}: keyword {key!r} needs a value ({key}=...)")
            if key not in by_name:
                known = ", ".join(by_name) or "none"
                raise ValueError(f"method {spec!r}: unknown keyword {p!r}; {kind} takes: {known}")
            vals[key] = _parse_value(by_name[key], text.strip(), spec)
        m = Method(kind, tuple((c.name, vals[c.name]) for c in consts))
        fam.check(m, spec)
        return m

    def __str__(self) -> str:
        out = self.kind
        for i, c in enumerate(self.family.consts):
            v = self[c.name]
            if i == 0 and (self.family.always_at or v != c.default):
                out += "@" + _fmt(v)
            elif i > 0 and v != c.default:
                out += f",{c.name}={_fmt(v)}"
        return out

    def __getitem__(self, name: str) -> Any:
        for k, v in self.constants:
            if k == name:
                return v
        raise KeyError(f"method {str(self)!r} has no constant {name!r}")

    # -- what it is and needs (declared by its family) -------------------------------------------
    @property
    def family(self) -> Family:
        """The family of this kind: the facts below, its losses and its fused-kernel options."""
        return _FAMILIES[self.kind]

    @property
    def value(self) -> Any:
        """The main (``@``) constant when it is a number, else None: kinds without one, and choices
        (PEAR's behaviour source, PriFT's weight), so a results frame's ``value`` column stays numeric."""
        if not self.constants or self.family.consts[0].kind == "choice":
            return None
        return self.constants[0][1]

    @property
    def pear_level(self) -> str | None:
        return getattr(self.family, "level", None)

    @property
    def needs_base(self) -> bool:
        """Needs a frozen copy of the model as it was before SFT (GIFT's pi_base)."""
        return self.family.needs_base

    @property
    def needs_sequence_target(self) -> bool:
        """Needs the exact per-position target over whole sequences (``gift_seq``): only the tabular
        pipeline, which enumerates the prefix tree, can give it (``sequence_target`` of :meth:`loss`)."""
        return self.family.needs_sequence_target

    @property
    def needs_teacher(self) -> bool:
        """Needs a copy of the model updated during SFT by :meth:`ema_update` (CurioSFT's EMA teacher,
        PSFT's snapshot)."""
        return self.family.needs_teacher

    @property
    def needs_behavior_logp(self) -> bool:
        """Needs log pi_beta of the data tokens (PEAR, unless ``@self``)."""
        return self.family.needs_behavior_logp(self)

    @property
    def couples_rows(self) -> bool:
        """Whether a row's loss depends on the other rows of its batch (``entropy_sft`` with rho < 1:
        an entropy quantile over the batch): such a loss takes the whole batch and its mask."""
        return self.family.couples_rows(self)

    def fused_options(self) -> tuple[str, dict[str, float]]:
        """The ``llm.fused`` kernel of this method and its constants; ValueError naming the spec when
        the kernels do not implement its constants (entropy-SFT ``top_k``/``rho < 1``, non-default
        CurioSFT temperature constants) or the kind."""
        return self.family.fused(self)

    def token_level(self, scale: str) -> Method:
        """This method if ``scale`` (a model trained on sampled sequences: the tiny transformer,
        ``llm``) can run it, else a ValueError naming the spec: ``gift_seq`` needs the prefix tree."""
        if self.needs_sequence_target:
            raise ValueError(f"{scale}: " + _NO_SEQUENCE_TARGET.format(str(self)))
        return self

    @property
    def aux(self) -> str | None:
        """Which frozen copy's logits :meth:`token_loss` reads: ``base``, ``teacher`` or None."""
        return "base" if self.needs_base else "teacher" if self.needs_teacher else None

    # -- state -----------------------------------------------------------------------------------
    def init_state(self, model: torch.Tensor | torch.nn.Module) -> MethodState:
        """Frozen copies of ``model`` (tensor parameters or an ``nn.Module``) for what the method needs."""

        def frozen(x):
            if isinstance(x, torch.nn.Module):
                return copy.deepcopy(x).eval().requires_grad_(False)
            return x.detach().clone()

        return MethodState(
            base=frozen(model) if self.needs_base else None,
            teacher=frozen(model) if self.needs_teacher else None,
        )

    def ema_due(self, step: int) -> bool:
        """Whether the teacher is updated after optimizer step ``step`` (1-based)."""
        return self.needs_teacher and step % self.family.teacher_schedule(self)[0] == 0

    def ema_update(self, teacher, model):
        """teacher <- keep * teacher + (1 - keep) * model (keep from the family's ``teacher_schedule``:
        CurioSFT's ema_keep, 0 for PSFT's snapshot); returns the teacher.

        Tensors: a new tensor (functional). ``nn.Module``: the teacher's parameters in place.
        """
        keep = self.family.teacher_schedule(self)[1]

        def ema(t, m):
            return keep * t + (1 - keep) * m

        if isinstance(teacher, torch.nn.Module):
            with torch.no_grad():
                for pt, pm in zip(teacher.parameters(), model.parameters(), strict=True):
                    pt.copy_(ema(pt, pm.detach()))
            return teacher
        return ema(teacher, model.detach())

    # -- the loss --------------------------------------------------------------------------------
    def token_loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        base_logits: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The position-wise part of the loss, ``[B, T]`` (PEAR: the NLL, before :meth:`weights`).

        Each position depends on its own logits only (except when :attr:`couples_rows`, which needs
        ``mask``), so the chunked LLM losses can apply it chunk by chunk.
        """
        return self.family.token_loss(self, logits, targets, base_logits, teacher_logits, mask)

    def sequence_loss(self, logits: torch.Tensor, targets: torch.Tensor, sequence_target) -> torch.Tensor:
        """``gift_seq``'s loss ``[B, T]``: the cross-entropy to the sequence-level target (GIFT's loss
        with the target as "base" and no tilt)."""
        if not self.needs_sequence_target or sequence_target is None:
            raise ValueError(_NO_SEQUENCE_TARGET.format(str(self)))
        return losses.gift_loss(logits, targets, sequence_target, beta=0.0)

    def weights(
        self, logp: torch.Tensor, behavior_logp: torch.Tensor | None, mask: torch.Tensor
    ) -> torch.Tensor | None:
        """PEAR's detached weights ``[B, T]`` from log pi(y_t) (None for every other kind)."""
        return self.family.weights(self, logp, behavior_logp, mask)

    def loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        mask: torch.Tensor,
        base_logits: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
        behavior_logp: torch.Tensor | None = None,
        sequence_target: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-token SFT loss ``[B, T]``: ``toybench.objectives.sft_per_token`` of these inputs.

        Args:
          logits: [B, T, V] trained policy; targets, mask: [B, T].
          base_logits: [B, T, V] frozen pi_base (GIFT). teacher_logits: [B, T, V] EMA teacher (CurioSFT).
          behavior_logp: [B, T] log pi_beta of the data tokens (PEAR, unless ``@self``).
          sequence_target: [B, T, V] log q(. | y_<t) of the exact sequence-level Gibbs target at the
            data's prefixes (``gift_seq``; the tabular pipeline builds it with ``TreeGeometry.gibbs_logp``).
        Inputs the method does not need are ignored.
        """
        inputs = objectives.SFTInputs(
            mask, targets, logits, base_logits, teacher_logits, behavior_logp, sequence_target
        )
        return objectives.sft_per_token(self, inputs)
