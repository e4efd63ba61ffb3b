"""Evaluation at the tiny-transformer scale: unbiased pass@k, entropy, distinct correct solutions,
KL to the base model, and a cheap tracked pass@1 (all from sampled completions).

Both evaluators take a plain GPT with one generator, or a :class:`~toybench.tiny.model.GPTStack`
with one generator per stacked copy (then they return one result per copy).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from toybench import metrics
from toybench.tasks.arith import Puzzle, expert_solution
from toybench.tiny.data import TOK, rewards
from toybench.tiny.model import GPT, GPTStack, completion_logprobs, generate

__all__ = ["evaluate", "tracked_pass1", "pass_ks"]

Generators = torch.Generator | Sequence[torch.Generator]


def pass_ks(n: int) -> list[int]:
    """k = 1, 2, 4, ... up to n (and n itself)."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks + ([n] if ks[-1] != n else [])


@torch.no_grad()
def evaluate(
    model: GPT | GPTStack,
    puzzles: list[Puzzle],
    prompts: torch.Tensor,
    n: int,
    max_new_tokens: int,
    temperature: float,
    generator: Generators,
    base: GPT | None = None,
    chunk: int = 1024,
    pass1_only: bool = False,
) -> dict[str, float] | list[dict[str, float]] | float | list[float]:
    """Sample ``n`` completions per puzzle and summarise them.

    Returns ``pass@k`` (``metrics.pass_at_k``, mean over puzzles) for k in :func:`pass_ks`,
    ``pass1_expert`` / ``pass1_other`` (puzzles the expert does / does not solve), ``entropy`` (mean
    per-token entropy at ``temperature`` along the samples, ``metrics.entropy``), ``distinct`` (mean
    number of distinct correct texts per puzzle), ``valid`` (fraction that end with eos), and
    ``kl_base`` (mean per-token KL(pi || pi_base) along the samples) when ``base`` is given.
    One dict per copy for a :class:`GPTStack`. ``pass1_only``: only the mean reward (a float per
    copy), as :func:`tracked_pass1`.
    """
    model.eval()
    stacked = isinstance(model, GPTStack)
    S = model.seeds if stacked else 1
    prompt = prompts.repeat_interleave(n, dim=0)[None].expand(S, -1, -1)  # (S, M n, P), seed-major
    rep = [p for p in puzzles for _ in range(n)]
    comps, masks = [], []
    for i in range(0, prompt.shape[1], chunk):
        part = prompt[:, i : i + chunk] if stacked else prompt[0, i : i + chunk]
        c, m = generate(model, part, max_new_tokens, temperature, TOK.eos_id, TOK.pad_id, generator)
        comps.append(c if stacked else c[None])
        masks.append(m if stacked else m[None])
    comp, mask = torch.cat(comps, dim=1), torch.cat(masks, dim=1)  # (S, M n, N)
    scored = [rewards(rep, c) for c in comp]
    r, texts = torch.stack([x for x, _ in scored]), [t for _, t in scored]  # (S, M n), texts per seed
    if pass1_only:
        p1 = [float(x.mean()) for x in r]
        return p1 if stacked else p1[0]
    mf = mask.float()
    ent_sum, kl_sum = torch.zeros(S, dtype=torch.float64), torch.zeros(S, dtype=torch.float64)
    for i in range(0, prompt.shape[1], chunk):
        sl = slice(i, i + chunk)
        _, logits = completion_logprobs(model, prompt[:, sl], comp[:, sl])  # (S, B, N, V)
        ent_sum += (metrics.entropy(logits, temperature=temperature) * mf[:, sl]).sum(dim=(1, 2)).double()
        if base is not None:
            _, base_logits = completion_logprobs(base, prompt[:, sl], comp[:, sl])
            kl_sum += (metrics.kl_divergence(logits, base_logits) * mf[:, sl]).sum(dim=(1, 2)).double()
    solved = np.array([expert_solution(p) is not None for p in puzzles])
    out = []
    for s in range(S):
        c = r[s].view(len(puzzles), n).sum(1).long().numpy()  # (M,)
        res: dict[str, float] = {}
        for k in pass_ks(n):
            res[f"pass@{k}"] = float(np.mean(metrics.pass_at_k(np.full_like(c, n), c, k)))
        p1 = c / n
        res["pass1_expert"] = float(p1[solved].mean()) if solved.any() else float("nan")
        res["pass1_other"] = float(p1[~solved].mean()) if (~solved).any() else float("nan")
        correct = r[s].view(len(puzzles), n).bool().tolist()
        res["distinct"] = float(
            np.mean(
                [len({texts[s][i * n + j] for j in range(n) if correct[i][j]}) for i in range(len(puzzles))]
            )
        )
        res["valid"] = float((comp[s] == TOK.eos_id).any(1).float().mean())
        count = max(float(mf[s].sum()), 1.0)
        res["entropy"] = float(ent_sum[s]) / count
        if base is not None:
            res["kl_base"] = float(kl_sum[s]) / count
        out.append(res)
    return out if stacked else out[0]


def tracked_pass1(*args, **kwargs) -> float | list[float]:
    """Mean reward of ``n`` samples per puzzle (cheap pass@1 for curves; one per copy of a stack).

    Takes :func:`evaluate`'s arguments ``(model, puzzles, prompts, n, max_new_tokens, temperature,
    generator)`` and samples every prompt in one batch.
    """
    return evaluate(*args, **kwargs, chunk=1 << 30, pass1_only=True)
