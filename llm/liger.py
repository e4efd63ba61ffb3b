"""Liger-Kernel on request (``--use-liger-kernel``, TRL's name): its Triton RMSNorm, SwiGLU and RoPE
kernels patched into the model (:func:`apply_liger`), and for the methods whose per-token loss is
the plain negative log-likelihood (``sft``, the ``pear_*`` family, whose weights multiply that NLL
afterwards) its fused linear cross-entropy (:func:`liger_token_nll`: the ``lm_head`` matmul and the
cross-entropy in one chunked kernel, no ``[N, V]`` logits kept). Every other method keeps
``--loss-impl``'s path. The package is the ``gpu`` extra (``pip install 'sft-for-rl[gpu]'``),
imported only here and only when asked: a missing package or an unsupported architecture is one
clear error. The kernels are Triton, so CUDA only; equality with the plain step (loss, gradient
norm, parameters) is a ``gpu`` test (tests/llm/test_lean.py). The patch is scoped to the one model
(:func:`apply_liger`). With ``--torch-compile`` the decoder layers are compiled instead of patched
(inductor fuses the norms, SwiGLU and RoPE itself) and Liger gives the fused linear cross-entropy
only (``llm.train.prepare_model``).
"""

from __future__ import annotations

import inspect
import math
import sys

import torch

from llm.chunked import final_hidden, output_weight
from toybench.methods import Method

IGNORE = -100


def _import(name: str):
    try:
        import importlib

        return importlib.import_module(name)
    except ImportError:
        raise RuntimeError(
            "--use-liger-kernel needs the liger-kernel package (pip install 'sft-for-rl[gpu]'; CUDA + Triton)"
        ) from None


def apply_liger(model) -> None:
    """Patch Liger-Kernel's RMSNorm, SwiGLU and RoPE into ``model`` (the loss stays ours), and only
    into ``model``.

    Liger's patch function also rebinds names of the transformers modeling module process-wide: the
    RMSNorm and MLP classes every later model is built from and ``apply_rotary_pos_emb``, which the
    attention layers look up at each call. Those names are put back at once, so a model loaded later
    in the process stays plain (and a later ``torch.compile`` traces no Liger kernel); Liger's RoPE
    then reaches this model's attention layers only, swapped in for the duration of each of their
    calls (:func:`_scoped_global`). The RMSNorm and SwiGLU modules are patched on the instance by
    Liger itself."""
    patches = _import("liger_kernel.transformers.monkey_patch").MODEL_TYPE_TO_APPLY_LIGER_FN
    kind = getattr(model.config, "model_type", "")
    if kind not in patches:
        raise ValueError(f"--use-liger-kernel: Liger-Kernel has no kernels for model type {kind!r}")
    module = sys.modules[type(model).__module__]  # e.g. transformers.models.qwen3.modeling_qwen3
    before = dict(vars(module))
    patches[kind](
        model=model,
        rope=True,
        swiglu=True,
        rms_norm=True,
        cross_entropy=False,
        fused_linear_cross_entropy=False,
    )
    changed = {k: v for k, v in vars(module).items() if k not in before or before[k] is not v}
    for name in changed:  # the process-wide rebinding undone
        if name in before:
            setattr(module, name, before[name])
        else:
            delattr(module, name)
    if "apply_rotary_pos_emb" in changed:
        from llm.train import decoder_layers

        for layer in decoder_layers(model):
            _scoped_global(layer.self_attn, module, "apply_rotary_pos_emb", changed["apply_rotary_pos_emb"])


def _scoped_global(mod: torch.nn.Module, namespace, name: str, value) -> None:
    """``mod``'s forward sees ``namespace.name = value`` while it runs (restored after, also on error)."""
    forward = mod.forward

    def scoped(*args, **kwargs):
        saved = getattr(namespace, name)
        setattr(namespace, name, value)
        try:
            return forward(*args, **kwargs)
        finally:
            setattr(namespace, name, saved)

    mod.forward = scoped


def nll_method(method: str | Method) -> bool:
    """Whether ``method``'s per-token loss is the plain NLL ``-log pi(y_t)`` (sft, pear_*)."""
    kind = Method.parse(method).kind if isinstance(method, str) else method.kind
    return kind == "sft" or kind.startswith("pear_")


def liger_token_nll(model, batch: dict[str, torch.Tensor], chunk_size: int = 1024) -> torch.Tensor:
    """Per-token NLL ``[B, T-1]`` (0 off ``loss_mask``) by Liger's fused linear cross-entropy
    (``reduction="none"``: each token's gradient is scaled by its upstream weight in backward).

    About ``chunk_size`` tokens per chunk, like the chunked loss: Liger's own default bounds a
    chunk's logits by the hidden size (``chunk_mem_const`` 1), which at Qwen3-0.6B's V / H = 148 is
    64 tokens a chunk, each adding into the full fp32 weight gradient. Measured on an H200 (stand-in
    Qwen3-0.6B, 8 x 1024 tokens, Liger's layer kernels on): MFU 11.9% with 64-token chunks, 17.3%
    with 4096-token ones, 19.9% with our chunked loss instead (which takes ~6 GiB more memory)."""
    flce = _import("liger_kernel.transformers.functional").liger_fused_linear_cross_entropy
    h = final_hidden(model, batch["input_ids"], batch["attention_mask"])[:, :-1]  # (B, T-1, D)
    w = output_weight(model)
    mask = batch["loss_mask"]
    targets = batch["targets"].masked_fill(mask == 0, IGNORE)
    B, T, D = h.shape
    kw = {}
    if "chunk_mem_const" in inspect.signature(flce).parameters:  # liger-kernel >= 0.8
        kw["chunk_mem_const"] = max(1, math.ceil(w.shape[0] * chunk_size / (D * max(B * T, 1))))
    loss = flce(h.reshape(B * T, D), w, targets.reshape(-1), ignore_index=IGNORE, reduction="none", **kw)
    return loss.reshape(B, T).to(torch.float32) * mask


__all__ = ["apply_liger", "liger_token_nll", "nll_method"]
