"""CLI: every bad argument is one line naming the flag and exit 2 before anything is loaded;
``--quick`` fills only what was not given; results print as a table; Ctrl-C exits cleanly."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm.cli import given_flags, main
from llm.config import QUICK, PipelineConfig, SFTConfig, resolve
from llm.log import results_table

NO_MODEL = ["--model", "/nonexistent/model/dir", "--device", "cpu"]  # loading it would fail loudly


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["sft", "--method", "bogus"], "--method"),
        (["sft", "--method", "gift@-1"], "--method"),
        (["sft", "--seed", "-1"], "--seed"),
        (["sft", "--lr", "-1"], "--lr"),
        (["sft", "--chunk-size", "0"], "--chunk-size"),
        (["grpo", "--temperature", "0"], "--temperature"),
        (["grpo", "--loss-type", "nope"], "--loss-type"),
        (["grpo", "--reward", "no_such_mod_xyz:f"], "--reward"),
        (["sft", "--data", "/no/such.jsonl"], "--data"),
        (["sft", "--report-to", "mlflow"], "--report-to"),
        (["sft", "--heldout-frac", "1.5"], "--heldout-frac"),
        (["sft", "--save-total-limit", "0"], "--save-total-limit"),
        (["pipeline", "--sft.lr", "0"], "--sft.lr"),
        (["pipeline", "--methods", "sft", "gift@-2"], "--methods"),
        (["eval", "--ks", "1", "32"], "--ks"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, flag, tmp_path, capsys):
    assert main([*argv, *NO_MODEL, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {flag} ")
    assert not (tmp_path / "o").exists()  # nothing was started


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "metrics.jsonl").write_text("")
    assert main(["sft", *NO_MODEL, "--out", str(tmp_path / "o")]) == 2
    assert "already holds a run" in capsys.readouterr().err and (tmp_path / "o" / "metrics.jsonl").exists()


def test_given_flags():
    assert given_flags(["sft", "--steps", "5", "--n-train=3", "--no-tiny", "--sft.lr", "1"]) == {
        "steps",
        "n_train",
        "tiny",
        "no_tiny",
        "sft.lr",
    }


def test_quick_fills_only_unset():
    cfg = resolve(SFTConfig(quick=True, steps=50), given={"steps", "quick"})
    assert cfg.steps == 50 and cfg.batch_size == QUICK["batch_size"] and "steps" not in cfg.quick_filled
    assert resolve(cfg).steps == 50  # idempotent: quick is applied once
    # Python API (no argv): a field off its default counts as set
    assert resolve(SFTConfig(quick=True, steps=50)).steps == 50
    assert resolve(SFTConfig(quick=True)).steps == QUICK["steps"]
    p = resolve(
        PipelineConfig(quick=True, sft=dataclasses.replace(PipelineConfig().sft, steps=9)), {"sft.steps"}
    )
    assert p.sft.steps == 9 and p.grpo.steps == QUICK["steps"]


def test_quick_from_the_argv_keeps_explicit_steps(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_run_sft(cfg):
        seen["cfg"] = resolve(cfg)
        return {"sft/loss": 0.5, "step": 50}

    monkeypatch.setattr("llm.sft.run_sft", fake_run_sft)
    rc = main(["sft", "--quick", "--steps", "200", *NO_MODEL, "--out", str(tmp_path / "o")])
    assert rc == 0 and seen["cfg"].steps == 200 and seen["cfg"].n_train == QUICK["n_train"]
    out = capsys.readouterr().out
    assert "metric" in out and "sft/loss" in out and "{" not in out  # a table, not a dict


def test_ctrl_c_exits_cleanly(monkeypatch, tmp_path, capsys):
    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr("llm.sft.run_sft", interrupted)
    assert main(["sft", *NO_MODEL, "--out", str(tmp_path / "o")]) == 130
    assert "resume with --resume" in capsys.readouterr().err


def test_results_table():
    t = results_table({"a/b": 0.5, "n": 3, "tiny": 1e-7})
    assert t.splitlines()[0].split() == ["metric", "value"] and "0.5000" in t and "1e-07" in t


def test_validation_is_pure_and_the_world_is_checked_in_set_up(tmp_path):
    """``validate`` imports no kernel and opens no file; ``check_world`` then refuses what is missing."""
    code = f"""
import dataclasses
import sys
from llm.config import SFTConfig, check_world, validate
cfg = SFTConfig(tiny=True, data={str(tmp_path / "nope.jsonl")!r}, reward=("nosuchmodule:f",),
                method="gift@5", loss_impl="fused", lr=1e-3, max_completion_length=8)
opened = []
sys.addaudithook(lambda event, args: opened.append(args[0]) if event == "open" else None)
validate(cfg)
try:
    validate(dataclasses.replace(cfg, method="entropy_sft@0.1,top_k=5"))
except ValueError as e:
    print(e)
print(sorted(m for m in ("llm.fused", "llm.objectives", "llm.rewards", "llm.checkpoint") if m in sys.modules))
print(opened)
try:
    check_world(cfg)
except ValueError as e:
    print(e)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    fused, kernels, opened, world = lines.stdout.splitlines()
    assert fused.startswith("--loss-impl fused cannot run 'entropy_sft@0.1,top_k=5'")
    assert kernels == "[]" and opened == "[]"
    assert world.startswith("--data must be 'arith' or a JSONL file")


def test_resolve_runs_once_per_command(monkeypatch, tmp_path):
    import llm.config as C

    calls = []
    validate = C.validate
    monkeypatch.setattr(C, "validate", lambda cfg: calls.append(type(cfg).__name__) or validate(cfg))
    seen = {}

    def fake_run_sft(cfg):
        seen["cfg"] = C.resolve(cfg)  # what the runner does: the resolved config comes back as it is
        return {"sft/loss": 0.5, "step": 1}

    monkeypatch.setattr("llm.sft.run_sft", fake_run_sft)
    assert main(["sft", "--quick", *NO_MODEL, "--out", str(tmp_path / "o")]) == 0
    assert calls == ["SFTConfig"] and seen["cfg"].resolved
    changed = dataclasses.replace(seen["cfg"], lr=-1.0)  # a changed config is validated again
    with pytest.raises(ValueError, match="--lr must be > 0"):
        C.resolve(changed)
