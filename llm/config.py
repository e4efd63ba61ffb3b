"""Typed run configurations of the ``llm`` commands (flat dataclasses, parsed by tyro in ``llm.cli``).

Design: one flat dataclass per command; the fields every command shares live in :class:`RunConfig`
and are inherited, and each stage's own knobs live in :class:`SFTKnobs` / :class:`GRPOKnobs`, so
``llm pipeline`` nests the SAME knobs as ``--sft.*`` / ``--grpo.*`` (and builds each stage's config from
those objects, :func:`stage_config`). Methods are ``toybench.methods`` specs and RL knobs carry TRL's
names, as at every scale. ``quick`` shrinks every budget to a smoke test, filling only the flags absent
from the command line (:func:`toybench.config.fill_quick`, the rule of both CLIs); the saved
``config.json`` holds the numbers that actually ran (``quick_filled`` records what it filled).

Validation uses the rulebook of both CLIs (:mod:`toybench.config`): :data:`RULES` (field name ->
:class:`Rule`) and the cross-field checks of :func:`validate`, which is pure (no disk, no torch, no
kernels; whether ``--loss-impl fused`` can run a method is a fact of its family); :func:`check_world`
then looks at the world once (device, files, reward specs, ``out``). Both raise :class:`ConfigError`
naming the flag (``--sft.lr must be > 0, got -1.0``); the CLI prints that one line and exits 2 before
any model or data is loaded. :func:`resolve` runs the whole sequence once: a resolved config carries
its fingerprint and is returned as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from toybench import config as rulebook
from toybench.config import POSITIVE, Rule, at_least, check, fill_quick, one_of, within
from toybench.losses import REDUCE_MODES
from toybench.methods import Method, loss_type_reduction

#: The default comparison, spelled as at every scale. GIFT runs at beta 5 here: the code default
#: beta 20 is ~SFT for confident models (docs/methods.md §1.3).
METHODS = ("sft", "entropy_sft@0.1", "gift@5", "curio", "pear_token", "dft")
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
    """``arith`` (the generated make-target puzzles) or a JSONL file in a TRL format: ``messages``,
    ``prompt``/``completion`` (standard or conversational), ``text``, or GSM8K-style
    ``prompt``/``answer``; other columns (``answer``...) go to the rewards."""
    prompt_style: str = "auto"
    """arith prompt style: compact (``3 5 7>22:``), instruct (a sentence), auto (compact iff tiny)."""
    heldout_data: str = ""
    """Optional JSONL of held-out examples (probes and evaluation); else see ``heldout_frac``."""
    n_heldout: int = 64
    """Held-out prompts (arith), or the maximum read from ``heldout_data`` / split off by ``heldout_frac``."""
    chunk_size: int = 1024
    """Tokens per chunk of the chunked-vocabulary loss (peak memory ~ chunk_size * V floats)."""
    cache_dir: str = DEFAULT_CACHE
    """Where the tiny model is cached (by config hash)."""
    tiny_pretrain_steps: int = 200
    """Pretraining steps of the tiny model (part of its cache key)."""
    max_completion_length: int | None = None
    """Generation budget per response (TRL's name). Default (None): 512 for a real model (TRL's),
    24 with ``--tiny`` (its arithmetic answers are a few characters)."""
    stop_after: int = -1
    """Stop (as if interrupted) after this many optimizer steps; -1 = never. For resume tests."""
    # --- precision and memory (llmtrain) ---
    dtype: str = "auto"
    """auto | fp32 | bf16-mixed | bf16-pure. auto: bf16-mixed on GPU (fp32 master weights and
    optimizer state, bf16 autocast forward), fp32 on CPU (CPU bf16 autocast is slower than fp32 here
    and the tiny model gains nothing). bf16-pure keeps the weights themselves in bf16 (warns: updates
    below ~1/256 of a weight are rounded away)."""
    gradient_checkpointing: str = "auto"
    """auto | on | off: recompute each decoder layer's activations in backward. auto: on only when
    the estimated activations of the largest micro-batch would not fit in the free GPU memory beside
    the gradients and AdamW state (:func:`llm.train.checkpointing_needed`); off on CPU."""
    use_liger_kernel: bool = False
    """Liger-Kernel's Triton kernels (TRL's name): RMSNorm, SwiGLU and RoPE patched into the model,
    and for the NLL methods (sft, pear_*) its fused linear cross-entropy as the SFT loss (other
    methods keep ``--loss-impl``'s). Needs a CUDA device and the ``gpu`` extra (``pip install
    'sft-for-rl[gpu]'``). Same loss and gradient up to float rounding. The patch touches this run's
    model only. With ``--torch-compile``: the layers are compiled, and Liger gives the loss only."""
    torch_compile: bool = False
    """``torch.compile`` each decoder layer (the loss and sampling stay eager). Pays on a GPU for
    long runs (the first steps compile); same loss and gradient up to float rounding. Combines with
    ``--use-liger-kernel`` (compiled layers + Liger's fused linear cross-entropy)."""
    save_optimizer: bool = False
    """Keep the optimizer state (and the EMA teacher) in the checkpoint of the LAST step too, and
    every earlier checkpoint full (the inverse of TRL's ``save_only_model``). Default: checkpoints
    before the last step carry what resuming needs; at the end the run keeps lean weight-only
    checkpoints in the base model's dtype and ``final/`` hard-linked to the last one."""
    peak_tflops: float = 0.0
    """Peak FLOP/s of the device (TFLOP/s) for the logged ``perf/mfu``; 0 = look the CUDA device up
    in :data:`llm.log.PEAK_TFLOPS` (bf16 dense), no MFU on CPU."""
    max_length: int = 1024
    """SFT: prompt + completion tokens per example; longer examples are cut on the right (TRL's
    ``max_length``), counted and logged as ``sft/truncated``. 0 = no limit."""

    # --- llmio: data, rewards, logging, checkpoints ---------------------------------------------
    n_train: int | None = None
    """Training examples: arith prompts (None = 512), or the first N of ``data`` (None = the whole file)."""
    heldout_frac: float = 0.0
    """Fraction of ``data`` held out (its last lines, at most ``n_heldout``) when ``heldout_data`` is
    not given; 0 = none (probes skipped, evaluation runs on ``data``)."""
    last_turn_only: bool = False
    """Multi-turn ``messages``: train only the last assistant turn (default: every assistant turn)."""
    reward: tuple[str, ...] = ()
    """Reward functions, TRL ``reward_funcs`` style: ``answer`` (final-number equality with the
    ``answer`` column), ``arith`` (the puzzle verifier) or ``module:function`` / ``path/file.py:function``
    called as ``f(completions=[...], prompts=[...], **columns) -> list[float]``. Default: the built-in
    verifier of the data (arith, or ``answer`` when the data has an answer column)."""
    reward_weights: tuple[float, ...] = ()
    """Weights of the ``reward`` functions (default: all 1); the reward is their weighted sum."""
    report_to: str = "none"
    """Logging sinks beside ``metrics.jsonl``: none | tensorboard | wandb (comma-separated; wandb only
    if installed, offline unless WANDB_MODE says otherwise)."""
    log_completions_every: int = 25
    """Write sample completions (prompt, completion, reward) every this many steps; 0 = never."""
    save_total_limit: int = 2
    """Step checkpoints kept (the newest K intact ones)."""
    overwrite: bool = False
    """Replace an earlier run in ``out`` (without it, or ``--resume``, an existing run is an error)."""
    quick_filled: Annotated[tuple[str, ...], tyro.conf.Suppress] = ()
    """Set by :func:`resolve`: the fields ``quick`` filled (not a flag)."""
    resolved: Annotated[str, tyro.conf.Suppress] = ""
    """Set by :func:`resolve`: the fingerprint of the config it returned (not a flag)."""


@dataclass
class SFTKnobs:
    """The SFT stage's own knobs (``llm sft`` flat; ``llm pipeline --sft.*``)."""

    steps: int = 200
    """Optimizer steps."""
    batch_size: int = 16
    """Global batch (sequences per optimizer step, summed over ranks and micro-batches)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (batch_size must be divisible by grad_accum * world size)."""
    lr: float | None = None
    """Peak learning rate (AdamW), cosine decay to ``lr * min_lr_ratio`` after a linear warm-up.
    Default (None): 1e-5 (the usual full fine-tuning recipe of a ~0.6B model); 3e-4 with ``--tiny``
    (the tiny preset's own: a randomly initialised 1M-parameter model needs larger steps)."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr``."""
    warmup: int = 10
    """Warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    clip: float = 1.0
    """Gradient-norm clip."""
    reduction: str = "token_mean"
    """SFT loss reduction: token_mean | seq_mean | constant | sum (applied over the global batch)."""
    loss_impl: str = "chunked"
    """How the full-vocabulary SFT loss is computed: chunked (default: chunks of logits recomputed in
    backward, ``toybench.losses`` run unchanged, so every method spec and dtype path is the
    reference) | fused (``llm.fused``: one vocabulary sweep per chunk with analytic gradients, fewer
    matmuls, nothing V-wide kept; sft, dft, pear, entropy_sft without top_k, gift, curio with the
    default temperature constants) | naive (full ``[B, T, V]`` logits: small vocabularies only).
    All three give the same loss and update up to float rounding (tested). chunked stays the default
    on a GPU too: fused saves memory but was measured slower there (issue 20, one H200, Qwen3-0.6B,
    8 x 1024 tokens: MFU 6.9% fused vs 13.0% chunked for sft; likely cause, reasoned from the code
    and not profiled: its in-place sweeps over row blocks of each chunk launch many small kernels
    where chunked launches a few large ones). Use fused where memory, not speed, is the limit."""
    behavior_model: str = ""
    """PEAR behaviour policy (model path); default: the base model. Log-probs are collected once."""
    eval_every: int = 25
    """Held-out SFT loss and reward every this many steps (the decoupling T2 probe)."""
    eval_prompts: int = 16
    """Prompts of the held-out reward probe (one greedy sample each)."""
    ckpt_every: int = 50
    """Checkpoint every this many steps (and at the end)."""


@dataclass
class SFTConfig(SFTKnobs, RunConfig):
    """Supervised fine-tuning with one ``toybench.methods`` spec, all losses from ``toybench.losses``."""

    method: str = "sft"
    """SFT method spec, spelled as at every scale (``toybench.methods``): sft | dft | entropy_sft@0.1 |
    gift@5 | curio | pear_token | pear_block | pear_sequence, with keyword overrides of any constant
    (``gift@5,smooth=0.01``, ``curio,ema_every=5,ema_keep=0.01``, ``pear_block,block_size=4``). GIFT:
    write ``gift@5`` at this scale (``gift`` alone is the code default beta = 20, ~SFT for confident
    models)."""


@dataclass
class GRPOKnobs:
    """The GRPO stage's own knobs (``llm grpo`` flat; ``llm pipeline --grpo.*``). TRL's names."""

    steps: int = 100
    """Optimizer steps (one generation round each)."""
    prompts_per_step: int = 16
    """Prompts per step (global; each prompt's group stays on one rank)."""
    num_generations: int = 8
    """G samples per prompt (TRL's name)."""
    temperature: float = 1.0
    """Sampling temperature."""
    lr: float | None = None
    """Learning rate (AdamW, cosine schedule). Default (None): 1e-6 (TRL's GRPO default); 1e-4 with
    ``--tiny`` (the tiny preset's own)."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr``."""
    warmup: int = 0
    """Warm-up steps."""
    clip: float = 1.0
    """Gradient-norm clip."""
    num_iterations: int = 1
    """Optimisation passes over each generated batch (TRL's name; 1 = on-policy, ratio = 1)."""
    epsilon: float = 0.2
    """Clip range below 1 (TRL's name)."""
    epsilon_high: float = 0.28
    """Clip range above 1 (TRL's name; DAPO clip-higher)."""
    kl_coef: float = 0.0
    """KL-to-reference coefficient (0 = no reference model). TRL calls it ``beta``; here ``beta`` is
    GIFT's inverse temperature."""
    kl_kind: str = "k3"
    """k1 | k3."""
    adv_scale: str = "group"
    """group | batch | none (Dr. GRPO)."""
    loss_type: str = "dapo"
    """Normaliser (TRL's names): dapo | bnpo (token mean over the global batch) | grpo (per-sequence
    mean, then mean) | dr_grpo (sum / (sequences x max_completion_length)) | sum."""
    pass_k: int = 4
    """k of the logged pass@k (<= num_generations)."""
    eval_every: int = 10
    """Held-out expert SFT loss every this many steps (the decoupling T1 probe)."""
    ckpt_every: int = 25
    """Checkpoint every this many steps."""
    # --- memory, masking, sampling (llmtrain) ---
    micro_batch_size: int = 0
    """Sequences per forward/backward of the GRPO update (gradients accumulate over the rollout
    batch; the loss is normalised over the whole batch, so the step does not depend on it). 0 = auto:
    on a GPU as many as fit in 35% of the free memory by :func:`llm.train.training_bytes` (a whole
    16 x 8 x ~150-token step in one pass on an H200), 8 on CPU (``llm.train.auto_micro_batch``)."""
    generation_batch_size: int = 0
    """Sequences per decoding batch (KV-cache memory ~ this x (prompt + completion) length); 0 = a
    whole step's rollouts in one batch when its cache fits in half the free memory, else the most
    that do (``llm.rollout.auto_batch_size``)."""
    mask_truncated_completions: bool = False
    """Drop completions that hit ``max_completion_length`` without an EOS from the loss (TRL's name)."""
    top_p: float = 1.0
    """Nucleus sampling (1 = off). Scoring does not renormalise over the nucleus (as TRL)."""
    top_k: int = 0
    """Top-k sampling (0 = off)."""
    min_new_tokens: int = 0
    """Generation: every EOS id is masked for the first N tokens of a completion (HF's
    ``min_new_tokens``, vLLM's ``min_tokens``); 0 = off. At most ``max_completion_length``."""


@dataclass
class GRPOConfig(GRPOKnobs, RunConfig):
    """GRPO with group advantages, clipped surrogate, optional KL, from ``toybench.losses``."""


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
    """SFT method specs to compare (``toybench.methods`` spelling; GIFT at beta 5 at this scale)."""
    sft: SFTKnobs = dataclasses.field(default_factory=SFTKnobs)
    """Every knob of the SFT stage (``--sft.steps 50 --sft.lr 1e-4 ...``)."""
    grpo: GRPOKnobs = dataclasses.field(default_factory=GRPOKnobs)
    """Every knob of the GRPO stage (``--grpo.num-generations 4 --grpo.loss-type grpo ...``)."""
    n_samples: int = 16
    """Evaluation samples per prompt."""
    ks: tuple[int, ...] = (1, 4, 16)
    """Evaluation pass@k."""
    seeds: int = 1
    """Run every method at seeds ``seed, seed+1, ..., seed+seeds-1`` (each seed its own
    ``<out>/seed-<s>/`` tree) and report means with 95% intervals paired by seed
    (``summary.csv``, ``paired.csv``, ``report.md``). 1 = one run, laid out directly under ``out``."""


QUICK = {
    "n_train": 32,
    "n_heldout": 8,
    "steps": 6,
    "batch_size": 8,
    "eval_every": 3,
    "eval_prompts": 4,
    "ckpt_every": 3,
    "prompts_per_step": 4,
    "num_generations": 4,
    "pass_k": 2,
    "n_samples": 4,
    "ks": (1, 2, 4),
    "max_completion_length": 16,
    "warmup": 1,
}


#: Recipe defaults: (real model, ``--tiny``) for fields left at None (see their docstrings).
RECIPE = {
    "max_completion_length": (512, 24),
    "sft_lr": (1e-5, 3e-4),
    "grpo_lr": (1e-6, 1e-4),
}
DTYPES = ("auto", "fp32", "bf16-mixed", "bf16-pure")
#: ``--loss-impl`` choices of the SFT loss (:func:`llm.scoring.sft_token_loss`)
LOSS_IMPLS = ("chunked", "fused", "naive")
SWITCHES = ("auto", "on", "off")


def _recipe(cfg, tiny: bool):
    """Fields left at None get the recipe default of a real model or of the tiny preset."""
    names, kw = {f.name for f in dataclasses.fields(cfg)}, {}
    if "max_completion_length" in names and cfg.max_completion_length is None:
        kw["max_completion_length"] = RECIPE["max_completion_length"][tiny]
    if "lr" in names and cfg.lr is None:
        kw["lr"] = RECIPE["grpo_lr" if isinstance(cfg, GRPOKnobs) else "sft_lr"][tiny]
    kw |= {n: _recipe(getattr(cfg, n), tiny) for n in ("sft", "grpo") if n in names}
    return dataclasses.replace(cfg, **kw)


_SINKS = ("none", "tensorboard", "wandb")

#: Field name -> rule, applied to every config (and nested stage knobs) that has the field.
RULES: dict[str, Rule] = {
    **{
        n: at_least(1)
        for n in (
            "steps",
            "batch_size",
            "grad_accum",
            "num_generations",
            "num_iterations",
            "n_samples",
            "chunk_size",
            "prompts_per_step",
            "eval_every",
            "ckpt_every",
            "eval_prompts",
            "max_completion_length",
            "tiny_pretrain_steps",
            "save_total_limit",
        )
    },
    **{n: at_least(0, "(0 = auto)") for n in ("generation_batch_size", "micro_batch_size")},
    **{n: at_least(0) for n in ("warmup", "clip", "weight_decay", "epsilon", "epsilon_high", "kl_coef")},
    **{n: at_least(0) for n in ("n_heldout", "min_new_tokens", "log_completions_every")},
    "stop_after": at_least(-1),
    "max_length": at_least(0, "(0 = no limit)"),
    "top_k": at_least(0, "(0 = off)"),
    "top_p": Rule(lambda v: 0 < v <= 1, "in (0, 1]"),
    "peak_tflops": at_least(0),
    "seeds": at_least(1),
    "seed": Rule(lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    "lr": POSITIVE,
    "temperature": POSITIVE,
    "min_lr_ratio": within(0, 1),
    "heldout_frac": Rule(lambda v: 0 <= v < 1, "in [0, 1)"),
    "n_train": Rule(lambda v: v is None or v >= 1, ">= 1 (or None: the whole file)"),
    "dtype": one_of(DTYPES),
    "gradient_checkpointing": one_of(SWITCHES),
    "reduction": one_of(REDUCE_MODES),
    "loss_impl": one_of(LOSS_IMPLS),
    "loss_type": Rule(lambda v: _ok(loss_type_reduction, v), "a TRL loss_type (dapo|bnpo|grpo|dr_grpo|sum)"),
    "kl_kind": one_of(("k1", "k3"), "k1 or k3"),
    "adv_scale": one_of(("group", "batch", "none"), "group, batch or none"),
    "prompt_style": one_of(("auto", "compact", "instruct"), "auto, compact or instruct"),
    "report_to": Rule(lambda v: set(v.split(",")) <= set(_SINKS), f"a comma-separated subset of {_SINKS}"),
    "reward_weights": Rule(lambda v: all(w == w and abs(w) != float("inf") for w in v), "finite numbers"),
}


class ConfigError(rulebook.ConfigError):
    """Bad input, named by its flag (``--sft.lr must be > 0, got -1.0``): the CLI prints it as one line
    and exits 2."""

    as_flag = True


def _ok(fn, v) -> bool:
    try:
        fn(v)
    except ValueError:
        return False
    return True


def _check(cfg, prefix: str = "") -> None:
    """Every :data:`RULES` entry that applies to ``cfg``'s fields, then the per-class cross checks."""
    check(cfg, RULES, prefix, error=ConfigError)
    if isinstance(cfg, SFTKnobs) and cfg.batch_size % cfg.grad_accum:
        raise ConfigError(
            prefix + "batch_size", f"={cfg.batch_size} must be divisible by grad_accum={cfg.grad_accum}"
        )
    if isinstance(cfg, GRPOKnobs) and not 1 <= cfg.pass_k <= cfg.num_generations:
        raise ConfigError(
            prefix + "pass_k", f"must be in [1, num_generations={cfg.num_generations}], got {cfg.pass_k}"
        )


def validate(cfg: RunConfig) -> None:
    """The pure checks of a config whose presets are applied: :data:`RULES` on every (nested) config,
    the method specs, the cross-field checks. No disk, no torch, no kernels. Raises :class:`ConfigError`."""
    for c, prefix in ((cfg, ""), (getattr(cfg, "sft", None), "sft."), (getattr(cfg, "grpo", None), "grpo.")):
        if c is not None:
            _check(c, prefix)
    for name, m in _specs(cfg):
        try:
            Method.parse(m).token_level("llm")
        except ValueError as e:
            raise ConfigError(name, str(e)) from None
    _check_loss_impl(cfg, [m for _, m in _specs(cfg)])
    grpo, prefix = (cfg.grpo, "grpo.") if isinstance(cfg, PipelineConfig) else (cfg, "")
    if isinstance(grpo, GRPOKnobs) and grpo.min_new_tokens > cfg.max_completion_length:
        raise ConfigError(
            prefix + "min_new_tokens",
            f"must be <= max_completion_length={cfg.max_completion_length}, got {grpo.min_new_tokens}",
        )
    if isinstance(cfg, EvalConfig | PipelineConfig) and max(cfg.ks) > cfg.n_samples:
        raise ConfigError("ks", f"={cfg.ks}: every k must be <= n_samples={cfg.n_samples}")
    if cfg.heldout_data and cfg.heldout_frac:
        raise ConfigError("heldout_frac", "and --heldout-data are alternatives: give one")
    if cfg.reward_weights and len(cfg.reward_weights) != len(cfg.reward):
        raise ConfigError(
            "reward_weights",
            f"needs one weight per --reward ({len(cfg.reward)}), got {len(cfg.reward_weights)}",
        )
    if not cfg.model and not cfg.tiny:
        raise ConfigError("model", "must name a model (a local directory or a cached hub id), or pass --tiny")
    if cfg.resume and cfg.overwrite:
        raise ConfigError("overwrite", "and --resume contradict each other: give one")


def _specs(cfg: RunConfig) -> list[tuple[str, str]]:
    """(field, method spec) of every method the command runs."""
    specs = [("method", cfg.method)] if isinstance(cfg, SFTConfig) else []
    return specs + [("methods", m) for m in getattr(cfg, "methods", ())]


def check_world(cfg: RunConfig) -> None:
    """The checks that look at the world, run once in set-up before any model or data is loaded: the
    device, the data files, the reward specs (imported) and an earlier run in ``out``. Raises
    :class:`ConfigError`."""
    import torch

    try:
        dev = torch.device(cfg.device if cfg.device != "auto" else "cpu")
    except RuntimeError:
        raise ConfigError("device", f"must be auto, cpu, cuda or cuda:N, got {cfg.device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", f"is {cfg.device!r} but CUDA is not available")
    _check_liger(cfg, dev)
    if cfg.data != "arith" and not Path(cfg.data).is_file():
        raise ConfigError("data", f"must be 'arith' or a JSONL file; {cfg.data!r} does not exist")
    if cfg.heldout_data and not Path(cfg.heldout_data).is_file():
        raise ConfigError("heldout_data", f"file {cfg.heldout_data!r} does not exist")
    from llm.rewards import load_reward

    for spec in cfg.reward:
        try:
            load_reward(spec)
        except ValueError as e:
            raise ConfigError("reward", str(e)) from None
    from llm.checkpoint import existing_run

    if (prev := existing_run(cfg.out)) and not (cfg.resume or cfg.overwrite):
        raise ConfigError(
            "out",
            f"{cfg.out!r} already holds a run ({prev}); pass --resume to continue it or --overwrite to "
            "replace it",
        )


def _check_liger(cfg: RunConfig, dev) -> None:
    """``--use-liger-kernel`` needs the package (the ``gpu`` extra) and a CUDA device (Triton kernels)."""
    if not cfg.use_liger_kernel:
        return
    import importlib.util

    import torch

    if importlib.util.find_spec("liger_kernel") is None:
        raise ConfigError("use_liger_kernel", "needs the liger-kernel package: pip install 'sft-for-rl[gpu]'")
    if dev.type == "cpu" and (cfg.device != "auto" or not torch.cuda.is_available()):
        raise ConfigError("use_liger_kernel", "needs a CUDA device (Liger-Kernel's kernels are Triton)")


def _check_loss_impl(cfg: RunConfig, methods: list[str]) -> None:
    """``--loss-impl fused`` only with methods its kernels implement (named in the error); the method's
    family says so (``Method.fused_options``), nothing is computed."""
    knobs, prefix = (cfg.sft, "sft.") if isinstance(cfg, PipelineConfig) else (cfg, "")
    if getattr(knobs, "loss_impl", "chunked") != "fused":
        return
    for m in methods:
        method = Method.parse(m)
        try:
            if method.kind != "none":
                method.fused_options()
        except ValueError as why:
            raise ConfigError(prefix + "loss_impl", f"fused cannot run {m!r}: {why}") from None


def _fingerprint(cfg: RunConfig) -> str:
    values = [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name != "resolved"]
    return hashlib.sha256(repr(values).encode()).hexdigest()[:16]


def _mark_resolved(cfg: RunConfig) -> RunConfig:
    return dataclasses.replace(cfg, resolved=_fingerprint(cfg))


def resolve(cfg: RunConfig, given: set[str] | None = None) -> RunConfig:
    """Apply the ``quick`` and ``tiny`` presets, :func:`validate`, :func:`check_world`; returns a new
    config (the one that runs).

    ``given``: the dotted names of the flags the user set (:func:`toybench.config.given_flags`);
    ``quick`` never overrides those (None, the Python API: fields still at their defaults are filled).
    Runs once: a config ``resolve`` returned (unchanged since) is returned as it is. Raises
    :class:`ConfigError` (a ``ValueError``) naming the flag.
    """
    if cfg.resolved and cfg.resolved == _fingerprint(cfg):
        return cfg
    if cfg.quick and not cfg.quick_filled:
        preset = QUICK | {n: QUICK for n in ("sft", "grpo") if hasattr(cfg, n)}  # the same names nested
        cfg, filled = fill_quick(cfg, preset, given)
        cfg = dataclasses.replace(cfg, quick_filled=tuple(filled) or ("(nothing)",))
    cfg = _recipe(cfg, cfg.tiny)  # recipe defaults for fields left at None, before the checks
    validate(cfg)
    check_world(cfg)
    if cfg.prompt_style == "auto":
        cfg = dataclasses.replace(cfg, prompt_style="compact" if cfg.tiny else "instruct")
    return _mark_resolved(cfg)


def stage_config(cls: type, run: RunConfig, knobs: SFTKnobs | GRPOKnobs | None = None, **fields) -> RunConfig:
    """The resolved config of one stage of a pipeline: the shared fields of ``run`` (a resolved config),
    the stage's ``knobs`` object, then ``fields``. The stage runs the resolved numbers as they are (no
    preset is applied again, nothing is validated twice); it does not stop early nor build a tiny model.
    """
    shared = {f.name: getattr(run, f.name) for f in dataclasses.fields(RunConfig)}
    own = {} if knobs is None else {f.name: getattr(knobs, f.name) for f in dataclasses.fields(knobs)}
    fixed = dict(tiny=False, quick=False, quick_filled=(), stop_after=-1, resume=False, overwrite=False)
    return _mark_resolved(cls(**(shared | own | fixed | fields)))


def save_config(cfg: RunConfig, out: str | Path) -> Path:
    """Write the resolved config as ``config.json`` beside the results."""
    path = Path(out) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"kind": type(cfg).__name__, **dataclasses.asdict(cfg)}, indent=2))
    return path


__all__ = [
    "METHODS",
    "RULES",
    "ConfigError",
    "Rule",
    "EvalConfig",
    "GRPOConfig",
    "GRPOKnobs",
    "SFTKnobs",
    "PipelineConfig",
    "RunConfig",
    "SFTConfig",
    "check_world",
    "resolve",
    "save_config",
    "stage_config",
    "validate",
]
