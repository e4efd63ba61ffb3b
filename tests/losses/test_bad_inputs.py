"""Bad input raises ValueError with a message that names the argument."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import theory.bandit as tb
from toybench import advantages as A
from toybench import losses as L
from toybench import metrics as M

Z = torch.zeros(2, 3, 5)
Y = torch.zeros(2, 3, dtype=torch.long)
P = torch.zeros(2, 3)
MASK = torch.ones(2, 3)
NAN, INF = float("nan"), float("inf")

CASES = [
    ("logits", lambda: L.sft_loss(torch.zeros(2, 5), Y)),
    ("logits", lambda: L.sft_loss(torch.zeros(2, 3, 5, dtype=torch.long), Y)),
    ("targets", lambda: L.sft_loss(Z, torch.zeros(2, 4, dtype=torch.long))),
    ("targets", lambda: L.sft_loss(Z, torch.zeros(2, 3))),
    ("coef", lambda: L.entropy_sft_loss(Z, Y, coef=-0.1)),
    ("top_k", lambda: L.entropy_sft_loss(Z, Y, coef=0.1, top_k=0)),
    ("mask", lambda: L.entropy_sft_loss(Z, Y, coef=0.1, rho=0.5)),
    ("beta", lambda: L.gift_target(Z, Y, beta=-1.0)),
    ("beta", lambda: L.gift_loss(Z, Y, Z, beta=-1.0)),
    ("smooth", lambda: L.gift_loss(Z, Y, Z, beta=1.0, smooth=1.5)),
    ("base_logits", lambda: L.gift_loss(Z, Y, torch.zeros(2, 3, 4), beta=1.0)),
    ("tau", lambda: L.curio_loss(Z, Y, Z, tau=0.0)),
    ("tau", lambda: L.curio_loss(Z, Y, Z, tau=-torch.ones(2, 3))),
    ("tau", lambda: L.curio_loss(Z, Y, Z, tau=torch.ones(3, 2))),
    ("teacher_logits", lambda: L.curio_loss(Z, Y, torch.zeros(1, 3, 5), tau=1.2)),
    ("alpha", lambda: L.curio_loss(Z, Y, Z, tau=1.2, alpha=-1.0)),
    ("tau_min", lambda: L.entropy_guided_temperature(Z, tau_min=0.0)),
    ("tau_max", lambda: L.entropy_guided_temperature(Z, tau_min=1.5, tau_max=1.1)),
    ("top_k", lambda: L.entropy_guided_temperature(Z, top_k=0)),
    ("level", lambda: L.pear_weights(P, P, MASK, level="bogus")),
    ("block_size", lambda: L.pear_weights(P, P, MASK, level="block", block_size=0)),
    ("gamma", lambda: L.pear_weights(P, P, MASK, gamma=0.0)),
    ("token_clip", lambda: L.pear_weights(P, P, MASK, token_clip=(1.0, -1.0))),
    ("behavior_logp", lambda: L.pear_weights(P, torch.zeros(2, 4), MASK)),
    ("mask", lambda: L.pear_weights(P, P, torch.ones(3, 3))),
    ("adv", lambda: L.policy_gradient_loss(P, torch.zeros(3))),
    ("logp", lambda: L.policy_gradient_loss(torch.zeros(6), torch.zeros(6))),
    ("old_logp", lambda: L.clipped_surrogate_loss(P, torch.zeros(2, 2), torch.zeros(2))),
    ("eps_low", lambda: L.clipped_surrogate_loss(P, P, torch.zeros(2), eps_low=-0.1)),
    ("kind", lambda: L.kl_penalty(P, P, kind="k4")),
    ("ref_logp", lambda: L.kl_penalty(P, torch.zeros(1, 3))),
    ("mode", lambda: L.reduce(P, MASK, mode="mean")),
    ("mask", lambda: L.reduce(P, torch.ones(2, 2))),
    ("constant", lambda: L.reduce(P, MASK, mode="constant", constant=0.0)),
    ("rewards", lambda: A.group_advantages(torch.zeros(4))),
    ("scale", lambda: A.group_advantages(torch.zeros(2, 2), scale="std")),
    ("G >= 2", lambda: A.group_advantages(torch.zeros(2, 1), scale="group")),
    ("k must be <= n", lambda: M.pass_at_k(3, 1, 4)),
    ("c must", lambda: M.pass_at_k(3, 4, 1)),
    ("k must be", lambda: M.pass_at_k_exact(0.5, 0)),
    ("p_correct", lambda: M.pass_at_k_exact(np.array([1.5]), 2)),
    ("temperature", lambda: M.entropy(Z, temperature=0.0)),
    ("threshold", lambda: M.coverage(np.ones(3) / 3, np.ones(3, bool), 1.0)),
    ("p must sum to 1", lambda: tb.sft_loss(np.array([0.5, 0.6]), np.array([0.5, 0.5]))),
    ("beta", lambda: tb.gift_eps(0.5, -1.0)),
    ("beta", lambda: tb.kl_regularised_optimum(np.array([0.5, 0.5]), np.zeros(2), 0.0)),
    ("tau", lambda: tb.grad_curio(np.zeros(3), 0, np.zeros(3), 0.0)),
    ("targets", lambda: tb.sft_token_grad(np.zeros(3), 3)),
    # NaN and inf must not slip through checks written as `x < 0`
    ("coef", lambda: L.entropy_sft_loss(Z, Y, coef=NAN)),
    ("coef", lambda: L.entropy_sft_loss(Z, Y, coef=INF)),
    ("beta", lambda: L.gift_loss(Z, Y, Z, beta=NAN)),
    ("smooth", lambda: L.gift_loss(Z, Y, Z, beta=1.0, smooth=NAN)),
    ("alpha", lambda: L.curio_loss(Z, Y, Z, tau=1.2, alpha=NAN)),
    ("alpha", lambda: L.curio_loss(Z, Y, Z, tau=1.2, alpha=INF)),
    ("tau", lambda: L.curio_loss(Z, Y, Z, tau=INF)),
    ("tau", lambda: L.curio_loss(Z, Y, Z, tau=NAN)),
    ("tau", lambda: L.curio_loss(Z, Y, Z, tau=torch.full((2, 3), INF))),
    ("tau", lambda: L.curio_loss(Z, Y, Z, tau=torch.full((2, 3), NAN))),
    ("tau_min", lambda: L.entropy_guided_temperature(Z, tau_min=NAN)),
    ("tau_max", lambda: L.entropy_guided_temperature(Z, tau_max=INF)),
    ("tau_max", lambda: L.entropy_guided_temperature(Z, tau_max=NAN)),
    ("gain", lambda: L.entropy_guided_temperature(Z, gain=NAN)),
    ("pivot", lambda: L.entropy_guided_temperature(Z, pivot=NAN)),
    ("slope", lambda: L.entropy_guided_temperature(Z, slope=INF)),
    ("floor", lambda: L.entropy_guided_temperature(Z, floor=NAN)),
    ("iters", lambda: L.entropy_guided_temperature(Z, iters=0)),
    ("gamma", lambda: L.pear_weights(P, P, MASK, gamma=NAN)),
    ("token_clip", lambda: L.pear_weights(P, P, MASK, token_clip=(NAN, 0.3))),
    ("total_clip", lambda: L.pear_weights(P, P, MASK, total_clip=(-1.0, NAN))),
    ("eps_low", lambda: L.clipped_surrogate_loss(P, P, torch.zeros(2), eps_low=NAN)),
    ("eps_low", lambda: L.clipped_surrogate_loss(P, P, torch.zeros(2), eps_low=1.0)),
    ("eps_high", lambda: L.clipped_surrogate_loss(P, P, torch.zeros(2), eps_high=NAN)),
    ("eps_high", lambda: L.clipped_surrogate_loss(P, P, torch.zeros(2), eps_high=-0.1)),
    ("eps_low", lambda: L.clipped_mask(P, P, torch.zeros(2), eps_low=NAN)),
    ("eps_high", lambda: L.clipped_mask(P, P, torch.zeros(2), eps_high=NAN)),
    ("constant", lambda: L.reduce(P, MASK, mode="constant", constant=NAN)),
    ("constant", lambda: L.reduce(P, MASK, mode="constant", constant=INF)),
    ("eps", lambda: A.group_advantages(torch.zeros(2, 2), eps=NAN)),
    ("eps", lambda: A.group_advantages(torch.zeros(2, 2), eps=-1e-3)),
    ("eps", lambda: A.group_advantages(torch.zeros(2, 2), eps=INF)),
    ("temperature", lambda: M.entropy(Z, temperature=NAN)),
    ("temperature", lambda: M.entropy(Z, temperature=INF)),
    ("p_correct", lambda: M.pass_at_k_exact(np.array([NAN]), 2)),
    ("p_correct", lambda: M.pass_at_k_exact(torch.tensor([NAN]), 2)),
    ("p_correct", lambda: M.pass_at_k_exact(torch.tensor([-0.1]), 2)),
    ("threshold", lambda: M.coverage(np.ones(3) / 3, np.ones(3, bool), NAN)),
    ("correct", lambda: M.coverage(np.ones(3) / 3, np.ones(2, bool), 0.5)),
    ("logits_q", lambda: M.kl_divergence(torch.zeros(2, 3), torch.zeros(2, 4))),
    ("logits", lambda: M.entropy(np.zeros(3))),
    ("n must", lambda: M.pass_at_k(0, 0, 1)),
    ("k must be >= 1", lambda: M.pass_at_k(3, 1, 0)),
    ("n must be integer", lambda: M.pass_at_k(3.0, 1, 1)),
    ("mask", lambda: L.sft_loss(Z, Y, mask=torch.ones(3, 3))),
]

V = Z.shape[-1]


def _bad_targets(value, at=(1, 2)):
    y = Y.clone()
    y[at] = value
    return y


TARGET_FNS = {
    "logprobs": lambda y, m: L.logprobs(Z, y, mask=m),
    "sft": lambda y, m: L.sft_loss(Z, y, mask=m),
    "entropy_sft": lambda y, m: L.entropy_sft_loss(Z, y, coef=0.1, mask=m),
    "entropy_sft_rho": lambda y, m: L.entropy_sft_loss(Z, y, coef=0.1, mask=m, rho=0.5),
    "gift_target": lambda y, m: L.gift_target(Z, y, beta=1.0, mask=m),
    "gift": lambda y, m: L.gift_loss(Z, y, Z, beta=1.0, mask=m),
    "gift_beta_inf": lambda y, m: L.gift_loss(Z, y, Z, beta=INF, mask=m),
    "curio": lambda y, m: L.curio_loss(Z, y, Z, tau=1.2, mask=m),
    "dft": lambda y, m: L.dft_loss(Z, y, mask=m),
}


@pytest.mark.parametrize("needle,call", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_bad_input_raises_value_error_naming_argument(needle, call):
    with pytest.raises(ValueError, match=needle):
        call()


@pytest.mark.parametrize("name", list(TARGET_FNS))
@pytest.mark.parametrize("value", [V, 7, -1, -100])
def test_out_of_range_target_at_counted_position_raises(name, value):
    with pytest.raises(ValueError, match=r"targets must lie in \[0, V\) = \[0, 5\).*targets\[1, 2\]"):
        TARGET_FNS[name](_bad_targets(value), MASK)


@pytest.mark.parametrize("name", list(TARGET_FNS))
@pytest.mark.parametrize("value", [V, -1, -100])
def test_out_of_range_target_at_masked_position_is_ignored(name, value):
    """Padding may hold any value (e.g. -100): where mask = 0 it is NaN and reduce drops it."""
    m = MASK.clone()
    m[1, 2] = 0
    clean = TARGET_FNS[name](Y, m)
    got = TARGET_FNS[name](_bad_targets(value), m)
    keep = m.bool() if got.ndim == 2 else m.bool()[..., None].expand_as(got)
    torch.testing.assert_close(got[keep], clean[keep])
    assert torch.isnan(got[1, 2]).all()
    if got.ndim == 2:
        for mode in L.REDUCE_MODES:
            torch.testing.assert_close(L.reduce(got, m, mode), L.reduce(clean, m, mode))


@pytest.mark.parametrize("name", [n for n in TARGET_FNS if n != "entropy_sft_rho"])
@pytest.mark.parametrize("value", [V, 7, -1, -100])
def test_out_of_range_target_without_mask_is_nan_never_a_clamped_token(name, value):
    """Without ``mask`` the loss cannot tell padding from a counted target: it gives NaN there
    (so a counted one makes the reduced loss NaN) instead of the loss of a clamped token."""
    z = torch.randn(2, 3, V, dtype=torch.float64, requires_grad=True)
    fn = {
        "logprobs": lambda y: L.logprobs(z, y),
        "sft": lambda y: L.sft_loss(z, y),
        "entropy_sft": lambda y: L.entropy_sft_loss(z, y, coef=0.1),
        "gift_target": lambda y: L.gift_target(z.detach(), y, beta=1.0),
        "gift": lambda y: L.gift_loss(z, y, z.detach(), beta=1.0),
        "gift_beta_inf": lambda y: L.gift_loss(z, y, z.detach(), beta=INF),
        "curio": lambda y: L.curio_loss(z, y, z.detach(), tau=1.2),
        "dft": lambda y: L.dft_loss(z, y),
    }[name]
    y = _bad_targets(value)
    out = fn(y)
    assert torch.isnan(out[1, 2]).all()
    finite = torch.ones(2, 3, dtype=torch.bool)
    finite[1, 2] = False
    assert torch.isfinite(out[finite]).all()
    if out.ndim == 2:
        assert torch.isnan(L.reduce(out, MASK)).item()  # counted: loud
        m = MASK.clone()
        m[1, 2] = 0
        loss = L.reduce(out, m)  # masked: dropped, gradient finite and zero at (1, 2)
        assert torch.isfinite(loss)
        loss.backward()
        assert torch.isfinite(z.grad).all() and (z.grad[1, 2] == 0).all()


def test_curio_tau_tensor_value_check_only_on_cpu_and_ok_values_pass():
    tau = torch.full((2, 3), 1.3)
    tau[0, 1] = 0.0
    with pytest.raises(ValueError, match="tau must be finite and > 0"):
        L.curio_loss(Z, Y, Z, tau=tau)
    assert torch.isfinite(L.curio_loss(Z, Y, Z, tau=torch.full((2, 3), 1.3))).all()
    assert torch.isfinite(L.curio_loss(Z, Y, Z, tau=1e-3)).all()
    # inf beta (the SFT target) and inf eps_high (no upper clip) stay valid
    torch.testing.assert_close(L.gift_loss(Z, Y, Z, beta=INF), L.sft_loss(Z, Y))
    L.clipped_surrogate_loss(P, P, torch.ones(2), eps_low=0.0, eps_high=INF)


def test_theory_imports_no_torch():
    code = (
        "import importlib, pkgutil, sys, theory\n"
        "for m in pkgutil.iter_modules(theory.__path__):\n"
        "    importlib.import_module('theory.' + m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'toybench', 'llm')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
