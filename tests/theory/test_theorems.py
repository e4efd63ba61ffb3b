"""Smoke and honesty tests of `toybench theorems` (quick sizes)."""

from __future__ import annotations

import pandas as pd
import pytest

from toybench.theorems import COLUMNS, TheoremsConfig, run_theorems, theorems_markdown
from toybench.theorems.common import make_row


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("theorems")
    df = run_theorems(TheoremsConfig(out=out, quick=True), progress=False)
    return out, df


def test_quick_run_writes_table_and_figures(quick_run):
    out, df = quick_run
    assert list(df.columns) == COLUMNS
    assert (out / "theorems.md").exists() and (out / "config.json").exists()
    csv = pd.read_csv(out / "theorems.csv")
    assert len(csv) == len(df) > 40
    assert len(list(out.glob("*.png"))) >= 5
    md = (out / "theorems.md").read_text()
    assert "| result | setting |" in md and ".png)" in md


def test_every_row_passes_or_is_an_explicit_counterexample_or_report(quick_run):
    _, df = quick_run
    assert set(df.status) <= {"PASS", "COUNTEREXAMPLE-SHOWN", "REPORTED"}, df[~df.status.isin(["PASS"])]
    assert (df.status == "COUNTEREXAMPLE-SHOWN").sum() == 1
    for theorem in ("T1", "T2", "T3", "T4", "T5", "GIFT"):
        assert df.result.str.startswith(theorem).any(), theorem
    assert set(df.method) >= {"closed form", "symbolic", "simulation"}
    assert set(df.setting) == {"bandit", "token MDP"}


def test_row_rules_can_fail():
    assert make_row("x", "bandit", "closed form", 1, "max", 1e-3, 1e-9)["status"] == "FAIL"
    assert make_row("x", "bandit", "simulation", 1, "fraction", 0.9, 1.0, ">=")["status"] == "FAIL"
    assert make_row("x", "bandit", "symbolic", 1, "shown", 0, 1, "ce")["status"].startswith("FAIL")
    assert make_row("x", "bandit", "simulation", 1, "freq", 0.3, 0, "report")["status"] == "REPORTED"


def test_markdown_links_relative_dir():
    df = pd.DataFrame(
        [make_row("T1 x", "bandit", "closed form", 3, "max|lhs-rhs|", 0.0, 1e-9)], columns=COLUMNS
    )
    md = theorems_markdown(df, "figs/")
    assert "(figs/t1_sft_loss_during_rl.png)" in md and "PASS" in md
    table_rows = [line for line in md.splitlines() if line.startswith("| T1")]
    assert table_rows and all(line.replace("\\|", "").count("|") == len(COLUMNS) + 1 for line in table_rows)


def test_config_parses_with_tyro(tmp_path):
    tyro = pytest.importorskip("tyro")
    cfg = tyro.cli(TheoremsConfig, args=["--out", str(tmp_path), "--seed", "3", "--quick"])
    assert cfg.quick and cfg.seed == 3 and cfg.out == tmp_path


def test_cli_smoke(tmp_path, capsys):
    cli = pytest.importorskip("toybench.cli")
    assert cli.main(["theorems", "--quick", "--no-figures", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "theorems.csv").exists()
    assert "rows PASS" in capsys.readouterr().out
