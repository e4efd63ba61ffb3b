"""Training stages of the tiny-transformer scale: pretraining (cached), SFT with every method, GRPO.

Trainers only gather tensors and call ``toybench.losses`` (through ``toybench.methods`` for the SFT
methods) and ``toybench.advantages``; they hold no loss formula. Each stage is a function of a
model and data that returns per-step records (dicts) and trains the model in place.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from toybench import losses
from toybench.advantages import group_advantages
from toybench.methods import Method, loss_type_reduction
from toybench.tasks.arith import Puzzle, pretraining_corpus
from toybench.tiny.config import TinyConfig, pretrain_key
from toybench.tiny.data import TOK, SeqData, rewards, text_pairs_data
from toybench.tiny.model import GPT, completion_logprobs, generate

__all__ = ["default_cache_dir", "pretrain_base", "run_sft", "run_grpo", "completion_nll"]


def default_cache_dir() -> Path:
    """``$TOYBENCH_CACHE`` or ``<repo>/.cache/toybench``."""
    env = os.environ.get("TOYBENCH_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".cache" / "toybench"


def _optimizer(model: GPT, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)


def _step(opt: torch.optim.Optimizer, model: GPT, loss: torch.Tensor, what: str) -> float:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(
            f"{what}: non-finite loss {value}; stopping (the model keeps its last good step)"
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return value


def completion_nll(model: GPT, data: SeqData, batch: int = 512) -> float:
    """Token-mean SFT loss (``losses.sft_loss``) of ``data`` under ``model``: the held-out SFT loss."""
    tot, cnt = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(data), batch):
            prompt, comp, mask = data.batch(torch.arange(i, min(i + batch, len(data))))
            _, logits = completion_logprobs(model, prompt, comp)  # (B, N, V)
            tot += float(losses.reduce(losses.sft_loss(logits, comp), mask, "sum"))
            cnt += int(mask.sum())
    return tot / max(cnt, 1)


# ---------------------------------------------------------------------------------------------
# Pretraining (the base model)
# ---------------------------------------------------------------------------------------------
def pretrain_base(
    cfg: TinyConfig,
    exclude: set[Puzzle] | frozenset[Puzzle] = frozenset(),
    cache_dir: Path | None = None,
    progress: bool = True,
) -> tuple[GPT, dict]:
    """The base model: next-token training on broad valid expressions, cached by config hash.

    Returns ``(model, info)`` with ``info = {"cached": bool, "path": str, "final_loss": float}``.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"base-{pretrain_key(cfg)}.pt"
    torch.manual_seed(cfg.pretrain_seed)
    model = GPT(cfg.model_config)
    if path.exists():
        blob = torch.load(path, weights_only=True)
        model.load_state_dict(blob["state_dict"])
        return model, {"cached": True, "path": str(path), "final_loss": float(blob["final_loss"])}
    texts = pretraining_corpus(cfg.pretrain_texts, seed=cfg.pretrain_seed, exclude=exclude, **cfg.task_knobs)
    data = text_pairs_data(texts, cfg.prompt_len, cfg.max_completion_length)
    opt = _optimizer(model, cfg.pretrain_lr)
    g = torch.Generator().manual_seed(cfg.pretrain_seed)
    ema = None
    bar = tqdm(range(cfg.pretrain_steps), desc="pretrain base", disable=not progress, leave=False)
    for step in bar:
        lr = cfg.pretrain_lr * 0.5 * (1 + math.cos(math.pi * step / cfg.pretrain_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        prompt, comp, mask = data.batch(torch.randint(len(data), (cfg.pretrain_batch,), generator=g))
        _, logits = completion_logprobs(model, prompt, comp)
        v = _step(opt, model, losses.reduce(losses.sft_loss(logits, comp), mask), "pretraining")
        ema = v if ema is None else 0.98 * ema + 0.02 * v
        bar.set_postfix(loss=f"{ema:.3f}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": model.state_dict(), "final_loss": ema}, tmp)
    os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cache entry
    return model, {"cached": False, "path": str(path), "final_loss": float(ema)}


# ---------------------------------------------------------------------------------------------
# SFT with every method
# ---------------------------------------------------------------------------------------------
def run_sft(
    model: GPT,
    data: SeqData,
    method: str | Method,
    cfg: TinyConfig,
    seed: int,
    steps: int | None = None,
    on_step: Callable[[int], dict] | None = None,
    every: int = 0,
) -> list[dict]:
    """SFT of ``model`` in place on ``data`` with ``method`` (a ``toybench.methods`` spec).

    The method's state comes from what it declares (``Method.init_state``): GIFT scores the data with
    a FROZEN copy of the model as it was before SFT; CurioSFT's teacher is an EMA copy
    (``Method.ema_update`` every ``ema_every`` steps) with the entropy-guided temperature; PEAR's
    behaviour log-probs are collected ONCE before SFT (zeros for the deterministic expert, or the
    base model's; ``cfg.pear_behavior``). ``on_step(step)`` is called at step
    0 and every ``every`` steps and its dict is merged into that step's record.
    """
    spec = Method.parse(method)
    steps = cfg.sft_steps if steps is None else steps
    if spec.kind == "none" or steps == 0:
        return [{"step": 0, **(on_step(0) if on_step else {})}]
    g = torch.Generator().manual_seed(seed)
    state = spec.init_state(model)
    frozen, teacher = state.base, state.teacher
    behavior_logp = None
    if spec.needs_behavior_logp:
        if cfg.pear_behavior == "expert":
            behavior_logp = torch.zeros(data.completion.shape)  # deterministic expert: log 1
        else:
            with torch.no_grad():
                behavior_logp, _ = completion_logprobs(model, data.prompt, data.completion)
    opt = _optimizer(model, cfg.sft_lr)
    records = []
    for step in range(steps + 1):
        rec: dict = {"step": step}
        if on_step is not None and (step == 0 or (every and step % every == 0) or step == steps):
            rec |= on_step(step)
        if step == steps:
            records.append(rec)
            break
        idx = torch.randint(len(data), (min(cfg.sft_batch, len(data)),), generator=g)
        prompt, comp, mask = data.batch(idx)
        _, logits = completion_logprobs(model, prompt, comp)  # (B, N, V)
        extra = {}
        with torch.no_grad():
            if frozen is not None:
                extra["base_logits"] = completion_logprobs(frozen, prompt, comp)[1]
            if teacher is not None:
                extra["teacher_logits"] = completion_logprobs(teacher, prompt, comp)[1]
        if behavior_logp is not None:
            extra["behavior_logp"] = behavior_logp[idx]
        per_token = spec.loss(logits, comp, mask, **extra)  # (B, N)
        rec["train_loss"] = _step(opt, model, losses.reduce(per_token, mask), f"SFT ({method})")
        if spec.ema_due(step + 1):
            spec.ema_update(teacher, model)
        records.append(rec)
    return records


# ---------------------------------------------------------------------------------------------
# GRPO
# ---------------------------------------------------------------------------------------------
def run_grpo(
    model: GPT,
    puzzles: list[Puzzle],
    prompts: torch.Tensor,
    cfg: TinyConfig,
    seed: int,
    on_eval: Callable[[int], dict] | None = None,
) -> list[dict]:
    """GRPO of ``model`` in place on ``puzzles`` (prompts ``[M, P]``), one update per sampled batch.

    Per step: ``rl_prompts`` puzzles x ``num_generations`` samples at ``temperature``; rewards from
    the verifier; ``group_advantages``; ``clipped_surrogate_loss`` with ``epsilon``/``epsilon_high``
    (+ ``kl_coef`` x k3 ``kl_penalty`` to the RL start) reduced as ``loss_type`` says. Records the
    mean reward and the loss every step and ``on_eval(step)`` every ``rl_eval_every`` steps.
    """
    g = torch.Generator().manual_seed(seed)
    ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.kl_coef > 0 else None
    opt = _optimizer(model, cfg.rl_lr)
    G = cfg.num_generations
    mode = loss_type_reduction(cfg.loss_type)
    records = []
    for step in range(cfg.rl_steps + 1):
        rec: dict = {"step": step}
        if on_eval is not None and (step % cfg.rl_eval_every == 0 or step == cfg.rl_steps):
            rec |= on_eval(step)
        if step == cfg.rl_steps:
            records.append(rec)
            break
        pick = torch.randperm(len(puzzles), generator=g)[: cfg.rl_prompts]
        prompt = prompts[pick].repeat_interleave(G, dim=0)  # (n G, P)
        batch_puzzles = [puzzles[i] for i in pick.tolist() for _ in range(G)]
        model.eval()
        comp, mask = generate(
            model, prompt, cfg.max_completion_length, cfg.temperature, TOK.eos_id, TOK.pad_id, g
        )
        r, _ = rewards(batch_puzzles, comp)  # (n G,)
        adv = group_advantages(r.view(-1, G)).reshape(-1)  # (n G,)
        model.train()
        logp, _ = completion_logprobs(model, prompt, comp)  # (n G, N)
        per_token = losses.clipped_surrogate_loss(logp, logp.detach(), adv, cfg.epsilon, cfg.epsilon_high)
        if ref is not None:
            with torch.no_grad():
                ref_logp, _ = completion_logprobs(ref, prompt, comp)
            per_token = per_token + cfg.kl_coef * losses.kl_penalty(logp, ref_logp, "k3")
        # dr_grpo: sum / (sequences x max_completion_length), as TRL
        constant = len(comp) * cfg.max_completion_length if mode == "constant" else None
        loss = losses.reduce(per_token, mask, mode, constant=constant)
        rec["train_loss"] = _step(opt, model, loss, "GRPO")
        rec["train_reward"] = float(r.mean())
        records.append(rec)
    return records
