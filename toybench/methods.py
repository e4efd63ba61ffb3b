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

Every fact about a kind lives in its :class:`Family` (one small class per kind, in
``toybench/families.py``, registered in ``_FAMILIES``): its constants and defaults, what it needs
(``needs_base``, ``needs_teacher``, ``needs_behavior_logp``, ``needs_sequence_target``), whether its
loss couples the rows of a batch (``couples_rows``), its position-wise loss and weights, and its
``llm.fused`` kernel options.
:meth:`Method.init_state` makes the frozen copies for tensors and ``nn.Module`` alike and
:meth:`Method.ema_update` is the one EMA update. The per-token SFT loss is assembled from these by
``toybench.objectives.sft_per_token`` at every scale. This module only chooses and wires
``toybench.losses``; it contains no loss formula of its own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from toybench import losses, objectives
from toybench.families import _FAMILIES, _NO_SEQUENCE_TARGET, KINDS, Family, _Const
from toybench.objectives import LOSS_TYPES, loss_type_reduction

__all__ = ["Family", "Method", "MethodState", "KINDS", "LOSS_TYPES", "loss_type_reduction"]


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
