"""Command line: ``python -m llm sft|grpo|eval|pipeline`` (console script ``sftrl-llm``).

Each subcommand is one flat config dataclass of :mod:`llm.config`, parsed by tyro; ``--help`` lists
every field with its docstring. Every argument is validated (:func:`llm.config.resolve`) before any
model or data is loaded: bad input is one line naming the flag and exit 2; then the data files are
read in full and the reward functions probed (:mod:`llm.validate`), a problem being one line naming
the file:line or the function, and exit 2, still before the model loads. ``--quick`` fills only the
flags not given on the command line (:func:`toybench.config.given_flags`, as in ``toybench``); the
resolved config runs as it is (the runners do not resolve it again). Ctrl-C stops cleanly (exit 130)
keeping the last checkpoint, and says how to resume. Results are printed once (rank 0) as a table.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import tyro

from llm.checkpoint import CheckpointError
from llm.config import EvalConfig, GRPOConfig, PipelineConfig, SFTConfig, resolve
from llm.rewards import RewardError
from llm.train import NonFiniteLossError
from toybench.config import given_flags  # the rule of both CLIs: --quick never overrides these


def _last_checkpoint(out: str) -> str:
    """The newest ``checkpoint/step-*`` under ``out`` (any stage of a pipeline), or ``""``."""
    cands = [
        p for p in Path(out).rglob("checkpoint/step-*") if p.is_dir() and (p / "manifest.json").is_file()
    ]
    return str(max(cands, key=lambda p: (p / "manifest.json").stat().st_mtime)) if cands else ""


def _main_rank() -> bool:
    return int(os.environ.get("RANK", 0)) == 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit code."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files
    args = sys.argv[1:] if argv is None else argv
    cfg = tyro.extras.subcommand_cli_from_dict(
        {"sft": SFTConfig, "grpo": GRPOConfig, "eval": EvalConfig, "pipeline": PipelineConfig},
        args=args,
        prog="python -m llm",
    )
    try:
        cfg = resolve(cfg, given_flags(args))  # one line and exit 2, before anything is loaded
        from llm.validate import validate_run

        validate_run(cfg)  # the data read in full, reward functions probed: still before any model
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg.device in ("auto", "cpu") and not torch.cuda.is_available():
        torch.set_num_threads(max(1, torch.get_num_threads()))
    from llm import dist
    from llm.log import results_table

    try:
        if isinstance(cfg, SFTConfig):
            from llm.sft import run_sft

            res, title = run_sft(cfg), f"sft[{cfg.method}] -> {cfg.out}/final"
        elif isinstance(cfg, GRPOConfig):
            from llm.grpo import run_grpo

            res, title = run_grpo(cfg), f"grpo -> {cfg.out}/final"
        elif isinstance(cfg, EvalConfig):
            from llm.evaluate import run_eval

            res, title = run_eval(cfg), f"eval of {cfg.model}"
        else:
            from llm.pipeline import comparison_table, run_pipeline

            res, title = None, ""
            table = comparison_table(run_pipeline(cfg))
            if _main_rank():
                print(table)
                print(f"wrote {cfg.out}/report.md, results.csv and figures")
        if res is not None and _main_rank():
            print(results_table(res, title))
    except (NonFiniteLossError, CheckpointError, RewardError) as e:  # RewardError: a reward failed mid-run
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        ck = _last_checkpoint(cfg.out)
        kept = f"last checkpoint kept: {ck}" if ck else "no checkpoint was written yet"
        print(f"\ninterrupted; {kept} (resume with --resume)", file=sys.stderr)
        return 130
    finally:
        dist.shutdown()
    return 0


__all__ = ["given_flags", "main"]
