"""GRPO of a causal LM as TRL computes it: group sampling, rewards, group advantages, clipped surrogate.

One step: ``prompts_per_step`` prompts (a seeded permutation; each prompt's whole group stays on one
rank) -> ``num_generations`` KV-cached samples each at ``temperature`` (``top_p``/``top_k``) ->
rewards from the verifiers (parsed, never executed) -> ``toybench.advantages.group_advantages``
over the GLOBAL reward matrix (so the ``batch`` scale sees every rank), one advantage per sequence,
broadcast over its tokens -> ``num_iterations`` passes, each accumulating gradients over
micro-batches of ``micro_batch_size`` sequences (0 = auto: sized from the free GPU memory,
:func:`llm.train.auto_micro_batch`), of TRL's per-token loss
(``toybench.objectives.grpo_per_token``) normalised as TRL's ``loss_type`` says over the global batch
(``toybench.objectives.normalise`` with its counts summed over micro-batches and ranks) -> gradients
summed over ranks -> step.

Every log-prob (current, old, reference) and the entropy are taken under ``logits / temperature``,
the distribution the samples were drawn from (TRL's convention), so at ``num_iterations = 1`` the
ratio is exactly 1 and the update is on-policy. ``mask_truncated_completions`` drops completions that
ran out of budget without an EOS from the loss (they still count in the normaliser's sequence count,
as in TRL). Knob names are TRL's (``kl_coef`` is TRL's ``beta``: here ``beta`` is GIFT's).
Logged (TRL's metric names under ``grpo/``): reward, reward_std, frac_reward_zero_std, kl, entropy,
clip_ratio/{low,high,region}_mean, completions/{mean_length,clipped_ratio}, learning_rate, loss,
grad_norm, pass@k (unbiased over the G samples; a sample is solved when its reward is > 0, as in
``llm.evaluate``), and the held-out expert SFT loss (decoupling probe T1). Sampling is seeded per
(seed, step, rank) (:func:`rollout_seed`), so a resumed run draws the same samples as an
uninterrupted one.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from llm import dist
from llm.config import GRPOConfig, resolve
from llm.data import collate
from llm.log import NO_TIMER, due
from llm.objectives import entropy_fn, logp_fn
from llm.rewards import Rewards
from llm.rollout import Rollout, generate
from llm.scoring import heldout_sft_loss, hidden_states, score
from llm.train import (
    Normaliser,
    StepLoop,
    auto_micro_batch,
    batch_indices,
    make_optimizer,
    optimizer_step,
    setup_run,
)
from toybench.advantages import group_advantages
from toybench.losses import kl_penalty, reduce
from toybench.metrics import pass_at_k
from toybench.objectives import Counts, grpo_per_token, normalise


def rollout_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of step ``step``'s sampling on ``rank`` (distinct per step and rank)."""
    return seed * 1_000_003 + step * 1009 + rank


def group_rewards(examples, groups: list[list[Rollout]], reward_fn=None) -> torch.Tensor:
    """Rewards ``[P, G]`` of each example's group: ``reward_fn(examples, texts)`` (an
    :class:`llm.rewards.Rewards`), or each example's own verifier when none is given."""
    if reward_fn is not None:
        texts = [[r.text for r in g] for g in groups]
        return torch.tensor(reward_fn(examples, texts), dtype=torch.float32)
    return torch.tensor(
        [[ex.reward(r.text) for r in g] for ex, g in zip(examples, groups)], dtype=torch.float32
    )


def sequence_advantages(all_rewards: torch.Tensor, scale: str, rank: int, per_rank: int) -> torch.Tensor:
    """Advantages of this rank's sequences ``[per_rank * G]``, in the order of its flattened groups
    (prompt-major: sequence ``p * G + g`` is sample ``g`` of prompt ``p``)."""
    adv = group_advantages(all_rewards, scale=scale)  # (N, G) over the global batch
    return adv[rank * per_rank : (rank + 1) * per_rank].reshape(-1)


def rollout_batch(groups: list[list[Rollout]], pad_id: int, mask_truncated: bool) -> dict[str, torch.Tensor]:
    """Collated sequences of ``groups`` (prompt-major) with ``truncated`` ``[B]``; truncated
    completions leave the loss mask when ``mask_truncated``."""
    flat = [r for g in groups for r in g]
    batch = collate([r.seq for r in flat], pad_id)
    batch["truncated"] = torch.tensor([r.truncated for r in flat])
    batch["completion_len"] = torch.tensor([float(len(r.response_ids)) for r in flat])
    if mask_truncated:
        batch["loss_mask"] = batch["loss_mask"] * (~batch["truncated"]).float()[:, None]
    return batch


def micro_batches(batch: dict[str, torch.Tensor], size: int, device) -> list[dict[str, torch.Tensor]]:
    """Row slices of ``batch`` of ``size`` sequences, trimmed to their own longest sequence."""
    out = []
    for s in range(0, len(batch["input_ids"]), size):
        mb = {k: v[s : s + size] for k, v in batch.items()}
        T = int(mb["attention_mask"].sum(1).max())
        mb |= {k: mb[k][:, :T] for k in ("input_ids", "attention_mask")}
        mb |= {k: mb[k][:, : T - 1] for k in ("targets", "loss_mask")}
        out.append({k: v.to(device) for k, v in mb.items()})
    return out


def clip_stats(logp, old_logp, adv, mask, epsilon: float, epsilon_high: float) -> torch.Tensor:
    """Masked sums of TRL's low / high / region clip indicators, ``[3]``."""
    ratio = torch.exp(logp.detach() - old_logp.detach()) if old_logp is not None else torch.ones_like(logp)
    a = adv[:, None]
    low = (ratio < 1 - epsilon) & (a < 0)
    high = (ratio > 1 + epsilon_high) & (a > 0)
    return torch.stack([reduce(x.float(), mask, "sum") for x in (low, high, low | high)])


def grpo_update(
    model, mbs, ref, cfg: GRPOConfig, prec, opt, sched, step: int, last_ckpt: str, timer=NO_TIMER
) -> dict:
    """``num_iterations`` optimizer steps on one rollout batch, each accumulating over ``mbs``.

    Returns the summed (over ranks) statistics of the last pass: loss, grad norm, entropy, KL and
    clip-indicator sums over counted tokens. ``timer`` (:class:`llm.log.StepTimer`) times the
    reference/old log-probs as the ``logprob`` phase and the passes as ``train``.
    """
    norm = Normaliser.of([b["loss_mask"] for b in mbs])
    # TRL counts every sequence (empty ones too); dr_grpo's length is max_completion_length
    counts = Counts(norm.rows, norm.tokens, cfg.max_completion_length)
    T = cfg.temperature

    def logps(m, b):
        with torch.no_grad(), prec.autocast():
            return score(m, b, logp_fn, chunk_size=cfg.chunk_size, temperature=T)

    n_tok = sum(int(b["attention_mask"].sum()) for b in mbs)
    timer.begin("logprob", n_tok * ((ref is not None) + (cfg.num_iterations > 1)))
    ref_logp = [logps(ref, b) for b in mbs] if ref is not None else [None] * len(mbs)
    old_logp = [logps(model, b) for b in mbs] if cfg.num_iterations > 1 else [None] * len(mbs)
    timer.end("logprob")
    timer.begin("train", n_tok * cfg.num_iterations)
    model.train()
    for it in range(cfg.num_iterations):
        last = it == cfg.num_iterations - 1
        loss_sum = torch.zeros((), device=mbs[0]["input_ids"].device)
        stats = torch.zeros(6, dtype=torch.float64, device=loss_sum.device)  # ent, tokens, kl, 3 clip
        for b, old, ref_lp in zip(mbs, old_logp, ref_logp):
            with prec.autocast():
                h = hidden_states(model, b)  # (B, T-1, D)
                logp = score(model, b, logp_fn, chunk_size=cfg.chunk_size, hidden=h, temperature=T)
                per_token = grpo_per_token(
                    logp,
                    old,
                    ref_lp,
                    b["adv"],
                    epsilon=cfg.epsilon,
                    epsilon_high=cfg.epsilon_high,
                    kl_coef=cfg.kl_coef,
                    kl_kind=cfg.kl_kind,
                )
                loss = normalise(per_token, b["loss_mask"], cfg.loss_type, counts)
            if loss.requires_grad:  # a micro-batch whose completions are all masked has no graph
                loss.backward()
            loss_sum += loss.detach()
            if last:
                with torch.no_grad(), prec.autocast():
                    ent = score(
                        model,
                        b,
                        entropy_fn(),
                        chunk_size=cfg.chunk_size,
                        with_targets=False,
                        hidden=h.detach(),
                        temperature=T,
                    )
                m = b["loss_mask"]
                kl = kl_penalty(logp.detach(), ref_lp, kind=cfg.kl_kind) if ref_lp is not None else 0 * logp
                stats += torch.cat(
                    [
                        torch.stack([reduce(ent, m, "sum"), m.sum(), reduce(kl.detach(), m, "sum")]),
                        clip_stats(logp, old, b["adv"], m, cfg.epsilon, cfg.epsilon_high),
                    ]
                ).double()
        dist.all_reduce_sum(loss_sum)
        gnorm = optimizer_step(model, opt, sched if last else _NoSched(), loss_sum, cfg.clip, step, last_ckpt)
    timer.end("train")
    dist.all_reduce_sum(stats)
    tokens = float(stats[1].clamp_min(1))
    out = {"loss": float(loss_sum), "grad_norm": gnorm, "entropy": float(stats[0]) / tokens}
    if ref is not None:
        out["kl"] = float(stats[2]) / tokens
    for name, v in zip(("low_mean", "high_mean", "region_mean"), stats[3:]):
        out[f"clip_ratio/{name}"] = float(v) / tokens
    return out


def reward_stats(all_rewards: torch.Tensor) -> dict:
    """TRL's reward metrics of the global ``[N, G]`` reward matrix."""
    std = all_rewards.std(dim=1) if all_rewards.shape[1] > 1 else torch.zeros(len(all_rewards))
    return {
        "reward": float(all_rewards.mean()),
        "reward_std": float(std.mean()),
        "frac_reward_zero_std": float((std == 0).float().mean()),
    }


def run_grpo(cfg: GRPOConfig, model=None, tok=None) -> dict:
    """Run GRPO as configured; writes metrics, checkpoints and ``<out>/final``; returns final metrics."""
    cfg = resolve(cfg)
    device, di, out, tok, model, data, prec = setup_run(cfg, model, tok)
    prompts, held = data["rl"], [e for e in data["heldout"] if e.response is not None]
    reward_fn = Rewards.of(cfg, prompts)
    if reward_fn is None or not prompts:
        raise ValueError(
            f"data={cfg.data!r} has no prompts with a verifier: GRPO needs prompts and a reward "
            "(an 'answer' column, arith puzzles, or --reward module:function)"
        )
    ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.kl_coef > 0 else None
    if cfg.prompts_per_step % di.world:
        raise ValueError(
            f"prompts_per_step={cfg.prompts_per_step} must be divisible by world size {di.world}"
        )
    per_rank = cfg.prompts_per_step // di.world

    opt, sched = make_optimizer(model, cfg.lr, cfg.steps, cfg.warmup, cfg.min_lr_ratio)
    loop = StepLoop(cfg, di, out, model, opt, sched, tok)
    log = loop.log
    record: dict = {}
    for step in loop.steps("grpo"):
        idx = batch_indices(len(prompts), step, cfg.prompts_per_step, cfg.seed + 1)
        local = [prompts[i] for i in idx[di.rank * per_rank : (di.rank + 1) * per_rank]]
        torch.manual_seed(rollout_seed(cfg.seed, step, di.rank))
        with prec.autocast(), loop.timer.phase("generation"):
            groups = generate(
                model,
                tok,
                local,
                cfg.num_generations,
                temperature=cfg.temperature,
                max_completion_length=cfg.max_completion_length,
                enable_thinking=cfg.enable_thinking,
                batch_size=cfg.generation_batch_size,
                top_p=cfg.top_p,
                top_k=cfg.top_k,
                min_new_tokens=cfg.min_new_tokens,
            )
        texts = [[r.text for r in g] for g in groups]
        rewards = group_rewards(local, groups, reward_fn)  # (n, G)
        if due(step + 1, cfg.log_completions_every) and local:  # the first prompt's group
            log.completions(
                step + 1, [local[0].messages[-1]["content"]] * len(texts[0]), texts[0], rewards[0].tolist()
            )
        all_rewards = dist.all_gather_cat(rewards.to(device))  # (N, G) global, rank order
        batch = rollout_batch(groups, tok.pad_token_id, cfg.mask_truncated_completions)
        batch["adv"] = sequence_advantages(all_rewards, cfg.adv_scale, di.rank, per_rank).cpu()
        lengths = torch.stack([batch["completion_len"].sum(), batch["truncated"].float().sum()]).to(device)
        loop.timer.tokens["generation"] += int(batch["completion_len"].sum())  # this rank's new tokens
        size = cfg.micro_batch_size or auto_micro_batch(
            model, len(batch["input_ids"]), batch["input_ids"].shape[1], prec, cfg.chunk_size
        )
        upd = grpo_update(
            model,
            micro_batches(batch, size, device),
            ref,
            cfg,
            prec,
            opt,
            sched,
            step,
            loop.last_ckpt,
            timer=loop.timer,
        )
        dist.all_reduce_sum(lengths)
        record = _step_record(cfg, step, all_rewards, upd, lengths, sched.get_last_lr()[0])
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps or step == 0:
            with prec.autocast():
                record["heldout/sft_loss"] = heldout_sft_loss(
                    model, tok, held, cfg.chunk_size, enable_thinking=cfg.enable_thinking
                )
        if loop.end_step(step, record, (step + 1) * cfg.prompts_per_step, "grpo/reward"):
            return {"stopped_at": step + 1, **record}
    loop.finish()
    return record


def _step_record(cfg: GRPOConfig, step: int, all_rewards, upd: dict, lengths, lr: float) -> dict:
    """The logged ``grpo/*`` metrics of one step (global rewards ``[N, G]``, summed lengths ``[2]``)."""
    n_seq = cfg.prompts_per_step * cfg.num_generations
    c = (all_rewards > 0).sum(1).cpu().numpy()  # solved = reward > 0, as in llm.evaluate
    metrics = (
        reward_stats(all_rewards.cpu())
        | upd
        | {
            f"pass@{cfg.pass_k}": float(np.mean(pass_at_k(cfg.num_generations, c, cfg.pass_k))),
            "completions/mean_length": float(lengths[0]) / n_seq,
            "completions/clipped_ratio": float(lengths[1]) / n_seq,
            "learning_rate": lr,
        }
    )
    return {"step": step + 1} | {f"grpo/{k}": v for k, v in metrics.items()}


class _NoSched:
    """Inner passes of ``num_iterations > 1`` do not advance the learning-rate schedule."""

    def step(self) -> None:
        pass


__all__ = [
    "group_rewards",
    "grpo_update",
    "micro_batches",
    "reward_stats",
    "rollout_batch",
    "rollout_seed",
    "run_grpo",
    "sequence_advantages",
]
