"""Checkpoints: HF model directories, keep the last K, verify before resuming, fall back, never a
silent restart from a stale LATEST."""

from __future__ import annotations

import pytest
import torch

from llm.checkpoint import (
    CheckpointError,
    existing_run,
    latest_checkpoint,
    resume_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from llm.loading import load_model, load_tokenizer
from llm.train import make_optimizer


def _setup(tiny_dir):
    m = load_model(str(tiny_dir), "cpu")
    opt, sched = make_optimizer(m, 1e-3, 10, 0, 0.1)
    return m, opt, sched


def _save(root, step, m, opt, sched, tok=None, keep=2):
    with torch.no_grad():
        next(m.parameters()).add_(1.0)  # each step's weights differ
    return save_checkpoint(root, step, m, opt, sched, {"data_pos": step}, keep=keep, tokenizer=tok)


def test_step_checkpoint_is_an_hf_model_dir(tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m, opt, sched = _setup(tiny_dir)
    ck = _save(tmp_path / "ck", 3, m, opt, sched, tok=load_tokenizer(str(tiny_dir)))
    assert (ck / "config.json").is_file() and (ck / "model.safetensors").is_file()
    hf = AutoModelForCausalLM.from_pretrained(ck)
    for (k, a), b in zip(m.state_dict().items(), hf.state_dict().values()):
        assert torch.equal(a, b), k
    assert AutoTokenizer.from_pretrained(ck).chat_template


def test_keeps_the_last_k(tiny_dir, tmp_path):
    m, opt, sched = _setup(tiny_dir)
    for s in (1, 2, 3, 4):
        _save(tmp_path, s, m, opt, sched, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000003", "step-000004"]
    assert latest_checkpoint(tmp_path).name == "step-000004"


def test_corrupt_latest_falls_back_with_a_message(tiny_dir, tmp_path):
    m, opt, sched = _setup(tiny_dir)
    _save(tmp_path, 1, m, opt, sched)
    want = {k: v.clone() for k, v in m.state_dict().items()}
    bad = _save(tmp_path, 2, m, opt, sched)
    f = bad / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncated
    assert "wrong size" in verify_checkpoint(bad, m)
    msgs = []
    r = resume_checkpoint(tmp_path, m, opt, sched, log=msgs.append)
    assert r.state["step"] == 1 and any("falling back to step-000001" in x for x in msgs)
    assert all(torch.equal(v, want[k]) for k, v in m.state_dict().items())
    assert (tmp_path / "corrupt-step-000002").is_dir() and latest_checkpoint(tmp_path).name == "step-000001"
    _save(tmp_path, 2, m, opt, sched)  # the run continues; the good older step is still kept
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000001", "step-000002"]


def test_stale_latest_never_restarts_silently(tiny_dir, tmp_path):
    m, opt, sched = _setup(tiny_dir)
    _save(tmp_path, 5, m, opt, sched)
    (tmp_path / "LATEST").write_text("step-000009")  # names a step that does not exist
    msgs = []
    assert resume_checkpoint(tmp_path, m, opt, sched, log=msgs.append).state["step"] == 5
    assert (tmp_path / "step-000005").is_dir() and any("step-000009" in x for x in msgs)
    (tmp_path / "step-000005" / "manifest.json").unlink()  # now nothing is intact
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        resume_checkpoint(tmp_path, m, opt, sched, log=msgs.append)
    assert (tmp_path / "step-000005" / "model.safetensors").is_file()  # nothing deleted


def test_resume_with_nothing_says_so(tiny_dir, tmp_path):
    m, opt, sched = _setup(tiny_dir)
    msgs = []
    assert resume_checkpoint(tmp_path / "none", m, opt, sched, log=msgs.append) is None
    assert "starting from step 0" in msgs[0] and existing_run(tmp_path / "none") == ""
