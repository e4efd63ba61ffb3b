"""base -> SFT(method) -> GRPO -> eval -> further SFT, at the tiny-transformer scale.

``prepare`` builds what every run shares (splits, tensors, expert data, the cached base model);
``run_method`` runs one (method, seed) pipeline and returns per-step records and a summary row.
Decoupling is measured directly: the SFT loss on HELD-OUT expert data is tracked during GRPO, and
the reward (pass@1 on the eval puzzles) is tracked during a further standard-SFT stage after GRPO.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from toybench.tasks.arith import Puzzle, split_puzzles
from toybench.tiny.config import TinyConfig
from toybench.tiny.data import SeqData, encode_prompts, expert_data
from toybench.tiny.evaluate import evaluate, tracked_pass1
from toybench.tiny.model import GPT
from toybench.tiny.train import completion_nll, pretrain_base, run_grpo, run_sft

__all__ = ["Setup", "prepare", "run_method"]


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
    """One pipeline. Returns ``(records, summary)``; records carry ``stage`` in {sft, rl, post_sft}."""
    cfg = setup.cfg
    # --- seeding: one block (SFT order/GRPO sampling use 1000+seed, post-RL SFT 3000+seed, eval
    # sampling 2000+seed); the base model and the splits are shared across seeds
    torch.manual_seed(seed)
    g_eval = torch.Generator().manual_seed(2000 + seed)
    model = copy.deepcopy(setup.base).requires_grad_(True)
    ev_puz, ev_prompt = setup.splits["eval"], setup.prompts["eval"]
    N, T = cfg.max_completion_length, cfg.temperature

    def track(step: int) -> dict:
        return {
            "heldout_sft_loss": completion_nll(model, setup.heldout),
            "eval_pass1": tracked_pass1(model, ev_puz, ev_prompt, cfg.track_samples, N, T, g_eval),
        }

    def full_eval() -> dict:
        return evaluate(model, ev_puz, ev_prompt, cfg.eval_samples, N, T, g_eval, base=setup.base)

    records: list[dict] = []
    # the SFT stage records its training loss only (the full evaluation follows it)
    for r in run_sft(model, setup.sft_data, method, cfg, seed=1000 + seed):
        records.append({"stage": "sft", **r})
    after_sft = full_eval()
    for r in run_grpo(model, setup.splits["rl"], setup.prompts["rl"], cfg, seed=1000 + seed, on_eval=track):
        records.append({"stage": "rl", **r})
    after_rl = full_eval()
    post = run_sft(
        model,
        setup.sft_data,
        "sft",
        cfg,
        seed=3000 + seed,
        steps=cfg.post_sft_steps,
        on_step=track,
        every=cfg.post_sft_eval_every,
    )
    records += [{"stage": "post_sft", **r} for r in post]
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
