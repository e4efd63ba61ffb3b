"""`toybench` command line: one subcommand per part, each parsed from a typed config dataclass.

    toybench report   --out DIR [--quick] [--scale toy|transformer]   the main job
    toybench theorems --out DIR [--quick]                             verify T1-T5 three ways
    toybench compare  --out DIR [--quick]                             the method comparison only
    toybench plot     DIR                                             re-plot a finished run

Subcommand modules are imported lazily so that `toybench --help` is instant and a broken
optional part cannot take the others down. Each config is parsed by tyro, so
`toybench <cmd> --help` lists every field with its docstring.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import tyro

from toybench.config import deferred_validation, given_flags, reuse_freed_memory

SUBCOMMANDS = {
    # name: (module, config class, runner, one-line help)
    "report": (
        "toybench.report",
        "ReportConfig",
        "run_report",
        "theorems + every SFT method as an RL initialiser, on the bandit and token MDP -> report.md",
    ),
    "theorems": (
        "toybench.theorems",
        "TheoremsConfig",
        "run_theorems",
        "verify the SFT/RL non-decoupling theorems (closed form, symbolic, simulation)",
    ),
    "compare": (
        "toybench.report",
        "ReportConfig",
        "run_report",
        "the method comparison only (report without the theorems section)",
    ),
    "plot": (
        "toybench.report",
        None,
        "replot",
        "rebuild figures and report.md of a finished run from results.csv",
    ),
}


@dataclasses.dataclass
class PlotConfig:
    """Re-plot a finished `toybench report` run without re-running it."""

    out_dir: Annotated[Path, tyro.conf.Positional]
    """Directory holding results.csv (the --out of a previous report)."""


def _usage() -> str:
    lines = ["usage: toybench <command> [--help] [options]", "", "commands:"]
    lines += [f"  {name:<9} {spec[3]}" for name, spec in SUBCOMMANDS.items()]
    lines += ["", "Run `toybench <command> --help` for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    os.environ.setdefault("MPLBACKEND", "Agg")  # files only; notebooks keep their inline backend
    reuse_freed_memory()  # the vectorised runs' large per-step tensors: no page faults per step
    if cmd not in SUBCOMMANDS:
        print(f"toybench: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, cfg_name, runner_name, _ = SUBCOMMANDS[cmd]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:  # a part that is not installed or not built yet
        print(f"toybench {cmd}: cannot import {module_name}: {err}", file=sys.stderr)
        return 1
    prog = f"toybench {cmd}"
    try:
        arg = parse(cmd, rest, module)  # validated: bad input is one line before anything runs
        getattr(module, runner_name)(arg)
    except ValueError as err:  # bad configuration or input: one clear line, not a traceback
        message = str(err) if cmd == "plot" else as_flag(str(err), getattr(module, cfg_name))
        print(f"{prog}: {message}", file=sys.stderr)
        return 2
    return 0


def parse(cmd: str, argv: list[str], module=None):
    """The resolved config of ``toybench <cmd> <argv>`` (for ``plot``: the run directory). ``--quick``
    fills only the flags absent from ``argv``; a bad value raises ValueError naming its field."""
    module_name, cfg_name, _, help_line = SUBCOMMANDS[cmd]
    module = module or importlib.import_module(module_name)
    prog = f"toybench {cmd}"
    if cmd == "plot":
        return tyro.cli(PlotConfig, args=argv, prog=prog, description=help_line).out_dir
    cfg_cls = getattr(module, cfg_name)
    default = cfg_cls(skip_theorems=True) if cmd == "compare" else None
    with deferred_validation():  # nested configs are validated by resolve: one line naming the flag
        cfg = tyro.cli(cfg_cls, args=argv, prog=prog, description=help_line, default=default)
    given = given_flags(argv)
    return cfg.resolved(given) if cmd == "theorems" else module.resolve(cfg, given)


def as_flag(message: str, cfg_cls: type) -> str:
    """Name the flag the user typed: a message starting with a config field path (``pipeline.sft_lr``)
    starts with its flag instead (``--pipeline.sft-lr``); other messages are returned unchanged.

    >>> from toybench.report import ReportConfig
    >>> as_flag("pipeline.sft_lr must be > 0, got -1.0", ReportConfig)
    '--pipeline.sft-lr must be > 0, got -1.0'
    """
    match = re.match(r"[A-Za-z_][\w.]*", message)
    if match is None or not _is_field_path(cfg_cls, match.group().split(".")):
        return message
    return "--" + match.group().replace("_", "-") + message[match.end() :]


def _is_field_path(cls, parts: list[str]) -> bool:
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            return False
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            return False
        if i + 1 < len(parts):  # a nested config: the class its default factory builds
            factory = fields[part].default_factory
            cls = None if factory is dataclasses.MISSING else type(factory())
    return True


if __name__ == "__main__":
    sys.exit(main())
