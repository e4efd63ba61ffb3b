"""Command line: ``python -m llm sft|grpo|eval|pipeline`` (console script ``sftrl-llm``).

Each subcommand is one flat config dataclass of :mod:`llm.config`, parsed by tyro; ``--help`` lists
every field with its docstring.
"""

from __future__ import annotations

import os
import sys

import torch
import tyro

from llm.config import EvalConfig, GRPOConfig, PipelineConfig, SFTConfig, resolve
from llm.train import NonFiniteLossError


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit code."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files
    cfg = tyro.extras.subcommand_cli_from_dict(
        {"sft": SFTConfig, "grpo": GRPOConfig, "eval": EvalConfig, "pipeline": PipelineConfig},
        args=sys.argv[1:] if argv is None else argv,
        prog="python -m llm",
    )
    try:
        resolve(cfg)  # bad input (a method spec, a knob) is one line and exit 2, not a traceback
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg.device in ("auto", "cpu") and not torch.cuda.is_available():
        torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        if isinstance(cfg, SFTConfig):
            from llm.sft import run_sft

            print(run_sft(cfg))
        elif isinstance(cfg, GRPOConfig):
            from llm.grpo import run_grpo

            print(run_grpo(cfg))
        elif isinstance(cfg, EvalConfig):
            from llm.evaluate import run_eval

            print(run_eval(cfg))
        else:
            from llm.pipeline import comparison_table, run_pipeline

            print(comparison_table(run_pipeline(cfg)))
            print(f"wrote {cfg.out}/report.md, results.csv and figures")
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        from llm import dist

        dist.shutdown()
    return 0


__all__ = ["main"]
