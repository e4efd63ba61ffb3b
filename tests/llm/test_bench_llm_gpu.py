"""``benchmarks/llm_gpu.py --cpu-smoke``: the prepared GPU check's code paths run on CPU at toy shapes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("llm_gpu", ROOT / "benchmarks" / "llm_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cpu_smoke_decode_prints_a_result_table(capsys, tmp_path):
    bench = _bench()
    assert bench.main(["--cpu-smoke", "--only", "decode", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "stand-in:" in out and "bf16" in out
    assert "RESULT decode[ours,eager] batch=4 new_tokens=8" in out
    assert "RESULT decode[hf.generate] batch=4 new_tokens=8" in out
    table = out.split("RESULT table:")[1]
    assert "decode[ours,eager]" in table and "decode[hf.generate]" in table  # repeated last


def test_deadline_skips_sections_and_says_so(capsys, tmp_path):
    bench = _bench()
    assert bench.main(["--cpu-smoke", "--only", "sft", "--deadline-s", "0", "--work", str(tmp_path)]) == 0
    assert "RESULT sft skipped:" in capsys.readouterr().out


@pytest.mark.slow
def test_cpu_smoke_every_section(capsys, tmp_path):
    bench = _bench()
    assert bench.main(["--cpu-smoke", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for key in (
        "sft[sft,chunked,checkpointing]",
        "sft[gift@5,fused,plain]",
        "pipeline[total] rc=0",
        "grpo[ours]",
    ):
        assert key in out.split("RESULT table:")[1], key
