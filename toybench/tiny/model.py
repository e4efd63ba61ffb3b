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
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toybench import losses, metrics
from toybench.config import require

__all__ = [
    "GPTConfig",
    "GPT",
    "GPTStack",
    "KVCache",
    "clip_grad_norm_per_seed",
    "completion_entropy",
    "completion_logprobs",
    "generate",
    "seed_forward",
]


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
        return self.proj(_attend(self.qkv(x), self.n_head, cache, layer))


def _attend(qkv: Tensor, n_head: int, cache: KVCache | None, layer: int) -> Tensor:
    """Causal attention of ``qkv [B, T, 3C]`` (optionally through the cache) -> ``[B, T, C]``."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in qkv.split(C, dim=2))  # (B, H, T, D)
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
            i = torch.arange(T, device=qkv.device)[:, None] + p
            allowed = torch.arange(p + T, device=qkv.device)[None, :] <= i  # (T, p+T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    return y.transpose(1, 2).reshape(B, T, C)


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
        pos = _positions(self.cfg, idx, 2, cache)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.pos += idx.shape[-1]
        return F.linear(self.ln_f(x), self.wte.weight)  # (B, T, V), tied embeddings


def _positions(cfg: GPTConfig, idx: Tensor, ndim: int, cache: KVCache | None) -> Tensor:
    """Checks ``idx`` (long, ``ndim`` axes, fits the block) and returns its positions ``[T]``."""
    if idx.ndim != ndim or idx.dtype != torch.long:
        want = "[B, T]" if ndim == 2 else "[S, B, T]"
        raise ValueError(f"idx must be a long tensor {want}, got {idx.dtype} {tuple(idx.shape)}")
    T = idx.shape[-1]
    p0 = cache.pos if cache is not None else 0
    if p0 + T > cfg.block_size:
        raise ValueError(f"idx is longer ({p0 + T}) than block_size {cfg.block_size}")
    return torch.arange(p0, p0 + T, device=idx.device)


class GPTStack(nn.Module):
    """S independent copies of one :class:`GPT` architecture, run as ONE model with a seed axis.

    Every weight of the GPT becomes a ``[S, ...]`` parameter (same names, in ``weights``);
    ``forward(idx [S, B, T]) -> logits [S, B, T, V]`` computes copy ``s`` on ``idx[s]`` with batched
    matrix products, so S seeds cost one set of kernel launches instead of S. Copies never mix: the
    gradient of ``sum_s loss_s`` with respect to copy s is that of ``loss_s`` alone, AdamW is
    elementwise, and :func:`clip_grad_norm_per_seed` clips each copy by its own norm. This is the
    seed-vectorised path of ``toybench.tiny.pipeline.run_seeds``; :meth:`unstack` gives copy s back
    as a plain GPT.
    """

    def __init__(self, models: Sequence[GPT]) -> None:
        super().__init__()
        if not models:
            raise ValueError("GPTStack needs at least one model")
        self.cfg = models[0].cfg
        if any(m.cfg != self.cfg for m in models):
            raise ValueError("every stacked model must have the same GPTConfig")
        self.names = [n for n, _ in models[0].named_parameters()]
        per_model = [dict(m.named_parameters()) for m in models]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([d[n].detach() for d in per_model]).clone()) for n in self.names
        )

    @property
    def seeds(self) -> int:
        """S, the number of stacked copies."""
        return self.weights[0].shape[0]

    def unstack(self, s: int) -> GPT:
        """Copy ``s`` as a plain :class:`GPT` (detached; the global RNG is not touched)."""
        with torch.device("meta"):
            gpt = GPT(self.cfg)
        gpt = gpt.to_empty(device=self.weights[0].device).to(self.weights[0].dtype)
        gpt.load_state_dict({n: w[s].detach().clone() for n, w in zip(self.names, self.weights)})
        return gpt

    def forward(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """Logits ``[S, B, T, V]`` of ``idx [S, B, T]``; a cache holds ``S * B`` rows."""
        pos = _positions(self.cfg, idx, 3, cache)
        S, B, T = idx.shape
        if S != self.seeds:
            raise ValueError(f"idx has {S} seeds, the stack {self.seeds}")
        w = dict(zip(self.names, self.weights))
        V = self.cfg.vocab_size

        def linear(x: Tensor, name: str) -> Tensor:  # (S, B, T, in) @ (S, out, in)^T, one bmm
            return torch.bmm(x.reshape(S, B * T, -1), w[name].mT).view(S, B, T, -1)

        def norm(x: Tensor, name: str) -> Tensor:
            return F.layer_norm(x, x.shape[-1:]) * w[name][:, None, None, :]

        offset = (torch.arange(S, device=idx.device) * V)[:, None, None]  # copy s reads rows s V ...
        x = F.embedding(idx + offset, w["wte.weight"].flatten(0, 1)) + w["wpe.weight"][:, pos][:, None]
        for layer in range(self.cfg.n_layer):
            b = f"blocks.{layer}."
            qkv = linear(norm(x, b + "ln1.weight"), b + "attn.qkv.weight")
            y = _attend(qkv.flatten(0, 1), self.cfg.n_head, cache, layer).view(S, B, T, -1)
            x = x + linear(y, b + "attn.proj.weight")
            x = x + linear(F.gelu(linear(norm(x, b + "ln2.weight"), b + "fc.weight")), b + "out.weight")
        if cache is not None:
            cache.pos += T
        return linear(norm(x, "ln_f.weight"), "wte.weight")  # (S, B, T, V), tied embeddings


def seed_forward(model: GPT | GPTStack, idx: Tensor, cache: KVCache | None = None) -> Tensor:
    """Logits ``[..., T, V]`` of seed-major ``idx [S, B, T]`` (or any leading axes for a plain GPT).

    A :class:`GPTStack` runs copy s on ``idx[s]``; a plain GPT runs on every row (the loop path with
    S = 1, or a shared frozen model such as the base applied to every seed's samples).
    """
    if isinstance(model, GPTStack):
        return model(idx, cache)
    return model(idx.reshape(-1, idx.shape[-1]), cache).view(*idx.shape, -1)


@torch.no_grad()
def clip_grad_norm_per_seed(model: GPT | GPTStack, max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_`` for a plain GPT; for a stack, each copy by its own norm."""
    if not isinstance(model, GPTStack):
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        return
    grads = [p.grad for p in model.weights if p.grad is not None]
    if not grads:
        return
    S = model.seeds
    total = torch.stack([g.reshape(S, -1).norm(dim=1) for g in grads], dim=1).norm(dim=1)  # (S,)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(S, *([1] * (g.ndim - 1))))


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def generate(
    model: GPT | GPTStack,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    eos_id: int = 2,
    pad_id: int = 0,
    generator: torch.Generator | Sequence[torch.Generator | None] | None = None,
    use_cache: bool = True,
) -> tuple[Tensor, Tensor]:
    """Sample completions of equal-length (left-padded) prompts.

    Args:
        prompt: ``[B, P]`` long for a GPT; ``[S, B, P]`` for a :class:`GPTStack`, with
            ``generator`` then a sequence of S generators (copy s samples from its own).
        max_new_tokens: N >= 1; temperature > 0 (pi^(1/temperature), renormalised).
        use_cache: False recomputes the full prefix every step (the reference the KV cache is
            tested and benchmarked against).
    Returns:
        ``(completion, mask)`` of shape ``[B, N]`` (``[S, B, N]`` for a stack): tokens after the first
        eos are ``pad_id``; mask = 1 on generated tokens up to and including eos.

    Seed s draws exactly what a plain GPT with its generator draws alone: one ``multinomial`` per
    step until all of ITS rows have finished (a finished seed draws nothing more while others run).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    stacked = isinstance(model, GPTStack)
    x = prompt if stacked else prompt[None]  # (S, B, P)
    gens = list(generator) if stacked and generator is not None else [generator] * (len(x) if stacked else 1)
    S, B, P = x.shape
    if len(gens) != S:
        raise ValueError(f"a stack of {S} seeds needs {S} generators, got {len(gens)}")
    if P + max_new_tokens > model.cfg.block_size:
        raise ValueError(
            f"prompt length {P} + max_new_tokens {max_new_tokens} > block_size {model.cfg.block_size}"
        )
    w = next(model.parameters())
    cache = KVCache(model.cfg, S * B, w.device, w.dtype) if use_cache else None
    seq = x
    logits = seed_forward(model, x, cache)[:, :, -1]  # (S, B, V)
    done = torch.zeros(S, B, dtype=torch.bool, device=prompt.device)
    live = list(range(S))  # seeds with an unfinished row
    out, mask = [], []
    for step in range(max_new_tokens):
        probs = torch.softmax(logits.float() / temperature, dim=-1)  # (S, B, V)
        tok = torch.full((S, B), pad_id, dtype=torch.long, device=prompt.device)
        for s in live:
            tok[s] = torch.multinomial(probs[s], 1, generator=gens[s])[:, 0]  # (B,)
        out.append(torch.where(done, torch.full_like(tok, pad_id), tok))
        mask.append(~done)
        done = done | (tok == eos_id)
        live = [s for s, finished in zip(live, done[live].all(dim=1).tolist()) if not finished]
        if step == max_new_tokens - 1 or not live:
            break
        if cache is not None:
            logits = seed_forward(model, tok[:, :, None], cache)[:, :, -1]
        else:
            seq = torch.cat([seq, tok[:, :, None]], dim=2)
            logits = seed_forward(model, seq)[:, :, -1]
    completion = torch.stack(out, -1)
    m = torch.stack(mask, -1).to(prompt.dtype)
    n = completion.shape[-1]
    if n < max_new_tokens:  # every row finished early: pad to N
        completion = F.pad(completion, (0, max_new_tokens - n), value=pad_id)
        m = F.pad(m, (0, max_new_tokens - n), value=0)
    return (completion, m) if stacked else (completion[0], m[0])


# ---------------------------------------------------------------------------------------------
# Log-prob / entropy helpers (through toybench.losses / metrics)
# ---------------------------------------------------------------------------------------------
def _next_token_logits(model: GPT | GPTStack, prompt: Tensor, completion: Tensor) -> Tensor:
    """Logits predicting each completion token, ``[..., N, V]`` (one forward on prompt+completion)."""
    seq = torch.cat([prompt, completion], dim=-1)  # (..., P+N)
    P = prompt.shape[-1]
    return seed_forward(model, seq[..., :-1])[..., P - 1 :, :]  # (..., N, V)


def completion_logprobs(model: GPT | GPTStack, prompt: Tensor, completion: Tensor) -> tuple[Tensor, Tensor]:
    """``(logp [..., N], logits [..., N, V])`` of ``completion`` given ``prompt`` (with gradient).

    Shapes ``[B, ...]`` for a GPT (any leading axes), ``[S, B, ...]`` for a :class:`GPTStack`.
    ``logp`` is ``toybench.losses.logprobs`` of the completion tokens; mask it with the
    completion mask.
    """
    logits = _next_token_logits(model, prompt, completion)  # (..., N, V)
    logp = losses.logprobs(
        logits.reshape(-1, *logits.shape[-2:]), completion.reshape(-1, completion.shape[-1])
    )
    return logp.view(completion.shape), logits


@torch.no_grad()
def completion_entropy(
    model: GPT | GPTStack, prompt: Tensor, completion: Tensor, temperature: float = 1.0
) -> Tensor:
    """Per-token entropy ``[..., N]`` of the model's next-token distribution along ``completion``."""
    return metrics.entropy(_next_token_logits(model, prompt, completion), temperature=temperature)
