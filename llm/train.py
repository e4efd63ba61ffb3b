"""Pieces shared by the SFT and GRPO loops: the run's start (``setup_run``: seed, device, process
group, saved config, model, tokenizer, data), batch order, optimizer + cosine schedule, the global
reduction, the optimizer step with the non-finite guard, and the metrics log.

Global reduction: a step may be split over micro-batches (gradient accumulation) and ranks. Each
piece calls ``toybench.objectives.normalise`` (the one normaliser of every scale) with counts over
the WHOLE global batch (:class:`Normaliser`; ``llm.sft`` and ``llm.grpo`` pick theirs), and the
gradients are summed, so 1 x 4 == 4 x 1 == 2 ranks x 2 (up to float rounding):
  token_mean -> reduce(., "constant", constant = global counted tokens)
  seq_mean   -> reduce(., "seq_mean") * local non-empty sequences / global non-empty sequences
  constant   -> reduce(., "constant", constant = global sequences * T) with T = the global padded
                length, or max_completion_length for GRPO's dr_grpo (TRL's normaliser)
  sum        -> reduce(., "sum")
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llm import dist
from llm.checkpoint import prepare_out, resume_checkpoint, save_checkpoint
from llm.config import save_config
from llm.data import load_data
from llm.loading import Precision, load_model, load_tokenizer, precision, resolve_device
from llm.log import RunLogger
from llm.tiny import model_path

REDUCTIONS = ("token_mean", "seq_mean", "constant", "sum")


class NonFiniteLossError(RuntimeError):
    """Raised when a step's loss or gradient norm is NaN/inf; the last good checkpoint is kept."""


def seed_everything(seed: int) -> None:
    """The one seeding block: Python, NumPy, torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- libraries may use the legacy global RNG
    torch.manual_seed(seed)


def make_optimizer(
    model: torch.nn.Module, lr: float, steps: int, warmup: int, min_lr_ratio: float, wd: float = 0.0
):
    """AdamW and transformers' linear-warm-up + cosine-decay schedule (to ``lr * min_lr_ratio`` at ``steps``).

    Shifted by one step: transformers' warm-up starts at lr 0 (its first update is lost); here step ``s``
    takes its factor at ``s + 1`` of a schedule one step longer, so warm-up runs ``lr / (warmup + 1)``,
    ..., ``lr`` and the cosine reaches its floor at ``steps`` (tested against the closed form).
    """
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=(0.9, 0.95))
    hf = get_cosine_with_min_lr_schedule_with_warmup(opt, warmup + 1, steps + 1, min_lr_rate=min_lr_ratio)
    factor = hf.lr_lambdas[0]
    for group in opt.param_groups:  # undo the step-0 lr that building ``hf`` set
        group["lr"] = group["initial_lr"]
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: factor(s + 1))


@dataclass(frozen=True)
class Normaliser:
    """Global counts of one optimizer step (all micro-batches, all ranks)."""

    tokens: float
    seqs: float
    t_max: float
    rows: float = 0.0
    """All sequences, empty ones included (TRL's GRPO ``grpo``/``dr_grpo`` normalisers count them)."""

    @staticmethod
    def of(masks: list[torch.Tensor]) -> Normaliser:
        """Counts over this rank's micro-batch masks, summed (max for T) over ranks."""
        x = torch.tensor(
            [
                sum(float(m.sum()) for m in masks),
                sum(float((m.sum(1) > 0).sum()) for m in masks),
                float(sum(m.shape[0] for m in masks)),
            ],
            dtype=torch.float64,
        )
        t = torch.tensor([max(m.shape[1] for m in masks)], dtype=torch.float64)
        if masks[0].device.type == "cuda":
            x, t = x.cuda(masks[0].device), t.cuda(masks[0].device)
        dist.all_reduce_sum(x)
        dist.all_reduce_max(t)
        return Normaliser(float(x[0]), float(x[1]), float(t[0]), float(x[2]))


def optimizer_step(
    model, opt, sched, loss_sum: torch.Tensor, clip: float, step: int, last_ckpt: str
) -> float:
    """Sum grads over ranks, clip, check finiteness (one sync per step), step; returns the grad norm."""
    params = [p for p in model.parameters() if p.requires_grad]
    dist.sum_gradients(params)
    gnorm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
    loss_val, gnorm_val = float(loss_sum), float(gnorm)
    if not (math.isfinite(loss_val) and math.isfinite(gnorm_val)):
        opt.zero_grad(set_to_none=True)
        raise NonFiniteLossError(
            f"non-finite loss ({loss_val}) or gradient norm ({gnorm_val}) at step {step}; the run stopped "
            f"without updating. Last good checkpoint: {last_ckpt or 'none yet'} (resume with --resume)."
        )
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return gnorm_val


def truncate_log(path: str | Path, step: int) -> None:
    """On resume: drop records after ``step`` (they will be re-done)."""
    path = Path(path)
    if path.is_file():
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", -1) <= step]
        path.write_text("".join(ln + "\n" for ln in keep))


class StepLoop:
    """The loop scaffolding SFT and GRPO share: ``--resume`` from the newest intact checkpoint (the
    metrics log cut back to it), the loggers, the progress bar, step checkpoints (rank 0 writes,
    every rank waits), ``--stop-after`` and the final HF model in ``<out>/final``.

    ``extra``: models checkpointed beside the policy (CurioSFT's teacher)."""

    def __init__(self, cfg, di: dist.DistInfo, out: Path, model, opt, sched, tok, extra=None) -> None:
        self.cfg, self.di, self.out, self.tok = cfg, di, out, tok
        self.model, self.opt, self.sched = model, opt, sched
        self.extra, self.root, self.start, self.last_ckpt = extra or {}, out / "checkpoint", 0, ""
        if cfg.resume and (ck := resume_checkpoint(self.root, model, opt, sched, self.extra)) is not None:
            self.start, self.last_ckpt = ck.state["step"], str(ck.path)
            truncate_log(out / "metrics.jsonl", self.start)
        self.log = RunLogger(out, cfg.report_to, enabled=di.main, append=self.start > 0)

    def steps(self, desc: str):
        """The remaining steps, with a progress bar on rank 0."""
        from tqdm import tqdm

        n, main = self.cfg.steps, self.di.main
        self.bar = tqdm(range(self.start, n), desc=desc, disable=not main, initial=self.start, total=n)
        return self.bar

    def end_step(self, step: int, record: dict, data_pos: int, show: str) -> bool:
        """After step ``step`` (0-based): log ``record`` (``record[show]`` on the bar), checkpoint
        when due (``data_pos``: examples consumed); True when ``--stop-after`` stops here."""
        cfg = self.cfg
        self.log.write(record)
        self.bar.set_postfix({show.split("/")[-1]: f"{record[show]:.3f}"})
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
            if self.di.main:
                path = save_checkpoint(
                    self.root,
                    step + 1,
                    self.model,
                    self.opt,
                    self.sched,
                    {"data_pos": data_pos},
                    self.extra,
                    keep=cfg.save_total_limit,
                    tokenizer=self.tok,
                )
                self.last_ckpt = str(path)
            dist.barrier()
        if cfg.stop_after >= 0 and step + 1 >= cfg.stop_after:
            self.log.close()
            return True
        return False

    def finish(self) -> None:
        """Close the loggers and write ``<out>/final`` (rank 0; every rank waits)."""
        self.log.close()
        if self.di.main:
            self.model.save_pretrained(self.out / "final", safe_serialization=True)
            self.tok.save_pretrained(self.out / "final")
        dist.barrier()


def batch_indices(n: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Example indices of global batch ``step``: consecutive slices of per-epoch seeded permutations."""
    out, pos = [], step * batch_size
    while len(out) < batch_size:
        epoch, off = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
        take = perm[off : off + batch_size - len(out)]
        out += take
        pos += len(take)
    return out


def use_checkpointing(setting: str, device: torch.device) -> bool:
    """``gradient_checkpointing``: auto = on on GPU (memory is the limit there), off on CPU."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def prepare_model(model, prec: Precision, checkpointing: bool):
    """Weights in ``prec.param_dtype`` (fp32 master copy unless bf16-pure); HF layer checkpointing."""
    model = model.to(prec.param_dtype)
    if checkpointing:
        model.config.use_cache = False
        enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.2x name
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def setup_run(cfg, model=None, tok=None):
    """The shared start of every loop: seed, device, process group, saved config, model, tokenizer, data.

    Returns ``(device, dist_info, out_dir, tokenizer, model, data, precision)``.
    """
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    di = dist.init_distributed(device)
    out = Path(cfg.out)
    if di.main:
        prepare_out(cfg)  # --overwrite: the earlier run's files go first
        save_config(cfg, out)
    prec = precision(cfg.dtype, device)
    path = model_path(cfg.model, cfg.tiny, cfg.cache_dir, cfg.tiny_pretrain_steps)
    tok = tok or load_tokenizer(path, cfg.trust_remote_code)
    model = model or load_model(path, device, prec.param_dtype, trust_remote_code=cfg.trust_remote_code)
    model = prepare_model(model, prec, use_checkpointing(cfg.gradient_checkpointing, device))
    return device, di, out, tok, model, load_data(cfg), prec


__all__ = [
    "batch_indices",
    "setup_run",
    "REDUCTIONS",
    "StepLoop",
    "NonFiniteLossError",
    "Normaliser",
    "make_optimizer",
    "optimizer_step",
    "prepare_model",
    "use_checkpointing",
    "seed_everything",
    "truncate_log",
]
