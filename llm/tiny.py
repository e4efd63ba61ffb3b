"""The tiny preset: a small Qwen3-architecture model and a character tokenizer, built locally.

:func:`build_tiny` makes a 3-layer ``Qwen3Config`` model with a character-level tokenizer built with
the ``tokenizers`` library (the task alphabet, newline, lower-case letters and chat special tokens).
It is pretrained briefly on the task's broad expression corpus rendered as chat turns (every text a
valid expression, spread over all strategies) so it has a prior before SFT (200 steps of batch 64
at lr 6e-3 on one thread, with a progress bar: ~1.5 minutes on 2 heavily loaded CPU cores, so a cold
``pipeline --tiny --quick`` took 3.0x the warm one; the old 1500 steps of batch 32 at lr 3e-3 took
10-40 minutes and end lower: mean pretraining loss of the last 50 steps 0.376 against 0.552 here; raise
``--tiny-pretrain-steps`` for a stronger base), and it is cached in
standard Hugging Face format under a hash of its :class:`TinySpec`, so :func:`llm.loading.load_model`
reads it like any other model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from llm.loading import chat_text

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>")
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Everything that determines the tiny model (its hash names the cache directory)."""

    hidden_size: int = 96
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    max_position: int = 128
    pretrain_steps: int = 200
    pretrain_batch: int = 64
    pretrain_lr: float = 6e-3
    corpus_size: int = 4000
    seed: int = 0
    version: int = 2

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def build_tiny_tokenizer():
    """Character-level fast tokenizer for the task alphabet (``tokenizers`` library), HF-wrapped."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from toybench.tasks.arith import ALPHABET

    chars = list(dict.fromkeys(ALPHABET + "\n" + "abcdefghijklmnopqrstuvwxyz"))
    vocab = {s: i for i, s in enumerate(SPECIALS)} | {c: i + len(SPECIALS) for i, c in enumerate(chars)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(list(SPECIALS))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>"],
    )
    tok.chat_template = TINY_CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def _pretrain(model, tok, spec: TinySpec, progress: bool = True) -> list[float]:
    """Brief next-token pretraining on chat-rendered corpus texts; returns the loss curve."""
    from toybench.losses import reduce, sft_loss
    from toybench.tasks.arith import PROMPT_END, pretraining_corpus

    texts = []
    for t in pretraining_corpus(spec.corpus_size, seed=spec.seed + 1):
        prompt, expr = t.split(PROMPT_END, 1)
        msgs = [{"role": "user", "content": prompt + PROMPT_END}, {"role": "assistant", "content": expr}]
        texts.append(chat_text(tok, msgs, add_generation_prompt=False))
    rng = random.Random(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.pretrain_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, spec.pretrain_steps) / spec.pretrain_steps))
    )
    losses = []
    model.train()
    from tqdm import tqdm

    bar = tqdm(range(spec.pretrain_steps), desc="[tiny] pretraining the tiny base", disable=not progress)
    for _ in bar:
        batch = tok(rng.sample(texts, spec.pretrain_batch), return_tensors="pt", padding=True)
        ids, att = batch["input_ids"], batch["attention_mask"]  # (B, T)
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()  # (B, T-1, V)
        loss = reduce(sft_loss(logits, ids[:, 1:]), att[:, 1:].float(), "token_mean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses


def build_tiny(cache_dir: str | Path, spec: TinySpec | None = None, verbose: bool = True) -> Path:
    """Build (or reuse) the tiny pretrained model + tokenizer; returns its HF-format directory."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    spec = spec or TinySpec()
    path = Path(cache_dir) / f"tiny-qwen3-{spec.key()}"
    if (path / "model.safetensors").exists() and (path / "tokenizer.json").exists():
        return path
    tok = build_tiny_tokenizer()
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.hidden_size // spec.num_heads,
        max_position_embeddings=spec.max_position,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(spec.seed)
    threads = torch.get_num_threads()
    with torch.random.fork_rng():
        # one thread: the matmuls are tiny (96 wide, 64 x ~37 tokens), and intra-op threads on a
        # shared CPU cost more than they give (measured: ~0.4 s/step on 1 thread vs ~1 s/step on 2
        # on the same loaded 2-core machine)
        torch.set_num_threads(1)
        model = Qwen3ForCausalLM(config)
        if verbose:
            print(f"[tiny] building the tiny base model (once; cached in {path})")
        try:
            losses = _pretrain(model, tok, spec, progress=verbose)
        finally:
            torch.set_num_threads(threads)
    if verbose:
        print(f"[tiny] pretrained {spec.pretrain_steps} steps: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "pretrain_loss.json").write_text(json.dumps({"spec": asdict(spec), "loss": losses}))
    if path.exists():  # another process won the race: keep theirs
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, path)
    return path


def model_path(model: str, tiny: bool, cache_dir: str | Path, pretrain_steps: int = 200) -> str:
    """The directory/hub id a run loads: the cached tiny model (``llm.tiny``) if ``tiny``, else ``model``."""
    if not tiny:
        return model
    return str(build_tiny(cache_dir, TinySpec(pretrain_steps=pretrain_steps)))


__all__ = ["SPECIALS", "TINY_CHAT_TEMPLATE", "TinySpec", "build_tiny", "build_tiny_tokenizer", "model_path"]
