"""SFT of a causal LM with any method of docs/methods.md §1, through the chunked-vocabulary losses.

Loop (one optimizer step):
  global batch of ``batch_size`` examples (a seeded permutation per epoch; position = step) ->
  this rank's slice -> ``grad_accum`` micro-batches -> per-token loss of the method by
  ``--loss-impl`` (:func:`llm.scoring.sft_token_loss`: chunked, fused or naive), weighted as the method
  says by ``toybench.objectives.sft_per_token`` (PEAR) -> ``toybench.objectives.normalise`` over the
  global batch (``--reduction``; counts of all micro-batches and ranks) -> backward ->
  gradients summed over ranks -> clip -> non-finite guard -> AdamW + cosine schedule.

The method is a ``toybench.methods`` spec (``gift@5``, ``curio,ema_every=5``, ``pear_block``...); its
state comes from what it declares (``Method.init_state``): GIFT a frozen base copy (aux logits);
CurioSFT an EMA teacher (``Method.ema_update`` every ``ema_every`` steps; checkpointed); PEAR
behaviour log-probs collected ONCE before training from ``behavior_model`` (default: the base, i.e.
the model before its first step) and stored beside the run under a hash of the data and the
behaviour model, then ``toybench.objectives.sft_per_token`` applies PEAR's weights to the chunked NLL
as at every other scale. Every ``eval_every``
steps the held-out expert SFT loss and the greedy reward on held-out prompts are logged (the
decoupling probe T2 runs the other way in GRPO).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from llm import dist
from llm.config import SFTConfig, resolve
from llm.data import Example, collate, sft_seqs
from llm.liger import nll_method
from llm.loading import load_model
from llm.log import RunLogger
from llm.objectives import logp_fn
from llm.rewards import Rewards
from llm.rollout import generate
from llm.scoring import heldout_sft_loss, score, sft_token_loss
from llm.train import (
    Normaliser,
    StepLoop,
    batch_indices,
    make_optimizer,
    optimizer_step,
    setup_run,
)
from toybench.methods import Method
from toybench.objectives import Counts, SFTInputs, normalise, sft_per_token


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@torch.no_grad()
def behavior_logprobs(cfg: SFTConfig, seqs, tok, base_model, device, out: Path) -> list[torch.Tensor]:
    """Per-example behaviour log-probs of the SFT targets, collected once and cached by a data hash."""
    name = cfg.behavior_model or "base"
    key = _hash({"seqs": seqs, "behavior": name, "model": cfg.model, "tiny": cfg.tiny})
    path = out / f"behavior_logp-{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    model = base_model if not cfg.behavior_model else load_model(cfg.behavior_model, device)
    res = []
    for s in range(0, len(seqs), 32):
        batch = {k: v.to(device) for k, v in collate(seqs[s : s + 32], tok.pad_token_id).items()}
        logp = score(model, batch, logp_fn, chunk_size=cfg.chunk_size).cpu()  # (b, T-1)
        res += [logp[i, : len(seqs[s + i][0]) - 1].clone() for i in range(logp.shape[0])]
    tmp = path.with_suffix(".tmp")
    torch.save(res, tmp)
    tmp.replace(path)
    return res


def run_sft(cfg: SFTConfig, model=None, tok=None) -> dict:
    """Run SFT as configured; writes metrics, checkpoints and ``<out>/final``; returns final metrics."""
    cfg = resolve(cfg)
    device, di, out, tok, model, data, prec = setup_run(cfg, model, tok)
    train, held = data["sft"], data["heldout"]
    max_len = cfg.max_length or getattr(model.config, "max_position_embeddings", None)  # 0 = no limit
    counts = {"truncated": 0}
    seqs = sft_seqs(tok, train, max_len, cfg.enable_thinking, log=print if di.main else _quiet, counts=counts)
    n_cut = counts["truncated"]

    method = Method.parse(cfg.method)
    if cfg.use_liger_kernel and nll_method(method):  # Liger's fused linear cross-entropy (llm.liger)
        cfg = dataclasses.replace(cfg, loss_impl="liger")
    if method.kind == "none":
        raise ValueError("method 'none' has no SFT stage (run grpo from the base model)")
    state = method.init_state(model)  # frozen base / EMA teacher, as the method declares
    # behaviour log-probs of the model before its first step (= the base) unless behavior_model says
    behavior = behavior_logprobs(cfg, seqs, tok, model, device, out) if method.needs_behavior_logp else None
    aux = [state.base if method.aux == "base" else state.teacher] if method.aux else []

    opt, sched = make_optimizer(model, cfg.lr, cfg.steps, cfg.warmup, cfg.min_lr_ratio, cfg.weight_decay)
    extra = {"teacher": state.teacher} if method.needs_teacher else {}
    loop = StepLoop(cfg, di, out, model, opt, sched, tok, extra)
    log = loop.log
    if di.world > 1 and cfg.batch_size % (cfg.grad_accum * di.world):
        need = cfg.grad_accum * di.world
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by grad_accum * world = {need}")
    per_rank = cfg.batch_size // di.world
    micro = per_rank // cfg.grad_accum
    model.train()
    record: dict = {}
    for step in loop.steps(f"sft[{method}]"):
        idx = batch_indices(len(seqs), step, cfg.batch_size, cfg.seed)[
            di.rank * per_rank : (di.rank + 1) * per_rank
        ]
        batches = []
        for m in range(cfg.grad_accum):
            part = idx[m * micro : (m + 1) * micro]
            b = {k: v.to(device) for k, v in collate([seqs[i] for i in part], tok.pad_token_id).items()}
            if behavior is not None:
                blp = torch.zeros_like(b["loss_mask"])
                for j, i in enumerate(part):
                    blp[j, : len(behavior[i])] = behavior[i].to(device)
                b["behavior_logp"] = blp
            batches.append(b)
        norm = Normaliser.of([b["loss_mask"] for b in batches])
        # seq_mean over the sequences with a counted token; constant: the global padded length
        counts = Counts(norm.seqs, norm.tokens, norm.t_max)
        loss_sum = torch.zeros((), device=device)
        loop.timer.begin("train", tokens=sum(int(b["attention_mask"].sum()) for b in batches))
        for b in batches:
            with prec.autocast():
                token_loss = sft_token_loss(model, b, method, aux, cfg.chunk_size, cfg.loss_impl)  # (B, T-1)
                inputs = SFTInputs(
                    b["loss_mask"], behavior_logp=b.get("behavior_logp"), token_loss=token_loss
                )
                per_token = sft_per_token(method, inputs)
                loss = normalise(per_token, b["loss_mask"], cfg.reduction, counts)
            loss.backward()
            loss_sum += loss.detach()
        dist.all_reduce_sum(loss_sum)
        gnorm = optimizer_step(model, opt, sched, loss_sum, cfg.clip, step, loop.last_ckpt)
        loop.timer.end("train")
        if method.ema_due(step + 1):
            method.ema_update(state.teacher, model)
        record = {
            "step": step + 1,
            "sft/loss": float(loss_sum),
            "sft/grad_norm": gnorm,
            "sft/learning_rate": sched.get_last_lr()[0],
            "sft/truncated": n_cut,
        }
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            with prec.autocast():
                record |= probe(cfg, model, tok, held, log, step + 1)
        if loop.end_step(step, record, (step + 1) * cfg.batch_size, "sft/loss"):
            return {"stopped_at": step + 1, **record}
    loop.finish()
    return record


@torch.no_grad()
def probe(cfg, model, tok, held: list[Example], log: RunLogger | None = None, step: int = 0) -> dict:
    """Held-out expert SFT loss and greedy reward on held-out prompts (no RNG is consumed).

    Skipped without held-out data; the reward part is skipped when the data has no verifier (no
    ``--reward`` and no answers), instead of failing."""
    held = [e for e in held if e.response is not None]
    if not held:
        return {}
    out = {
        "heldout/sft_loss": heldout_sft_loss(
            model, tok, held, cfg.chunk_size, enable_thinking=cfg.enable_thinking
        )
    }
    rewards = Rewards.of(cfg, held)
    if rewards is None:
        return out
    exs = held[: getattr(cfg, "eval_prompts", len(held))]
    rolls = generate(
        model,
        tok,
        exs,
        1,
        max_completion_length=cfg.max_completion_length,
        enable_thinking=cfg.enable_thinking,
        greedy=True,
    )
    r = [g[0] for g in rewards(exs, [[x.text for x in g] for g in rolls])]
    if log is not None and cfg.log_completions_every > 0:  # at every probe
        log.completions(step, [_prompt(e) for e in exs], [g[0].text for g in rolls], r)
    return out | {"heldout/reward": sum(r) / max(len(exs), 1)}


def _prompt(e: Example) -> str:
    return e.messages[-1]["content"]


def _quiet(*_) -> None:
    pass


__all__ = ["behavior_logprobs", "probe", "run_sft"]
