"""Logging sinks of the training loops: ``metrics.jsonl`` always, TensorBoard / wandb on request,
sample completions every N steps, and the results printed once (rank 0) as a table.

Metric names are TRL's where TRL has one (``reward``, ``reward_std``, ``frac_reward_zero_std``,
``kl``, ``entropy``, ``clip_ratio/*``, ``completions/mean_length``, ``learning_rate``, ``loss``,
``grad_norm``), prefixed by the stage in the JSONL (``grpo/reward``) as the loops write them.
Throughput (NeMo-RL's convention, :class:`StepTimer`): every step logs ``perf/step_time`` (seconds,
the whole step), ``perf/tokens_per_s`` (the tokens the step processed on rank 0, which logs, / step
time) and, per phase (``generation``, ``logprob``, ``train``), ``perf/<phase>_time`` and
``perf/<phase>_tokens_per_s``; ``perf/peak_memory_gib`` (peak allocated CUDA memory in the step) on
a GPU, and ``perf/mfu`` when a peak FLOP/s is known (:data:`PEAK_TFLOPS`, bf16 dense, by device
name) or given (``--peak-tflops``). MFU counts 6 N FLOPs per trained token and 2 N per generated or
scored token (N = parameters; attention's quadratic term and activation recomputation are left out,
as in the usual MFU).
TensorBoard goes through ``torch.utils.tensorboard`` (needs the ``tensorboard`` package, in the
``llm`` extra); wandb is used only if installed and runs offline unless ``WANDB_MODE`` says otherwise.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import torch

#: Peak dense bf16 tensor-core TFLOP/s by a substring of ``torch.cuda.get_device_name()`` (vendor
#: data sheets; SXM parts). Unknown devices log no MFU unless ``--peak-tflops`` is given.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}
PHASES = ("generation", "logprob", "train")
#: FLOPs per token and parameter of each phase (forward 2, forward + backward 6)
_FLOPS_PER_PARAM = {"generation": 2, "logprob": 2, "train": 6}


def peak_flops(device: torch.device, given_tflops: float = 0.0) -> float:
    """Peak FLOP/s for MFU: ``given_tflops`` when > 0, else the table entry of the CUDA device, else 0."""
    if given_tflops > 0:
        return given_tflops * 1e12
    if device.type != "cuda":
        return 0.0
    name = torch.cuda.get_device_name(device)
    return next((v * 1e12 for k, v in PEAK_TFLOPS.items() if k in name), 0.0)


class StepTimer:
    """Wall time and tokens of one training step, split into phases (see the module docstring).

    ``start()`` at the top of a step, ``with timer.phase(name, tokens):`` (or ``begin``/``end``)
    around each phase (CUDA is synchronised at the edges so the times are real), ``record()`` for
    the ``perf/*`` metrics."""

    def __init__(self, device: torch.device, n_params: int, peak: float = 0.0) -> None:
        self.device, self.n_params, self.peak = torch.device(device), n_params, peak
        self.start()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self.t0 = time.perf_counter()
        self.time = dict.fromkeys(PHASES, 0.0)
        self.tokens = dict.fromkeys(PHASES, 0)
        self._open: dict[str, float] = {}
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def begin(self, name: str, tokens: int = 0) -> None:
        """Phase ``name`` (one of :data:`PHASES`) starts here, processing ``tokens`` tokens."""
        self._sync()
        self._open[name] = time.perf_counter()
        self.tokens[name] += int(tokens)

    def end(self, name: str) -> None:
        """Phase ``name`` ends here (its time adds up over the step)."""
        self._sync()
        self.time[name] += time.perf_counter() - self._open.pop(name)

    @contextlib.contextmanager
    def phase(self, name: str, tokens: int = 0):
        """Time the block as phase ``name`` (:meth:`begin` ... :meth:`end`)."""
        self.begin(name, tokens)
        try:
            yield
        finally:
            self.end(name)

    def record(self) -> dict:
        """The ``perf/*`` metrics of the step so far."""
        self._sync()
        total = max(time.perf_counter() - self.t0, 1e-9)
        out = {"perf/step_time": total, "perf/tokens_per_s": sum(self.tokens.values()) / total}
        for p in PHASES:
            if self.tokens[p] > 0 and self.time[p] > 0:  # phases that ran
                out[f"perf/{p}_time"] = self.time[p]
                out[f"perf/{p}_tokens_per_s"] = self.tokens[p] / self.time[p]
        if self.device.type == "cuda":
            out["perf/peak_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        if self.peak > 0:
            flops = sum(_FLOPS_PER_PARAM[p] * self.n_params * self.tokens[p] for p in PHASES)
            out["perf/mfu"] = flops / total / self.peak
        return out


class _NoTimer:
    """A :class:`StepTimer` that times nothing (code run without a step loop: tests, benchmarks)."""

    def begin(self, name: str, tokens: int = 0) -> None:
        pass

    def end(self, name: str) -> None:
        pass


NO_TIMER = _NoTimer()


class RunLogger:
    """Append-only JSONL of metrics plus the chosen sinks; only the main rank writes.

    ``report_to``: ``none`` | ``tensorboard`` | ``wandb`` (comma-separated). ``append``: keep the
    existing ``metrics.jsonl`` (resume), else start it empty.
    """

    def __init__(
        self,
        out: str | Path,
        report_to: str = "none",
        enabled: bool = True,
        append: bool = False,
        config: dict | None = None,
    ) -> None:
        self.out, self.enabled = Path(out), enabled
        self.path = self.out / "metrics.jsonl"
        self.samples = self.out / "completions.jsonl"
        self.tb = self.wandb = None
        if not enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if not append:
            self.path.write_text("")
            self.samples.unlink(missing_ok=True)
        sinks = {s for s in report_to.split(",") if s and s != "none"}
        if "tensorboard" in sinks:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise RuntimeError(
                    "--report-to tensorboard needs the tensorboard package (pip install tensorboard)"
                ) from e
            self.tb = SummaryWriter(str(self.out / "tensorboard"))
        if "wandb" in sinks:
            try:
                import wandb
            except ImportError:
                print("[log] --report-to wandb: wandb is not installed; logging to metrics.jsonl only")
            else:
                os.environ.setdefault("WANDB_MODE", "offline")
                self.wandb = wandb.init(dir=str(self.out), config=config or {}, reinit=True)

    def write(self, record: dict) -> None:
        """One step's metrics (``record["step"]`` is the x axis)."""
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        step = int(record.get("step", 0))
        scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, int | float)}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def completions(
        self, step: int, prompts: list[str], completions: list[str], rewards: list[float]
    ) -> None:
        """Sample completions of ``step`` to ``completions.jsonl`` (and TensorBoard text / a wandb table)."""
        if not self.enabled:
            return
        rows = [
            {"step": step, "prompt": p, "completion": c, "reward": r}
            for p, c, r in zip(prompts, completions, rewards)
        ]
        with self.samples.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        if self.tb is not None:
            md = "\n\n".join(
                f"**prompt** `{r['prompt']!r}`  \n**completion** `{r['completion']!r}`  \n"
                f"reward {r['reward']}"
                for r in rows
            )
            self.tb.add_text("completions", md, step)
        if self.wandb is not None:
            import wandb

            self.wandb.log(
                {"completions": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])},
                step=step,
            )

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def due(step: int, every: int) -> bool:
    """Whether step ``step`` (1-based) is one of every ``every`` (0 = never)."""
    return every > 0 and step % every == 0


def results_table(results: dict, title: str = "") -> str:
    """A ``metric | value`` table of a results dict (the CLI prints it once, on rank 0)."""
    rows = [(k, _fmt(v)) for k, v in results.items()]
    w = max([len("metric"), *(len(k) for k, _ in rows)])
    v = max([len("value"), *(len(x) for _, x in rows)])
    lines = [title] if title else []
    lines += [f"{'metric':<{w}}  {'value':>{v}}", f"{'-' * w}  {'-' * v}"]
    lines += [f"{k:<{w}}  {x:>{v}}" for k, x in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, int):
        return str(v)
    return f"{v:.4g}" if math.isfinite(v) and v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5) else f"{v:.4f}"


__all__ = [
    "NO_TIMER",
    "PEAK_TFLOPS",
    "PHASES",
    "RunLogger",
    "StepTimer",
    "due",
    "peak_flops",
    "results_table",
]
