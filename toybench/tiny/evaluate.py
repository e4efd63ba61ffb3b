"""Evaluation at the tiny-transformer scale: unbiased pass@k, entropy, distinct correct solutions,
KL to the base model, and a cheap tracked pass@1 (all from sampled completions)."""

from __future__ import annotations

import numpy as np
import torch

from toybench import metrics
from toybench.tasks.arith import Puzzle, expert_solution
from toybench.tiny.data import TOK, rewards
from toybench.tiny.model import GPT, completion_logprobs, generate

__all__ = ["evaluate", "tracked_pass1", "pass_ks"]


def pass_ks(n: int) -> list[int]:
    """k = 1, 2, 4, ... up to n (and n itself)."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks + ([n] if ks[-1] != n else [])


@torch.no_grad()
def evaluate(
    model: GPT,
    puzzles: list[Puzzle],
    prompts: torch.Tensor,
    n: int,
    max_new_tokens: int,
    temperature: float,
    generator: torch.Generator,
    base: GPT | None = None,
    chunk: int = 1024,
) -> dict[str, float]:
    """Sample ``n`` completions per puzzle and summarise them.

    Returns ``pass@k`` (``metrics.pass_at_k``, mean over puzzles) for k in :func:`pass_ks`,
    ``pass1_expert`` / ``pass1_other`` (puzzles the expert does / does not solve), ``entropy`` (mean
    per-token entropy at ``temperature`` along the samples, ``metrics.entropy``), ``distinct`` (mean
    number of distinct correct texts per puzzle), ``valid`` (fraction that end with eos), and
    ``kl_base`` (mean per-token KL(pi || pi_base) along the samples) when ``base`` is given.
    """
    model.eval()
    prompt = prompts.repeat_interleave(n, dim=0)  # (M n, P)
    rep = [p for p in puzzles for _ in range(n)]
    comps, masks = [], []
    for i in range(0, prompt.shape[0], chunk):
        c, m = generate(
            model, prompt[i : i + chunk], max_new_tokens, temperature, TOK.eos_id, TOK.pad_id, generator
        )
        comps.append(c)
        masks.append(m)
    comp, mask = torch.cat(comps), torch.cat(masks)
    r, texts = rewards(rep, comp)
    c = r.view(len(puzzles), n).sum(1).long().numpy()  # (M,)
    out: dict[str, float] = {}
    for k in pass_ks(n):
        out[f"pass@{k}"] = float(np.mean(metrics.pass_at_k(np.full_like(c, n), c, k)))
    solved = np.array([expert_solution(p) is not None for p in puzzles])
    p1 = c / n
    out["pass1_expert"] = float(p1[solved].mean()) if solved.any() else float("nan")
    out["pass1_other"] = float(p1[~solved].mean()) if (~solved).any() else float("nan")
    correct = r.view(len(puzzles), n).bool().tolist()
    out["distinct"] = float(
        np.mean([len({texts[i * n + j] for j in range(n) if correct[i][j]}) for i in range(len(puzzles))])
    )
    out["valid"] = float((comp == TOK.eos_id).any(1).float().mean())
    mf = mask.float()
    ent_sum, kl_sum = 0.0, 0.0
    for i in range(0, prompt.shape[0], chunk):
        sl = slice(i, i + chunk)
        _, logits = completion_logprobs(model, prompt[sl], comp[sl])  # (B, N, V)
        H = metrics.entropy(logits, temperature=temperature)  # (B, N)
        ent_sum += float((H * mf[sl]).sum())
        if base is not None:
            _, base_logits = completion_logprobs(base, prompt[sl], comp[sl])
            kl_sum += float((metrics.kl_divergence(logits, base_logits) * mf[sl]).sum())
    out["entropy"] = ent_sum / max(float(mf.sum()), 1.0)
    if base is not None:
        out["kl_base"] = kl_sum / max(float(mf.sum()), 1.0)
    return out


@torch.no_grad()
def tracked_pass1(
    model: GPT,
    puzzles: list[Puzzle],
    prompts: torch.Tensor,
    n: int,
    max_new_tokens: int,
    temperature: float,
    generator: torch.Generator,
) -> float:
    """Mean reward of ``n`` samples per puzzle (cheap pass@1 for curves)."""
    model.eval()
    prompt = prompts.repeat_interleave(n, dim=0)
    comp, _ = generate(model, prompt, max_new_tokens, temperature, TOK.eos_id, TOK.pad_id, generator)
    r, _ = rewards([p for p in puzzles for _ in range(n)], comp)
    return float(r.mean())
