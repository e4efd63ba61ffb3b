"""Bad data and bad reward functions are one line naming file:line (or the function and what it
returned) and exit 2, before any model loads, for every ``llm`` command; ``None`` from a reward
function follows TRL (that function does not score that completion) and trains."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from llm.cli import main
from llm.data import Example
from llm.rewards import Rewards

NO_MODEL = ["--model", "/nonexistent/model/dir", "--device", "cpu"]  # loading it would fail loudly
GOOD = {"prompt": [{"role": "user", "content": "1 2>3:"}], "completion": "1+2", "answer": "3"}
PROMPT_ONLY = {"messages": [{"role": "user", "content": "what is 1+2?"}], "answer": "3"}

REWARDS = """
def boom(completions, **kwargs):
    return [1 / 0 for _ in completions]

def nan(completions, **kwargs):
    return [float("nan")] * len(completions)

def one(completions, **kwargs):
    return [1.0]

def half_none(completions, task, **kwargs):  # TRL multi-task: scores only its own task
    return [float(len(c) % 2) if t == "math" else None for c, t in zip(completions, task)]

def picky(completions, **kwargs):  # passes the probe, fails on the first model output
    if any(c not in ("", "The answer is 0.") for c in completions):
        raise RuntimeError("cannot parse " + repr(completions[0][:5]))
    return [0.0] * len(completions)

def has_digit(completions, **kwargs):
    return [float(any(ch.isdigit() for ch in c)) for c in completions]
"""


def _write(path: Path, lines: list) -> str:
    raw = b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)
    path.write_bytes(raw)
    return str(path)


def _run(argv: list[str], tmp_path: Path, capsys) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    rc = main([*argv, *NO_MODEL, "--out", str(tmp_path / "o")])
    return rc, capsys.readouterr().err.strip(), time.perf_counter() - t0


def _assert_one_line_exit_2(rc, err, secs, tmp_path, *needles):
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err and secs < 10, (err, secs)
    for n in needles:
        assert n in err, (n, err)
    assert not (tmp_path / "o").exists()  # nothing trained, nothing written


COMMANDS = ["sft", "grpo", "eval", "pipeline"]
BAD_DATA = {  # name -> (lines of the file, what the error names)
    # the bad byte is the 16th: '{"prompt": "caf' is 15 bytes
    "invalid_utf8": ([GOOD, b'{"prompt": "caf\xe9", "answer": "1"}'], ":2: invalid UTF-8 at byte 16"),
    "empty_file": ([], "no examples (the file is empty"),
    "not_json": ([GOOD, GOOD, "{not json"], ":3: invalid JSON"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_file_is_one_line_and_exit_2(command, case, tmp_path, capsys):
    lines, needle = BAD_DATA[case]
    lines = [x if isinstance(x, bytes | dict) else x.encode() for x in lines]
    path = tmp_path / "d.jsonl"
    if lines:
        _write(path, lines)
    else:
        path.write_bytes(b"")
    rc, err, secs = _run([command, "--data", str(path)], tmp_path, capsys)
    _assert_one_line_exit_2(rc, err, secs, tmp_path, str(path), needle)


def test_bad_heldout_file_is_named_too(tmp_path, capsys):
    data = _write(tmp_path / "d.jsonl", [GOOD])
    held = _write(tmp_path / "h.jsonl", [GOOD, b"\xff\xfe"])
    rc, err, secs = _run(["sft", "--data", data, "--heldout-data", held], tmp_path, capsys)
    _assert_one_line_exit_2(rc, err, secs, tmp_path, f"{held}:2: invalid UTF-8")


def test_lines_past_n_train_are_checked_too(tmp_path, capsys):
    data = _write(tmp_path / "d.jsonl", [GOOD] * 3 + [b"[1, 2]"])
    rc, err, secs = _run(["sft", "--data", data, "--n-train", "2"], tmp_path, capsys)
    _assert_one_line_exit_2(rc, err, secs, tmp_path, f"{data}:4: expected a JSON object")


@pytest.mark.parametrize("command", ["sft", "pipeline"])
def test_sft_line_without_assistant_turn(command, tmp_path, capsys):
    data = _write(tmp_path / "d.jsonl", [GOOD, PROMPT_ONLY])
    rc, err, secs = _run([command, "--data", data], tmp_path, capsys)
    _assert_one_line_exit_2(rc, err, secs, tmp_path, f"{data}:2: no assistant turn")


def test_prompt_only_lines_are_fine_where_nothing_trains_on_them(tmp_path, capsys, monkeypatch):
    """grpo and eval need prompts, not assistant turns; the pipeline with method none has no SFT."""
    data = _write(tmp_path / "d.jsonl", [PROMPT_ONLY, PROMPT_ONLY])
    seen = []
    monkeypatch.setattr("llm.grpo.run_grpo", lambda cfg: seen.append("grpo") or {"step": 1})
    monkeypatch.setattr("llm.evaluate.run_eval", lambda cfg: seen.append("eval") or {"pass@1": 0.0})
    for cmd in ("grpo", "eval"):
        assert main([cmd, "--data", data, *NO_MODEL, "--out", str(tmp_path / cmd)]) == 0
    assert seen == ["grpo", "eval"]


@pytest.fixture()
def rewards_py(tmp_path):
    path = tmp_path / "rw.py"
    path.write_text(REWARDS)
    return str(path)


BAD_REWARDS = {  # function -> what the error says it returned
    "boom": "raised ZeroDivisionError: division by zero",
    "nan": "returned nan for completion 0: non-finite",
    "one": "returned 1 values for 4 completions",
}


@pytest.mark.parametrize("command", ["grpo", "eval", "pipeline"])
@pytest.mark.parametrize("fn", list(BAD_REWARDS))
def test_bad_reward_function_is_one_line_and_exit_2(command, fn, rewards_py, tmp_path, capsys):
    data = _write(tmp_path / "d.jsonl", [GOOD, GOOD])
    argv = [command, "--data", data, "--reward", "answer", f"{rewards_py}:{fn}"]
    rc, err, secs = _run(argv, tmp_path, capsys)
    _assert_one_line_exit_2(rc, err, secs, tmp_path, f"reward '{rewards_py}:{fn}' {BAD_REWARDS[fn]}")
    assert f"probed on 4 completions of {data}" in err


def test_sft_probes_the_heldout_reward(rewards_py, tmp_path, capsys):
    data = _write(tmp_path / "d.jsonl", [GOOD] * 4)
    argv = ["sft", "--data", data, "--heldout-frac", "0.5", "--reward", f"{rewards_py}:nan"]
    rc, err, secs = _run(argv, tmp_path, capsys)
    _assert_one_line_exit_2(rc, err, secs, tmp_path, "returned nan")


def test_the_cli_process_prints_no_traceback(tmp_path):
    """The real entry point, as a user runs it: exit 2, one line on stderr, no Traceback."""
    data = _write(tmp_path / "d.jsonl", [GOOD, b"\x80oops"])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    argv = [sys.executable, "-m", "llm", "sft", "--data", data, *NO_MODEL, "--out", str(tmp_path / "o")]
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    want = f"error: {data}:2: invalid UTF-8 at byte 1 of the line (b'\\x80oop'); save the file as UTF-8"
    assert p.stderr.strip().splitlines() == [want]


# ----------------------------------------------------------------------------- None: TRL semantics
def _ex(task: str) -> Example:
    return Example(({"role": "user", "content": task},), None, None, columns={"task": task})


def test_none_is_skipped_in_the_weighted_sum(rewards_py, tmp_path):
    """Weights (1, 2). Completions "ab" (math), "abc" (math), "x1" (code), "y" (code):
    half_none = len % 2 on math, None on code; has_digit = 0, 0, 1, 0.
    Totals by hand: 1*0 + 2*0 = 0; 1*1 + 2*0 = 1; (skipped) + 2*1 = 2; (skipped) + 2*0 = 0."""
    r = Rewards((f"{rewards_py}:half_none", f"{rewards_py}:has_digit"), (1.0, 2.0))
    exs = [_ex("math"), _ex("code")]
    per = r.per_function(exs, [["ab", "abc"], ["x1", "y"]])
    assert per[0][:2] == [0.0, 1.0] and all(math.isnan(v) for v in per[0][2:])
    assert r(exs, [["ab", "abc"], ["x1", "y"]]) == [[0.0, 1.0], [2.0, 0.0]]


def test_a_completion_no_function_scores_gets_0_with_a_warning(rewards_py):
    r = Rewards((f"{rewards_py}:half_none",), (1.0,))
    with pytest.warns(UserWarning, match="returned None for 2 of 4 completions"):
        got = r([_ex("math"), _ex("code")], [["ab", "abc"], ["x1", "y"]])
    assert got == [[0.0, 1.0], [0.0, 0.0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every completion scored: no warning
        assert r([_ex("math")], [["ab", "abc"]]) == [[0.0, 1.0]]


def test_trl_pair_with_none_on_half_the_samples_trains_with_grpo(rewards_py, tiny_dir, tmp_path):
    """A TRL-style pair (one function returns None on the 'code' half of the prompts) through
    ``llm grpo --tiny`` (the cached tiny model of the test session): it trains, rewards finite."""
    rows = [
        {"prompt": [{"role": "user", "content": f"{i % 5} {i % 3}>"}], "task": "math" if i % 2 else "code"}
        for i in range(8)
    ]
    data = _write(tmp_path / "d.jsonl", rows)
    out = tmp_path / "g"
    argv = ["grpo", "--tiny", "--cache-dir", str(Path(tiny_dir).parent), "--tiny-pretrain-steps", "40"]
    argv += ["--device", "cpu", "--quick", "--data", data, "--out", str(out), "--steps", "2"]
    argv += ["--reward", f"{rewards_py}:half_none", f"{rewards_py}:has_digit", "--prompt-style", "compact"]
    assert main(argv) == 0
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2]
    assert all(math.isfinite(r["grpo/reward"]) and 0 <= r["grpo/reward"] <= 2 for r in recs)
    assert (out / "final" / "model.safetensors").is_file()


def test_a_reward_failing_mid_run_is_one_line_and_exit_2(rewards_py, tiny_dir, tmp_path, capsys):
    """A function that passes the probe but raises on model output stops the run with one line."""
    data = _write(tmp_path / "d.jsonl", [PROMPT_ONLY, PROMPT_ONLY])
    argv = ["grpo", "--model", str(tiny_dir), "--device", "cpu", "--quick", "--data", data]
    argv += ["--reward", f"{rewards_py}:picky", "--out", str(tmp_path / "g"), "--steps", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()  # progress bars of the model loading come first
    assert "Traceback" not in err and [x for x in err.splitlines() if x.startswith("error:")] == [
        err.splitlines()[-1]
    ]
    assert err.splitlines()[-1].startswith(f"error: reward '{rewards_py}:picky' raised RuntimeError")


def test_a_utf8_bom_on_the_first_line_is_accepted(tmp_path):
    """Editors on Windows write a BOM; it is not a JSON error (the line reads as if it had none)."""
    from llm.data import read_jsonl

    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n" + json.dumps(GOOD).encode() + b"\n")
    assert [e.response for e in read_jsonl(p)] == ["1+2", "1+2"]
    assert read_jsonl(p)[1].source == f"{p}:2"
