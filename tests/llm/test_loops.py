"""Training-loop invariances on the tiny model: pipeline end to end, resume == uninterrupted,
gradient accumulation 1x4 == 4x1, non-finite loss stops keeping the last good checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from llm.checkpoint import latest_checkpoint
from llm.config import GRPOConfig, SFTConfig
from llm.loading import load_model
from llm.train import NonFiniteLossError


def _params(m):
    return torch.cat([p.detach().reshape(-1) for p in m.parameters()])


def test_pipeline_tiny_quick_end_to_end(tiny_dir, tmp_path):
    from llm.cli import main

    out = tmp_path / "pipe"
    rc = main(
        [
            "pipeline",
            "--tiny",
            "--quick",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--cache-dir",
            str(tiny_dir.parent),
            "--tiny-pretrain-steps",
            "40",
        ]
    )
    assert rc == 0
    import pandas as pd

    df = pd.read_csv(out / "results.csv")
    assert set(df["method"]) == {"base", "sft", "entropy_sft@0.1", "gift@5", "curio", "pear_token", "dft"}
    assert set(df["stage"]) == {"base", "sft", "grpo"} and df["pass@1"].between(0, 1).all()
    assert "| method | stage |" in (out / "report.md").read_text()
    assert list(out.glob("*.png"))
    cfg = json.loads((out / "gift@5" / "sft" / "config.json").read_text())
    assert cfg["method"] == "gift@5" and cfg["steps"] == 6  # the resolved config is saved beside the metrics
    recs = [json.loads(x) for x in (out / "gift@5" / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert {
        "grpo/reward",
        "grpo/reward_std",
        "grpo/pass@2",
        "grpo/entropy",
        "grpo/clip_ratio/region_mean",
        "grpo/completions/mean_length",
    } <= set(recs[-1])
    assert "heldout/sft_loss" in recs[0]


def test_grad_accumulation_1x4_equals_4x1(tiny_dir, run_tiny):
    a, _ = run_tiny("sft", "a", steps=1, batch_size=4, grad_accum=1, method="gift@5")
    b, _ = run_tiny("sft", "b", steps=1, batch_size=4, grad_accum=4, method="gift@5")
    base = _params(load_model(str(tiny_dir), "cpu"))
    assert not torch.equal(_params(a), base)  # the step did something
    torch.testing.assert_close(_params(a), _params(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["sft", "gift@5", "curio", "entropy_sft@0.1"])
def test_fused_and_naive_sft_step_equal_chunked(tiny_dir, run_tiny, monkeypatch, method):
    """One SFT step by --loss-impl fused / naive: same loss, gradient norm and parameters as chunked.

    The grad norm pins the gradient's scale, which Adam's first step (~lr * sign(grad)) would hide;
    parameters to lr / 20 (elements whose gradient is ~0 can move by a fraction of lr)."""
    import llm.scoring

    used = []
    for name in ("chunked_per_token", "fused_token_loss", "full_per_token"):
        real = getattr(llm.scoring, name)
        monkeypatch.setattr(
            llm.scoring, name, lambda *a, _f=real, _n=name, **k: used.append(_n) or _f(*a, **k)
        )
    kw = dict(steps=1, batch_size=8, warmup=0, lr=1e-3, method=method, n_heldout=0)
    ref, rec = run_tiny("sft", "chunked", loss_impl="chunked", **kw)
    assert set(used) == {"chunked_per_token"}
    assert not torch.equal(_params(ref), _params(load_model(str(tiny_dir), "cpu")))  # the step moved
    for impl, fn in (("fused", "fused_token_loss"), ("naive", "full_per_token")):
        used.clear()
        m, r = run_tiny("sft", impl, loss_impl=impl, **kw)
        assert set(used) == {fn}, used  # the step ran through the implementation asked for
        assert r["sft/loss"] == pytest.approx(rec["sft/loss"], rel=1e-6), impl
        assert r["sft/grad_norm"] == pytest.approx(rec["sft/grad_norm"], rel=1e-5), impl
        torch.testing.assert_close(_params(m), _params(ref), rtol=0, atol=5e-5)


def test_fused_rejects_specs_it_cannot_run():
    from llm.config import resolve

    with pytest.raises(ValueError, match="--loss-impl fused cannot run 'entropy_sft@0.1,top_k=5'"):
        resolve(SFTConfig(tiny=True, method="entropy_sft@0.1,top_k=5", loss_impl="fused"))
    with pytest.raises(ValueError, match="--loss-impl must be one of"):
        resolve(SFTConfig(tiny=True, loss_impl="bogus"))


@pytest.mark.parametrize("method", ["curio,ema_every=1", "pear_token"])
def test_resume_equals_uninterrupted(tmp_path, run_tiny, method):
    kw = dict(steps=4, batch_size=4, ckpt_every=2, eval_every=2, method=method)
    full, rec_full = run_tiny("sft", "full", **kw)
    _, rec = run_tiny("sft", "cut", stop_after=2, **kw)
    assert rec["stopped_at"] == 2 and latest_checkpoint(tmp_path / "cut" / "checkpoint").name == "step-000002"
    resumed, rec_res = run_tiny("sft", "cut", resume=True, **kw)
    torch.testing.assert_close(_params(resumed), _params(full), rtol=0, atol=0)
    assert rec_res["sft/loss"] == rec_full["sft/loss"]
    steps = [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_grpo_resume_equals_uninterrupted(run_tiny):
    kw = dict(n_train=8, steps=2, ckpt_every=1, eval_every=10, kl_coef=0.05)
    m1, _ = run_tiny("grpo", "g1", **kw)
    run_tiny("grpo", "g2", stop_after=1, **kw)
    m2, _ = run_tiny("grpo", "g2", resume=True, **kw)
    torch.testing.assert_close(_params(m1), _params(m2), rtol=0, atol=0)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, run_tiny, monkeypatch):
    import llm.scoring as sft_mod  # where the SFT loop's per-token loss is built

    real, calls = sft_mod.sft_token_fn, {"n": 0}

    def poisoned(method, **kw):
        fn = real(method, **kw)

        def wrapped(*a, **k):
            calls["n"] += 1
            out = fn(*a, **k)
            return out * float("nan") if calls["n"] > 4 else out  # forward + recompute: 2 calls per step

        return wrapped

    monkeypatch.setattr(sft_mod, "sft_token_fn", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 2.*step-000002"):
        run_tiny("sft", "nan", steps=4, batch_size=2, ckpt_every=2, chunk_size=10_000)
    assert latest_checkpoint(tmp_path / "nan" / "checkpoint").name == "step-000002"


def test_bad_config_values(tiny_dir, tmp_path):
    from llm.config import resolve

    with pytest.raises(ValueError, match="method"):
        resolve(SFTConfig(method="nope"))
    with pytest.raises(ValueError, match="grad_accum"):
        resolve(SFTConfig(batch_size=6, grad_accum=4))
    with pytest.raises(ValueError, match="temperature"):
        resolve(GRPOConfig(temperature=0.0))


@pytest.mark.parametrize(
    "steps,warmup,floor", [(10, 0, 0.1), (20, 3, 0.0), (5, 1, 0.5), (3, 6, 0.2), (1, 0, 1.0)]
)
def test_lr_schedule_is_warmup_then_cosine_to_the_floor(steps, warmup, floor):
    """The schedule (transformers' cosine-with-floor, shifted one step) equals its closed form exactly."""
    import math

    from llm.train import make_optimizer

    def closed_form(s):
        if s < warmup:
            return (s + 1) / (warmup + 1)
        frac = min(1.0, (s - warmup) / max(1, steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))

    model = torch.nn.Linear(2, 1)
    opt, sched = make_optimizer(model, 0.5, steps, warmup, floor)
    seen = []
    for _ in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == [0.5 * closed_form(s) for s in range(steps)]
    if warmup < steps:  # the floor, reached at ``steps``
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * floor)
