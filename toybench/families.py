"""The method families: each SFT method kind's constants, defaults, needs and per-token loss.

One :class:`Family` subclass per kind, registered in ``_FAMILIES`` (kind -> family); ``KINDS`` lists
them. :class:`toybench.methods.Method` parses a spec against this registry and asks its family every
fact (what it needs, whether it couples rows of a batch, its fused-kernel options). To add a method,
write a ``Family`` subclass here and register it; every scale picks it up through
``toybench.objectives.sft_per_token``. The spelling of specs and the table of kinds and constants:
``toybench.methods``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from toybench import losses

if TYPE_CHECKING:  # annotations only: methods imports this module
    from toybench.methods import Method

__all__ = ["Family", "KINDS"]

_NO_SEQUENCE_TARGET = (
    "method {!r} needs the exact per-position Gibbs target over whole sequences (sequence_target), which "
    "only the tabular pipeline (toybench.tabular, which enumerates the prefix tree) computes; use "
    "gift@beta, the token approximation, at the other scales"
)


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
