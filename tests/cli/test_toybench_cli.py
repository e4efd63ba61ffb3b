"""The toybench CLI: usage, unknown commands, and bad input as one clear line (exit 2), not a traceback."""

import os
import subprocess
import sys

import pytest

from toybench.cli import as_flag, main


def test_usage_and_unknown_command(capsys):
    assert main([]) == 0
    assert "toybench <command>" in capsys.readouterr().out
    assert main(["bogus"]) == 2
    assert "unknown command 'bogus'" in capsys.readouterr().err


def test_plot_of_missing_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("toybench plot: out_dir") and "results.csv" in err


def test_bad_report_config_is_a_clear_error(tmp_path, capsys):
    assert main(["report", "--quick", "--seeds", "1", "--out", str(tmp_path)]) == 2
    assert "seeds must be >= 2" in capsys.readouterr().err


# Every bad input is refused up front: one line naming the flag the user typed, exit 2, nothing computed.
BAD_REPORT = [
    (["--bandit-V", "0"], "--bandit-V must be >= 2"),
    (["--bandit-correct", "40"], "--bandit-correct must be < bandit_V"),
    (["--base-correct-masses", "1.5"], "--base-correct-masses must be"),
    (["--wrong-demo-fracs", "nan"], "--wrong-demo-fracs must be"),
    (["--pipeline.coverage-threshold", "1.5"], "--pipeline.coverage-threshold must be in [0, 1)"),
    (["--pipeline.sft-lr", "nan"], "--pipeline.sft-lr must be > 0"),
    (["--gift-betas", "-1"], "--gift-betas must be non-empty values > 0"),
    (["--entropy-coefs", "-0.5"], "--entropy-coefs must be non-empty values >= 0"),
    (["--theorems.flow-dt", "-1"], "--theorems.flow-dt must be > 0"),
    (["--theorems.t5-tree-boost", "3", "1"], "--theorems.t5-tree-boost must be (low, high)"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--tree-V", "9", "--tree-H", "9"], "--tree-H: tree_V**tree_H"),
    (["--pear-levels", "bogus"], "--pear-levels: unknown level 'bogus'"),
    (["--tiny.n-head", "3"], "--tiny.n-embd must be a multiple of n_head = 3"),
    (["--tiny.epsilon", "inf"], "--tiny.epsilon must be finite"),
    (["--tiny.seeds", "0"], "--tiny.seeds must be > 0"),
    (["--tiny.track-samples", "100"], "--tiny.track-samples must be <= eval_samples"),
    (["--tiny.max-completion-length", "1"], "--tiny.max-completion-length must be >= 5"),
    (["--tiny.n-numbers", "1"], "--tiny.n-numbers must be in [2, 5]"),
]


@pytest.fixture
def no_computation(monkeypatch):
    """Fail the test if the report or the theorems start computing."""
    import toybench.report as report
    import toybench.theorems.run as theorems_run

    def boom(*a, **k):
        raise AssertionError("computation started before the config was validated")

    monkeypatch.setattr(report, "run_map", boom)
    monkeypatch.setattr(report, "run_theorems", boom)
    monkeypatch.setattr(theorems_run, "CHECKS", [("boom", boom)])


def _one_line_error(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"{prog}: "), err
    return err


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.parametrize("args,expected", BAD_REPORT)
def test_bad_report_flag_is_refused_up_front(tmp_path, capsys, no_computation, args, expected, quick):
    out = tmp_path / "r"
    argv = ["report", "--out", str(out), *args] + (["--quick"] if quick else [])
    assert main(argv) == 2
    assert expected in _one_line_error(capsys, "toybench report")
    assert not out.exists()


@pytest.mark.parametrize("cmd", ["report", "theorems"])
def test_out_that_is_a_file_or_under_a_file_is_refused_up_front(tmp_path, capsys, no_computation, cmd):
    f = tmp_path / "file"
    f.write_text("x")
    assert main([cmd, "--quick", "--out", str(f)]) == 2
    err = _one_line_error(capsys, f"toybench {cmd}")
    assert "--out" in err and "is a file, not a directory" in err
    assert main([cmd, "--quick", "--out", str(f / "sub")]) == 2
    assert "not a writable directory" in _one_line_error(capsys, f"toybench {cmd}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to a read-only directory")
def test_read_only_out_is_refused_up_front(tmp_path, capsys, no_computation):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["report", "--quick", "--out", str(ro / "x")]) == 2
        assert "not a writable directory" in _one_line_error(capsys, "toybench report")
    finally:
        ro.chmod(0o755)


def test_bad_theorems_flag_names_it(tmp_path, capsys, no_computation):
    assert main(["theorems", "--seed", "-1", "--out", str(tmp_path / "t")]) == 2
    assert "--seed must be >= 0, got -1" in _one_line_error(capsys, "toybench theorems")
    assert main(["theorems", "--flow-dt", "nan", "--out", str(tmp_path / "t")]) == 2
    assert "--flow-dt must be > 0, got nan" in _one_line_error(capsys, "toybench theorems")
    assert not (tmp_path / "t").exists()


def test_quick_fills_only_what_the_user_did_not_set():
    from toybench.report.config import QUICK, ReportConfig, resolve
    from toybench.theorems import TheoremsConfig
    from toybench.tiny.config import TinyConfig

    cfg = resolve(ReportConfig(quick=True, seeds=7, lr_grid=(0.1, 0.2, 0.3, 0.4), knob_lrs=(0.1, 0.2)))
    assert cfg.seeds == 7 and cfg.lr_grid == (0.1, 0.2, 0.3, 0.4) and cfg.knob_lrs == (0.1, 0.2)
    assert cfg.val_seeds == QUICK["val_seeds"] and cfg.rl_budgets == QUICK["rl_budgets"]  # the rest is quick
    cfg = resolve(ReportConfig(quick=True, tiny=TinyConfig(sft_steps=33, seeds=3)))
    assert cfg.tiny.sft_steps == 33 and cfg.tiny.seeds == 3 and cfg.tiny.rl_steps < TinyConfig().rl_steps
    assert TheoremsConfig(quick=True, sft_steps=77).resolved().sft_steps == 77
    assert TheoremsConfig(quick=True).resolved().sft_steps < TheoremsConfig().sft_steps


def test_quick_never_overrides_a_typed_flag_even_at_its_default(tmp_path, monkeypatch):
    """--quick fills only the flags absent from the command line; typing a default value keeps it."""
    import json

    import toybench.report as report
    from toybench.cli import parse
    from toybench.report.config import QUICK, ReportConfig

    default = ReportConfig()
    cfg = parse("report", ["--quick", "--rl-budgets", "20", "80", "--seeds", str(default.seeds)])
    assert cfg.rl_budgets == (20, 80) and cfg.pipeline.rl_steps == 80 and cfg.seeds == default.seeds
    assert cfg.val_seeds == QUICK["val_seeds"] and "val_seeds" in cfg.quick_filled
    assert "rl_budgets" not in cfg.quick_filled and "seeds" not in cfg.quick_filled
    nested = ["--quick", "--pipeline.sft-steps", "100", "--tiny.seeds", "5", "--theorems.sft-steps", "2000"]
    cfg = parse("report", nested)
    assert cfg.pipeline.sft_steps == 100 and cfg.tiny.seeds == 5 and cfg.theorems.sft_steps == 2000
    assert cfg.tiny.rl_steps == QUICK["tiny"]["rl_steps"] and "tiny.rl_steps" in cfg.quick_filled
    assert cfg.theorems.tree_instances < default.theorems.tree_instances  # quick reaches the theorems
    th = parse("theorems", ["--quick", "--bandit-instances", str(default.theorems.bandit_instances)])
    assert th.bandit_instances == default.theorems.bandit_instances
    assert th.tree_instances < default.theorems.tree_instances
    # the same through the command: config.json records the typed budgets (the run itself is stubbed)
    monkeypatch.setattr(report, "run_map", lambda cfg: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        main(["report", "--quick", "--skip-theorems", "--rl-budgets", "20", "80", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "config.json").read_text())["rl_budgets"] == [20, 80]


def test_plot_names_the_file_it_cannot_read(tmp_path, capsys):
    (tmp_path / "results.csv").write_text('a,b\n1,"x\n')
    (tmp_path / "config.json").write_text("{}")
    assert main(["plot", str(tmp_path)]) == 2
    assert f"cannot read {tmp_path / 'results.csv'}" in _one_line_error(capsys, "toybench plot")


def test_as_flag_only_rewrites_field_paths():
    from toybench.report import ReportConfig

    assert as_flag("tiny.sft_lr must be > 0", ReportConfig) == "--tiny.sft-lr must be > 0"
    assert as_flag("num_correct must be in [1, V-1]", ReportConfig) == "num_correct must be in [1, V-1]"
    assert as_flag("pipeline.bogus must be", ReportConfig) == "pipeline.bogus must be"


@pytest.mark.skipif(sys.platform != "linux", reason="mallopt and mallinfo2 are glibc's")
def test_reuse_freed_memory_keeps_freed_large_blocks_in_the_heap():
    """After ``reuse_freed_memory``, 10 MB tensors come from the heap and stay there once freed.

    Read with glibc's ``mallinfo2`` in a fresh process: ``hblkhd`` is the memory in mmap'd blocks
    (returned to the system on free), ``fordblks`` the free bytes the heap keeps for reuse.
    """
    code = (
        "import ctypes, ctypes.util, torch\n"
        "from toybench.config import reuse_freed_memory\n"
        "names = 'arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost'.split()\n"
        "class MI(ctypes.Structure):\n"
        "    _fields_ = [(n, ctypes.c_size_t) for n in names]\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
        "libc.mallinfo2.restype = MI\n"
        "ok = reuse_freed_memory()\n"
        "xs = [torch.ones(2_500_000) for _ in range(8)]\n"  # 8 x 10 MB alive, as in a vectorised step
        "mapped = libc.mallinfo2().hblkhd\n"
        "del xs\n"
        "print(ok, mapped >> 20, libc.mallinfo2().fordblks >> 20)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    ok, mapped_mb, kept_mb = out.stdout.split()
    assert ok == "True"
    assert int(mapped_mb) < 20  # not mmap'd (glibc's default mmaps every block of 128 KiB and more)
    assert int(kept_mb) >= 70  # the 80 MB freed stay in the heap for the next step
