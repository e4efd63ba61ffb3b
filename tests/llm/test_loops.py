"""Training-loop invariances on the tiny model: pipeline end to end, resume == uninterrupted,
gradient accumulation 1x4 == 4x1, non-finite loss stops keeping the last good checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from llm.checkpoint import latest_checkpoint
from llm.config import GRPOConfig, SFTConfig
from llm.loading import load_model, load_tokenizer
from llm.train import NonFiniteLossError


def _params(m):
    return torch.cat([p.detach().reshape(-1) for p in m.parameters()])


def _sft(tiny_dir, tmp_path, name, **kw):
    base = dict(
        model=str(tiny_dir),
        device="cpu",
        out=str(tmp_path / name),
        n_train=8,
        n_heldout=2,
        eval_every=100,
        eval_prompts=1,
        ckpt_every=100,
        max_completion_length=8,
        prompt_style="compact",
        warmup=1,
    )
    m = load_model(str(tiny_dir), "cpu")
    from llm.sft import run_sft

    rec = run_sft(SFTConfig(**(base | kw)), model=m, tok=load_tokenizer(str(tiny_dir)))
    return m, rec


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


def test_grad_accumulation_1x4_equals_4x1(tiny_dir, tmp_path):
    a, _ = _sft(tiny_dir, tmp_path, "a", steps=1, batch_size=4, grad_accum=1, method="gift@5")
    b, _ = _sft(tiny_dir, tmp_path, "b", steps=1, batch_size=4, grad_accum=4, method="gift@5")
    base = _params(load_model(str(tiny_dir), "cpu"))
    assert not torch.equal(_params(a), base)  # the step did something
    torch.testing.assert_close(_params(a), _params(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["sft", "gift@5", "curio", "entropy_sft@0.1"])
def test_fused_and_naive_sft_step_equal_chunked(tiny_dir, tmp_path, monkeypatch, method):
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
    ref, rec = _sft(tiny_dir, tmp_path, "chunked", loss_impl="chunked", **kw)
    assert set(used) == {"chunked_per_token"}
    assert not torch.equal(_params(ref), _params(load_model(str(tiny_dir), "cpu")))  # the step moved
    for impl, fn in (("fused", "fused_token_loss"), ("naive", "full_per_token")):
        used.clear()
        m, r = _sft(tiny_dir, tmp_path, impl, loss_impl=impl, **kw)
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
def test_resume_equals_uninterrupted(tiny_dir, tmp_path, method):
    kw = dict(steps=4, batch_size=4, ckpt_every=2, eval_every=2, method=method)
    full, rec_full = _sft(tiny_dir, tmp_path, "full", **kw)
    _, rec = _sft(tiny_dir, tmp_path, "cut", stop_after=2, **kw)
    assert rec["stopped_at"] == 2 and latest_checkpoint(tmp_path / "cut" / "checkpoint").name == "step-000002"
    resumed, rec_res = _sft(tiny_dir, tmp_path, "cut", resume=True, **kw)
    torch.testing.assert_close(_params(resumed), _params(full), rtol=0, atol=0)
    assert rec_res["sft/loss"] == rec_full["sft/loss"]
    steps = [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_grpo_resume_equals_uninterrupted(tiny_dir, tmp_path):
    from llm.grpo import run_grpo

    base = dict(
        model=str(tiny_dir),
        device="cpu",
        n_train=8,
        n_heldout=2,
        steps=2,
        prompts_per_step=2,
        num_generations=3,
        pass_k=2,
        max_completion_length=6,
        ckpt_every=1,
        eval_every=10,
        prompt_style="compact",
        temperature=1.5,
        kl_coef=0.05,
    )
    tok = load_tokenizer(str(tiny_dir))
    m1 = load_model(str(tiny_dir), "cpu")
    run_grpo(GRPOConfig(**base, out=str(tmp_path / "g1")), model=m1, tok=tok)
    run_grpo(
        GRPOConfig(**base, out=str(tmp_path / "g2"), stop_after=1),
        model=load_model(str(tiny_dir), "cpu"),
        tok=tok,
    )
    m2 = load_model(str(tiny_dir), "cpu")
    run_grpo(GRPOConfig(**base, out=str(tmp_path / "g2"), resume=True), model=m2, tok=tok)
    torch.testing.assert_close(_params(m1), _params(m2), rtol=0, atol=0)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tiny_dir, tmp_path, monkeypatch):
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
        _sft(tiny_dir, tmp_path, "nan", steps=4, batch_size=2, ckpt_every=2, chunk_size=10_000)
    assert latest_checkpoint(tmp_path / "nan" / "checkpoint").name == "step-000002"


def test_bad_config_values(tiny_dir, tmp_path):
    from llm.config import resolve

    with pytest.raises(ValueError, match="method"):
        resolve(SFTConfig(method="nope"))
    with pytest.raises(ValueError, match="grad_accum"):
        resolve(SFTConfig(batch_size=6, grad_accum=4))
    with pytest.raises(ValueError, match="temperature"):
        resolve(GRPOConfig(temperature=0.0))
