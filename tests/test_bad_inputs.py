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
]


@pytest.mark.parametrize("needle,call", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_bad_input_raises_value_error_naming_argument(needle, call):
    with pytest.raises(ValueError, match=needle):
        call()


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
