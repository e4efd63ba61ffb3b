"""The toybench CLI: usage, unknown commands, and bad input as one clear line (exit 2), not a traceback."""

from toybench.cli import main


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
