"""Puzzles -> tensors, and sampled tensors -> rewards (the one masking convention of this scale).

A sequence is ``[pad ... pad, bos, prompt chars] [completion chars, eos, pad ...]``: prompts are
left-padded to ``P`` and completions right-padded to ``N``; ``mask [B, N]`` is 1 on completion
characters and the eos. Every stage (pretraining, SFT, GRPO, evaluation) uses this layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from toybench.tasks.arith import PROMPT_END, CharTokenizer, Puzzle, expert_solution, format_prompt, verify

__all__ = ["SeqData", "encode_prompts", "encode_pairs", "expert_data", "text_pairs_data", "rewards"]

TOK = CharTokenizer()


@dataclass(frozen=True)
class SeqData:
    """Teacher-forcing data: ``prompt [M, P]``, ``completion [M, N]``, ``mask [M, N]``."""

    prompt: Tensor
    completion: Tensor
    mask: Tensor

    def __len__(self) -> int:
        return self.prompt.shape[0]

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.prompt[idx], self.completion[idx], self.mask[idx]


def encode_prompts(puzzles: list[Puzzle], P: int) -> Tensor:
    """Left-padded prompt ids ``[len(puzzles), P]`` (bos + compact prompt)."""
    return _left_pad([TOK.encode(format_prompt(p), bos=True) for p in puzzles], P)


def _left_pad(rows: list[list[int]], P: int) -> Tensor:
    out = torch.full((len(rows), P), TOK.pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r) > P:
            raise ValueError(f"a prompt has {len(r)} tokens > P = {P}")
        out[i, P - len(r) :] = torch.tensor(r, dtype=torch.long)
    return out


def encode_pairs(prompts: list[str], completions: list[str], P: int, N: int) -> SeqData:
    """Teacher-forcing tensors of (prompt text, completion text) pairs; completion gets an eos."""
    if len(prompts) != len(completions):
        raise ValueError(f"completions must match prompts in length, {len(completions)} != {len(prompts)}")
    p = _left_pad([TOK.encode(s, bos=True) for s in prompts], P)
    c = torch.full((len(completions), N), TOK.pad_id, dtype=torch.long)
    m = torch.zeros((len(completions), N), dtype=torch.long)
    for i, s in enumerate(completions):
        ids = TOK.encode(s, eos=True)
        if len(ids) > N:
            raise ValueError(f"completion {s!r} needs {len(ids)} tokens > N = {N}")
        c[i, : len(ids)] = torch.tensor(ids)
        m[i, : len(ids)] = 1
    return SeqData(p, c, m)


def text_pairs_data(texts: list[str], P: int, N: int) -> SeqData:
    """``prompt + completion`` texts (e.g. the pretraining corpus) split at the prompt end; texts
    whose completion does not fit in N tokens are dropped."""
    prompts, comps = [], []
    for t in texts:
        head, _, tail = t.partition(PROMPT_END)
        if len(tail) + 1 <= N:
            prompts.append(head + PROMPT_END)
            comps.append(tail)
    return encode_pairs(prompts, comps, P, N)


def expert_data(puzzles: list[Puzzle], P: int, N: int) -> tuple[SeqData, list[Puzzle]]:
    """Expert demonstrations on the puzzles the canonical expert solves (and those puzzles)."""
    solved = [(p, s) for p in puzzles if (s := expert_solution(p)) is not None and len(s) + 1 <= N]
    if not solved:
        raise ValueError("the expert solves none of the puzzles")
    data = encode_pairs([format_prompt(p) for p, _ in solved], [s for _, s in solved], P, N)
    return data, [p for p, _ in solved]


def decode_completions(completion: Tensor) -> list[str]:
    """Texts of sampled completions ``[B, N]`` (up to the first eos)."""
    return [TOK.decode(row) for row in completion.tolist()]


def rewards(puzzles: list[Puzzle], completion: Tensor) -> tuple[Tensor, list[str]]:
    """0/1 rewards ``[B]`` from the verifier, and the decoded texts. A completion that never emits
    eos (truncated) gets 0."""
    if len(puzzles) != completion.shape[0]:
        raise ValueError(f"puzzles ({len(puzzles)}) must match completion rows ({completion.shape[0]})")
    texts = decode_completions(completion)
    finished = (completion == TOK.eos_id).any(dim=1).tolist()
    r = [verify(p, t).reward if f else 0.0 for p, t, f in zip(puzzles, texts, finished)]
    return torch.tensor(r), texts
