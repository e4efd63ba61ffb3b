"""Rollouts: batched, KV-cached decoding behind a small :class:`Generator` interface, and chunked scoring.

:func:`generate` renders the prompts, hands their ids to a :class:`Generator` (default
:class:`HFGenerator`, a lean decode loop over any Hugging Face causal LM) and wraps the completions as
:class:`Rollout` values. Sampling is on-device: ``logits / temperature``, then top-k, then top-p (the
order and semantics of ``transformers``' warpers), then one exponential-race draw (an exact sample of
the filtered softmax without a host round-trip); the host only looks at the tokens every
``check_every`` steps to stop early once every sequence has emitted an EOS. The model's generation
config is NOT consulted for sampling knobs (Qwen3 ships top_k=20, top_p=0.95): the defaults sample
the model's own distribution at ``temperature`` so samples, log-probs and entropies refer to the
same policy. It IS consulted for EOS: every id of ``generation_config.eos_token_id`` (Qwen3 stops on
``<|im_end|>`` and ``<|endoftext|>``) plus the tokenizer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from llm.config import RULES, ConfigError  # the one rulebook of the llm knobs
from llm.data import Example, prompt_ids
from toybench.config import check


@dataclass(frozen=True)
class Sampling:
    """How to decode: TRL's knob names (``top_k=0`` and ``top_p=1`` switch the filters off)."""

    max_completion_length: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_new_tokens: int = 0
    greedy: bool = False
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int = 0

    def __post_init__(self):
        names = ("max_completion_length", "top_p", "top_k") + (() if self.greedy else ("temperature",))
        check(self, {n: RULES[n] for n in names}, error=ConfigError)
        if not 0 <= self.min_new_tokens <= self.max_completion_length:
            raise ValueError(
                f"min_new_tokens must be in [0, max_completion_length={self.max_completion_length}],"
                f" got {self.min_new_tokens}"
            )
        if not self.eos_token_ids:
            raise ValueError("eos_token_ids must name at least one token")


@dataclass(frozen=True)
class Completion:
    """Generated ids (ending with the EOS when one was emitted); ``truncated`` = hit the budget first."""

    ids: tuple[int, ...]
    truncated: bool


class Generator(Protocol):
    """What the training loops need from a generation engine (the HF loop here; vLLM later).

    ``generate`` returns ``[len(prompts_ids)][n]`` completions sampled from the CURRENT weights of
    the policy; an engine holding its own copy of the weights must be re-synced after every optimizer
    step (see the README's "Plugging in another generation engine").
    """

    def generate(
        self, prompts_ids: list[list[int]], n: int, sampling: Sampling
    ) -> list[list[Completion]]: ...


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k then top-p (nucleus) masking of ``[B, V]`` logits to ``-inf``, as ``transformers`` does.

    top-k keeps every token whose logit ties or beats the k-th largest; top-p drops the smallest
    tokens whose cumulative probability stays ``<= 1 - top_p`` and always keeps the most likely one.
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1)  # ascending
        drop = sorted_logits.softmax(-1).cumsum(-1) <= 1 - top_p
        drop[..., -1] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, sampling: Sampling, rng: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of ``[B, V]`` logits: argmax when greedy, else a draw from the filtered
    ``softmax(logits / temperature)`` by the exponential race ``argmax(p / E)``, ``E ~ Exp(1)``."""
    if sampling.greedy:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / sampling.temperature, sampling.top_k, sampling.top_p)
    probs = logits.softmax(-1)
    race = torch.empty_like(probs).exponential_(generator=rng)
    return (probs / race).argmax(-1)


class HFGenerator:
    """Batched KV-cached decoding with any ``transformers`` causal LM (``DynamicCache``).

    Prompts are left-padded into batches of ``batch_size`` sequences; the loop feeds one token per
    step with explicit position ids, keeps tokens, the finished mask and the attention mask on the
    model's device, and syncs with the host only every ``check_every`` steps (``all finished?``) and
    once at the end. ``rng`` (a ``torch.Generator`` on the model's device) makes draws reproducible
    independently of the global seed; ``None`` uses the global RNG (``torch.manual_seed``).
    """

    def __init__(
        self,
        model,
        batch_size: int = 64,
        check_every: int = 8,
        rng: torch.Generator | None = None,
        fast: bool = True,
    ):
        if batch_size < 1 or check_every < 1:
            raise ValueError(f"batch_size and check_every must be >= 1, got {batch_size}, {check_every}")
        self.model, self.batch_size, self.check_every, self.rng = model, batch_size, check_every, rng
        self.fast = fast

    @torch.no_grad()
    def generate(self, prompts_ids: list[list[int]], n: int, sampling: Sampling) -> list[list[Completion]]:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if any(len(p) == 0 for p in prompts_ids):
            raise ValueError("every prompt needs at least one token")
        flat = [list(p) for p in prompts_ids for _ in range(n)]
        was_training = self.model.training
        self.model.eval()
        try:
            out = [
                c
                for s in range(0, len(flat), self.batch_size)
                for c in self._batch(flat[s : s + self.batch_size], sampling)
            ]
        finally:
            self.model.train(was_training)
        return [out[i * n : (i + 1) * n] for i in range(len(prompts_ids))]

    def _batch(self, prompts: list[list[int]], s: Sampling) -> list[Completion]:
        device = next(self.model.parameters()).device
        B, P, L = len(prompts), max(len(p) for p in prompts), s.max_completion_length
        ids = torch.full((B, P), s.pad_token_id, dtype=torch.long)
        att = torch.zeros((B, P + L), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding
            ids[i, P - len(p) :] = torch.tensor(p)
            att[i, P - len(p) : P] = 1
        ids, att = ids.to(device), att.to(device)
        pos = (att[:, :P].cumsum(-1) - 1).clamp(min=0)  # (B, P) real tokens at 0..len-1
        eos = torch.tensor(s.eos_token_ids, dtype=torch.long, device=device)
        tokens = torch.full((B, L), s.pad_token_id, dtype=torch.long, device=device)
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        step = (_LeanQwen3 if self.fast and _LeanQwen3.supports(self.model) else _HFStep)(
            self.model, B, P + L
        )
        logits = step.prefill(ids, att[:, :P], pos)  # (B, V) at the last prompt position
        nxt_pos = pos[:, -1:] + 1  # (B, 1)
        for t in range(L):
            if t < s.min_new_tokens:
                logits = logits.index_fill(-1, eos, float("-inf"))
            nxt = sample_next(logits, s, self.rng).masked_fill_(finished, s.pad_token_id)
            tokens[:, t] = nxt
            finished |= torch.isin(nxt, eos)
            if t == L - 1 or ((t + 1) % self.check_every == 0 and bool(finished.all())):
                break
            att[:, P + t] = 1
            logits = step.decode(nxt[:, None], att[:, : P + t + 1], nxt_pos)
            nxt_pos = nxt_pos + 1
        return [_cut(row, set(s.eos_token_ids)) for row in tokens.tolist()]


class _HFStep:
    """Any causal LM through its own forward and a ``DynamicCache``."""

    def __init__(self, model, B: int, max_len: int):
        from transformers import DynamicCache

        self.model = model
        self.kv = {_cache_kw(model): DynamicCache(config=model.config), "use_cache": True}

    def prefill(self, ids, att, pos):
        return self.model(
            input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=1, **self.kv
        ).logits[:, -1]

    def decode(self, ids, att, pos):
        return self.model(input_ids=ids, attention_mask=att, position_ids=pos, **self.kv).logits[:, -1]


class _LeanQwen3:
    """Qwen3 decoding through the model's own modules with a preallocated (static) KV cache.

    Same arithmetic as ``Qwen3ForCausalLM.forward`` (RMSNorm, q/k norms, RoPE from the model's
    ``rotary_emb``, grouped-query SDPA, SwiGLU MLP, last-position logits only), minus the per-step
    mask building, cache bookkeeping and output objects that dominate small models. Checked against
    HF ``generate`` greedy output in ``tests/llm/test_rollout.py``; other architectures use
    :class:`_HFStep`.
    """

    @staticmethod
    def supports(model) -> bool:
        c = model.config
        rope = (getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {}).get(
            "rope_type", "default"
        )
        return (
            getattr(c, "model_type", "") == "qwen3"
            and not getattr(c, "use_sliding_window", False)
            and rope == "default"
            and hasattr(model, "model")
            and hasattr(model.model, "rotary_emb")
        )

    def __init__(self, model, B: int, max_len: int):
        self.m, c = model.model, model.config
        self.head = model.lm_head
        p = next(model.parameters())
        hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        shape = (B, c.num_key_value_heads, max_len, hd)
        self.k = [torch.empty(shape, dtype=p.dtype, device=p.device) for _ in self.m.layers]
        self.v = [torch.empty(shape, dtype=p.dtype, device=p.device) for _ in self.m.layers]
        self.hd, self.n = hd, 0  # n = filled cache positions

    def _rope(self, x, cos, sin):  # (B, H, T, hd); cos/sin (B, 1, T, hd)
        h = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., h:], x[..., :h]), -1) * sin

    def _forward(self, ids, mask, pos):
        x = self.m.embed_tokens(ids)  # (B, T, D)
        cos, sin = self.m.rotary_emb(x, pos)
        cos, sin = cos[:, None], sin[:, None]
        B, T, _ = x.shape
        a, b = self.n, self.n + T
        for i, layer in enumerate(self.m.layers):
            att = layer.self_attn
            h = layer.input_layernorm(x)
            q = att.q_norm(att.q_proj(h).view(B, T, -1, self.hd)).transpose(1, 2)
            k = att.k_norm(att.k_proj(h).view(B, T, -1, self.hd)).transpose(1, 2)
            self.k[i][:, :, a:b] = self._rope(k, cos, sin)
            self.v[i][:, :, a:b] = att.v_proj(h).view(B, T, -1, self.hd).transpose(1, 2)
            o = torch.nn.functional.scaled_dot_product_attention(
                self._rope(q, cos, sin),
                self.k[i][:, :, :b],
                self.v[i][:, :, :b],
                attn_mask=mask,
                scale=att.scaling,
                enable_gqa=True,
            )
            x = x + att.o_proj(o.transpose(1, 2).reshape(B, T, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        self.n = b
        return self.head(self.m.norm(x[:, -1]))

    def prefill(self, ids, att, pos):
        T = ids.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
        eye = torch.eye(T, dtype=torch.bool, device=ids.device)  # pad queries see themselves (no NaN rows)
        return self._forward(ids, ((causal & att.bool()[:, None, :]) | eye)[:, None], pos)

    def decode(self, ids, att, pos):
        return self._forward(ids, att.bool()[:, None, None, :], pos)


def _cut(row: list[int], eos: set[int]) -> Completion:
    """The ids up to and including the first EOS, or all of them (truncated) when there is none."""
    for j, t in enumerate(row):
        if t in eos:
            return Completion(tuple(row[: j + 1]), False)
    return Completion(tuple(row), True)


def _cache_kw(model) -> str:
    """The forward keyword of the KV cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def eos_ids(model, tok) -> tuple[int, ...]:
    """Every EOS id of the model's generation config (an int or a list) and the tokenizer, in order."""
    ids: list[int] = []
    gc = getattr(model, "generation_config", None)
    for src in (getattr(gc, "eos_token_id", None), tok.eos_token_id):
        for i in [src] if isinstance(src, int) else list(src or []):
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("neither the generation config nor the tokenizer names an EOS token")
    return tuple(ids)


@dataclass(frozen=True)
class Rollout:
    """One sampled response: token ids (with EOS when it ended), decoded text, and ``truncated``
    (True when it hit ``max_completion_length`` without an EOS; TRL's ``mask_truncated_completions``)."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    text: str
    truncated: bool = False

    @property
    def seq(self) -> tuple[list[int], list[int]]:
        """``(ids, mask)`` for :func:`llm.data.collate` (mask on the response)."""
        return list(self.prompt_ids) + list(self.response_ids), [0] * len(self.prompt_ids) + [1] * len(
            self.response_ids
        )


def generate(
    model,
    tok,
    examples: list[Example],
    n: int,
    *,
    temperature: float = 1.0,
    max_completion_length: int = 64,
    top_p: float = 1.0,
    top_k: int = 0,
    min_new_tokens: int = 0,
    eos_token_ids: tuple[int, ...] | None = None,
    greedy: bool = False,
    batch_size: int = 64,
    enable_thinking: bool = False,
    engine: Generator | None = None,
) -> list[list[Rollout]]:
    """``n`` rollouts per example (``[len(examples)][n]``), sampled (or greedy) by ``engine``.

    ``eos_token_ids=None`` stops on every EOS id of the generation config and the tokenizer;
    ``engine=None`` is :class:`HFGenerator` over ``model`` with ``batch_size`` sequences per batch.
    """
    s = Sampling(
        max_completion_length=max_completion_length,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_new_tokens=min_new_tokens,
        greedy=greedy,
        eos_token_ids=tuple(eos_token_ids) if eos_token_ids is not None else eos_ids(model, tok),
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    engine = engine if engine is not None else HFGenerator(model, batch_size=batch_size)
    prompts = [prompt_ids(tok, ex, enable_thinking) for ex in examples]
    groups = engine.generate(prompts, n, s)
    return [
        [Rollout(tuple(p), c.ids, tok.decode(list(c.ids), skip_special_tokens=True), c.truncated) for c in g]
        for p, g in zip(prompts, groups)
    ]


__all__ = [
    "Completion",
    "Generator",
    "HFGenerator",
    "Rollout",
    "Sampling",
    "eos_ids",
    "filter_logits",
    "generate",
    "sample_next",
]
