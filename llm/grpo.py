"""GRPO of a causal LM: group sampling, verifier rewards, group advantages, clipped surrogate.

One step: ``prompts_per_step`` prompts (a seeded permutation; each prompt's whole group stays on one
rank) -> ``num_generations`` KV-cached samples each -> 0/1 rewards from the verifiers (parsed, never
executed) -> ``toybench.advantages.group_advantages`` over the GLOBAL reward matrix (so the ``batch``
scale sees every rank) -> ``num_iterations`` passes of ``clipped_surrogate_loss`` (``epsilon``,
``epsilon_high``; + ``kl_coef * kl_penalty`` to a frozen reference) normalised as ``loss_type``
says -> step. Knob names are TRL's (``kl_coef`` is TRL's ``beta``: here ``beta`` is GIFT's).
Logged: reward, pass@k (unbiased over the G samples), entropy, response length, clip fraction,
and the held-out expert SFT loss (decoupling probe T1). Sampling is seeded per (seed, step, rank),
so a resumed run draws the same samples as an uninterrupted one.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from tqdm import tqdm

from llm import dist
from llm.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from llm.config import GRPOConfig, resolve
from llm.data import collate
from llm.objectives import entropy_fn, logp_fn
from llm.rollout import generate, heldout_sft_loss, hidden_states, score
from llm.train import (
    MetricsLog,
    Normaliser,
    batch_indices,
    global_reduce,
    make_optimizer,
    optimizer_step,
    setup_run,
    truncate_log,
)
from toybench.advantages import group_advantages
from toybench.losses import clipped_mask, clipped_surrogate_loss, kl_penalty, reduce
from toybench.methods import loss_type_reduction
from toybench.metrics import pass_at_k


def grpo_loss_terms(model, batch, adv, old_logp, ref_logp, cfg: GRPOConfig, norm: Normaliser, hidden=None):
    """(loss share, per-token logp, clipped mask) of one micro-batch; every term from toybench.losses."""
    logp = score(model, batch, logp_fn, chunk_size=cfg.chunk_size, hidden=hidden)  # (B, T-1)
    old = logp.detach() if old_logp is None else old_logp
    per_token = clipped_surrogate_loss(logp, old, adv, eps_low=cfg.epsilon, eps_high=cfg.epsilon_high)
    if ref_logp is not None and cfg.kl_coef > 0:
        per_token = per_token + cfg.kl_coef * kl_penalty(logp, ref_logp, kind=cfg.kl_kind)
    mode = loss_type_reduction(cfg.loss_type)
    t_max = cfg.max_completion_length if mode == "constant" else None  # dr_grpo: TRL's normaliser
    loss = global_reduce(per_token, batch["loss_mask"], mode, norm, t_max=t_max)
    return loss, logp, clipped_mask(logp, old, adv, eps_low=cfg.epsilon, eps_high=cfg.epsilon_high)


def run_grpo(cfg: GRPOConfig, model=None, tok=None) -> dict:
    """Run GRPO as configured; writes metrics, checkpoints and ``<out>/final``; returns final metrics."""
    cfg = resolve(cfg)
    device, di, out, tok, model, data = setup_run(cfg, model, tok)
    prompts, held = data["rl"], [e for e in data["heldout"] if e.response is not None]
    ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.kl_coef > 0 else None
    if cfg.prompts_per_step % di.world:
        raise ValueError(
            f"prompts_per_step={cfg.prompts_per_step} must be divisible by world size {di.world}"
        )
    per_rank = cfg.prompts_per_step // di.world

    opt, sched = make_optimizer(model, cfg.lr, cfg.steps, cfg.warmup, cfg.min_lr_ratio)
    ckpt_root, start, last_ckpt = out / "checkpoint", 0, ""
    log_path = out / "metrics.jsonl"
    if cfg.resume and (ck := latest_checkpoint(ckpt_root)) is not None:
        start = load_checkpoint(ck, model, opt, sched)["step"]
        last_ckpt = str(ck)
        truncate_log(log_path, start)
    log = MetricsLog(log_path, enabled=di.main, append=start > 0)
    record: dict = {}
    bar = tqdm(
        range(start, cfg.steps),
        desc="grpo",
        **({} if di.main else {"disable": True}),
        initial=start,
        total=cfg.steps,
    )
    for step in bar:
        idx = batch_indices(len(prompts), step, cfg.prompts_per_step, cfg.seed + 1)
        local = [prompts[i] for i in idx[di.rank * per_rank : (di.rank + 1) * per_rank]]
        torch.manual_seed(cfg.seed * 1_000_003 + step * 1009 + di.rank)
        groups = generate(
            model,
            tok,
            local,
            cfg.num_generations,
            temperature=cfg.temperature,
            max_completion_length=cfg.max_completion_length,
            enable_thinking=cfg.enable_thinking,
        )
        rewards = torch.tensor(
            [[ex.reward(r.text) for r in g] for ex, g in zip(local, groups)], dtype=torch.float32
        )
        all_rewards = dist.all_gather_cat(rewards.to(device))  # (N, G) global, rank order
        adv = group_advantages(all_rewards, scale=cfg.adv_scale)[
            di.rank * per_rank : (di.rank + 1) * per_rank
        ]
        batch = {
            k: v.to(device) for k, v in collate([r.seq for g in groups for r in g], tok.pad_token_id).items()
        }
        adv = adv.reshape(-1).to(device)  # (B,) one per sequence
        mask = batch["loss_mask"]
        norm = Normaliser.of([mask])
        ref_logp = score(ref, batch, logp_fn, chunk_size=cfg.chunk_size).detach() if ref is not None else None
        old_logp = None
        if cfg.num_iterations > 1:
            with torch.no_grad():
                old_logp = score(model, batch, logp_fn, chunk_size=cfg.chunk_size)
        model.train()
        for _ in range(cfg.num_iterations):
            h = hidden_states(model, batch)  # (B, T-1, D)
            loss, logp, clipped = grpo_loss_terms(model, batch, adv, old_logp, ref_logp, cfg, norm, hidden=h)
            loss.backward()
            loss_sum = dist.all_reduce_sum(loss.detach().clone())
            gnorm = optimizer_step(
                model,
                opt,
                sched if _ == cfg.num_iterations - 1 else _NoSched(),
                loss_sum,
                cfg.clip,
                step,
                last_ckpt,
            )
        with torch.no_grad():
            ent = score(
                model,
                batch,
                entropy_fn(cfg.temperature),
                chunk_size=cfg.chunk_size,
                with_targets=False,
                hidden=h.detach(),
            )
        stats = torch.stack(
            [
                reduce(ent, mask, "sum"),
                mask.sum(),
                reduce(clipped.float(), mask, "sum"),
                torch.tensor(float(len(batch["input_ids"])), device=device),
            ]
        )
        dist.all_reduce_sum(stats)
        c = all_rewards.sum(1).cpu().numpy()
        record = {
            "step": step + 1,
            "grpo/loss": float(loss_sum),
            "grpo/grad_norm": gnorm,
            "grpo/reward": float(all_rewards.mean()),
            f"grpo/pass@{cfg.pass_k}": float(
                np.mean(pass_at_k(cfg.num_generations, c.astype(int), cfg.pass_k))
            ),
            "grpo/entropy": float(stats[0] / stats[1].clamp_min(1)),
            "grpo/response_len": float(stats[1] / stats[3]),
            "grpo/clip_frac": float(stats[2] / stats[1].clamp_min(1)),
        }
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps or step == 0:
            record["heldout/sft_loss"] = heldout_sft_loss(
                model, tok, held, cfg.chunk_size, enable_thinking=cfg.enable_thinking
            )
        log.write(record)
        bar.set_postfix(reward=f"{record['grpo/reward']:.3f}")
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
            if di.main:
                last_ckpt = str(
                    save_checkpoint(
                        ckpt_root,
                        step + 1,
                        model,
                        opt,
                        sched,
                        {"data_pos": (step + 1) * cfg.prompts_per_step},
                    )
                )
            dist.barrier()
        if cfg.stop_after >= 0 and step + 1 >= cfg.stop_after:
            return {"stopped_at": step + 1, **record}
    if di.main:
        model.save_pretrained(out / "final", safe_serialization=True)
        tok.save_pretrained(out / "final")
    dist.barrier()
    return record


class _NoSched:
    """Inner passes of ``num_iterations > 1`` do not advance the learning-rate schedule."""

    def step(self) -> None:
        pass


__all__ = ["grpo_loss_terms", "run_grpo"]
