"""Pieces shared by the SFT and GRPO loops: the run's start (``setup_run``: seed, device, process
group, saved config, model, tokenizer, data, the training options), batch order, optimizer + cosine
schedule, the global reduction, the optimizer step with the non-finite guard, and the step loop
(:class:`StepLoop`: resume, logs with ``perf/*`` throughput, lean checkpoints, ``final/``).

Training options (each equal to the plain step in loss and gradient up to float rounding; tested):
``--gradient-checkpointing auto`` decides by :func:`training_bytes` of the largest micro-batch
(:func:`micro_tokens`) against the free GPU memory; ``--torch-compile`` compiles each decoder layer
for the training forward/backward only (:func:`compile_layers`); ``--use-liger-kernel`` patches in
Liger-Kernel's kernels (:mod:`llm.liger`: RMSNorm, SwiGLU, RoPE; fused linear cross-entropy for
the NLL methods; CUDA, the ``gpu`` extra; with ``--torch-compile`` the layers are compiled and Liger
gives the loss only). GRPO's ``micro_batch_size`` 0 (auto) is sized by :func:`auto_micro_batch` from
the free GPU memory; on CUDA AdamW is torch's fused kernel (:func:`make_optimizer`).

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
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llm import dist
from llm.checkpoint import (
    CheckpointError,
    check_free_space,
    export_final,
    is_lean,
    prepare_out,
    resume_checkpoint,
    save_checkpoint,
    save_weights,
    slim_checkpoint,
    weight_bytes,
    weights,
)
from llm.config import save_config
from llm.data import load_data
from llm.loading import Precision, load_model, load_tokenizer, precision, resolve_device, stored_dtype
from llm.log import RunLogger, StepTimer, peak_flops
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

    On CUDA AdamW is torch's fused kernel (``fused=True``: one launch for all parameters instead of
    the ``foreach`` path's dozens; the same update up to float rounding, the same state dict).

    Shifted by one step: transformers' warm-up starts at lr 0 (its first update is lost); here step ``s``
    takes its factor at ``s + 1`` of a schedule one step longer, so warm-up runs ``lr / (warmup + 1)``,
    ..., ``lr`` and the cosine reaches its floor at ``steps`` (tested against the closed form).
    """
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    fused = bool(params) and all(p.is_cuda for p in params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=(0.9, 0.95), fused=fused or None)
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
    metrics log cut back to it), the loggers, the progress bar, the step timer (``perf/*`` metrics,
    :class:`llm.log.StepTimer`), step checkpoints (rank 0 writes, every rank waits), ``--stop-after``
    and the final HF model in ``<out>/final``.

    Disk (lean outputs): checkpoints written before the last step hold what resuming needs (weights
    as trained, optimizer state, ``extra``). At the last step, without ``--save-optimizer``, the step
    checkpoint is lean (weights in the base model's dtype only), ``final/`` is hard-linked to it (one
    copy on disk) and the earlier checkpoints are slimmed the same way: a finished stage of the
    Qwen3-0.6B pipeline holds ~2 x 1.2 GB instead of ~9 GB. With ``--save-optimizer`` every
    checkpoint keeps the full training state and ``final/`` is a separate copy in the base dtype.

    ``extra``: models checkpointed beside the policy (CurioSFT's teacher)."""

    def __init__(self, cfg, di: dist.DistInfo, out: Path, model, opt, sched, tok, extra=None) -> None:
        self.cfg, self.di, self.out, self.tok = cfg, di, out, tok
        self.model, self.opt, self.sched = model, opt, sched
        self.extra, self.root, self.start, self.last_ckpt = extra or {}, out / "checkpoint", 0, ""
        self.final_written = False
        self.save_dtype = stored_dtype(
            model_path(cfg.model, cfg.tiny, cfg.cache_dir, cfg.tiny_pretrain_steps)
        )
        if cfg.resume and (ck := resume_checkpoint(self.root, model, opt, sched, self.extra)) is not None:
            self.start, self.last_ckpt = ck.state["step"], str(ck.path)
            if ck.state.get("lean") and self.start < cfg.steps:
                raise CheckpointError(
                    f"--resume: {ck.path} is the lean end of a finished run (no optimizer state) at step "
                    f"{self.start} < --steps {cfg.steps}: it cannot continue training exactly. Rerun with "
                    "--overwrite (and --save-optimizer to keep the training state at the end)."
                )
            truncate_log(out / "metrics.jsonl", self.start)
        self.log = RunLogger(out, cfg.report_to, enabled=di.main, append=self.start > 0)
        device = next(model.parameters()).device
        n_params = sum(v.numel() for v in weights(model).values())
        self.timer = StepTimer(device, n_params, peak_flops(device, getattr(cfg, "peak_tflops", 0.0)))

    def steps(self, desc: str):
        """The remaining steps, with a progress bar on rank 0; the step timer starts at each step."""
        from tqdm import tqdm

        n, main = self.cfg.steps, self.di.main
        self.bar = tqdm(range(self.start, n), desc=desc, disable=not main, initial=self.start, total=n)
        for step in self.bar:
            self.timer.start()
            yield step

    def end_step(self, step: int, record: dict, data_pos: int, show: str) -> bool:
        """After step ``step`` (0-based): log ``record`` and the step's ``perf/*`` metrics (``record[show]``
        and the throughput on the bar), checkpoint when due (``data_pos``: examples consumed); True
        when ``--stop-after`` stops here."""
        cfg = self.cfg
        perf = self.timer.record()
        record.update(perf)
        self.log.write(record)
        self.bar.set_postfix(
            {
                show.split("/")[-1]: f"{record[show]:.3f}",
                "s/step": f"{perf['perf/step_time']:.2f}",
                "tok/s": f"{perf['perf/tokens_per_s']:.0f}",
            }
        )
        last = step + 1 == cfg.steps
        if (step + 1) % cfg.ckpt_every == 0 or last:
            if self.di.main:
                self.last_ckpt = str(self._save(step + 1, data_pos, last))
            self.final_written = last
            dist.barrier()
        if cfg.stop_after >= 0 and step + 1 >= cfg.stop_after:
            self.log.close()
            return True
        return False

    def _save(self, step: int, data_pos: int, last: bool) -> Path:
        """Checkpoint ``step`` (lean at the last step unless ``--save-optimizer``; see the class doc);
        at the last step also ``final/``."""
        full = not last or getattr(self.cfg, "save_optimizer", False)
        path = save_checkpoint(
            self.root,
            step,
            self.model,
            self.opt if full else None,
            self.sched,
            {"data_pos": data_pos},
            self.extra,
            keep=self.cfg.save_total_limit,
            tokenizer=self.tok,
            weights_dtype=None if full else self.save_dtype,
        )
        if last and full:
            self._write_final()
        elif last:
            export_final(path, self.out / "final")
            for old in self.root.glob("step-*"):
                if old != path and old.is_dir() and (old / "manifest.json").is_file() and not is_lean(old):
                    slim_checkpoint(old, self.save_dtype)
        return path

    def _write_final(self) -> None:
        final = self.out / "final"
        check_free_space(self.out, weight_bytes(self.model, self.save_dtype), "final/")
        tmp = final.with_name(f".tmp-final-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_weights(self.model, tmp, self.save_dtype)
        self.tok.save_pretrained(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)

    def finish(self) -> None:
        """Close the loggers; write ``<out>/final`` in the base model's dtype (rank 0; every rank waits)
        unless the last step already did (or a resumed finished run already has it)."""
        self.log.close()
        have = (self.out / "final" / "config.json").is_file() and self.start >= self.cfg.steps
        if self.di.main and not (self.final_written or have):
            self._write_final()
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


def use_checkpointing(setting: str, device: torch.device, need: int | None = None) -> bool:
    """``gradient_checkpointing``: on | off as said; auto = off on CPU, and on a GPU on only when the
    ``need`` bytes (:func:`training_bytes`; None = unknown) exceed 90% of the free GPU memory."""
    if setting != "auto":
        return setting == "on"
    if device.type != "cuda":
        return False
    return need is None or need > 0.9 * torch.cuda.mem_get_info(device)[0]


def training_bytes(model, tokens: int, prec: Precision, chunk_size: int = 1024) -> int:
    """Estimated GPU bytes a training step adds beside the weights, WITHOUT checkpointing: gradients
    and AdamW's two moments (``3 x`` the trainable weights), the activations kept for backward of a
    micro-batch of ``tokens`` tokens, and one vocabulary chunk of the loss (3 ``chunk_size x V`` fp32
    buffers). Activations per token and layer: the residual stream and norm inputs in fp32 (``8 h``
    bytes) plus ~``10 h + 4 i`` values in the compute dtype (attention q/k/v/out and projections'
    inputs; the MLP's gate, up, activation and down input), ``h`` = hidden, ``i`` = MLP width; the
    flash/SDPA attention keeps no ``T x T`` matrix. An estimate (within ~1.5x of the measured H200
    figures of issue 20), used only to decide ``gradient_checkpointing=auto``."""
    c = model.config
    h, inter = c.hidden_size, getattr(c, "intermediate_size", 4 * c.hidden_size)
    act = torch.tensor([], dtype=prec.autocast_dtype or prec.param_dtype).element_size()
    per_token = c.num_hidden_layers * (8 * h + act * (10 * h + 4 * inter))
    state = 3 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return int(state + tokens * per_token + 3 * 4 * chunk_size * c.vocab_size)


def micro_tokens(cfg, tok, data: dict, model, world: int = 1) -> int:
    """The most tokens one training micro-batch can hold: SFT ``batch_size / (grad_accum x world)``
    sequences of ``max_length`` (or the model's context) tokens; GRPO ``micro_batch_size``
    sequences of the longest prompt (of the first 256) plus ``max_completion_length`` (one sequence
    for ``micro_batch_size = 0``: :func:`auto_micro_batch` sizes its micro-batches to fit without
    checkpointing)."""
    if hasattr(cfg, "micro_batch_size"):
        from llm.data import prompt_ids

        longest = max((len(prompt_ids(tok, e, cfg.enable_thinking)) for e in data["rl"][:256]), default=0)
        return max(cfg.micro_batch_size, 1) * (longest + cfg.max_completion_length)
    length = cfg.max_length or getattr(model.config, "max_position_embeddings", 4096)
    return max(1, cfg.batch_size // (cfg.grad_accum * world)) * length


#: ``micro_batch_size = 0`` (auto): the share of the free GPU memory a GRPO micro-batch may plan for
#: (:func:`training_bytes` underestimates the measured activations by up to ~2x), and the fixed
#: size used where no free-memory figure exists (CPU)
AUTO_MICRO_FRACTION, AUTO_MICRO_FALLBACK = 0.35, 8


def free_memory(device: torch.device) -> int | None:
    """Bytes a new allocation can take on ``device``: the driver's free memory plus what PyTorch's
    caching allocator holds unused; None off CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(torch.cuda.mem_get_info(device)[0] + cached)


def auto_micro_batch(
    model, rows: int, row_tokens: int, prec: Precision, chunk_size: int, free: int | None = None
) -> int:
    """Sequences per micro-batch for ``micro_batch_size = 0``: the most of ``rows`` sequences of
    ``row_tokens`` (padded) tokens whose activations (:func:`training_bytes` per token) fit in
    :data:`AUTO_MICRO_FRACTION` of ``free`` bytes (default: :func:`free_memory` of the model's
    device) beside the gradients, AdamW state and a loss chunk (counted even when already allocated);
    at least 1. Without a free-memory figure (CPU): :data:`AUTO_MICRO_FALLBACK`. The update does not
    depend on it (the loss is normalised over the whole batch; tested), only its speed and memory:
    on a GPU a few large micro-batches instead of many launch-bound small ones."""
    free = free_memory(next(model.parameters()).device) if free is None else free
    if free is None:
        return max(1, min(rows, AUTO_MICRO_FALLBACK))
    fixed = training_bytes(model, 0, prec, chunk_size)
    per_row = max(1, (training_bytes(model, 1, prec, chunk_size) - fixed) * row_tokens)
    return max(1, min(rows, int((AUTO_MICRO_FRACTION * free - fixed) // per_row)))


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder layers of a Hugging Face causal LM (``model.model.layers`` and its kin)."""
    base = getattr(model, getattr(model, "base_model_prefix", "model"), model)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"{type(model).__name__}: no decoder layers found to compile (base_model.layers)")
    return layers


def compile_layers(model) -> None:
    """``torch.compile`` each decoder layer for the training forward/backward only: with gradients
    off (generation, scoring, probes) the eager layer runs, so decoding (and its CUDA graphs) is
    untouched. ``dynamic=True``: one graph for every sequence length."""
    for layer in decoder_layers(model):
        eager = layer.forward
        compiled = torch.compile(eager, dynamic=True)

        def forward(*a, _eager=eager, _compiled=compiled, **k):
            return _compiled(*a, **k) if torch.is_grad_enabled() else _eager(*a, **k)

        layer.forward = forward


def prepare_model(
    model, prec: Precision, checkpointing: bool, liger: bool = False, torch_compile: bool = False
):
    """Weights in ``prec.param_dtype`` (fp32 master copy unless bf16-pure); HF layer checkpointing;
    on request Liger kernels (:func:`llm.liger.apply_liger`) and compiled decoder layers
    (:func:`compile_layers`). Both: the layers are compiled, not patched (inductor fuses the norms,
    SwiGLU and RoPE; Liger's Triton kernels do not trace inside a compiled layer), and Liger gives
    the NLL methods' fused linear cross-entropy only (the loss, outside the layers)."""
    model = model.to(prec.param_dtype)
    if liger and not torch_compile:
        from llm.liger import apply_liger

        apply_liger(model)
    if checkpointing:
        model.config.use_cache = False
        enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.2x name
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if torch_compile:
        compile_layers(model)
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
    data = load_data(cfg)
    need = None
    if cfg.gradient_checkpointing == "auto" and device.type == "cuda":
        need = training_bytes(model, micro_tokens(cfg, tok, data, model, di.world), prec, cfg.chunk_size)
    ckpt = use_checkpointing(cfg.gradient_checkpointing, device, need)
    liger, comp = getattr(cfg, "use_liger_kernel", False), getattr(cfg, "torch_compile", False)
    model = prepare_model(model, prec, ckpt, liger=liger, torch_compile=comp)
    return device, di, out, tok, model, data, prec


__all__ = [
    "AUTO_MICRO_FRACTION",
    "auto_micro_batch",
    "batch_indices",
    "free_memory",
    "compile_layers",
    "decoder_layers",
    "micro_tokens",
    "training_bytes",
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
