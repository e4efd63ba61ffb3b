"""Generation (KV-cached, HF ``generate``) of token sequences (scoring: :mod:`llm.scoring`).

``generate`` samples from the model's own distribution at a given temperature: top-k/top-p
defaults of the model's generation config (Qwen3 ships top_k=20, top_p=0.95) are switched off so
the samples, the log-probs and the entropies all refer to the same policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm.data import Example, prompt_ids


@dataclass(frozen=True)
class Rollout:
    """One sampled response: token ids (with EOS when it ended) and decoded text."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    text: str
    truncated: bool = False
    """True when the response hit the length budget without an EOS."""

    @property
    def seq(self) -> tuple[list[int], list[int]]:
        """``(ids, mask)`` for :func:`llm.data.collate` (mask on the response)."""
        return list(self.prompt_ids) + list(self.response_ids), [0] * len(self.prompt_ids) + [1] * len(
            self.response_ids
        )


@torch.no_grad()
def generate(
    model,
    tok,
    examples: list[Example],
    n: int,
    temperature: float = 1.0,
    max_completion_length: int = 64,
    enable_thinking: bool = False,
    greedy: bool = False,
    batch_size: int = 64,
    top_p: float = 1.0,
    top_k: int = 0,
) -> list[list[Rollout]]:
    """``n`` responses per example (``[len(examples)][n]``), sampled (or greedy) with a KV cache."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not greedy and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    device = next(model.parameters()).device
    eos, pad = tok.eos_token_id, tok.pad_token_id
    prompts = [prompt_ids(tok, ex, enable_thinking) for ex in examples]
    flat = [p for p in prompts for _ in range(n)]
    out: list[Rollout] = []
    was_training = model.training
    model.eval()
    for s in range(0, len(flat), batch_size):
        chunk = flat[s : s + batch_size]
        P = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), P), pad, dtype=torch.long)
        att = torch.zeros_like(ids)
        for i, p in enumerate(chunk):  # left padding
            ids[i, P - len(p) :] = torch.tensor(p)
            att[i, P - len(p) :] = 1
        kw = (
            dict(do_sample=False)
            if greedy
            else dict(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
        )
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=att.to(device),
            max_new_tokens=max_completion_length,
            eos_token_id=eos,
            pad_token_id=pad,
            use_cache=True,
            **kw,
        )[:, P:].tolist()
        for p, r in zip(chunk, gen):
            r = r[: r.index(eos) + 1] if eos in r else r
            cut = eos not in r and len(r) >= max_completion_length
            out.append(Rollout(tuple(p), tuple(r), tok.decode(r, skip_special_tokens=True), cut))
    model.train(was_training)
    return [out[i * n : (i + 1) * n] for i in range(len(examples))]


__all__ = ["Rollout", "generate"]
