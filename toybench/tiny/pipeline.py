"""base -> SFT(method) -> GRPO -> eval -> further SFT, at the tiny-transformer scale.

``prepare`` builds what every run shares (splits, tensors, expert data, the cached base model);
``run_method`` runs one (method, seed) pipeline and returns per-step records and a summary row;
``run_seeds`` runs several seeds of one method at once (vectorised over seeds by default).
Decoupling is measured directly: the SFT loss on HELD-OUT expert data is tracked during GRPO, and
the reward (pass@1 on the eval puzzles) is tracked during a further standard-SFT stage after GRPO.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from toybench.tasks.arith import Puzzle, split_puzzles
from toybench.tiny.config import TinyConfig
from toybench.tiny.data import SeqData, encode_prompts, expert_data
from toybench.tiny.evaluate import evaluate, tracked_pass1
from toybench.tiny.model import GPT, GPTStack
from toybench.tiny.train import completion_nll, pretrain_base, run_grpo, run_sft

__all__ = ["Setup", "prepare", "run_method", "run_seeds"]


@dataclass
class Setup:
    """Everything the (method, seed) runs share."""

    cfg: TinyConfig
    splits: dict[str, list[Puzzle]]
    prompts: dict[str, torch.Tensor]
    sft_data: SeqData
    """expert demonstrations on the SFT puzzles the expert solves."""
    heldout: SeqData
    """expert demonstrations on the eval puzzles the expert solves (held-out SFT loss)."""
    base: GPT
    base_info: dict


def prepare(cfg: TinyConfig, cache_dir: Path | None = None, progress: bool = True) -> Setup:
    """Splits, tensors, expert data and the base model (pretrained once, then read from the cache)."""
    splits = split_puzzles(
        cfg.task_seed, cfg.n_sft_puzzles, cfg.n_rl_puzzles, cfg.n_eval_puzzles, **cfg.task_knobs
    )
    P, N = cfg.prompt_len, cfg.max_completion_length
    prompts = {k: encode_prompts(v, P) for k, v in splits.items()}
    sft_data, _ = expert_data(splits["sft"], P, N)
    heldout, _ = expert_data(splits["eval"], P, N)
    exclude = set(splits["sft"]) | set(splits["rl"]) | set(splits["eval"])
    base, info = pretrain_base(cfg, exclude=exclude, cache_dir=cache_dir, progress=progress)
    base.eval().requires_grad_(False)
    return Setup(cfg, splits, prompts, sft_data, heldout, base, info)


def run_method(setup: Setup, method: str, seed: int) -> tuple[list[dict], dict]:
    """One pipeline. Returns ``(records, summary)``; records carry ``stage`` in {sft, rl, post_sft}.

    The loop path: one plain GPT, one seed (``run_seeds(..., vectorise=False)``)."""
    return run_seeds(setup, method, [seed], vectorise=False)[0]


def run_seeds(
    setup: Setup, method: str, seeds: Sequence[int], vectorise: bool = True
) -> list[tuple[list[dict], dict]]:
    """The pipeline of ``method`` for every seed in ``seeds``: ``[(records, summary)]`` per seed.

    ``vectorise`` runs the seeds as one :class:`~toybench.tiny.model.GPTStack` (one batched model
    with a seed axis in its weights) instead of a Python loop of :func:`run_method`. Each seed keeps
    its own randomness either way (SFT order and GRPO sampling use 1000+seed, post-RL SFT 3000+seed,
    eval sampling 2000+seed), so seed s gives the loop's result to float tolerance.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must not be empty")
    if not vectorise:
        return [r for s in seeds for r in _run(setup, method, [s], stacked=False)]
    return _run(setup, method, seeds, stacked=True)


def _run(setup: Setup, method: str, seeds: list[int], stacked: bool) -> list[tuple[list[dict], dict]]:
    cfg = setup.cfg
    # --- seeding: the base model and the splits are shared across seeds; every draw below comes
    # from a per-seed generator (the global seed only matters to code that uses the global RNG)
    torch.manual_seed(seeds[0])
    g_eval = [torch.Generator().manual_seed(2000 + s) for s in seeds]
    if stacked:
        model: GPT | GPTStack = GPTStack([setup.base] * len(seeds)).requires_grad_(True)
        gen: object = g_eval
    else:
        model, gen = copy.deepcopy(setup.base).requires_grad_(True), g_eval[0]
    ev_puz, ev_prompt = setup.splits["eval"], setup.prompts["eval"]
    N, T = cfg.max_completion_length, cfg.temperature

    def per_seed(x) -> list:
        return x if stacked else [x]

    def track(step: int) -> list[dict] | dict:
        nll = per_seed(completion_nll(model, setup.heldout))
        p1 = per_seed(tracked_pass1(model, ev_puz, ev_prompt, cfg.track_samples, N, T, gen))
        out = [{"heldout_sft_loss": a, "eval_pass1": b} for a, b in zip(nll, p1)]
        return out if stacked else out[0]

    def full_eval() -> list[dict]:
        return per_seed(evaluate(model, ev_puz, ev_prompt, cfg.eval_samples, N, T, gen, base=setup.base))

    offset = [1000 + s for s in seeds] if stacked else 1000 + seeds[0]
    records: list[list[dict]] = [[] for _ in seeds]
    # the SFT stage records its training loss only (the full evaluation follows it)
    for recs, rs in zip(records, per_seed(run_sft(model, setup.sft_data, method, cfg, seed=offset))):
        recs += [{"stage": "sft", **r} for r in rs]
    after_sft = full_eval()
    rl = run_grpo(model, setup.splits["rl"], setup.prompts["rl"], cfg, seed=offset, on_eval=track)
    for recs, rs in zip(records, per_seed(rl)):
        recs += [{"stage": "rl", **r} for r in rs]
    after_rl = full_eval()
    post = run_sft(
        model,
        setup.sft_data,
        "sft",
        cfg,
        seed=[3000 + s for s in seeds] if stacked else 3000 + seeds[0],
        steps=cfg.post_sft_steps,
        on_step=track,
        every=cfg.post_sft_eval_every,
    )
    for recs, rs in zip(records, per_seed(post)):
        recs += [{"stage": "post_sft", **r} for r in rs]
    return [
        _summarise(method, s, recs, a, b)
        for s, recs, a, b in zip(seeds, records, after_sft, after_rl, strict=True)
    ]


def _summarise(
    method: str, seed: int, records: list[dict], after_sft: dict, after_rl: dict
) -> tuple[list[dict], dict]:
    for r in records:
        r.update(method=method, seed=seed)
    rl_track = [r for r in records if r["stage"] == "rl" and "heldout_sft_loss" in r]
    post_track = [r for r in records if r["stage"] == "post_sft" and "eval_pass1" in r]
    summary = {"method": method, "seed": seed}
    summary |= {f"sft_{k}": v for k, v in after_sft.items()}
    summary |= {f"rl_{k}": v for k, v in after_rl.items()}
    summary["heldout_sft_loss_before_rl"] = rl_track[0]["heldout_sft_loss"]
    summary["heldout_sft_loss_after_rl"] = rl_track[-1]["heldout_sft_loss"]
    summary["rl_delta_sft_loss"] = rl_track[-1]["heldout_sft_loss"] - rl_track[0]["heldout_sft_loss"]
    summary["post_sft_reward_start"] = post_track[0]["eval_pass1"]
    summary["post_sft_reward_end"] = post_track[-1]["eval_pass1"]
    summary["post_sft_delta_reward"] = post_track[-1]["eval_pass1"] - post_track[0]["eval_pass1"]
    return records, summary
