"""A nanoGPT-style causal transformer for the tiny-transformer scale, with a KV-cached sampler.

Read top to bottom: config -> attention -> block -> model -> sampling -> log-prob/entropy helpers.

Design choices (and where this departs from nanoGPT)
- Pre-LayerNorm blocks, learned absolute positions, GELU MLP, tied input/output embeddings, no
  dropout and no biases: the model is tiny (tens of thousands of parameters) and trained for
  minutes on a CPU, so regularisers only add noise.
- One masking convention for every stage: prompts are LEFT-padded with ``<pad>`` to a common
  length and the model sees the pads as ordinary tokens (in pretraining, SFT, RL and evaluation
  alike), so no attention mask is needed and batched sampling is a plain loop over positions.
  Losses count completion tokens only, through the ``mask [B, T]`` of the loss contract.
- The KV cache is a preallocated ``[B, H, T_max, D]`` buffer per layer; the prefill uses
  causal attention, each decoding step attends its one query to every cached key.
- Log-probabilities and entropies come from ``toybench.losses.logprobs`` and
  ``toybench.metrics.entropy``: no loss or metric is re-implemented here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toybench import losses, metrics
from toybench.config import require

__all__ = ["GPTConfig", "GPT", "KVCache", "generate", "completion_logprobs", "completion_entropy"]


@dataclass(frozen=True)
class GPTConfig:
    """Size of the tiny causal transformer."""

    vocab_size: int = 24
    """number of token ids (the task tokenizer's ``vocab_size``)."""
    block_size: int = 32
    """maximum sequence length T (prompt + completion)."""
    n_layer: int = 2
    """number of transformer blocks."""
    n_head: int = 4
    """attention heads per block."""
    n_embd: int = 64
    """residual stream width; must be divisible by ``n_head``."""

    def __post_init__(self) -> None:
        require(self, at_least=dict.fromkeys(("vocab_size", "block_size", "n_layer", "n_head", "n_embd"), 1))
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


class KVCache:
    """Preallocated keys/values of every layer, ``[B, H, T_max, D]`` each, filled up to ``pos``."""

    def __init__(self, cfg: GPTConfig, batch: int, device: torch.device, dtype: torch.dtype) -> None:
        shape = (cfg.n_layer, batch, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # (B, T, C) each
        q, k, v = (
            t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v)
        )  # (B, H, T, D)
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            p = cache.pos
            cache.k[layer, :, :, p : p + T] = k
            cache.v[layer, :, :, p : p + T] = v
            k, v = cache.k[layer, :, :, : p + T], cache.v[layer, :, :, : p + T]  # (B, H, p+T, D)
            if T == 1:  # one new query sees every cached key
                y = F.scaled_dot_product_attention(q, k, v)
            else:  # prefill (p == 0) or chunk: causal with an offset
                i = torch.arange(T, device=x.device)[:, None] + p
                allowed = torch.arange(p + T, device=x.device)[None, :] <= i  # (T, p+T)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=False)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, bias=False)
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.out = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """Causal transformer: ``forward(idx [B, T]) -> logits [B, T, V]``."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith(("attn.proj.weight", "out.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """Logits ``[B, T, V]`` of the next token at every position of ``idx [B, T]`` (long).

        With ``cache``, ``idx`` continues the cached prefix (positions ``cache.pos ...``) and the
        cache advances by T.
        """
        if idx.ndim != 2 or idx.dtype != torch.long:
            raise ValueError(f"idx must be a long tensor [B, T], got {idx.dtype} {tuple(idx.shape)}")
        B, T = idx.shape
        p0 = cache.pos if cache is not None else 0
        if p0 + T > self.cfg.block_size:
            raise ValueError(f"idx is longer ({p0 + T}) than block_size {self.cfg.block_size}")
        pos = torch.arange(p0, p0 + T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.pos += T
        return F.linear(self.ln_f(x), self.wte.weight)  # (B, T, V), tied embeddings


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def generate(
    model: GPT,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    eos_id: int = 2,
    pad_id: int = 0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> tuple[Tensor, Tensor]:
    """Sample completions of equal-length (left-padded) prompts.

    Args:
        prompt: ``[B, P]`` long.
        max_new_tokens: N >= 1; temperature > 0 (pi^(1/temperature), renormalised).
        use_cache: False recomputes the full prefix every step (the reference the KV cache is
            tested and benchmarked against).
    Returns:
        ``(completion [B, N], mask [B, N])``: tokens after the first eos are ``pad_id``; mask = 1
        on generated tokens up to and including eos.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    B, P = prompt.shape
    if P + max_new_tokens > model.cfg.block_size:
        raise ValueError(
            f"prompt length {P} + max_new_tokens {max_new_tokens} > block_size {model.cfg.block_size}"
        )
    w = next(model.parameters())
    cache = KVCache(model.cfg, B, w.device, w.dtype) if use_cache else None
    seq = prompt
    logits = model(prompt, cache)[:, -1]  # (B, V)
    done = torch.zeros(B, dtype=torch.bool, device=prompt.device)
    out, mask = [], []
    for step in range(max_new_tokens):
        probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B, V)
        tok = torch.multinomial(probs, 1, generator=generator)[:, 0]  # (B,)
        out.append(torch.where(done, torch.full_like(tok, pad_id), tok))
        mask.append(~done)
        done = done | (tok == eos_id)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if cache is not None:
            logits = model(tok[:, None], cache)[:, -1]
        else:
            seq = torch.cat([seq, tok[:, None]], dim=1)
            logits = model(seq)[:, -1]
    completion = torch.stack(out, 1)
    m = torch.stack(mask, 1).to(prompt.dtype)
    n = completion.shape[1]
    if n < max_new_tokens:  # every row finished early: pad to N
        completion = F.pad(completion, (0, max_new_tokens - n), value=pad_id)
        m = F.pad(m, (0, max_new_tokens - n), value=0)
    return completion, m


# ---------------------------------------------------------------------------------------------
# Log-prob / entropy helpers (through toybench.losses / metrics)
# ---------------------------------------------------------------------------------------------
def _next_token_logits(model: nn.Module, prompt: Tensor, completion: Tensor) -> Tensor:
    """Logits predicting each completion token, ``[B, N, V]`` (one forward on prompt+completion)."""
    seq = torch.cat([prompt, completion], dim=1)  # (B, P+N)
    P = prompt.shape[1]
    return model(seq[:, :-1])[:, P - 1 :]  # (B, N, V)


def completion_logprobs(model: nn.Module, prompt: Tensor, completion: Tensor) -> tuple[Tensor, Tensor]:
    """``(logp [B, N], logits [B, N, V])`` of ``completion`` given ``prompt`` (with gradient).

    ``logp`` is ``toybench.losses.logprobs`` of the completion tokens; mask it with the
    completion mask.
    """
    logits = _next_token_logits(model, prompt, completion)  # (B, N, V)
    return losses.logprobs(logits, completion), logits


@torch.no_grad()
def completion_entropy(
    model: nn.Module, prompt: Tensor, completion: Tensor, temperature: float = 1.0
) -> Tensor:
    """Per-token entropy ``[B, N]`` of the model's next-token distribution along ``completion``."""
    return metrics.entropy(_next_token_logits(model, prompt, completion), temperature=temperature)
