"""End to end on the tiny model: TRL-format files train with ``sft`` to ``final/``, GRPO runs with a
plug-in reward, ``--report-to tensorboard`` writes event files, resume refuses to overwrite."""

from __future__ import annotations

import json

import pytest

from llm.cli import main


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _args(tiny_dir, out, *extra):
    return [*extra, "--model", str(tiny_dir), "--device", "cpu", "--quick", "--out", str(out)]


@pytest.mark.parametrize("fmt", ["messages", "prompt_completion"])
def test_trl_files_train_to_final(fmt, tiny_dir, tmp_path):
    rows = []
    for i in range(12):
        a, b = i % 5, i % 3
        if fmt == "messages":  # TRL conversational, multi-turn, an extra key, no number needed
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": f"{a} {b}>", "name": "u"},
                        {"role": "assistant", "content": f"{a}+{b}"},
                        {"role": "user", "content": "again"},
                        {"role": "assistant", "content": f"{b}+{a}"},
                    ]
                }
            )
        else:
            rows.append({"prompt": f"{a} {b}>", "completion": f"{a}+{b}"})
    data = _jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "run"
    rc = main(
        ["sft", *_args(tiny_dir, out, "--data", data, "--heldout-frac", "0.25", "--report-to", "tensorboard")]
    )
    assert (
        rc == 0
        and (out / "final" / "config.json").is_file()
        and (out / "final" / "model.safetensors").is_file()
    )
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert "heldout/sft_loss" in recs[-1] and "heldout/reward" not in recs[-1]  # no verifier: probe skipped
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["n_train"] is None or cfg["n_train"] == 32  # quick fills n_train; the file has fewer rows


REWARD = """
def contains_plus(completions, prompts, **kwargs):
    return [float("+" in c) for c in completions]
"""


def test_grpo_with_plugin_reward_and_no_silent_overwrite(tiny_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "mymodule.py").write_text(REWARD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "g"
    args = _args(tiny_dir, out, "--reward", "mymodule:contains_plus", "arith")
    args += [
        "--reward-weights",
        "0.5",
        "1.0",
        "--steps",
        "2",
        "--ckpt-every",
        "1",
        "--log-completions-every",
        "1",
    ]
    assert main(["grpo", *args]) == 0
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 2  # --steps 2 given: --quick did not override it
    rows = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
    assert {r["step"] for r in rows} == {1, 2} and all(0 <= r["reward"] <= 1.5 for r in rows)
    assert sorted(p.name for p in (out / "checkpoint").glob("step-*")) == ["step-000001", "step-000002"]
    capsys.readouterr()
    assert main(["grpo", *args]) == 2  # the same --out again
    assert "already holds a run" in capsys.readouterr().err
    assert main(["grpo", *args, "--resume"]) == 0  # finished: nothing to redo, the checkpoint is intact
    assert main(["grpo", *args, "--overwrite"]) == 0
