"""A loss-contract kit: check your own per-token loss the way the project checks its own.

The contract (README, "The loss contract"): a loss is a pure function
``fn(logits [B, T, V], targets [B, T], **aux) -> per-token [B, T]``, reduced by
:func:`toybench.losses.reduce`. :func:`check_loss_contract` runs ``fn`` on hypothesis-generated
instances (float64, extreme logits of +-1e4, all-masked rows) and raises ``AssertionError``
whose message starts with the name of the property that failed (``[masked_equals_sliced] ...``):

=======================  =====================================================================
``shape_dtype``           output is a ``[B, T]`` tensor of the logits' dtype (float32 / float64)
``finite``                finite values and logit gradients, extreme logits included
``pure``                  the inputs are not modified in place
``shift_invariance``      adding a constant per position to ``logits`` (and, separately, to
                          each aux logits input) leaves the output unchanged
``detached``              no gradient reaches the inputs that must be detached (teacher/base
                          logits, old/ref/behaviour log-probs, advantages, tau), even when they
                          ``requires_grad``
``position_independence`` perturbing every input at position t' changes only output t'
``masked_equals_sliced``  ``reduce(fn(full), mask, mode)`` equals the same reduction over the
                          counted positions cut out row by row, for every ``reduce`` mode
                          (``constant`` with and without an explicit constant)
``no_leak``               inf / NaN at masked positions (logits, aux logits, aux [B, T] values)
                          change neither the reduced loss nor the logit gradient at counted
                          positions
``gradcheck``             ``torch.autograd.gradcheck`` (fast mode: random projections of the
                          Jacobian) in float64 w.r.t. ``logits`` and every aux input with
                          gradient (moderate logits: finite differences of 1e4-sized values
                          are meaningless); a failure reports the largest entry of
                          |analytic - numeric| over the full Jacobians, and where
``declared_gradient``     only with ``grad=``, in place of ``gradcheck``: autograd's gradient of
                          ``fn(...).sum()`` equals the gradient the user declares
=======================  =====================================================================

A property that does not apply is declared, with its reason, in ``skip`` (e.g.
``skip={"position_independence": "PEAR weights sum over later tokens"}``); unknown names raise.

A loss with a stop-gradient by design (DFT's ``-sg[pi(y)] log pi(y)``, CurioSFT whose teacher is
the model itself) cannot pass ``gradcheck``: finite differences see the stopped factor move. Its
gradient still gets checked: declare the intended one, ``grad=lambda logits, targets, **aux: ...``
(``d fn(...).sum() / d logits``, ``[B, T, V]``), and ``declared_gradient`` compares autograd's
gradient with it on every generated instance (extreme logits included). The failure message of
``gradcheck`` points to this option. Every failure, on every torch the project supports, is an
``AssertionError`` naming the property (``gradcheck`` runs with ``raise_exception=False``: the home
of torch's ``GradcheckError`` moved between versions).

Aux inputs, by name (``needs``): ``base_logits``, ``teacher_logits`` ``[B, T, V]``; ``logp``,
``old_logp``, ``ref_logp``, ``behavior_logp`` ``[B, T]`` (log-probabilities in [-4, 0]);
``adv`` ``[B]``; ``tau`` ``[B, T]`` in [0.5, 2]; ``mask`` ``[B, T]`` (the same mask the
reduction uses). ``logp`` carries gradient; the others are detached by default (``detached=``).

>>> from toybench import losses as L
>>> check_loss_contract(L.sft_loss, max_examples=3)
>>> def dft_grad(logits, targets):  # d/dz of -sg[pi(y)] log pi(y) = pi(y) (pi - e_y)
...     p = logits.softmax(-1)
...     e_y = torch.nn.functional.one_hot(targets, p.shape[-1]).to(p.dtype)
...     return p.gather(-1, targets[..., None]) * (p - e_y)
>>> check_loss_contract(L.dft_loss, grad=dft_grad, max_examples=3)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

try:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
except ImportError as e:  # pragma: no cover - the kit is a dev tool
    raise ImportError("toybench.testing needs hypothesis: pip install 'sft-for-rl[dev]'") from e

from toybench.losses import REDUCE_MODES, reduce

__all__ = [
    "PROPERTIES",
    "AUX_LOGITS",
    "AUX_LOGP",
    "AUX_NAMES",
    "DETACHED_BY_DEFAULT",
    "LossInputs",
    "logits_arrays",
    "masks",
    "loss_inputs",
    "check_loss_contract",
]

PROPERTIES = (
    "shape_dtype",
    "finite",
    "pure",
    "shift_invariance",
    "detached",
    "position_independence",
    "masked_equals_sliced",
    "no_leak",
    "gradcheck",
    "declared_gradient",
)
AUX_LOGITS = ("base_logits", "teacher_logits")  # [B, T, V]
AUX_LOGP = ("logp", "old_logp", "ref_logp", "behavior_logp")  # [B, T]
AUX_NAMES = (*AUX_LOGITS, *AUX_LOGP, "adv", "tau", "mask")
DETACHED_BY_DEFAULT = ("base_logits", "teacher_logits", "old_logp", "ref_logp", "behavior_logp", "adv", "tau")
_BT_AUX = (*AUX_LOGP, "tau")  # per-position [B, T] float aux


@dataclass
class LossInputs:
    """One generated instance: ``logits [B, T, V]``, ``targets [B, T]``, ``mask [B, T]``, ``aux``."""

    logits: Tensor
    targets: Tensor
    mask: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)

    def kwargs(self, needs: Iterable[str]) -> dict[str, Tensor]:
        return {n: (self.mask if n == "mask" else self.aux[n]) for n in needs}


# ----------------------------------------------------------------------------- strategies
def logits_arrays(rng: np.random.Generator, shape: tuple[int, ...], extreme: bool) -> np.ndarray:
    """Normal(0, 3) logits; with ``extreme``, about 30% replaced by +-1e4 (saturated softmax)."""
    z = rng.normal(scale=3.0, size=shape)
    if extreme:
        hit = rng.random(shape) < 0.3
        z[hit] = 1e4 * rng.choice([-1.0, 1.0], size=int(hit.sum()))
    return z


@st.composite
def masks(draw, B: int, T: int) -> Tensor:
    """``[B, T]`` 0/1 float masks; rows may be all ones, all zeros, or mixed."""
    rows = [draw(st.sampled_from(["mixed", "mixed", "all", "none"])) for _ in range(B)]
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    m = rng.random((B, T)) < 0.6
    for b, kind in enumerate(rows):
        if kind != "mixed":
            m[b] = kind == "all"
    return torch.tensor(m.astype(np.float64))


@st.composite
def loss_inputs(
    draw,
    needs: Iterable[str] = (),
    max_b: int = 3,
    max_t: int = 5,
    max_v: int = 6,
    min_t: int = 1,
    extreme: bool | None = None,
    dtype: torch.dtype = torch.float64,
) -> LossInputs:
    """An instance of the loss contract with the aux inputs named in ``needs``.

    ``extreme=None`` draws whether to plant +-1e4 logits; ``True``/``False`` forces it.
    """
    needs = tuple(needs)
    unknown = [n for n in needs if n not in AUX_NAMES]
    if unknown:
        raise ValueError(f"needs: unknown aux input(s) {unknown}; known: {AUX_NAMES}")
    B = draw(st.integers(1, max_b))
    T = draw(st.integers(min_t, max_t))
    V = draw(st.integers(2, max_v))
    ext = draw(st.booleans()) if extreme is None else extreme
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    mask = draw(masks(B, T))
    aux: dict[str, Tensor] = {}
    for n in needs:
        if n in AUX_LOGITS:
            aux[n] = torch.tensor(logits_arrays(rng, (B, T, V), ext), dtype=dtype)
        elif n in AUX_LOGP:
            aux[n] = torch.tensor(np.log(rng.uniform(0.02, 1.0, size=(B, T))), dtype=dtype)
        elif n == "adv":
            aux[n] = torch.tensor(rng.normal(size=B), dtype=dtype)
        elif n == "tau":
            aux[n] = torch.tensor(rng.uniform(0.5, 2.0, size=(B, T)), dtype=dtype)
    return LossInputs(
        logits=torch.tensor(logits_arrays(rng, (B, T, V), ext), dtype=dtype),
        targets=torch.tensor(rng.integers(0, V, size=(B, T))),
        mask=mask,
        aux=aux,
    )


# ----------------------------------------------------------------------------- helpers
def _call(fn, inp: LossInputs, needs, logits=None, targets=None, aux=None, mask=None) -> Tensor:
    kw = dict(inp.aux if aux is None else aux)
    if "mask" in needs:
        kw["mask"] = inp.mask if mask is None else mask
    kw = {n: kw[n] for n in needs}
    return fn(inp.logits if logits is None else logits, inp.targets if targets is None else targets, **kw)


def _close(a: Tensor, b: Tensor, rtol: float, atol: float, what: str) -> None:
    if not torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True):
        diff = (a - b).abs()
        diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
        raise AssertionError(f"{what}: max abs difference {diff.max().item():.3g}\n got {a}\n expected {b}")


def _slice_row(inp: LossInputs, b: int, keep: Tensor) -> LossInputs:
    aux = {}
    for n, v in inp.aux.items():
        aux[n] = v[b : b + 1] if n == "adv" else v[b : b + 1][:, keep]
    ones = torch.ones(1, int(keep.sum()), dtype=inp.mask.dtype)
    return LossInputs(inp.logits[b : b + 1][:, keep], inp.targets[b : b + 1][:, keep], ones, aux)


def _poison_at_masked(x: Tensor, m: Tensor, value: float) -> Tensor:
    mm = m if x.ndim == m.ndim else m[..., None]
    return torch.where(mm, x, torch.full_like(x, value))


# ----------------------------------------------------------------------------- the checks
GradFn = Callable[..., "Tensor | Mapping[str, Tensor]"]


@dataclass(frozen=True)
class _Spec:
    """What one :func:`check_loss_contract` call checks: the loss, its inputs and tolerances."""

    fn: Callable[..., Tensor]
    needs: tuple[str, ...]
    det: tuple[str, ...]  # aux inputs that must receive no gradient
    grad_aux: tuple[str, ...]  # aux inputs with gradient (checked beside the logits)
    masked_targets: int | None
    rtol: float
    atol: float
    grad: GradFn | None  # the declared gradient of fn(...).sum(), if any

    def call(self, inp: LossInputs, **kw) -> Tensor:
        return _call(self.fn, inp, self.needs, **kw)

    def live(self, inp: LossInputs) -> list[Tensor]:
        """Leaf copies of the logits and the aux inputs with gradient, in that order."""
        xs = [inp.logits.clone().requires_grad_(True)]
        return xs + [inp.aux[n].clone().requires_grad_(True) for n in self.grad_aux]

    def call_live(self, inp: LossInputs, xs: list[Tensor], **kw) -> Tensor:
        aux = {**inp.aux, **dict(zip(self.grad_aux, xs[1:]))}
        return self.call(inp, logits=xs[0], aux=aux, **kw)


def _prop_shape_dtype(s: _Spec, inp: LossInputs) -> None:
    for dt in (torch.float64, torch.float32):
        z = inp.logits.to(dt)
        aux = {n: (v.to(dt) if v.is_floating_point() else v) for n, v in inp.aux.items()}
        out = s.call(inp, logits=z, aux=aux)
        assert isinstance(out, Tensor), f"fn must return a torch.Tensor, got {type(out).__name__}"
        assert tuple(out.shape) == tuple(inp.targets.shape), (
            f"output shape {tuple(out.shape)} != [B, T] = {tuple(inp.targets.shape)}"
        )
        assert out.dtype == dt, f"{dt} logits gave a {out.dtype} output"


def _prop_finite(s: _Spec, inp: LossInputs) -> None:
    z = inp.logits.clone().requires_grad_(True)
    out = s.call(inp, logits=z)
    assert torch.isfinite(out).all(), f"non-finite per-token values {out}"
    if out.requires_grad:
        (g,) = torch.autograd.grad(out.sum(), z, allow_unused=True)
        assert g is None or torch.isfinite(g).all(), "non-finite logit gradient"


def _prop_pure(s: _Spec, inp: LossInputs) -> None:
    before = [inp.logits.clone(), inp.targets.clone(), inp.mask.clone()]
    before += [v.clone() for v in inp.aux.values()]
    s.call(inp)
    after = [inp.logits, inp.targets, inp.mask, *inp.aux.values()]
    names = ["logits", "targets", "mask", *inp.aux]
    for n, a, b in zip(names, before, after):
        assert torch.equal(a, b), f"fn modified its input {n!r} in place"


def _prop_shift_invariance(s: _Spec, inp: LossInputs) -> None:
    base = s.call(inp)
    rng = np.random.default_rng(int(inp.targets.sum()) + 1)
    for name in ("logits", *[n for n in s.needs if n in AUX_LOGITS]):
        x = inp.logits if name == "logits" else inp.aux[name]
        c = torch.tensor(rng.uniform(-50, 50, size=(*x.shape[:2], 1)), dtype=x.dtype)
        if name == "logits":
            out = s.call(inp, logits=x + c)
        else:
            out = s.call(inp, aux={**inp.aux, name: x + c})
        _close(out, base, s.rtol, s.atol, f"adding a constant per position to {name!r} changed the output")


def _prop_detached(s: _Spec, inp: LossInputs) -> None:
    z = inp.logits.clone().requires_grad_(True)
    live = {n: (v.clone().requires_grad_(True) if n in s.det else v) for n, v in inp.aux.items()}
    out = s.call(inp, logits=z, aux=live)
    names = [n for n in s.det if n in live]
    if not out.requires_grad or not names:
        return
    w = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(0))
    grads = torch.autograd.grad((out * w).sum(), [live[n] for n in names], allow_unused=True)
    for n, g in zip(names, grads):
        assert g is None or bool((g == 0).all()), f"gradient reaches {n!r}, which must be detached"


def _perturbed_at(inp: LossInputs, tp: int, rng: np.random.Generator) -> tuple[Tensor, Tensor, dict]:
    """Fresh logits, target and aux values at position ``tp``, the rest unchanged."""
    B = inp.targets.shape[0]
    z = inp.logits.clone()
    z[:, tp] = torch.tensor(rng.normal(scale=3.0, size=z[:, tp].shape), dtype=z.dtype)
    y = inp.targets.clone()
    y[:, tp] = torch.tensor(rng.integers(0, z.shape[-1], size=B))
    aux = {}
    for n, v in inp.aux.items():
        v = v.clone()
        if n in AUX_LOGITS:
            v[:, tp] = torch.tensor(rng.normal(scale=3.0, size=v[:, tp].shape), dtype=v.dtype)
        elif n in AUX_LOGP:
            v[:, tp] = torch.tensor(np.log(rng.uniform(0.02, 1.0, size=B)), dtype=v.dtype)
        elif n == "tau":
            v[:, tp] = torch.tensor(rng.uniform(0.5, 2.0, size=B), dtype=v.dtype)
        aux[n] = v
    return z, y, aux


def _prop_position_independence(s: _Spec, inp: LossInputs) -> None:
    T = inp.targets.shape[1]
    if T < 2:
        return
    base = s.call(inp)
    rng = np.random.default_rng(int(inp.targets.sum()) + 7)
    for tp in range(T):
        z, y, aux = _perturbed_at(inp, tp, rng)
        out = s.call(inp, logits=z, targets=y, aux=aux)
        others = [t for t in range(T) if t != tp]
        _close(out[:, others], base[:, others], s.rtol, s.atol, f"changing position {tp} changed {others}")


def _prop_masked_equals_sliced(s: _Spec, inp: LossInputs) -> None:
    m = inp.mask != 0
    full = s.call(inp)
    counted = [s.call(_slice_row(inp, b, m[b]))[0] for b in range(m.shape[0]) if bool(m[b].any())]
    total = sum((r.sum() for r in counted), full.new_zeros(()))
    n_tok = sum(r.numel() for r in counted)
    expect = {
        "sum": total,
        "token_mean": total / max(n_tok, 1),
        "seq_mean": sum((r.mean() for r in counted), full.new_zeros(())) / max(len(counted), 1),
    }
    for mode in REDUCE_MODES:
        for c in (None, 3.0) if mode == "constant" else (None,):
            got = reduce(full, inp.mask, mode, constant=c)
            want = total / (full.numel() if c is None else c) if mode == "constant" else expect[mode]
            _close(got, want, s.rtol, s.atol, f"reduce(fn(full), mask, {mode!r}, constant={c}) != sliced")


def _reduced_and_grads(s: _Spec, inp: LossInputs, logits, aux, targets) -> tuple[Tensor, list]:
    """``fn``'s output and the gradients of its masked sum w.r.t. the logits and grad aux inputs."""
    xs = [logits.clone().requires_grad_(True)] + [aux[n].clone().requires_grad_(True) for n in s.grad_aux]
    out = s.call(inp, logits=xs[0], targets=targets, aux={**aux, **dict(zip(s.grad_aux, xs[1:]))})
    if not out.requires_grad:
        return out, [None] * len(xs)
    grads = torch.autograd.grad(reduce(out, inp.mask, "sum"), xs, allow_unused=True)
    return out, [torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads)]


def _prop_no_leak(s: _Spec, inp: LossInputs) -> None:
    m = inp.mask != 0
    names = ["logits", *s.grad_aux]  # inputs with gradient, compared at counted positions
    clean, g_clean = _reduced_and_grads(s, inp, inp.logits, inp.aux, inp.targets)
    y = inp.targets
    if s.masked_targets is not None:
        y = torch.where(m, y, torch.full_like(y, s.masked_targets))
    for poison in (float("nan"), float("inf"), -float("inf")):
        aux = {
            n: (_poison_at_masked(v, m, poison) if (n in AUX_LOGITS or n in AUX_LOGP) else v)
            for n, v in inp.aux.items()
        }
        dirty, g_dirty = _reduced_and_grads(s, inp, _poison_at_masked(inp.logits, m, poison), aux, y)
        for mode in REDUCE_MODES:
            what = f"{poison} at masked positions changed reduce(.., {mode!r})"
            _close(reduce(dirty, inp.mask, mode), reduce(clean, inp.mask, mode), s.rtol, s.atol, what)
        for n, g, gc in zip(names, g_dirty, g_clean):
            if g is not None:
                what = f"{poison} at masked positions changed d/d{n} at counted ones"
                _close(g[m], gc[m], s.rtol, s.atol, what)


def _worst_entry(got: Tensor, want: Tensor) -> tuple[float, tuple[int, ...]]:
    """The largest ``|got - want|`` (NaN counts as inf) and its index."""
    diff = (got - want).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    i = int(diff.reshape(-1).argmax())
    return float(diff.reshape(-1)[i]), tuple(int(k) for k in np.unravel_index(i, tuple(diff.shape)))


def _jacobians(s: _Spec, inp: LossInputs, xs: list[Tensor], eps: float = 1e-6) -> list[tuple[Tensor, Tensor]]:
    """Per input: ``(analytic, numeric)`` Jacobians ``[*out.shape, *x.shape]`` (autograd; central
    differences in float64)."""
    xs = [x.detach().requires_grad_(True) for x in xs]
    out = s.call_live(inp, xs)
    pairs = []
    for k, x in enumerate(xs):
        ana = torch.zeros((*out.shape, *x.shape), dtype=torch.float64)
        num = torch.zeros_like(ana)
        for o in np.ndindex(*out.shape):
            if out.requires_grad:
                (g,) = torch.autograd.grad(out[o], x, retain_graph=True, allow_unused=True)
                ana[o] = 0.0 if g is None else g
        for j in np.ndindex(*x.shape):
            moved = []
            for sign in (1.0, -1.0):
                ys = [y.detach().clone() for y in xs]
                ys[k][j] += sign * eps
                with torch.no_grad():
                    moved.append(s.call_live(inp, ys))
            num[(..., *j)] = (moved[0] - moved[1]) / (2 * eps)
        pairs.append((ana, num))
    return pairs


_GRAD_HINT = (
    "If fn has a stop-gradient by design (sg[.], as DFT's -sg[pi(y)] log pi(y)), finite differences "
    "see the stopped factor move and cannot agree: declare the intended gradient instead, "
    "check_loss_contract(fn, grad=lambda logits, targets, **aux: <d sum(fn) / d logits>)."
)


def _prop_gradcheck(s: _Spec, inp: LossInputs) -> None:
    xs = s.live(inp)
    ok = torch.autograd.gradcheck(
        lambda *a: s.call_live(inp, list(a)),
        tuple(xs),
        eps=1e-6,
        atol=1e-5,
        rtol=1e-4,
        fast_mode=True,
        raise_exception=False,  # GradcheckError's home moved between torch versions
    )
    if ok:
        return
    names, worst = ["logits", *s.grad_aux], (-1.0, "", ())
    for name, (ana, num) in zip(names, _jacobians(s, inp, xs)):
        d, at = _worst_entry(ana, num)
        if d > worst[0]:
            worst = (d, name, at, float(ana[at]), float(num[at]))
    d, name, at = worst[:3]
    nd = inp.targets.dim()
    where = f"d out{list(at[:nd])} / d {name}{list(at[nd:])}"
    raise AssertionError(
        f"autograd gradient != float64 finite differences: largest difference {d:.3g} at {where} "
        f"(analytic {worst[3]:.6g}, numeric {worst[4]:.6g}). {_GRAD_HINT}"
    )


def _prop_declared_gradient(s: _Spec, inp: LossInputs) -> None:
    xs = s.live(inp)
    out = s.call_live(inp, xs)
    names = ["logits", *s.grad_aux]
    got = torch.autograd.grad(out.sum(), xs, allow_unused=True) if out.requires_grad else [None] * len(xs)
    with torch.no_grad():
        want = s.grad(inp.logits, inp.targets, **inp.kwargs(s.needs))
    want = {"logits": want} if isinstance(want, Tensor) else dict(want)
    missing = [n for n in names if n not in want]
    assert not missing, f"grad must return d sum(fn) / d{missing} too (a dict keyed by input name)"
    for n, x, g in zip(names, xs, got):
        g = torch.zeros_like(x) if g is None else g
        w = want[n].to(g.dtype)
        assert w.shape == g.shape, f"declared d/d{n} has shape {tuple(w.shape)}, not {tuple(g.shape)}"
        if not torch.allclose(g, w, rtol=1e-6, atol=1e-6, equal_nan=True):
            d, at = _worst_entry(g, w)
            raise AssertionError(
                f"autograd d sum(fn) / d{n} != the declared gradient: largest difference {d:.3g} at "
                f"{n}{list(at)} (autograd {float(g[at]):.6g}, declared {float(w[at]):.6g})"
            )


# property -> (check, strategy options); gradcheck draws small moderate instances: finite
# differences of 1e4-sized logits are meaningless, and its cost grows with B * T * V
_CHECKS: dict[str, tuple[Callable[[_Spec, LossInputs], None], dict]] = {
    "shape_dtype": (_prop_shape_dtype, {}),
    "finite": (_prop_finite, {}),
    "pure": (_prop_pure, {}),
    "shift_invariance": (_prop_shift_invariance, {}),
    "detached": (_prop_detached, {}),
    "position_independence": (_prop_position_independence, {"min_t": 2}),
    "masked_equals_sliced": (_prop_masked_equals_sliced, {}),
    "no_leak": (_prop_no_leak, {}),
    "gradcheck": (_prop_gradcheck, {"extreme": False, "max_b": 2, "max_t": 3, "max_v": 4}),
    "declared_gradient": (_prop_declared_gradient, {}),
}


def _spec(fn, needs, skip, detached, masked_targets, rtol, atol, grad) -> tuple[_Spec, dict]:
    """Validate the arguments of :func:`check_loss_contract`; returns the spec and the skips."""
    needs = tuple(needs)
    skip = dict(skip or {})
    for name, reason in skip.items():
        if name not in PROPERTIES:
            raise ValueError(f"skip: unknown property {name!r}; known: {PROPERTIES}")
        if not (isinstance(reason, str) and reason.strip()):
            raise ValueError(f"skip: property {name!r} needs a reason (a non-empty string)")
    if grad is not None and not callable(grad):
        raise ValueError(f"grad must be a function (logits, targets, **aux) -> gradient, got {grad!r}")
    det = tuple(n for n in needs if n in DETACHED_BY_DEFAULT) if detached is None else tuple(detached)
    unknown = [n for n in (*needs, *det) if n not in AUX_NAMES]
    if unknown:
        raise ValueError(f"needs/detached: unknown aux input(s) {unknown}; known: {AUX_NAMES}")
    grad_aux = tuple(n for n in needs if n != "mask" and n not in det)
    return _Spec(fn, needs, det, grad_aux, masked_targets, rtol, atol, grad), skip


def _settings(max_examples: int):
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def _run_property(name: str, s: _Spec, max_examples: int, max_v: int) -> None:
    """Run one property on hypothesis instances; any failure or crash -> ``AssertionError("[name] ...")``."""
    prop, kw = _CHECKS[name]
    kw = {**kw, "max_v": min(max_v, kw.get("max_v", max_v))}
    n = max(2, max_examples // 3) if name == "gradcheck" else max_examples  # the costly one

    def test(inp: LossInputs) -> None:
        prop(s, inp)

    test.__name__ = test.__qualname__ = f"prop_{name}"
    run = _settings(n)(given(loss_inputs(s.needs, **kw))(test))
    try:
        run()
    except AssertionError as e:
        raise AssertionError(f"[{name}] {e}") from e
    except Exception as e:  # a crash is a failure of the property being checked
        raise AssertionError(f"[{name}] fn raised {type(e).__name__}: {e}") from e


def check_loss_contract(
    fn: Callable[..., Tensor],
    needs: Iterable[str] = (),
    *,
    skip: Mapping[str, str] | None = None,
    detached: Iterable[str] | None = None,
    masked_targets: int | None = None,
    grad: GradFn | None = None,
    max_examples: int = 15,
    max_v: int = 6,
    rtol: float = 1e-7,
    atol: float = 1e-7,
) -> None:
    """Check that ``fn(logits, targets, **aux) -> [B, T]`` keeps the loss contract.

    Args:
        fn: the per-token loss; called with the aux inputs named in ``needs`` as keywords.
        needs: aux input names (see the module docstring), e.g. ``("teacher_logits",)``.
        skip: ``{property: reason}`` for properties that do not apply by design; the reason
            must be a non-empty string, and the name one of :data:`PROPERTIES`.
        detached: aux inputs that must receive no gradient (default: those of ``needs`` in
            :data:`DETACHED_BY_DEFAULT`); the others get gradient-checked.
        masked_targets: if given (e.g. -100), targets at masked positions are set to it in the
            ``no_leak`` check (an ignore index must not change the reduced loss).
        grad: the intended gradient, for a loss with a stop-gradient by design (DFT, CurioSFT with
            a live teacher), where finite differences cannot agree: ``grad(logits, targets, **aux)``
            returns ``d fn(...).sum() / d logits`` ``[B, T, V]`` (or a dict with an entry for the
            logits and for each aux input with gradient). ``declared_gradient`` then compares
            autograd's gradient with it on every instance, in place of ``gradcheck``.
        max_examples: hypothesis examples per property, a third of them for ``gradcheck``
            (derandomised: runs are reproducible).
        max_v: largest vocabulary drawn.
        rtol, atol: tolerances of the equality checks (float64).
    Raises:
        AssertionError: ``"[property] what failed ..."`` for the first property that fails.
        ValueError: unknown ``needs``/``skip`` names, an empty reason or a ``grad`` not callable.
    """
    s, skip = _spec(fn, needs, skip, detached, masked_targets, rtol, atol, grad)
    replaced = "declared_gradient" if grad is None else "gradcheck"  # one of the two gradient checks
    for name in PROPERTIES:
        if name not in skip and name != replaced:
            _run_property(name, s, max_examples, max_v)
