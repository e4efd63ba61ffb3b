"""Logging sinks of the training loops: ``metrics.jsonl`` always, TensorBoard / wandb on request,
sample completions every N steps, and the results printed once (rank 0) as a table.

Metric names are TRL's where TRL has one (``reward``, ``reward_std``, ``frac_reward_zero_std``,
``kl``, ``entropy``, ``clip_ratio/*``, ``completions/mean_length``, ``learning_rate``, ``loss``,
``grad_norm``), prefixed by the stage in the JSONL (``grpo/reward``) as the loops write them.
TensorBoard goes through ``torch.utils.tensorboard`` (needs the ``tensorboard`` package, in the
``llm`` extra); wandb is used only if installed and runs offline unless ``WANDB_MODE`` says otherwise.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


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


__all__ = ["RunLogger", "due", "results_table"]
