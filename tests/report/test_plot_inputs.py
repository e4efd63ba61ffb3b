"""`toybench plot` reads results.csv, config.json, escape.csv and section_*.md back: each one
corrupt (undecodable, not a table / object, cut short, a column or key missing, a word where a
number belongs) is one line naming the file and exit 2, never a traceback."""

from __future__ import annotations

import json
import shutil

import pytest

from toybench.cli import main
from toybench.report import ReportConfig, run_report
from toybench.tabular.pipeline import PipelineConfig


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished (tiny) report run: bandit only, 2 seeds, K = 2."""
    out = tmp_path_factory.mktemp("report")
    cfg = ReportConfig(
        out=out,
        skip_theorems=True,
        seeds=2,
        val_seeds=2,
        lr_grid=(0.5, 2.0),
        knob_lrs=(1.0,),
        settings=("bandit",),
        wrong_demo_fracs=(0.0,),
        base_correct_masses=(0.2,),
        rl_budgets=(2,),
        pipeline=PipelineConfig(sft_steps=2),
        sft_early_steps=1,
        num_generations=(4,),
        bandit_prompts=3,
        bandit_V=6,
    )
    run_report(cfg)
    return out


def _rewrite_line(path, lineno, fn):
    lines = path.read_text().splitlines(keepends=True)
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("".join(lines))


def _column(path, name: str) -> int:
    return path.read_text().splitlines()[0].split(",").index(name)


def _set_field(line: str, i: int, value: str) -> str:
    f = line.rstrip("\n").split(",")
    f[i] = value
    return ",".join(f) + "\n"


CORRUPT = {  # name -> (file, how it is corrupted, what the line says)
    "results_binary": ("results.csv", lambda p: p.write_bytes(b"\x00\xff\xfe\x01"), "not UTF-8"),
    "results_empty": ("results.csv", lambda p: p.write_text(""), "not a CSV table"),
    "results_foreign": ("results.csv", lambda p: p.write_text("x,y\n1,2\n"), "missing column(s) ['setting'"),
    "results_cut": (
        "results.csv",
        lambda p: p.write_bytes(p.read_bytes()[:-7]),
        "the last line is incomplete",
    ),
    "results_word": (
        "results.csv",
        lambda p: _rewrite_line(p, 3, lambda s: _set_field(s, _column(p, "base_correct_mass"), "lots")),
        "line 3: column 'base_correct_mass' must hold numbers, got 'lots'",
    ),
    "config_not_json": ("config.json", lambda p: p.write_text('{"seeds": 2,'), "invalid JSON"),
    "config_list": ("config.json", lambda p: p.write_text("[1, 2]"), "expected a JSON object"),
    "config_missing_key": (
        "config.json",
        lambda p: p.write_text(
            json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "seeds"})
        ),
        "missing key(s) ['seeds']",
    ),
    "escape_foreign": ("escape.csv", lambda p: p.write_text("a,b\n1,2\n"), "missing column(s) ['setting'"),
    "section_binary": (
        "section_extra.md",
        lambda p: p.write_bytes(b"ok\n\xff\xfe"),
        "not UTF-8 text (byte 4",
    ),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_file_is_one_line_and_exit_2(case, finished, tmp_path, capsys):
    name, corrupt, needle = CORRUPT[case]
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    corrupt(run / name)
    assert main(["plot", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"toybench plot: cannot read {run / name}: ") and needle in err, err


def test_an_intact_run_replots(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = (run / "report.md").read_text()
    (run / "report.md").unlink()
    assert main(["plot", str(run)]) == 0 and (run / "report.md").read_text() == before


@pytest.mark.parametrize("blob", [b"not a checkpoint", None], ids=["garbage", "wrong_keys"])
def test_corrupt_tiny_base_cache_is_one_line(blob, tmp_path):
    """`toybench report --scale transformer` reads the cached base model: a corrupt file is a
    ValueError naming it (the CLI's one line), not an unpickling traceback."""
    import torch

    from toybench.tiny.config import TinyConfig, pretrain_key
    from toybench.tiny.train import pretrain_base

    cfg = TinyConfig()
    path = tmp_path / f"base-{pretrain_key(cfg)}.pt"
    if blob is None:
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(blob)
    with pytest.raises(ValueError, match=rf"^cannot read {path}: a corrupt cached base model .*delete it"):
        pretrain_base(cfg, cache_dir=tmp_path, progress=False)
