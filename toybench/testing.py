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
                          are meaningless)
=======================  =====================================================================

A property that does not apply is declared, with its reason, in ``skip`` (e.g.
``skip={"position_independence": "PEAR weights sum over later tokens"}``); unknown names raise.

Aux inputs, by name (``needs``): ``base_logits``, ``teacher_logits`` ``[B, T, V]``; ``logp``,
``old_logp``, ``ref_logp``, ``behavior_logp`` ``[B, T]`` (log-probabilities in [-4, 0]);
``adv`` ``[B]``; ``tau`` ``[B, T]`` in [0.5, 2]; ``mask`` ``[B, T]`` (the same mask the
reduction uses). ``logp`` carries gradient; the others are detached by default (``detached=``).

>>> from toybench import losses as L
>>> check_loss_contract(L.sft_loss, max_examples=3)
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


def _as_test(prop: Callable[[LossInputs], None]) -> Callable[[LossInputs], None]:
    def test(inp: LossInputs) -> None:
        prop(inp)

    test.__name__ = test.__qualname__ = prop.__name__
    return test


# ----------------------------------------------------------------------------- the checks
def check_loss_contract(
    fn: Callable[..., Tensor],
    needs: Iterable[str] = (),
    *,
    skip: Mapping[str, str] | None = None,
    detached: Iterable[str] | None = None,
    masked_targets: int | None = None,
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
        max_examples: hypothesis examples per property, a third of them for ``gradcheck``
            (derandomised: runs are reproducible).
        max_v: largest vocabulary drawn.
        rtol, atol: tolerances of the equality checks (float64).
    Raises:
        AssertionError: ``"[property] what failed ..."`` for the first property that fails.
        ValueError: unknown ``needs``/``skip`` names or an empty reason.
    """
    needs = tuple(needs)
    skip = dict(skip or {})
    for name, reason in skip.items():
        if name not in PROPERTIES:
            raise ValueError(f"skip: unknown property {name!r}; known: {PROPERTIES}")
        if not (isinstance(reason, str) and reason.strip()):
            raise ValueError(f"skip: property {name!r} needs a reason (a non-empty string)")
    det = tuple(n for n in needs if n in DETACHED_BY_DEFAULT) if detached is None else tuple(detached)
    unknown = [n for n in (*needs, *det) if n not in AUX_NAMES]
    if unknown:
        raise ValueError(f"needs/detached: unknown aux input(s) {unknown}; known: {AUX_NAMES}")
    grad_aux = tuple(n for n in needs if n != "mask" and n not in det)
    mask_bool = lambda inp: inp.mask != 0  # noqa: E731

    def prop_shape_dtype(inp: LossInputs) -> None:
        for dt in (torch.float64, torch.float32):
            z = inp.logits.to(dt)
            aux = {n: (v.to(dt) if v.is_floating_point() else v) for n, v in inp.aux.items()}
            out = _call(fn, inp, needs, logits=z, aux=aux)
            assert isinstance(out, Tensor), f"fn must return a torch.Tensor, got {type(out).__name__}"
            assert tuple(out.shape) == tuple(inp.targets.shape), (
                f"output shape {tuple(out.shape)} != [B, T] = {tuple(inp.targets.shape)}"
            )
            assert out.dtype == dt, f"{dt} logits gave a {out.dtype} output"

    def prop_finite(inp: LossInputs) -> None:
        z = inp.logits.clone().requires_grad_(True)
        out = _call(fn, inp, needs, logits=z)
        assert torch.isfinite(out).all(), f"non-finite per-token values {out}"
        if out.requires_grad:
            (g,) = torch.autograd.grad(out.sum(), z, allow_unused=True)
            assert g is None or torch.isfinite(g).all(), "non-finite logit gradient"

    def prop_pure(inp: LossInputs) -> None:
        before = [inp.logits.clone(), inp.targets.clone(), inp.mask.clone()]
        before += [v.clone() for v in inp.aux.values()]
        _call(fn, inp, needs)
        after = [inp.logits, inp.targets, inp.mask, *inp.aux.values()]
        names = ["logits", "targets", "mask", *inp.aux]
        for n, a, b in zip(names, before, after):
            assert torch.equal(a, b), f"fn modified its input {n!r} in place"

    def prop_shift_invariance(inp: LossInputs) -> None:
        base = _call(fn, inp, needs)
        rng = np.random.default_rng(int(inp.targets.sum()) + 1)
        for name in ("logits", *[n for n in needs if n in AUX_LOGITS]):
            x = inp.logits if name == "logits" else inp.aux[name]
            c = torch.tensor(rng.uniform(-50, 50, size=(*x.shape[:2], 1)), dtype=x.dtype)
            if name == "logits":
                out = _call(fn, inp, needs, logits=x + c)
            else:
                out = _call(fn, inp, needs, aux={**inp.aux, name: x + c})
            _close(out, base, rtol, atol, f"adding a constant per position to {name!r} changed the output")

    def prop_detached(inp: LossInputs) -> None:
        z = inp.logits.clone().requires_grad_(True)
        live = {n: (v.clone().requires_grad_(True) if n in det else v) for n, v in inp.aux.items()}
        out = _call(fn, inp, needs, logits=z, aux=live)
        if not out.requires_grad:
            return
        wrt = [live[n] for n in det if n in live]
        if not wrt:
            return
        w = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(0))
        grads = torch.autograd.grad((out * w).sum(), wrt, allow_unused=True)
        for n, g in zip([n for n in det if n in live], grads):
            assert g is None or bool((g == 0).all()), f"gradient reaches {n!r}, which must be detached"

    def prop_position_independence(inp: LossInputs) -> None:
        B, T = inp.targets.shape
        if T < 2:
            return
        base = _call(fn, inp, needs)
        rng = np.random.default_rng(int(inp.targets.sum()) + 7)
        for tp in range(T):
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
            out = _call(fn, inp, needs, logits=z, targets=y, aux=aux)
            others = [t for t in range(T) if t != tp]
            _close(
                out[:, others],
                base[:, others],
                rtol,
                atol,
                f"changing position {tp} changed {others}",
            )

    def prop_masked_equals_sliced(inp: LossInputs) -> None:
        m = mask_bool(inp)
        full = _call(fn, inp, needs)
        rows = []
        for b in range(m.shape[0]):
            keep = m[b]
            if not bool(keep.any()):
                rows.append(None)
                continue
            sl = _slice_row(inp, b, keep)
            rows.append(_call(fn, sl, needs)[0])
        counted = [r for r in rows if r is not None]
        total = sum((r.sum() for r in counted), full.new_zeros(()))
        n_tok = sum(r.numel() for r in counted)
        expect = {
            "sum": total,
            "token_mean": total / max(n_tok, 1),
            "seq_mean": sum((r.mean() for r in counted), full.new_zeros(())) / max(len(counted), 1),
        }
        for mode in REDUCE_MODES:
            consts = (None, 3.0) if mode == "constant" else (None,)
            for c in consts:
                got = reduce(full, inp.mask, mode, constant=c)
                if mode == "constant":
                    want = total / (full.numel() if c is None else c)
                else:
                    want = expect[mode]
                _close(got, want, rtol, atol, f"reduce(fn(full), mask, {mode!r}, constant={c}) != sliced")

    def prop_no_leak(inp: LossInputs) -> None:
        m = mask_bool(inp)
        names = ["logits", *grad_aux]  # inputs with gradient, compared at counted positions

        def run(logits, aux, targets):
            xs = [logits.clone().requires_grad_(True)]
            xs += [aux[n].clone().requires_grad_(True) for n in grad_aux]
            live = {**aux, **dict(zip(grad_aux, xs[1:]))}
            out = _call(fn, inp, needs, logits=xs[0], targets=targets, aux=live)
            if not out.requires_grad:
                return out, [None] * len(xs)
            grads = torch.autograd.grad(reduce(out, inp.mask, "sum"), xs, allow_unused=True)
            return out, [torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads)]

        clean, g_clean = run(inp.logits, inp.aux, inp.targets)
        for poison in (float("nan"), float("inf"), -float("inf")):
            aux = {
                n: (_poison_at_masked(v, m, poison) if (n in AUX_LOGITS or n in AUX_LOGP) else v)
                for n, v in inp.aux.items()
            }
            y = inp.targets
            if masked_targets is not None:
                y = torch.where(m, y, torch.full_like(y, masked_targets))
            dirty, g_dirty = run(_poison_at_masked(inp.logits, m, poison), aux, y)
            for mode in REDUCE_MODES:
                _close(
                    reduce(dirty, inp.mask, mode),
                    reduce(clean, inp.mask, mode),
                    rtol,
                    atol,
                    f"{poison} at masked positions changed reduce(.., {mode!r})",
                )
            for n, g, gc in zip(names, g_dirty, g_clean):
                if g is not None:
                    _close(
                        g[m],
                        gc[m],
                        rtol,
                        atol,
                        f"{poison} at masked positions changed d/d{n} at counted ones",
                    )

    def prop_gradcheck(inp: LossInputs) -> None:
        names = ["logits", *grad_aux]
        xs = [inp.logits.clone().requires_grad_(True)]
        xs += [inp.aux[n].clone().requires_grad_(True) for n in grad_aux]

        def f(*args):
            return _call(fn, inp, needs, logits=args[0], aux={**inp.aux, **dict(zip(grad_aux, args[1:]))})

        try:
            torch.autograd.gradcheck(f, tuple(xs), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)
        except torch.autograd.gradcheck.GradcheckError as e:
            raise AssertionError(f"gradient w.r.t. {names} != float64 finite differences: {e}") from None

    checks = {
        "shape_dtype": (prop_shape_dtype, {}),
        "finite": (prop_finite, {}),
        "pure": (prop_pure, {}),
        "shift_invariance": (prop_shift_invariance, {}),
        "detached": (prop_detached, {}),
        "position_independence": (prop_position_independence, {"min_t": 2}),
        "masked_equals_sliced": (prop_masked_equals_sliced, {}),
        "no_leak": (prop_no_leak, {}),
        "gradcheck": (prop_gradcheck, {"extreme": False, "max_b": 2, "max_t": 3, "max_v": min(max_v, 4)}),
    }
    cfg = settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    for name in PROPERTIES:
        if name in skip:
            continue
        prop, kw = checks[name]
        strategy = loss_inputs(needs, **{"max_v": max_v, **kw})
        n = max(2, max_examples // 3) if name == "gradcheck" else max_examples  # the costly one
        run = settings(cfg, max_examples=n)(given(strategy)(_as_test(prop)))
        try:
            run()
        except AssertionError as e:
            raise AssertionError(f"[{name}] {e}") from e
        except Exception as e:  # a crash is a failure of the property being checked
            raise AssertionError(f"[{name}] fn raised {type(e).__name__}: {e}") from e
