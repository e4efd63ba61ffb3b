"""SFT of a causal LM with any method of METHODS.md section 1, through the chunked-vocabulary losses.

Loop (one optimizer step):
  global batch of ``batch_size`` examples (a seeded permutation per epoch; position = step) ->
  this rank's slice -> ``grad_accum`` micro-batches -> per-token loss of the method through
  :func:`llm.chunked.chunked_per_token` -> :func:`llm.train.global_reduce` -> backward ->
  gradients summed over ranks -> clip -> non-finite guard -> AdamW + cosine schedule.

Method-specific state: GIFT a frozen base copy (aux logits); CurioSFT an EMA teacher
(``teacher <- keep * teacher + (1 - keep) * model`` every ``curio_ema_every`` steps; checkpointed);
PEAR behaviour log-probs collected ONCE before training from ``behavior_model`` (default: the base)
and stored beside the run under a hash of the data and the behaviour model. Every ``eval_every``
steps the held-out expert SFT loss and the greedy reward on held-out prompts are logged (the
decoupling probe T2 runs the other way in GRPO).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch
from tqdm import tqdm

from llm import dist
from llm.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from llm.config import SFTConfig, resolve, save_config
from llm.data import Example, arith_splits, collate, read_jsonl, sft_ids
from llm.loading import load_model, load_tokenizer, model_path, resolve_device
from llm.objectives import AUX_MODEL, logp_fn, sft_token_fn
from llm.rollout import generate, heldout_sft_loss, score
from llm.train import (
    MetricsLog,
    Normaliser,
    global_reduce,
    make_optimizer,
    optimizer_step,
    seed_everything,
    truncate_log,
)
from toybench.losses import pear_weights


def load_data(cfg) -> dict[str, list[Example]]:
    """``sft``/``heldout``/``rl``/``eval`` example lists for ``cfg.data`` (arith or a JSONL file)."""
    if cfg.data == "arith":
        return arith_splits(cfg.seed, cfg.n_train, cfg.n_heldout, style=cfg.prompt_style)
    train = read_jsonl(cfg.data, cfg.n_train + (0 if cfg.heldout_data else cfg.n_heldout))
    if cfg.heldout_data:
        held = read_jsonl(cfg.heldout_data, cfg.n_heldout)
    else:
        if len(train) < 2:
            raise ValueError(f"data={cfg.data!r}: need >= 2 examples to hold some out")
        k = min(cfg.n_heldout, len(train) // 2)
        train, held = train[:-k], train[-k:]
    return {"sft": train, "heldout": held, "rl": train, "eval": held}


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


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, model: torch.nn.Module, keep: float) -> None:
    """teacher <- keep * teacher + (1 - keep) * model (CurioSFT; keep = 0.01 in the paper's code)."""
    for pt, pm in zip(teacher.parameters(), model.parameters()):
        pt.mul_(keep).add_(pm.detach(), alpha=1.0 - keep)


def setup_run(cfg, model=None, tok=None):
    """The shared start of every loop: seed, device, process group, saved config, model, tokenizer, data.

    Returns ``(device, dist_info, out_dir, tokenizer, model, data)``.
    """
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    di = dist.init_distributed(device)
    out = Path(cfg.out)
    if di.main:
        save_config(cfg, out)
    path = model_path(cfg.model, cfg.tiny, cfg.cache_dir, cfg.tiny_pretrain_steps)
    tok = tok or load_tokenizer(path, cfg.trust_remote_code)
    model = model or load_model(path, device, trust_remote_code=cfg.trust_remote_code)
    return device, di, out, tok, model, load_data(cfg)


def run_sft(cfg: SFTConfig, model=None, tok=None) -> dict:
    """Run SFT as configured; writes metrics, checkpoints and ``<out>/final``; returns final metrics."""
    cfg = resolve(cfg)
    device, di, out, tok, model, data = setup_run(cfg, model, tok)
    train, held = data["sft"], data["heldout"]
    seqs = [sft_ids(tok, ex, cfg.enable_thinking) for ex in train]

    frozen = {}
    if cfg.method in ("gift", "curio", "pear"):
        base = copy.deepcopy(model).eval().requires_grad_(False)
        frozen["base"] = base
    if cfg.method == "curio":
        frozen["teacher"] = copy.deepcopy(model).eval().requires_grad_(False)
    behavior = (
        behavior_logprobs(cfg, seqs, tok, frozen["base"], device, out) if cfg.method == "pear" else None
    )
    fn = sft_token_fn(
        cfg.method,
        entropy_coef=cfg.entropy_coef,
        gift_beta=cfg.gift_beta,
        gift_smooth=cfg.gift_smooth,
        curio_alpha=cfg.curio_alpha,
    )
    aux = [frozen[AUX_MODEL[cfg.method]]] if cfg.method in AUX_MODEL else []

    opt, sched = make_optimizer(model, cfg.lr, cfg.steps, cfg.warmup, cfg.min_lr_ratio, cfg.weight_decay)
    ckpt_root, start, last_ckpt = out / "checkpoint", 0, ""
    extra = {"teacher": frozen["teacher"]} if cfg.method == "curio" else {}
    log_path = out / "metrics.jsonl"
    if cfg.resume and (ck := latest_checkpoint(ckpt_root)) is not None:
        start = load_checkpoint(ck, model, opt, sched, extra)["step"]
        last_ckpt = str(ck)
        truncate_log(log_path, start)
    log = MetricsLog(log_path, enabled=di.main, append=start > 0)
    if di.world > 1 and cfg.batch_size % (cfg.grad_accum * di.world):
        need = cfg.grad_accum * di.world
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by grad_accum * world = {need}")
    per_rank = cfg.batch_size // di.world
    micro = per_rank // cfg.grad_accum
    model.train()
    record: dict = {}
    bar = tqdm(
        range(start, cfg.steps),
        desc=f"sft[{cfg.method}]",
        **({} if di.main else {"disable": True}),
        initial=start,
        total=cfg.steps,
    )
    for step in bar:
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
        loss_sum = torch.zeros((), device=device)
        for b in batches:
            per_token = score(model, b, fn, aux_models=aux, chunk_size=cfg.chunk_size)  # (B, T-1)
            if cfg.method == "pear":
                w = pear_weights(
                    -per_token.detach(),
                    b["behavior_logp"],
                    b["loss_mask"],
                    level=cfg.pear_level,
                    block_size=cfg.pear_block_size,
                    gamma=cfg.pear_gamma,
                )
                per_token = w * per_token
            loss = global_reduce(per_token, b["loss_mask"], cfg.reduction, norm)
            loss.backward()
            loss_sum += loss.detach()
        dist.all_reduce_sum(loss_sum)
        gnorm = optimizer_step(model, opt, sched, loss_sum, cfg.clip, step, last_ckpt)
        if cfg.method == "curio" and (step + 1) % cfg.curio_ema_every == 0:
            ema_update(frozen["teacher"], model, cfg.curio_ema_keep)
        record = {
            "step": step + 1,
            "sft/loss": float(loss_sum),
            "sft/grad_norm": gnorm,
            "sft/lr": sched.get_last_lr()[0],
        }
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            record |= probe(cfg, model, tok, held)
        log.write(record)
        bar.set_postfix(loss=f"{record['sft/loss']:.3f}")
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
            if di.main:
                last_ckpt = str(
                    save_checkpoint(
                        ckpt_root,
                        step + 1,
                        model,
                        opt,
                        sched,
                        {"data_pos": (step + 1) * cfg.batch_size},
                        extra,
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


@torch.no_grad()
def probe(cfg, model, tok, held: list[Example]) -> dict:
    """Held-out expert SFT loss and greedy reward on held-out prompts (no RNG is consumed)."""
    loss = heldout_sft_loss(model, tok, held, cfg.chunk_size, enable_thinking=cfg.enable_thinking)
    exs = held[: getattr(cfg, "eval_prompts", len(held))]
    rolls = generate(
        model,
        tok,
        exs,
        1,
        max_new_tokens=cfg.max_new_tokens,
        enable_thinking=cfg.enable_thinking,
        greedy=True,
    )
    reward = sum(ex.reward(r[0].text) for ex, r in zip(exs, rolls)) / max(len(exs), 1)
    return {"heldout/sft_loss": loss, "heldout/reward": reward}


__all__ = ["batch_indices", "behavior_logprobs", "ema_update", "load_data", "probe", "run_sft"]
