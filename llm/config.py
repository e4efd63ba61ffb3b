"""Typed run configurations of the ``llm`` commands (flat dataclasses, parsed by tyro in ``llm.cli``).

Design: one flat dataclass per command; the fields every command shares live in :class:`RunConfig`
and are inherited (one level, no hierarchy beyond that). ``quick`` shrinks every budget to a smoke
test; :func:`resolve` applies it so the saved ``config.json`` holds the numbers that actually ran.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

METHODS = ("sft", "entropy_sft", "gift", "curio", "pear", "dft")
DEFAULT_CACHE = os.environ.get("SFTRL_CACHE", str(Path.home() / ".cache" / "sft_for_rl"))


@dataclass
class RunConfig:
    """Fields shared by every ``llm`` command."""

    model: str = "Qwen/Qwen3-0.6B"
    """Hub id (read from the local hub cache, never downloaded) or a local directory in HF format."""
    tiny: bool = False
    """Use the tiny Qwen3-architecture model and character tokenizer built (and cached) locally."""
    quick: bool = False
    """Smoke-test budgets (a few steps, a few prompts): the whole command runs in seconds on a CPU."""
    device: str = "auto"
    """``cpu``, ``cuda``, ``cuda:1`` ... or ``auto`` (cuda when available). Under torchrun: LOCAL_RANK."""
    out: str = "out/llm"
    """Output directory: resolved config, metrics JSONL, checkpoints, final model."""
    seed: int = 0
    """The one seed: data order, sampling, initialisation of the tiny model."""
    resume: bool = False
    """Continue from ``<out>/checkpoint`` if it exists (same result as an uninterrupted run)."""
    trust_remote_code: bool = False
    """Allow model code from the hub directory (off by default: it runs arbitrary Python)."""
    enable_thinking: bool = False
    """Qwen3 chat template: let the model think (``<think>``); off by default."""
    data: str = "arith"
    """``arith`` (the generated make-target puzzles) or a JSONL file of {prompt, answer} / {messages}."""
    prompt_style: str = "auto"
    """arith prompt style: compact (``3 5 7>22:``), instruct (a sentence), auto (compact iff tiny)."""
    heldout_data: str = ""
    """Optional JSONL of held-out expert examples (default: a split of ``data``)."""
    n_train: int = 512
    """Number of training prompts (arith) / maximum examples read from ``data``."""
    n_heldout: int = 64
    """Held-out prompts for the SFT loss / reward probes and for evaluation."""
    chunk_size: int = 1024
    """Tokens per chunk of the chunked-vocabulary loss (peak memory ~ chunk_size * V floats)."""
    cache_dir: str = DEFAULT_CACHE
    """Where the tiny model is cached (by config hash)."""
    tiny_pretrain_steps: int = 1500
    """Pretraining steps of the tiny model (part of its cache key)."""
    max_new_tokens: int = 24
    """Generation budget per response."""
    stop_after: int = -1
    """Stop (as if interrupted) after this many optimizer steps; -1 = never. For resume tests."""


@dataclass
class SFTConfig(RunConfig):
    """Supervised fine-tuning with one of the METHODS, all losses from ``toybench.losses``."""

    method: str = "sft"
    """One of sft, entropy_sft, gift, curio, pear, dft."""
    steps: int = 200
    """Optimizer steps."""
    batch_size: int = 16
    """Global batch (sequences per optimizer step, summed over ranks and micro-batches)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (batch_size must be divisible by grad_accum * world size)."""
    lr: float = 3e-4
    """Peak learning rate (AdamW), cosine decay to ``lr * min_lr_ratio`` after a linear warm-up."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr``."""
    warmup: int = 10
    """Warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    clip: float = 1.0
    """Gradient-norm clip."""
    reduction: str = "token_mean"
    """token_mean | seq_mean | constant | sum (applied over the global batch)."""
    entropy_coef: float = 0.1
    """entropy_sft: lambda in -log pi(y) - lambda H(pi)."""
    gift_beta: float = 5.0
    """GIFT inverse temperature beta (paper default 20 is ~SFT for confident models)."""
    gift_smooth: float = 0.0
    """GIFT label smoothing s of the base distribution."""
    curio_alpha: float = 1.0
    """CurioSFT alpha of the squared log-ratio term."""
    curio_ema_every: int = 5
    """CurioSFT: update the EMA teacher every this many steps."""
    curio_ema_keep: float = 0.01
    """CurioSFT: teacher <- keep * teacher + (1 - keep) * model (paper: 0.01)."""
    pear_level: str = "token"
    """PEAR weight level: sequence | token | block."""
    pear_block_size: int = 4
    """PEAR block size (block level)."""
    pear_gamma: float = 0.999
    """PEAR discount gamma."""
    behavior_model: str = ""
    """PEAR behaviour policy (model path); default: the base model. Log-probs are collected once."""
    eval_every: int = 25
    """Held-out SFT loss and reward every this many steps (the decoupling T2 probe)."""
    eval_prompts: int = 16
    """Prompts of the held-out reward probe (one greedy sample each)."""
    ckpt_every: int = 50
    """Checkpoint every this many steps (and at the end)."""


@dataclass
class GRPOConfig(RunConfig):
    """GRPO with group advantages, clipped surrogate, optional KL, from ``toybench.losses``."""

    steps: int = 100
    """Optimizer steps (one generation round each)."""
    prompts_per_step: int = 16
    """Prompts per step (global; each prompt's group stays on one rank)."""
    group_size: int = 8
    """G samples per prompt."""
    temperature: float = 1.0
    """Sampling temperature."""
    lr: float = 1e-4
    """Learning rate (AdamW, cosine schedule)."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr``."""
    warmup: int = 0
    """Warm-up steps."""
    clip: float = 1.0
    """Gradient-norm clip."""
    mu: int = 1
    """Optimisation passes over each generated batch (1 = on-policy; ratio = 1 at the first)."""
    eps_low: float = 0.2
    """Clip range below 1."""
    eps_high: float = 0.28
    """Clip range above 1 (DAPO clip-higher)."""
    kl_coef: float = 0.0
    """KL-to-reference coefficient (0 = no reference model)."""
    kl_kind: str = "k3"
    """k1 | k3."""
    adv_scale: str = "group"
    """group | batch | none (Dr. GRPO)."""
    reduction: str = "token_mean"
    """token_mean (DAPO) | seq_mean (GRPO) | constant (Dr. GRPO) | sum."""
    pass_k: int = 4
    """k of the logged pass@k (<= group_size)."""
    eval_every: int = 10
    """Held-out expert SFT loss every this many steps (the decoupling T1 probe)."""
    ckpt_every: int = 25
    """Checkpoint every this many steps."""


@dataclass
class EvalConfig(RunConfig):
    """Unbiased pass@k over n samples per prompt, entropy, distinct correct answers."""

    n_samples: int = 16
    """Samples per prompt (n of the unbiased pass@k estimator)."""
    ks: tuple[int, ...] = (1, 4, 16)
    """k values of pass@k (each <= n_samples)."""
    temperature: float = 1.0
    """Sampling temperature."""


@dataclass
class PipelineConfig(RunConfig):
    """base -> SFT(method) -> GRPO -> eval for each method; a comparison table and figures."""

    methods: tuple[str, ...] = METHODS
    """SFT methods to compare."""
    sft_steps: int = 200
    """SFT optimizer steps per method."""
    sft_lr: float = 3e-4
    """SFT learning rate."""
    grpo_steps: int = 100
    """GRPO steps per method."""
    grpo_lr: float = 1e-4
    """GRPO learning rate."""
    group_size: int = 8
    """GRPO group size."""
    n_samples: int = 16
    """Evaluation samples per prompt."""
    ks: tuple[int, ...] = (1, 4, 16)
    """Evaluation pass@k."""
    gift_beta: float = 5.0
    """GIFT beta."""
    entropy_coef: float = 0.1
    """entropy_sft lambda."""


QUICK = {
    "n_train": 32,
    "n_heldout": 8,
    "steps": 6,
    "batch_size": 8,
    "eval_every": 3,
    "eval_prompts": 4,
    "ckpt_every": 3,
    "prompts_per_step": 4,
    "group_size": 4,
    "pass_k": 2,
    "n_samples": 4,
    "ks": (1, 2, 4),
    "sft_steps": 6,
    "grpo_steps": 3,
    "max_new_tokens": 16,
    "warmup": 1,
}


def resolve(cfg: RunConfig) -> RunConfig:
    """Apply ``quick`` and ``tiny`` presets and validate; returns a new config (the one that runs)."""
    if cfg.quick:
        names = {f.name for f in dataclasses.fields(cfg)}
        cfg = dataclasses.replace(cfg, **{k: v for k, v in QUICK.items() if k in names})
    method = getattr(cfg, "method", None)
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    for m in getattr(cfg, "methods", ()):
        if m not in METHODS:
            raise ValueError(f"methods: {m!r} is not one of {METHODS}")
    for name in ("steps", "batch_size", "grad_accum", "group_size", "n_samples", "chunk_size"):
        if hasattr(cfg, name) and getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if isinstance(cfg, SFTConfig) and cfg.batch_size % cfg.grad_accum:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by grad_accum={cfg.grad_accum}")
    if isinstance(cfg, GRPOConfig) and not 1 <= cfg.pass_k <= cfg.group_size:
        raise ValueError(f"pass_k must be in [1, group_size={cfg.group_size}], got {cfg.pass_k}")
    if isinstance(cfg, EvalConfig | PipelineConfig) and max(cfg.ks) > cfg.n_samples:
        raise ValueError(f"ks={cfg.ks}: every k must be <= n_samples={cfg.n_samples}")
    if cfg.prompt_style == "auto":
        cfg = dataclasses.replace(cfg, prompt_style="compact" if cfg.tiny else "instruct")
    if cfg.prompt_style not in ("compact", "instruct"):
        raise ValueError(f"prompt_style must be auto, compact or instruct, got {cfg.prompt_style!r}")
    if getattr(cfg, "temperature", 1.0) <= 0:
        raise ValueError(f"temperature must be > 0, got {cfg.temperature}")
    return cfg


def save_config(cfg: RunConfig, out: str | Path) -> Path:
    """Write the resolved config as ``config.json`` beside the results."""
    path = Path(out) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"kind": type(cfg).__name__, **dataclasses.asdict(cfg)}, indent=2))
    return path


__all__ = [
    "METHODS",
    "EvalConfig",
    "GRPOConfig",
    "PipelineConfig",
    "RunConfig",
    "SFTConfig",
    "resolve",
    "save_config",
]
