"""Training stages of the tiny-transformer scale: pretraining (cached), SFT with every method, GRPO.

Trainers only gather tensors and call ``toybench.objectives`` (the GRPO loss, its normaliser and the
SFT loss of a ``toybench.methods.Method``), ``toybench.losses`` and ``toybench.advantages``; they
hold no loss formula. Each stage is a function of a
model and data that returns per-step records (dicts) and trains the model in place.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from toybench import losses
from toybench.advantages import group_advantages
from toybench.methods import Method
from toybench.objectives import Counts, SFTInputs, grpo_per_token, normalise, sft_per_token
from toybench.tasks.arith import Puzzle, pretraining_corpus
from toybench.tiny.config import TinyConfig, pretrain_key
from toybench.tiny.data import TOK, SeqData, rewards, text_pairs_data
from toybench.tiny.model import GPT, GPTStack, clip_grad_norm_per_seed, completion_logprobs, generate

__all__ = ["default_cache_dir", "pretrain_base", "run_sft", "run_grpo", "completion_nll"]


def default_cache_dir() -> Path:
    """``$TOYBENCH_CACHE`` or ``<repo>/.cache/toybench``."""
    env = os.environ.get("TOYBENCH_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".cache" / "toybench"


def _optimizer(model: GPT | GPTStack, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)


def _step(opt: torch.optim.Optimizer, model: GPT | GPTStack, loss: torch.Tensor, what: str) -> list[float]:
    """One optimizer step on ``loss`` (a scalar, or ``[S]`` per seed of a stack); the loss values."""
    values = loss.detach().reshape(-1).tolist()
    bad = [s for s, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(
            f"{what}: non-finite loss {values[bad[0]]} (stacked copy {bad[0]}); stopping (the model keeps "
            "its last good step)"
        )
    opt.zero_grad(set_to_none=True)
    loss.sum().backward()  # copies of a stack do not mix: each gets the gradient of its own loss
    clip_grad_norm_per_seed(model, 1.0)
    opt.step()
    return values


def _seed_list(model: GPT | GPTStack, seed: int | Sequence[int]) -> list[int]:
    """The seeds of a run: one int for a GPT, one per stacked copy for a :class:`GPTStack`."""
    if isinstance(model, GPTStack):
        if isinstance(seed, int) or len(seed) != model.seeds:
            raise ValueError(f"a stack of {model.seeds} copies needs {model.seeds} seeds, got {seed!r}")
        return [int(s) for s in seed]
    if not isinstance(seed, int):
        raise ValueError(f"a plain GPT runs one seed (an int), got {seed!r}; stack copies with GPTStack")
    return [seed]


def _per_seed(model: GPT | GPTStack, values: list):
    """Per-seed results as the caller passed the model: the list for a stack, its one item for a GPT."""
    return values if isinstance(model, GPTStack) else values[0]


def _seed_major(model: GPT | GPTStack, x: torch.Tensor) -> torch.Tensor:
    """``x [M, ...]`` shared by every seed -> ``[S, M, ...]`` (a view)."""
    S = model.seeds if isinstance(model, GPTStack) else 1
    return x[None].expand(S, *x.shape)


def _per_seed_reduce(
    per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, length: int | None = None
) -> torch.Tensor:
    """Each seed's ``[B, N]`` slice of ``[S, B, N]`` normalised over its own batch
    (``toybench.objectives.normalise``; ``length``: dr_grpo's max completion length) -> ``[S]``."""
    return torch.stack([normalise(x, m, loss_type, Counts.of(m, length)) for x, m in zip(per_token, mask)])


def completion_nll(model: GPT | GPTStack, data: SeqData, batch: int = 512) -> float | list[float]:
    """Token-mean SFT loss (``losses.sft_loss``) of ``data`` under ``model``: the held-out SFT loss
    (a float; one per seed for a :class:`GPTStack`)."""
    tot, cnt = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(data), batch):
            prompt, comp, mask = (
                _seed_major(model, t) for t in data.batch(torch.arange(i, min(i + batch, len(data))))
            )
            _, logits = completion_logprobs(model, prompt, comp)  # (S, B, N, V)
            per_token = losses.sft_loss(logits.flatten(0, 1), comp.flatten(0, 1)).view(comp.shape)
            tot = tot + _per_seed_reduce(per_token, mask, "sum")  # (S,)
            cnt += int(mask[0].sum())
    return _per_seed(model, (tot / max(cnt, 1)).tolist())


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
        try:
            blob = torch.load(path, weights_only=True)
            model.load_state_dict(blob["state_dict"])
            final_loss = float(blob["final_loss"])
        except Exception as e:  # noqa: BLE001 -- any unpickling/shape failure means a corrupt cache file
            raise ValueError(
                f"cannot read {path}: a corrupt cached base model ({type(e).__name__}); "
                "delete it to pretrain again"
            ) from None
        return model, {"cached": True, "path": str(path), "final_loss": final_loss}
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
        (v,) = _step(opt, model, losses.reduce(losses.sft_loss(logits, comp), mask), "pretraining")
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
    model: GPT | GPTStack,
    data: SeqData,
    method: str | Method,
    cfg: TinyConfig,
    seed: int | Sequence[int],
    steps: int | None = None,
    on_step: Callable[[int], dict | list[dict]] | None = None,
    every: int = 0,
) -> list[dict] | list[list[dict]]:
    """SFT of ``model`` in place on ``data`` with ``method`` (a ``toybench.methods`` spec).

    The method's state comes from what it declares (``Method.init_state``): GIFT scores the data with
    a FROZEN copy of the model as it was before SFT; CurioSFT's teacher is an EMA copy
    (``Method.ema_update`` every ``ema_every`` steps) with the entropy-guided temperature; PEAR's
    behaviour log-probs are collected ONCE before SFT (zeros for the deterministic expert, or the
    base model's; ``cfg.pear_behavior``). ``on_step(step)`` is called at step
    0 and every ``every`` steps and its dict is merged into that step's record.

    Seeds: a plain GPT takes one ``seed`` (an int) and returns its records; a :class:`GPTStack` takes
    one seed per copy, returns one record list per copy, and its ``on_step`` returns one dict per
    copy. Copy s draws its batches from its own generator, exactly as a GPT with that seed.
    """
    spec = Method.parse(method)
    seeds = _seed_list(model, seed)
    steps = cfg.sft_steps if steps is None else steps
    track = _per_seed_callback(model, on_step)
    if spec.kind == "none" or steps == 0:
        return _per_seed(model, [[{"step": 0, **t}] for t in track(0)])
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    state = spec.init_state(model)
    frozen, teacher = state.base, state.teacher
    behavior_logp = None
    if spec.needs_behavior_logp:
        comp_all = _seed_major(model, data.completion)  # (S, M, N)
        if cfg.pear_behavior == "expert":
            behavior_logp = torch.zeros(comp_all.shape)  # deterministic expert: log 1
        else:
            with torch.no_grad():
                behavior_logp, _ = completion_logprobs(model, _seed_major(model, data.prompt), comp_all)
    opt = _optimizer(model, cfg.sft_lr)
    rows = torch.arange(len(seeds))[:, None]
    records: list[list[dict]] = [[] for _ in seeds]
    for step in range(steps + 1):
        recs: list[dict] = [{"step": step} for _ in seeds]
        if on_step is not None and (step == 0 or (every and step % every == 0) or step == steps):
            for r, t in zip(recs, track(step)):
                r |= t
        if step == steps:
            _append(records, recs)
            break
        n = min(cfg.sft_batch, len(data))
        idx = torch.stack([torch.randint(len(data), (n,), generator=g) for g in gens])  # (S, B)
        prompt, comp, mask = data.batch(idx)  # (S, B, ...)
        _, logits = completion_logprobs(model, prompt, comp)  # (S, B, N, V)
        extra = {}
        with torch.no_grad():
            if frozen is not None:
                extra["base_logits"] = completion_logprobs(frozen, prompt, comp)[1].flatten(0, 1)
            if teacher is not None:
                extra["teacher_logits"] = completion_logprobs(teacher, prompt, comp)[1].flatten(0, 1)
        if behavior_logp is not None:
            extra["behavior_logp"] = behavior_logp[rows, idx].flatten(0, 1)
        inputs = SFTInputs(mask.flatten(0, 1), comp.flatten(0, 1), logits.flatten(0, 1), **extra)
        per_token = sft_per_token(spec, inputs)
        loss = _per_seed_reduce(per_token.view(comp.shape), mask, "token_mean")  # (S,)
        for r, v in zip(recs, _step(opt, model, loss, f"SFT ({method})")):
            r["train_loss"] = v
        if spec.ema_due(step + 1):
            spec.ema_update(teacher, model)
        _append(records, recs)
    return _per_seed(model, records)


def _per_seed_callback(model: GPT | GPTStack, fn: Callable | None) -> Callable[[int], list[dict]]:
    """A callback returning one dict per seed (a GPT's callback returns one dict)."""
    if fn is None:
        return lambda step: [{} for _ in range(model.seeds if isinstance(model, GPTStack) else 1)]
    return fn if isinstance(model, GPTStack) else (lambda step: [fn(step)])


def _append(records: list[list[dict]], recs: list[dict]) -> None:
    for lst, r in zip(records, recs, strict=True):
        lst.append(r)


# ---------------------------------------------------------------------------------------------
# GRPO
# ---------------------------------------------------------------------------------------------
def run_grpo(
    model: GPT | GPTStack,
    puzzles: list[Puzzle],
    prompts: torch.Tensor,
    cfg: TinyConfig,
    seed: int | Sequence[int],
    on_eval: Callable[[int], dict | list[dict]] | None = None,
) -> list[dict] | list[list[dict]]:
    """GRPO of ``model`` in place on ``puzzles`` (prompts ``[M, P]``), one update per sampled batch.

    Per step: ``rl_prompts`` puzzles x ``num_generations`` samples at ``temperature``; rewards from
    the verifier; ``group_advantages``; ``toybench.objectives.grpo_per_token`` with
    ``epsilon``/``epsilon_high`` (+ ``kl_coef`` x k3 KL to the RL start) normalised as ``loss_type``
    says over each seed's own batch (``toybench.objectives.normalise``). Records the
    mean reward and the loss every step and ``on_eval(step)`` every ``rl_eval_every`` steps.
    Seeds as in :func:`run_sft`: each copy of a stack picks its prompts and samples with its own
    generator.
    """
    seeds = _seed_list(model, seed)
    track = _per_seed_callback(model, on_eval)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.kl_coef > 0 else None
    opt = _optimizer(model, cfg.rl_lr)
    G = cfg.num_generations
    records: list[list[dict]] = [[] for _ in seeds]
    for step in range(cfg.rl_steps + 1):
        recs: list[dict] = [{"step": step} for _ in seeds]
        if on_eval is not None and (step % cfg.rl_eval_every == 0 or step == cfg.rl_steps):
            for r, t in zip(recs, track(step)):
                r |= t
        if step == cfg.rl_steps:
            _append(records, recs)
            break
        pick = torch.stack([torch.randperm(len(puzzles), generator=g)[: cfg.rl_prompts] for g in gens])
        prompt = prompts[pick].repeat_interleave(G, dim=1)  # (S, n G, P)
        model.eval()
        stacked_gens = gens if isinstance(model, GPTStack) else gens[0]
        comp, mask = generate(
            model, _unseed(model, prompt), cfg.max_completion_length, cfg.temperature, TOK.eos_id, TOK.pad_id,
            stacked_gens,
        )  # fmt: skip
        comp, mask = _seed_major_out(model, comp), _seed_major_out(model, mask)  # (S, n G, N)
        r = torch.stack(
            [rewards([puzzles[i] for i in p.tolist() for _ in range(G)], c)[0] for p, c in zip(pick, comp)]
        )  # (S, n G)
        adv = group_advantages(r.view(-1, G)).view(r.shape)  # (S, n G)
        model.train()
        logp, _ = completion_logprobs(model, prompt, comp)  # (S, n G, N)
        ref_logp = None
        if ref is not None:
            with torch.no_grad():
                ref_logp = completion_logprobs(ref, prompt, comp)[0].flatten(0, 1)
        per_token = grpo_per_token(
            logp.flatten(0, 1), None, ref_logp, adv.flatten(),
            epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, kl_coef=cfg.kl_coef,
        )  # fmt: skip
        # each seed normalises its own batch; dr_grpo: sum / (sequences x max_completion_length), as TRL
        loss = _per_seed_reduce(
            per_token.view(comp.shape), mask, cfg.loss_type, cfg.max_completion_length
        )  # (S,)
        for rec, v, rs in zip(recs, _step(opt, model, loss, "GRPO"), r):
            rec["train_loss"] = v
            rec["train_reward"] = float(rs.mean())
        _append(records, recs)
    return _per_seed(model, records)


def _unseed(model: GPT | GPTStack, x: torch.Tensor) -> torch.Tensor:
    """Seed-major ``[S, ...]`` -> what ``model`` takes: the same for a stack, ``x[0]`` for a GPT."""
    return x if isinstance(model, GPTStack) else x[0]


def _seed_major_out(model: GPT | GPTStack, x: torch.Tensor) -> torch.Tensor:
    return x if isinstance(model, GPTStack) else x[None]
