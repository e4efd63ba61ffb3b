"""Model and tokenizer loading: a hub id from the local cache, a local directory, or the tiny preset.

Design choices
- One loader (:func:`load_model`) reads every model, including the tiny one, from a directory in
  standard Hugging Face format, so the code path the tests exercise is the one real runs use.
- Nothing is downloaded: hub ids resolve with ``local_files_only=True``; a missing model fails with
  a message saying where it was looked for.
- dtype: weights are loaded in float32 (the master copy AdamW updates) and the forward runs under
  bf16 autocast on GPU (:func:`precision`); pure bf16 weights only with ``dtype="bf16-pure"`` (a
  warning: AdamW steps below ~1/256 of a weight are rounded away, so at lr 1e-6..2e-5 most weights
  never move). ``trust_remote_code`` is off unless asked. A run saves ``final/`` in the dtype the
  base model is stored in (:func:`stored_dtype`: bf16 for Qwen3, 1.2 GB rather than 2.4).
- The tiny preset is built and pretrained in :mod:`llm.tiny`; :func:`llm.tiny.model_path` returns
  its cached directory, which :func:`load_model` then reads like any other (imports run one way:
  ``llm.tiny`` uses this module, never the reverse).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch


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
    """The dtype weights are stored in by default: float32 everywhere (the master copy)."""
    return torch.float32


@dataclass(frozen=True)
class Precision:
    """How a run stores weights (``param_dtype``) and runs the forward (``autocast_dtype`` or None)."""

    name: str
    param_dtype: torch.dtype
    autocast_dtype: torch.dtype | None
    device_type: str

    def autocast(self):
        """The forward/loss context: bf16 autocast for ``bf16-mixed``, nothing otherwise."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)


def precision(dtype: str, device: torch.device | str) -> Precision:
    """``auto`` -> bf16-mixed on GPU, fp32 on CPU; ``bf16-pure`` warns (see the module docstring)."""
    device = torch.device(device)
    if dtype == "auto":
        dtype = "bf16-mixed" if device.type == "cuda" else "fp32"
    if dtype == "fp32":
        return Precision(dtype, torch.float32, None, device.type)
    if dtype == "bf16-mixed":
        return Precision(dtype, torch.float32, torch.bfloat16, device.type)
    if dtype == "bf16-pure":
        warnings.warn(
            "dtype=bf16-pure: weights and AdamW updates in bf16; updates smaller than ~1/256 of a weight "
            "are rounded away (at lr 1e-6 almost no weight moves). Use bf16-mixed (fp32 master weights).",
            stacklevel=2,
        )
        return Precision(dtype, torch.bfloat16, None, device.type)
    raise ValueError(f"dtype must be one of auto, fp32, bf16-mixed, bf16-pure, got {dtype!r}")


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


def stored_dtype(model: str) -> torch.dtype:
    """The dtype ``model``'s weights are stored in (``config.json``'s ``dtype``/``torch_dtype``; bf16
    for the Qwen3 hub checkpoints, float32 for the tiny model); float32 when the config names none.
    Runs save ``final/`` in this dtype (training itself keeps fp32 master weights)."""
    conf = Path(_resolve_path(model)) / "config.json"
    name = json.loads(conf.read_text()) if conf.is_file() else {}
    name = name.get("dtype") or name.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


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


__all__ = [
    "Precision",
    "chat_text",
    "precision",
    "default_dtype",
    "load_model",
    "load_tokenizer",
    "resolve_device",
    "stored_dtype",
]
