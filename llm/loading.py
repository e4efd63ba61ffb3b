"""Model and tokenizer loading: a hub id from the local cache, a local directory, or the tiny preset.

Design choices
- One loader (:func:`load_model`) reads every model, including the tiny one, from a directory in
  standard Hugging Face format, so the code path the tests exercise is the one real runs use.
- Nothing is downloaded: hub ids resolve with ``local_files_only=True``; a missing model fails with
  a message saying where it was looked for.
- dtype: bfloat16 on GPU, float32 on CPU. ``trust_remote_code`` is off unless asked.
- The tiny preset (:func:`build_tiny`) is a 2-layer ``Qwen3Config`` model with a character-level
  tokenizer built with the ``tokenizers`` library (the task alphabet, newline, lower-case letters and
  chat special tokens). It is pretrained briefly on the task's broad expression corpus rendered as
  chat turns (every text a valid expression, spread over all strategies) so it has a prior before SFT,
  and it is cached under a hash of its config.
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

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>")
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda (LOCAL_RANK under torchrun) when available, else cpu; else the named device."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available")
    return dev


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on GPU, float32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _resolve_path(model: str) -> str:
    """A local directory as is; a hub id through the local hub cache only (never downloaded)."""
    if Path(model).is_dir():
        return model
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model, local_files_only=True)
    except Exception as e:  # noqa: BLE001 -- any failure means "not available offline"
        raise FileNotFoundError(
            f"model {model!r} is neither a local directory nor in the local hub cache "
            f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}); nothing is downloaded. "
            f"Pass --model <local dir> or --tiny. ({type(e).__name__})"
        ) from None


def load_tokenizer(model: str, trust_remote_code: bool = False):
    """The tokenizer (and chat template) stored with ``model``; pad token set, left padding."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_resolve_path(model), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # generation appends on the right
    if tok.chat_template is None:
        raise ValueError(f"model={model!r}: the tokenizer has no chat template")
    return tok


def load_model(
    model: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
):
    """A causal LM from a local directory or the hub cache, on ``device`` in ``dtype`` (default by device)."""
    from transformers import AutoModelForCausalLM

    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    m = AutoModelForCausalLM.from_pretrained(
        _resolve_path(model), dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True
    )
    if getattr(m.config, "final_logit_softcapping", None):
        raise ValueError(f"model={model!r}: logit soft-capping is not supported by the chunked losses")
    return m.to(device)


def chat_text(tok, messages: list[dict], add_generation_prompt: bool, enable_thinking: bool = False) -> str:
    """Render ``messages`` with the model's chat template (Qwen3 thinking off unless asked)."""
    return tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking
    )


# ---------------------------------------------------------------------------------------------
# The tiny preset
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TinySpec:
    """Everything that determines the tiny model (its hash names the cache directory)."""

    hidden_size: int = 96
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    max_position: int = 128
    pretrain_steps: int = 1500
    pretrain_batch: int = 32
    pretrain_lr: float = 3e-3
    corpus_size: int = 4000
    seed: int = 0
    version: int = 1

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


def _pretrain(model, tok, spec: TinySpec) -> list[float]:
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
    for _ in range(spec.pretrain_steps):
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
    with torch.random.fork_rng():
        torch.set_num_threads(max(1, torch.get_num_threads()))
        model = Qwen3ForCausalLM(config)
        losses = _pretrain(model, tok, spec)
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


def model_path(model: str, tiny: bool, cache_dir: str | Path, pretrain_steps: int = 1500) -> str:
    """The directory/hub id a run loads: the cached tiny model when ``tiny``, else ``model``."""
    return str(build_tiny(cache_dir, TinySpec(pretrain_steps=pretrain_steps))) if tiny else model


__all__ = [
    "TinySpec",
    "build_tiny",
    "build_tiny_tokenizer",
    "chat_text",
    "default_dtype",
    "load_model",
    "load_tokenizer",
    "model_path",
    "resolve_device",
]
