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

Speed: for Qwen3 the decode step runs on a static KV cache and, on a GPU, as one CUDA-graph replay
per token (:class:`_StaticQwen3`): a 0.6B model's step is ~400 small kernels, so eager decoding is
launch-bound (the same ~23 ms per step at batch 16 and 128 on an H200). Sampling stays eager beside
the graph (a handful of kernels), so graph and eager decoding draw the same tokens from the same
generator. By default one batch takes every rollout of the call when its cache fits in memory.
"""

from __future__ import annotations

import warnings
import weakref
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
    """Batched KV-cached decoding with any ``transformers`` causal LM.

    Prompts are left-padded into batches; the loop feeds one token per step with explicit position
    ids, keeps tokens, the finished mask and the attention mask on the model's device, and syncs with
    the host only every ``check_every`` steps (``all finished?``) and once at the end.

    Qwen3 (``fast=True``) decodes through :class:`_StaticQwen3`: a preallocated KV cache and one
    fixed-shape step function, captured once in a CUDA graph and replayed every step when the model
    is on CUDA (``graph=False``: eager; CPU is always eager); other architectures, and ``fast=False``, use the
    model's own forward and a ``DynamicCache``. ``batch_size=None`` (the default) takes every
    sequence of the call in one batch when its KV cache fits in half the free memory
    (:func:`auto_batch_size`). ``rng`` (a ``torch.Generator`` on the model's device) makes draws
    reproducible independently of the global seed; ``None`` uses the global RNG.
    """

    def __init__(
        self,
        model,
        batch_size: int | None = None,
        check_every: int = 8,
        rng: torch.Generator | None = None,
        fast: bool = True,
        graph: bool | None = None,
    ):
        if (batch_size is not None and batch_size < 1) or check_every < 1:
            raise ValueError(f"batch_size and check_every must be >= 1, got {batch_size}, {check_every}")
        self.model, self.batch_size, self.check_every, self.rng = model, batch_size, check_every, rng
        self.fast, self.graph = fast, graph

    @torch.no_grad()
    def generate(self, prompts_ids: list[list[int]], n: int, sampling: Sampling) -> list[list[Completion]]:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if any(len(p) == 0 for p in prompts_ids):
            raise ValueError("every prompt needs at least one token")
        flat = [list(p) for p in prompts_ids for _ in range(n)]
        max_len = max(len(p) for p in flat) + sampling.max_completion_length
        bs = self.batch_size or auto_batch_size(self.model, len(flat), max_len)
        was_training = self.model.training
        self.model.eval()
        try:
            out = [c for s in range(0, len(flat), bs) for c in self._batch(flat[s : s + bs], sampling)]
        finally:
            self.model.train(was_training)
            _StaticQwen3.release_if_large(self.model)
        return [out[i * n : (i + 1) * n] for i in range(len(prompts_ids))]

    def _stepper(self, B: int, max_len: int):
        """The decode engine of one batch: a (cached) static Qwen3 decoder, else the HF forward."""
        if self.fast and _StaticQwen3.supports(self.model):
            device = next(self.model.parameters()).device
            graph = device.type == "cuda" and self.graph is not False  # no CUDA graphs on CPU
            return _StaticQwen3.get(self.model, B, max_len, graph)
        return _HFStep(self.model, B, max_len)

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
        step = self._stepper(B, P + L)
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


def auto_batch_size(model, n: int, max_len: int, frac: float = 0.5) -> int:
    """The largest batch <= ``n`` whose KV cache (``max_len`` positions, every layer, K and V, in the
    compute dtype: the autocast dtype under autocast, else the weights') and fp32 sampling buffers
    (~6 ``[B, V]`` tensors) fit in ``frac`` of the free memory of the model's device (CUDA: free plus
    what torch holds cached; CPU: available RAM)."""
    c, p = getattr(model, "config", None), next(model.parameters())
    if c is None:  # not a transformers model: nothing to size the cache by
        return n
    hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    dev = p.device.type
    cdt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else p.dtype
    elt = torch.tensor([], dtype=cdt).element_size()
    per_seq = 2 * c.num_hidden_layers * kv_heads * hd * max_len * elt + 6 * 4 * c.vocab_size
    if p.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(p.device)
        free += torch.cuda.memory_reserved(p.device) - torch.cuda.memory_allocated(p.device)
    else:
        import os

        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(1, min(n, int(frac * free) // per_seq))


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


#: per model, the most recent static decoder (its KV cache and CUDA graph), reused while the batch
#: shape, the compute dtype and the parameters' storage stay the same
_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: a decoder whose buffers (cache + weight shadows) exceed this fraction of the device's memory is
#: freed after each call (training needs the room more; re-capturing costs a few decode steps)
KEEP_FRACTION = 0.1


class _StaticQwen3:
    """Qwen3 decoding through the model's own weights with a static KV cache and a CUDA graph.

    Same arithmetic as ``Qwen3ForCausalLM.forward`` (RMSNorm, q/k norms, RoPE, grouped-query SDPA,
    SwiGLU MLP, last-position logits), minus the per-step mask building, cache bookkeeping and output
    objects that dominate small models. The matrix products read fused weight buffers ([q; k; v],
    [gate; up]) in the compute dtype (the autocast dtype under autocast, where norms and the residual
    stream stay in the master dtype as autocast leaves them), copied from the parameters at every
    ``generate`` call, so an optimizer step is never missed.

    Every decode step is one function of fixed-shape buffers (``ids``, ``pos``, the write position
    ``cur``, the key mask over the whole cache): on CUDA it is captured once in a CUDA graph and
    replayed, one launch per token instead of ~a thousand (the idea of gpt-fast's static cache +
    graph; on one H200 at batch 128, 5.8 ms per token against 19 ms eager and 33 ms for HF
    ``generate``).
    The cache length is rounded up to a multiple of 64 so one graph serves batches of similar prompt
    lengths. Checked against HF ``generate`` in ``tests/llm/test_rollout.py``; graph == eager in
    ``tests/llm/test_gpu.py``.
    """

    BUCKET = 64

    @staticmethod
    def supports(model) -> bool:
        c = model.config
        rope = (getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {}).get(
            "rope_type", "default"
        )
        return (
            getattr(c, "model_type", "") == "qwen3"
            and not getattr(c, "use_sliding_window", False)
            and not getattr(c, "attention_bias", False)
            and getattr(c, "hidden_act", "silu") == "silu"
            and rope == "default"
            and hasattr(model, "model")
            and hasattr(model.model, "rotary_emb")
        )

    @classmethod
    def get(cls, model, B: int, max_len: int, graph: bool) -> _StaticQwen3:
        """The cached decoder of ``model`` when it fits this batch, else a new one (replacing it)."""
        p = next(model.parameters())
        cdt = torch.get_autocast_dtype(p.device.type) if torch.is_autocast_enabled(p.device.type) else p.dtype
        L = -(-max_len // cls.BUCKET) * cls.BUCKET
        key = (B, L, cdt, graph, tuple(t.data_ptr() for t in model.parameters()))
        dec = _DECODERS.get(model)
        if dec is None or dec.key != key:
            _DECODERS.pop(model, None)  # free the old cache and graph first
            dec = _DECODERS[model] = cls(model, B, L, cdt, graph, key)
        dec.refresh()
        return dec

    def __init__(self, model, B: int, max_len: int, cdt: torch.dtype, graph: bool, key: tuple):
        c, p = model.config, next(model.parameters())
        self.ref, self.key, self.cdt, self.use_graph = weakref.ref(model), key, cdt, graph
        self.hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.H, self.Hkv = c.num_attention_heads, c.num_key_value_heads
        self.G = self.H // self.Hkv
        self.w, self.src = self._weights(model)
        shape = (B, self.Hkv, max_len, self.hd)
        z = dict(dtype=cdt, device=p.device)  # zeros: masked slots must be finite (0 * NaN = NaN)
        self.k = [torch.zeros(shape, **z) for _ in model.model.layers]
        self.v = [torch.zeros(shape, **z) for _ in model.model.layers]
        self.ids = torch.zeros((B, 1), dtype=torch.long, device=p.device)
        self.pos = torch.zeros((B, 1), dtype=torch.long, device=p.device)
        self.cur = torch.zeros(1, dtype=torch.long, device=p.device)  # the cache slot written next
        self.mask = torch.zeros((B, 1, 1, max_len), dtype=torch.bool, device=p.device)
        self.graph, self.logits = None, None

    def _weights(self, model):
        """Per layer ``qkv`` ([q; k; v] rows: one product), ``gu`` ([gate; up]), ``o``, ``down`` in
        the compute dtype, ``qk_norm`` (per head: q_norm's weight on the H query heads, k_norm's on
        the KV heads; the norms' dtype), and the LM head; with the (copy target, parameter) pairs
        :meth:`refresh` copies at every call, so the buffers the graph reads are never stale."""
        cdt, w, src = self.cdt, [], []
        for layer in model.model.layers:
            a, mlp = layer.self_attn, layer.mlp
            qkv = (a.q_proj.weight, a.k_proj.weight, a.v_proj.weight)
            gu = (mlp.gate_proj.weight, mlp.up_proj.weight)
            nw = a.q_norm.weight
            lw = {
                "qkv": torch.empty(
                    (sum(t.shape[0] for t in qkv), qkv[0].shape[1]), dtype=cdt, device=nw.device
                ),
                "gu": torch.empty((sum(t.shape[0] for t in gu), gu[0].shape[1]), dtype=cdt, device=nw.device),
                "o": torch.empty_like(a.o_proj.weight, dtype=cdt),
                "down": torch.empty_like(mlp.down_proj.weight, dtype=cdt),
                "qk_norm": torch.empty((self.H + self.Hkv, self.hd), dtype=nw.dtype, device=nw.device),
            }
            src += list(zip(lw["qkv"].split([t.shape[0] for t in qkv]), qkv))
            src += list(zip(lw["gu"].split([t.shape[0] for t in gu]), gu))
            src += [(lw["o"], a.o_proj.weight), (lw["down"], mlp.down_proj.weight)]
            src += [
                (lw["qk_norm"][: self.H], nw.expand(self.H, -1)),
                (lw["qk_norm"][self.H :], a.k_norm.weight.expand(self.Hkv, -1)),
            ]
            w.append(lw)
        head = torch.empty_like(model.lm_head.weight, dtype=cdt)
        return w + [head], src + [(head, model.lm_head.weight)]

    @staticmethod
    def release_if_large(model) -> None:
        """Drop ``model``'s decoder when its buffers exceed :data:`KEEP_FRACTION` of device memory."""
        dec = _DECODERS.get(model)
        if dec is None:
            return
        held = sum(t.numel() * t.element_size() for t in dec.k + dec.v + [d for d, _ in dec.src])
        dev = dec.ids.device
        if dev.type == "cuda":
            total = torch.cuda.get_device_properties(dev).total_memory
        else:
            import os

            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if held > KEEP_FRACTION * total:
            del _DECODERS[model]

    def refresh(self) -> None:
        """Copy the current weights into the buffers the step (and its graph) reads."""
        dst, src = zip(*self.src)
        torch._foreach_copy_(list(dst), list(src))

    @staticmethod
    def _norm(mod, x):
        """HF's Qwen3RMSNorm from the module's weight and epsilon (not its forward, which Liger or
        compile may have replaced): normalise in fp32, back to ``x``'s dtype, times the weight."""
        return mod.weight * _StaticQwen3._rms(
            x, getattr(mod, "variance_epsilon", None) or getattr(mod, "eps", 1e-6)
        )

    @staticmethod
    def _rms(x, eps):
        h = x.float()
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    def _rope(self, x, cos, sin):  # x (..., hd); cos/sin broadcast to it
        h = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., h:], x[..., :h]), -1) * sin

    def _cos_sin(self, m, x, pos):
        """HF's default RoPE, ``(B, T, hd)`` cos and sin in ``x``'s dtype."""
        r = m.rotary_emb
        freqs = pos[..., None].float() * r.inv_freq.float()  # (B, T, hd/2)
        emb = torch.cat((freqs, freqs), -1)
        return (emb.cos() * r.attention_scaling).to(x.dtype), (emb.sin() * r.attention_scaling).to(x.dtype)

    def _layers(self, x, cos, sin, attend):
        """The decoder stack on ``x (B, T, D)``; ``attend(i, q, k, v)`` stores k, v and attends.

        Fewer, larger kernels than the HF forward (on a GPU their launches are the cost): one
        product for q, k and v, one for gate and up, and the q/k norms and RoPE applied to the q
        and k heads together; the same arithmetic per element."""
        m, F = self.ref().model, torch.nn.functional
        B, T, _ = x.shape
        nq = (self.H + self.Hkv) * self.hd
        eps = getattr(m.layers[0].self_attn.q_norm, "variance_epsilon", None) or 1e-6
        for i, layer in enumerate(m.layers):
            w = self.w[i]
            qkv = F.linear(self._norm(layer.input_layernorm, x).to(self.cdt), w["qkv"])  # (B, T, (H+2Hkv) hd)
            qk = w["qk_norm"] * self._rms(qkv[..., :nq].view(B, T, -1, self.hd), eps)  # (B, T, H+Hkv, hd)
            qk = self._rope(qk, cos, sin).to(self.cdt)
            v = qkv[..., nq:].view(B, T, -1, self.hd)
            o = attend(i, qk[:, :, : self.H], qk[:, :, self.H :], v)  # (B, T, H * hd)
            x = x + F.linear(o, w["o"])
            g, u = F.linear(self._norm(layer.post_attention_layernorm, x).to(self.cdt), w["gu"]).chunk(2, -1)
            x = x + F.linear(F.silu(g) * u, w["down"])
        return F.linear(self._norm(m.norm, x[:, -1]).to(self.cdt), self.w[-1])  # (B, V)

    def prefill(self, ids, att, pos):
        """Eager forward of the ``(B, P)`` prompts into cache slots ``0..P-1``; the last logits."""
        m, (B, T) = self.ref().model, ids.shape
        causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
        eye = torch.eye(T, dtype=torch.bool, device=ids.device)  # pad queries see themselves (no NaN rows)
        mask = ((causal & att.bool()[:, None, :]) | eye)[:, None]  # (B, 1, T, T)

        def attend(i, q, k, v):
            self.k[i][:, :, :T] = k.transpose(1, 2)
            self.v[i][:, :, :T] = v.transpose(1, 2)
            o = torch.nn.functional.scaled_dot_product_attention(  # KV heads expanded: any backend
                q.transpose(1, 2),
                self.k[i][:, :, :T].repeat_interleave(self.G, 1),
                self.v[i][:, :, :T].repeat_interleave(self.G, 1),
                attn_mask=mask,
                scale=self.ref().model.layers[i].self_attn.scaling,
            )
            return o.transpose(1, 2).reshape(B, T, -1)

        with torch.autocast(ids.device.type, enabled=False):
            x = m.embed_tokens(ids)  # (B, T, D)
            cos, sin = self._cos_sin(m, x, pos)
            logits = self._layers(x, cos[:, :, None], sin[:, :, None], attend)
        self.mask.zero_()
        self.mask[:, 0, 0, :T] = att.bool()
        self.pos.copy_(pos[:, -1:] + 1)
        self.cur.fill_(T)
        return logits

    def _step(self, advance: bool = True):
        """One decode step on the static buffers: token ``ids`` at ``pos`` into slot ``cur``."""
        m, B = self.ref().model, self.ids.shape[0]
        self.mask.index_fill_(-1, self.cur, True)
        bias = torch.zeros(self.mask.shape, dtype=self.cdt, device=self.mask.device)
        bias.masked_fill_(~self.mask, float("-inf"))  # one additive mask for every layer

        def attend(i, q, k, v):  # q (B, 1, H, hd) -> (B, Hkv, G, hd): the G heads sharing a KV head
            self.k[i].index_copy_(2, self.cur, k.transpose(1, 2))
            self.v[i].index_copy_(2, self.cur, v.transpose(1, 2))
            o = torch.nn.functional.scaled_dot_product_attention(
                q.reshape(B, -1, self.G, self.hd),
                self.k[i],
                self.v[i],
                attn_mask=bias,
                scale=m.layers[i].self_attn.scaling,
            )
            return o.reshape(B, 1, -1)

        with torch.autocast(self.ids.device.type, enabled=False):
            x = m.embed_tokens(self.ids)  # (B, 1, D)
            cos, sin = self._cos_sin(m, x, self.pos)
            logits = self._layers(x, cos[:, :, None], sin[:, :, None], attend)
        if advance:
            self.pos.add_(1)
            self.cur.add_(1)
        return logits

    def _capture(self) -> None:
        """Warm up on a side stream (library handles, kernel choice), then record one step."""
        s = torch.cuda.Stream(self.ids.device)
        s.wait_stream(torch.cuda.current_stream(self.ids.device))
        with torch.cuda.stream(s):
            for _ in range(2):  # no advance: the real first step rewrites the same slot
                self._step(advance=False)
        torch.cuda.current_stream(self.ids.device).wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._step()

    def decode(self, ids, att=None, pos=None):
        """Feed the sampled ``(B, 1)`` tokens; returns the next ``(B, V)`` logits (a buffer the next
        call overwrites when graphed). ``att`` and ``pos`` (the loop's) are tracked in the static
        buffers already."""
        self.ids.copy_(ids)
        if not self.use_graph:
            return self._step()
        if self.graph is None:
            try:
                self._capture()
            except RuntimeError as e:  # a kernel that cannot be captured: decode eagerly instead
                warnings.warn(f"CUDA-graph capture failed ({e}); decoding eagerly", stacklevel=2)
                self.graph, self.use_graph = None, False
                torch.cuda.synchronize()
                return self._step()
        self.graph.replay()
        return self.logits


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
    batch_size: int | None = None,
    enable_thinking: bool = False,
    engine: Generator | None = None,
) -> list[list[Rollout]]:
    """``n`` rollouts per example (``[len(examples)][n]``), sampled (or greedy) by ``engine``.

    ``eos_token_ids=None`` stops on every EOS id of the generation config and the tokenizer;
    ``engine=None`` is :class:`HFGenerator` over ``model`` with ``batch_size`` sequences per batch
    (``None`` or 0: all ``len(examples) * n`` in one batch when memory allows, :func:`auto_batch_size`).
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
    engine = engine if engine is not None else HFGenerator(model, batch_size=batch_size or None)
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
    "auto_batch_size",
    "eos_ids",
    "filter_logits",
    "generate",
    "sample_next",
]
