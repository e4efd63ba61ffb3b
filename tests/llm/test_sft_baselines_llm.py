"""The SFT baselines of issue 21 at LLM scale (the tiny model, CPU): every spec runs through the
chunked path and equals the naive full-logits path; PSFT's snapshot is the teacher slot (refreshed,
checkpointed); the fused path, which has no kernel for them, refuses them by name."""

from __future__ import annotations

import pytest
import torch

from llm.config import SFTConfig, resolve
from llm.loading import load_model

SPECS = ["asft,lam=0.1", "sft_kl@0.3", "prob@0.5", "psft,epsilon=0.2,refresh=2", "prift@mass", "chord_phi"]


def _params(m) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in m.parameters()])


@pytest.mark.parametrize("spec", SPECS)
def test_new_method_sft_step_chunked_equals_naive(tiny_dir, run_tiny, spec):
    kw = dict(steps=2, batch_size=4, warmup=0, lr=1e-3, method=spec, n_heldout=0)
    ref, rec = run_tiny("sft", "chunked", loss_impl="chunked", **kw)
    assert not torch.equal(_params(ref), _params(load_model(str(tiny_dir), "cpu")))  # the steps moved
    m, r = run_tiny("sft", "naive", loss_impl="naive", **kw)
    assert r["sft/loss"] == pytest.approx(rec["sft/loss"], rel=1e-5)
    torch.testing.assert_close(_params(m), _params(ref), rtol=0, atol=5e-5)


def test_psft_with_a_snapshot_per_step_is_sft(run_tiny):
    kw = dict(steps=3, batch_size=4, warmup=0, lr=1e-3, n_heldout=0)
    sft, _ = run_tiny("sft", "sft", method="sft", **kw)
    psft, rec = run_tiny("sft", "psft", method="psft,refresh=1", **kw)
    assert rec["sft/loss"] == pytest.approx(-1.0)  # the ratio to the snapshot is 1 at every step
    torch.testing.assert_close(_params(psft), _params(sft), rtol=0, atol=1e-6)
    slow, _ = run_tiny("sft", "slow", method="psft,refresh=3,epsilon=0.001", **kw)
    assert (_params(slow) - _params(sft)).abs().max() > 1e-5  # a stale snapshot clips: not SFT


def test_psft_resume_restores_the_snapshot(run_tiny):
    kw = dict(steps=4, batch_size=4, ckpt_every=1, eval_every=100, method="psft,refresh=3,epsilon=0.05")
    full, rec_full = run_tiny("sft", "full", **kw)
    run_tiny("sft", "cut", stop_after=2, **kw)
    resumed, rec_res = run_tiny("sft", "cut", resume=True, **kw)
    torch.testing.assert_close(_params(resumed), _params(full), rtol=0, atol=0)
    assert rec_res["sft/loss"] == rec_full["sft/loss"]


@pytest.mark.parametrize("spec", SPECS)
def test_fused_refuses_the_new_methods_by_name(spec):
    with pytest.raises(ValueError, match="fused path has no kernel"):
        resolve(SFTConfig(tiny=True, method=spec, loss_impl="fused"))
