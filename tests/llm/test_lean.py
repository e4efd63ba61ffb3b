"""Issue 20 on the tiny model (CPU): lean outputs (final/ in the base model's dtype, lean end
checkpoint hard-linked to final/, earlier checkpoints slimmed, --save-optimizer, the free-space
check), the ``perf/*`` throughput fields in metrics.jsonl, the training options (gradient
checkpointing auto, compiled decoder layers, Liger) equal to the plain path, and ``gpu``-marked
twins of the options that need CUDA."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors import safe_open

from llm.checkpoint import CheckpointError, DiskSpaceError, is_lean, latest_checkpoint, save_checkpoint
from llm.loading import load_model, load_tokenizer, precision, stored_dtype

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _params(m):
    return torch.cat([p.detach().reshape(-1) for p in m.parameters()])


def _du(path) -> int:
    """Bytes on disk under ``path`` (hard links once), as ``du`` counts them."""
    from llm.pipeline import disk_bytes

    return disk_bytes(path)


def _dtypes(file) -> set[str]:
    with safe_open(str(file), framework="pt") as f:
        return {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118


def test_finished_run_is_lean_and_final_shares_the_end_checkpoint(tiny_dir, run_tiny, tmp_path):
    """curio (EMA teacher) 4 steps, checkpoints at 2 and 4: step 2 was full while the run went on
    (optimizer and teacher, what resuming needs) and is slimmed at the end; step 4 is lean;
    final/ is the same file as step 4's weights; the stage is <= 2.5x the base model file."""
    kw = dict(steps=4, batch_size=4, ckpt_every=2, method="curio,ema_every=1")
    model, _ = run_tiny("sft", "lean", stop_after=2, **kw)
    mid = tmp_path / "lean" / "checkpoint" / "step-000002"
    assert {"optim.pt", "teacher.safetensors"} <= {p.name for p in mid.iterdir()}  # resumable mid-run
    model, _ = run_tiny("sft", "lean", resume=True, **kw)
    out = tmp_path / "lean"
    root = out / "checkpoint"
    assert sorted(p.name for p in root.glob("step-*")) == ["step-000002", "step-000004"]
    for step in root.glob("step-*"):
        names = {p.name for p in step.iterdir()}
        assert is_lean(step) and "optim.pt" not in names and "teacher.safetensors" not in names, names
    end = latest_checkpoint(root)
    assert end.name == "step-000004"
    assert os.path.samefile(end / "model.safetensors", out / "final" / "model.safetensors")
    base_file = (tiny_dir / "model.safetensors").stat().st_size
    assert _du(out) <= 2.5 * base_file, (_du(out), base_file)
    reloaded = load_model(str(out / "final"), "cpu")
    torch.testing.assert_close(_params(reloaded), _params(model), rtol=0, atol=0)  # fp32 base: exact


def test_finished_run_resumes_as_finished_but_cannot_continue(run_tiny, tmp_path):
    kw = dict(steps=2, batch_size=4, ckpt_every=1)
    m1, _ = run_tiny("sft", "fin", **kw)
    final = tmp_path / "fin" / "final" / "model.safetensors"
    before = final.stat().st_ino
    m2, _ = run_tiny("sft", "fin", resume=True, **kw)  # nothing left to do: the lean end is enough
    torch.testing.assert_close(_params(m1), _params(m2), rtol=0, atol=0)
    assert final.stat().st_ino == before  # final/ left as it was (still one copy on disk)
    with pytest.raises(CheckpointError, match="lean end of a finished run.*--save-optimizer"):
        run_tiny("sft", "fin", resume=True, **(kw | {"steps": 3}))


def test_save_optimizer_keeps_the_training_state(run_tiny, tmp_path):
    """With --save-optimizer the end checkpoint is full (optimizer, teacher, fp32 weights), final/ a
    separate copy, and the run can be continued past its end (a lean end refuses that)."""
    kw = dict(batch_size=4, ckpt_every=1, save_optimizer=True, method="curio,ema_every=1")
    m2, _ = run_tiny("sft", "keep", steps=2, **kw)
    root = tmp_path / "keep" / "checkpoint"
    for step in ("step-000001", "step-000002"):
        assert not is_lean(root / step)
        assert {"optim.pt", "teacher.safetensors"} <= {p.name for p in (root / step).iterdir()}
    final = tmp_path / "keep" / "final" / "model.safetensors"
    assert not os.path.samefile(root / "step-000002" / "model.safetensors", final)
    m3, rec = run_tiny("sft", "keep", steps=3, resume=True, **kw)
    assert rec["step"] == 3 and not torch.equal(_params(m3), _params(m2))


def test_final_is_saved_in_the_base_models_dtype(tiny_dir, tmp_path):
    """A bf16-stored base (like the Qwen3 hub checkpoints): training keeps fp32 master weights,
    final/ and the lean end checkpoint are bf16 (half the bytes) and say so in config.json."""
    from llm.config import SFTConfig
    from llm.sft import run_sft

    base = tmp_path / "bf16-base"
    load_model(str(tiny_dir), "cpu").to(torch.bfloat16).save_pretrained(base)
    load_tokenizer(str(tiny_dir)).save_pretrained(base)
    assert stored_dtype(str(base)) == torch.bfloat16 and stored_dtype(str(tiny_dir)) == torch.float32
    model = load_model(str(base), "cpu")
    assert next(model.parameters()).dtype == torch.float32  # the master copy
    cfg = SFTConfig(
        model=str(base), out=str(tmp_path / "o"), device="cpu", n_train=8, n_heldout=2, steps=1,
        batch_size=4, eval_every=100, prompt_style="compact", max_completion_length=8,
    )  # fmt: skip
    run_sft(cfg, model=model, tok=load_tokenizer(str(base)))
    final = tmp_path / "o" / "final"
    assert _dtypes(final / "model.safetensors") == {"BF16"}
    assert json.loads((final / "config.json").read_text())["dtype"] == "bfloat16"
    back = load_model(str(final), "cpu")
    torch.testing.assert_close(_params(back), _params(model).to(torch.bfloat16).float(), rtol=0, atol=0)
    assert (final / "model.safetensors").stat().st_size < 0.6 * (
        tiny_dir / "model.safetensors"
    ).stat().st_size


def test_free_space_check_names_the_bytes(tiny_dir, tmp_path, monkeypatch):
    import llm.checkpoint as ck

    m = load_model(str(tiny_dir), "cpu")
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    m(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    opt.step()
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(ck.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(DiskSpaceError, match=r"checkpoint step 3 .* needs about [\d,]+ bytes .* 1,000 bytes"):
        save_checkpoint(tmp_path / "c", 3, m, opt, sched, {})
    assert not list((tmp_path / "c").glob("*step-*"))  # nothing was written
    w = ck.weight_bytes(m)
    assert 2 * w <= ck.optimizer_bytes(opt) < 2.01 * w  # AdamW: two fp32 moments (and step counters)
    assert ck.weight_bytes(m, torch.bfloat16) * 2 == w


def test_disk_full_is_one_line_and_exit_2(tiny_dir, tmp_path, monkeypatch, capsys):
    import llm.checkpoint as ck
    from llm.cli import main

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(ck.shutil, "disk_usage", lambda p: usage._replace(free=10))
    args = ["sft", "--model", str(tiny_dir), "--device", "cpu", "--quick", "--out", str(tmp_path / "o")]
    args += ["--steps", "1", "--n-heldout", "0", "--prompt-style", "compact"]
    assert main(args) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]  # past the bars
    assert len(err) == 1 and "not enough free disk space" in err[0] and "bytes" in err[0], err


def test_metrics_carry_throughput_fields(run_tiny, tmp_path):
    _, rec = run_tiny("sft", "s", steps=2, batch_size=4, peak_tflops=1.0)
    recs = [json.loads(x) for x in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    for r in recs:
        assert r["perf/step_time"] > 0 and r["perf/tokens_per_s"] > 0 and r["perf/train_tokens_per_s"] > 0
        assert 0 < r["perf/mfu"] < 1  # 1 TFLOP/s given: a tiny model on a CPU is far from it
        assert r["perf/train_time"] <= r["perf/step_time"]
    run_tiny("grpo", "g", steps=1, kl_coef=0.05)
    (r,) = [json.loads(x) for x in (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()]
    for phase in ("generation", "logprob", "train"):
        assert r[f"perf/{phase}_tokens_per_s"] > 0 and r[f"perf/{phase}_time"] > 0, phase
    assert "perf/mfu" not in r and "perf/peak_memory_gib" not in r  # CPU, no peak given


def test_step_timer_counts_tokens_and_flops(monkeypatch):
    """MFU = (6 N trained + 2 N generated/scored tokens) / step time / peak, on a fake clock."""
    import llm.log as log

    clock = iter([0.0, 0.0, 1.0, 1.0, 3.0, 4.0])  # start; train 0..1; generation 1..3; record at 4
    monkeypatch.setattr(log.time, "perf_counter", lambda: next(clock))
    t = log.StepTimer(torch.device("cpu"), n_params=10, peak=100.0)
    with t.phase("train", tokens=5):
        pass
    with t.phase("generation", tokens=8):
        pass
    r = t.record()
    assert r["perf/step_time"] == 4.0 and r["perf/tokens_per_s"] == 13 / 4
    assert r["perf/train_tokens_per_s"] == 5.0 and r["perf/generation_tokens_per_s"] == 4.0
    assert r["perf/mfu"] == pytest.approx((6 * 10 * 5 + 2 * 10 * 8) / 4 / 100)
    assert log.peak_flops(torch.device("cpu")) == 0.0 and log.peak_flops(torch.device("cpu"), 2.0) == 2e12


def test_gradient_checkpointing_auto_decides_by_memory(tiny_dir):
    from llm.config import SFTConfig
    from llm.train import micro_tokens, training_bytes, use_checkpointing

    cpu = torch.device("cpu")
    assert not use_checkpointing("auto", cpu) and use_checkpointing("on", cpu)
    assert not use_checkpointing("off", torch.device("cuda"))
    m = load_model(str(tiny_dir), "cpu")
    prec = precision("fp32", cpu)
    small, mid, big = (training_bytes(m, t, prec) for t in (100, 200, 300))
    n = sum(p.numel() for p in m.parameters())
    assert small > 3 * 4 * n and mid - small == big - mid > 0  # grads + AdamW, then linear in tokens
    assert training_bytes(m, 100, precision("bf16-mixed", cpu)) < small  # bf16 activations
    cfg = SFTConfig(batch_size=16, grad_accum=2, max_length=512)
    assert micro_tokens(cfg, None, {}, m, world=2) == 4 * 512
    from llm.config import GRPOConfig
    from llm.data import load_data, prompt_ids

    tok = load_tokenizer(str(tiny_dir))
    g = GRPOConfig(micro_batch_size=3, max_completion_length=10, n_train=8, prompt_style="compact")
    data = load_data(g)
    longest = max(len(prompt_ids(tok, e)) for e in data["rl"])
    assert micro_tokens(g, tok, data, m) == 3 * (longest + 10)


@pytest.mark.slow  # inductor compiles for minutes on a shared CPU; a gpu twin below
def test_compiled_decoder_layers_step_equals_eager(run_tiny):
    """--torch-compile: one SFT step gives the plain step's loss, gradient norm and parameters."""
    pytest.importorskip("torch._inductor")
    kw = dict(steps=1, batch_size=4, warmup=0, lr=1e-3, n_heldout=0)
    ref, rec = run_tiny("sft", "eager", **kw)
    m, r = run_tiny("sft", "compiled", torch_compile=True, **kw)
    assert r["sft/loss"] == pytest.approx(rec["sft/loss"], rel=1e-5)
    assert r["sft/grad_norm"] == pytest.approx(rec["sft/grad_norm"], rel=1e-4)
    torch.testing.assert_close(_params(m), _params(ref), rtol=0, atol=5e-5)


def test_liger_without_package_or_gpu_is_one_clear_error():
    from llm.config import SFTConfig, resolve

    with pytest.raises(ValueError, match="--use-liger-kernel needs (the liger-kernel package|a CUDA device)"):
        resolve(SFTConfig(tiny=True, device="cpu", use_liger_kernel=True))


# ---- gpu twins (run with ``pytest -m gpu`` on a CUDA machine) ----------------------------------


def _cuda_sft(tiny_dir, tmp_path, name: str, **kw):
    """One SFT step on CUDA in fp32 (so the comparisons are tight); returns (model, record)."""
    from llm.config import SFTConfig
    from llm.sft import run_sft

    cfg = dict(
        model=str(tiny_dir), out=str(tmp_path / name), device="cuda", dtype="fp32", n_train=8,
        n_heldout=0, steps=1, batch_size=4, warmup=0, lr=1e-3, eval_every=100, ckpt_every=100,
        prompt_style="compact", max_completion_length=8,
    )  # fmt: skip
    model = load_model(str(tiny_dir), "cuda")
    return model, run_sft(SFTConfig(**(cfg | kw)), model=model, tok=load_tokenizer(str(tiny_dir)))


def _assert_same_step(tiny_dir, tmp_path, ref_name: str, name: str, **kw):
    """One CUDA SFT step with the options ``kw`` matches the plain step: loss, grad norm, parameters."""
    ref, rec = _cuda_sft(tiny_dir, tmp_path, ref_name)
    m, r = _cuda_sft(tiny_dir, tmp_path, name, **kw)
    assert r["sft/loss"] == pytest.approx(rec["sft/loss"], rel=1e-4)
    assert r["sft/grad_norm"] == pytest.approx(rec["sft/grad_norm"], rel=1e-3)
    torch.testing.assert_close(_params(m), _params(ref), rtol=0, atol=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_gpu_liger_step_equals_plain(tiny_dir, tmp_path):
    pytest.importorskip("liger_kernel")
    _assert_same_step(tiny_dir, tmp_path, "plain", "liger", use_liger_kernel=True)


@pytest.mark.gpu
@needs_cuda
def test_gpu_compiled_layers_step_equals_eager(tiny_dir, tmp_path):
    _assert_same_step(tiny_dir, tmp_path, "eager", "compiled", torch_compile=True)


@pytest.mark.gpu
@needs_cuda
def test_gpu_liger_with_compiled_layers_step_equals_plain(tiny_dir, tmp_path):
    """Both options: compiled layers + Liger's fused linear cross-entropy (no layer patch)."""
    pytest.importorskip("liger_kernel")
    _assert_same_step(tiny_dir, tmp_path, "plain", "both", use_liger_kernel=True, torch_compile=True)


@pytest.mark.gpu
@needs_cuda
def test_gpu_checkpointing_auto_is_off_when_it_fits_and_logs_memory(tiny_dir, tmp_path):
    """The tiny model fits many times over: auto leaves checkpointing off; the step logs its peak
    memory (and MFU: the device is in the table or --peak-tflops is given); checkpointing on gives
    the same step."""
    m_auto, rec = _cuda_sft(tiny_dir, tmp_path, "auto", gradient_checkpointing="auto", peak_tflops=100.0)
    assert not m_auto.is_gradient_checkpointing
    m_on, rec_on = _cuda_sft(tiny_dir, tmp_path, "on", gradient_checkpointing="on")
    assert m_on.is_gradient_checkpointing
    assert rec_on["sft/loss"] == pytest.approx(rec["sft/loss"], rel=1e-5)
    torch.testing.assert_close(_params(m_on), _params(m_auto), rtol=0, atol=1e-5)
    (r,) = [json.loads(x) for x in (tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()]
    assert r["perf/peak_memory_gib"] > 0 and 0 < r["perf/mfu"] < 1


def test_pipeline_seeds_reports_paired_intervals(tiny_dir, tmp_path):
    """``pipeline --seeds 2``: both seeds run every method; results.csv has a seed column, summary.csv
    the mean and 95% half-width of every metric (the toy map's ``summary``), paired.csv the
    difference to the first method paired by seed, decoupling.csv T1/T2 per method and seed, and
    report.md shows the intervals, the decoupling and time and disk per stage."""
    import numpy as np
    import pandas as pd

    from llm.cli import main
    from toybench.analysis.stats import ci95

    out = tmp_path / "pipe"
    args = ["pipeline", "--tiny", "--quick", "--seeds", "2", "--device", "cpu", "--out", str(out)]
    args += ["--cache-dir", str(tiny_dir.parent), "--tiny-pretrain-steps", "40", "--methods", "sft", "gift@5"]
    args += ["--sft.steps", "2", "--grpo.steps", "2", "--n-samples", "2", "--ks", "1", "2"]
    assert main(args) == 0
    df = pd.read_csv(out / "results.csv")
    assert sorted(set(df["seed"])) == [0, 1] and len(df) == 2 * 5  # base + 2 methods x 2 stages
    summ = pd.read_csv(out / "summary.csv")
    row = summ[(summ["method"] == "gift@5") & (summ["stage"] == "grpo")].iloc[0]
    vals = df[(df["method"] == "gift@5") & (df["stage"] == "grpo")]["entropy"]
    m, h = ci95(vals)
    assert row["n"] == 2 and np.isclose(row["entropy"], m) and np.isclose(row["entropy_ci"], h)
    pair = pd.read_csv(out / "paired.csv")
    p = pair[(pair["stage"] == "grpo") & (pair["metric"] == "entropy")].iloc[0]
    d = vals.to_numpy() - df[(df["method"] == "sft") & (df["stage"] == "grpo")]["entropy"].to_numpy()
    assert p["method"] == "gift@5" and p["vs"] == "sft" and p["n"] == 2 and np.isclose(p["diff"], d.mean())
    dec = pd.read_csv(out / "decoupling.csv")
    assert len(dec) == 4 and {"grpo_heldout_sft_loss_change", "sft_heldout_reward_end"} <= set(dec)
    report = (out / "report.md").read_text()
    assert "over 2 seeds" in report and " ± " in report and "## Decoupling" in report
    assert "## Time and disk per stage" in report and "## Paired by seed" in report
    assert (out / "seed-1" / "gift@5" / "grpo" / "final" / "model.safetensors").is_file()


def test_liger_wiring_with_a_stand_in_module(tiny_dir, monkeypatch):
    """The --use-liger-kernel plumbing on CPU, with a plain-torch stand-in for the liger_kernel
    package (the real Triton kernels are the gpu test's): the model is patched with RMSNorm, SwiGLU
    and RoPE and not Liger's own loss, and the NLL methods' per-token loss taken through the
    fused-linear-cross-entropy call (masked targets as ignore_index, reduction none) equals the
    chunked loss in value and gradient."""
    import sys
    import types

    from llm.data import collate
    from llm.liger import nll_method
    from llm.scoring import sft_token_loss
    from llm.train import prepare_model

    calls = []

    def flce(x, weight, target, ignore_index=-100, reduction="mean", chunk_mem_const=1):
        assert reduction == "none"
        calls.append(("flce", chunk_mem_const))
        ce = torch.nn.functional.cross_entropy
        return ce(x @ weight.T, target, ignore_index=ignore_index, reduction="none")

    root, tr, fn, mp = (
        types.ModuleType(n) for n in ("liger_kernel", "liger_kernel.transformers", "lk_fn", "lk_mp")
    )
    fn.liger_fused_linear_cross_entropy = flce
    mp.MODEL_TYPE_TO_APPLY_LIGER_FN = {"qwen3": lambda model, **kw: calls.append(kw)}
    monkeypatch.setitem(sys.modules, "liger_kernel", root)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", tr)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.functional", fn)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.monkey_patch", mp)
    m = prepare_model(load_model(str(tiny_dir), "cpu"), precision("fp32", "cpu"), False, liger=True)
    assert calls == [
        dict(rope=True, swiglu=True, rms_norm=True, cross_entropy=False, fused_linear_cross_entropy=False)
    ]
    assert nll_method("sft") and nll_method("pear_token") and not nll_method("gift@5")
    tok = load_tokenizer(str(tiny_dir))
    seqs = [(tok.encode("12+3=15"), [0] * 4 + [1] * 3), (tok.encode("7*8=56!"), [0] * 3 + [1] * 4)]
    batch = collate(seqs, tok.pad_token_id)
    got = sft_token_loss(m, batch, "sft", impl="liger", chunk_size=4)
    B, T = batch["targets"].shape  # about chunk_size tokens per Liger chunk: V * 4 / (D * B * T) per H
    assert calls[-1] == ("flce", -(-m.config.vocab_size * 4 // (m.config.hidden_size * B * T)))
    (g1,) = torch.autograd.grad(got.sum(), [m.lm_head.weight])
    want = sft_token_loss(m, batch, "sft", impl="chunked")
    (g2,) = torch.autograd.grad(want.sum(), [m.lm_head.weight])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)
    assert (got[batch["loss_mask"] == 0] == 0).all() and (got[batch["loss_mask"] == 1] > 0).all()


def test_liger_patch_is_scoped_to_its_model(tiny_dir, monkeypatch):
    """Liger's patch function rebinds names of the transformers modeling module process-wide (a
    stand-in doing what the real one does: the RMSNorm class, ``apply_rotary_pos_emb``): apply_liger
    puts them back, so a model loaded afterwards is plain, while the patched model's attention layers
    still call the patched RoPE (the stand-in computes the original, so both models agree). With
    --torch-compile the layers are left to the compiler: Liger patches nothing."""
    import sys
    import types

    from transformers.models.qwen3 import modeling_qwen3 as mq

    from llm.train import prepare_model

    orig_rope, orig_norm = mq.apply_rotary_pos_emb, mq.Qwen3RMSNorm
    for name in ("apply_rotary_pos_emb", "Qwen3RMSNorm"):  # restored at teardown whatever happens
        monkeypatch.setattr(mq, name, getattr(mq, name))
    rope_calls, patched = [], []

    def liger_rope(*a, **k):
        rope_calls.append(1)
        return orig_rope(*a, **k)

    def patch(model, **kw):
        patched.append(kw)
        mq.apply_rotary_pos_emb, mq.Qwen3RMSNorm, mq.LIGER_ONLY = liger_rope, type("N", (orig_norm,), {}), 1

    root, tr, mp = (types.ModuleType(n) for n in ("liger_kernel", "liger_kernel.transformers", "lk_mp"))
    mp.MODEL_TYPE_TO_APPLY_LIGER_FN = {"qwen3": patch}
    for name, mod in (("liger_kernel", root), ("liger_kernel.transformers", tr), ("lk_mp", mp)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.monkey_patch", mp)
    fp32 = precision("fp32", "cpu")
    m = prepare_model(load_model(str(tiny_dir), "cpu"), fp32, False, liger=True)
    assert len(patched) == 1
    assert mq.apply_rotary_pos_emb is orig_rope and mq.Qwen3RMSNorm is orig_norm
    assert not hasattr(mq, "LIGER_ONLY")
    ids = torch.tensor([[3, 5, 7, 9, 11]])
    with torch.no_grad():
        got = m(input_ids=ids).logits
        assert len(rope_calls) == m.config.num_hidden_layers and mq.apply_rotary_pos_emb is orig_rope
        plain = load_model(str(tiny_dir), "cpu")(input_ids=ids).logits
    assert len(rope_calls) == m.config.num_hidden_layers  # the later model is plain
    torch.testing.assert_close(got, plain, rtol=0, atol=0)
    prepare_model(load_model(str(tiny_dir), "cpu"), fp32, False, liger=True, torch_compile=True)
    assert len(patched) == 1  # compiled layers: Liger gives the loss only
