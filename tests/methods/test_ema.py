"""The CurioSFT EMA teacher against its formula: teacher <- keep * teacher + (1 - keep) * model after
every ``ema_every``-th optimizer step (``Method.ema_due`` / ``Method.ema_update``), and the teacher the
tabular pipeline feeds the loss at each SFT step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toybench.methods import Method
from toybench.tabular import ReasoningTree
from toybench.tabular.pipeline import PipelineConfig, run_method


@pytest.mark.parametrize("every", [1, 3, 5])
def test_ema_due_every_k_steps_and_only_for_curio(every):
    m = Method.parse(f"curio,ema_every={every}")
    assert [s for s in range(1, 16) if m.ema_due(s)] == list(range(every, 16, every))
    for spec in ("sft", "gift@3", "entropy_sft@0.1", "pear_token", "dft"):
        assert not any(Method.parse(spec).ema_due(s) for s in range(1, 16))


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.3, 1.0])
def test_ema_update_formula_for_tensors(keep):
    m = Method.parse(f"curio,ema_keep={keep}")
    t0 = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64)
    model = torch.tensor([3.0, 0.5, -1.0], dtype=torch.float64, requires_grad=True)
    t = m.ema_update(t0, model)
    np.testing.assert_allclose(t.numpy(), keep * t0.numpy() + (1 - keep) * model.detach().numpy(), rtol=0)
    assert not t.requires_grad  # the model's graph does not reach the teacher
    np.testing.assert_array_equal(t0.numpy(), [1.0, -2.0, 4.0])  # functional: the old teacher unchanged


def test_ema_update_module_in_place_and_detached():
    m = Method.parse("curio,ema_keep=0.25")
    torch.manual_seed(0)
    net, other = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    teacher = m.init_state(net).teacher
    before = [p.detach().clone() for p in teacher.parameters()]
    out = m.ema_update(teacher, other)
    assert out is teacher
    for pt, p0, pm in zip(teacher.parameters(), before, other.parameters(), strict=True):
        torch.testing.assert_close(pt, 0.25 * p0 + 0.75 * pm.detach(), rtol=0, atol=1e-7)
        assert not pt.requires_grad
    # two updates compose as the closed form keep^2 t + (1 - keep^2) m for a fixed model
    m.ema_update(teacher, other)
    for pt, p0, pm in zip(teacher.parameters(), before, other.parameters(), strict=True):
        torch.testing.assert_close(pt, 0.0625 * p0 + 0.9375 * pm.detach(), rtol=0, atol=1e-6)


def test_pipeline_feeds_the_loss_the_ema_of_the_model_trajectory(monkeypatch):
    """Record (student logits, teacher logits) at every SFT step of run_method and rebuild the teacher
    by hand: teacher_1 = model_0; after step s with s % every == 0, teacher = keep teacher + (1 - keep)
    model_s (gathering node logits along the demos is linear, so the EMA commutes with it)."""
    every, keep, steps = 3, 0.4, 8
    calls = []
    real = Method.token_loss

    def recording(self, logits, targets, base_logits=None, teacher_logits=None, mask=None):
        calls.append((logits.detach().clone(), teacher_logits.detach().clone()))
        return real(self, logits, targets, base_logits, teacher_logits, mask=mask)

    monkeypatch.setattr(Method, "token_loss", recording)
    sc = ReasoningTree([0], num_prompts=2, V=3, H=3)
    run_method(sc, f"curio,ema_every={every},ema_keep={keep}", PipelineConfig(sft_steps=steps, rl_steps=0))
    assert len(calls) == steps
    student = [c[0] for c in calls]  # model_{s-1} at call s
    teacher = student[0].clone()
    for s in range(1, steps + 1):
        torch.testing.assert_close(calls[s - 1][1], teacher, rtol=1e-6, atol=1e-6)
        if s % every == 0 and s < steps:
            teacher = keep * teacher + (1 - keep) * student[s]  # model_s is the input of call s + 1
    # the case is not trivial: the teacher differs from the live model and from its start
    assert (calls[-1][1] - student[-1]).abs().max() > 1e-3
    assert (calls[-1][1] - student[0]).abs().max() > 1e-3


def test_ema_update_module_needs_matching_parameters():
    m = Method.parse("curio")
    teacher = m.init_state(torch.nn.Linear(2, 2)).teacher
    with pytest.raises(ValueError):  # zip(strict=True): a model with other parameters is refused
        m.ema_update(teacher, torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)))
