"""Flat, typed configuration of the tiny-transformer scale (parsed by tyro at the entry point)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

from toybench.config import require, validation_deferred
from toybench.methods import Method, loss_type_reduction
from toybench.tasks.arith import ALPHABET, CharTokenizer, check_task_knobs
from toybench.tiny.model import GPTConfig

__all__ = ["TinyConfig", "quick_config", "pretrain_key"]


@dataclass(frozen=True)
class TinyConfig:
    """Every knob of base -> SFT -> GRPO -> eval at the tiny-transformer scale."""

    # task
    n_numbers: int = 3
    """numbers per make-target puzzle."""
    max_number: int = 9
    """numbers are drawn from 1..max_number."""
    max_target: int = 40
    """targets are integers in [0, max_target] reachable by some expression."""
    task_seed: int = 0
    """seed of the puzzle pool (the SFT/RL/eval splits are fixed across training seeds)."""
    n_sft_puzzles: int = 600
    """SFT puzzles (expert demonstrations exist only for those the expert solves)."""
    n_rl_puzzles: int = 400
    """RL puzzles (disjoint from SFT and eval)."""
    n_eval_puzzles: int = 96
    """held-out evaluation puzzles."""
    max_completion_length: int = 14
    """completion length budget N (including eos; TRL's name)."""
    # model
    n_layer: int = 2
    """transformer blocks."""
    n_head: int = 4
    """attention heads."""
    n_embd: int = 64
    """residual width."""
    # pretraining (the base model; cached on disk by a hash of these fields)
    pretrain_texts: int = 40000
    """size of the broad valid-expression corpus."""
    pretrain_steps: int = 1500
    """AdamW steps of pretraining."""
    pretrain_batch: int = 128
    """sequences per pretraining step."""
    pretrain_lr: float = 3e-3
    """peak learning rate of pretraining (cosine decay)."""
    pretrain_seed: int = 0
    """seed of the corpus and of the base model's initialisation."""
    # SFT
    methods: tuple[str, ...] = ("none", "sft", "entropy_sft@0.1", "gift@3", "curio", "pear_token", "dft")
    """SFT methods (``toybench.methods`` specs, e.g. ``gift@3,smooth=0.1``; every constant, CurioSFT's
    EMA schedule included, is set in the spec); ``none`` runs RL straight from the base. PEAR's block
    level runs with the registry's block of 4 unless the spec says otherwise."""
    sft_steps: int = 100
    """SFT steps on the expert demonstrations."""
    sft_batch: int = 64
    """sequences per SFT step."""
    sft_lr: float = 1e-3
    """SFT learning rate (AdamW, constant)."""
    pear_behavior: str = "expert"
    """PEAR's pi_beta: ``expert`` (the deterministic expert, log pi_beta = 0) or ``base``."""
    # GRPO
    rl_steps: int = 60
    """GRPO steps on the RL puzzles."""
    rl_prompts: int = 32
    """prompts per GRPO step."""
    num_generations: int = 8
    """samples per prompt (the group G; TRL's name)."""
    rl_lr: float = 3e-4
    """GRPO learning rate (AdamW, constant)."""
    epsilon: float = 0.2
    """clip range below 1 of the surrogate (TRL's name; one update per batch, so the clip is inactive)."""
    epsilon_high: float = 0.2
    """clip range above 1 (TRL's name; DAPO's clip-higher when > epsilon)."""
    kl_coef: float = 0.0
    """coefficient of the k3 KL penalty to the RL start (0 = none, as in DAPO/Dr. GRPO). TRL calls it
    ``beta``; here ``beta`` is GIFT's inverse temperature."""
    loss_type: str = "grpo"
    """GRPO normaliser (TRL's names): grpo (per-sequence mean, then mean) | bnpo | dapo (token mean) |
    dr_grpo (sum / (sequences x max_completion_length)) | sum."""
    rl_eval_every: int = 10
    """record held-out SFT loss and eval pass@1 every this many GRPO steps."""
    # decoupling: further SFT after RL
    post_sft_steps: int = 60
    """standard-SFT steps after RL (reward is tracked during them)."""
    post_sft_eval_every: int = 10
    """record reward every this many post-RL SFT steps."""
    # evaluation
    eval_samples: int = 16
    """samples per eval puzzle (n of the unbiased pass@k; k runs over powers of 2 up to n)."""
    track_samples: int = 4
    """samples per eval puzzle for the cheap pass@1 tracked during RL and post-RL SFT."""
    temperature: float = 1.0
    """sampling temperature for RL and evaluation."""
    seeds: int = 5
    """training seeds (SFT order, sampling); the base model and the splits are shared."""
    vectorise_seeds: bool = True
    """run the seeds of a method as one stacked model (``GPTStack``, a seed axis in the weights)
    instead of a Python loop; each seed keeps its own randomness and equals its loop run to float
    tolerance."""

    def __post_init__(self) -> None:
        if not validation_deferred():
            self.validate()

    def validate(self, prefix: str = "") -> None:
        """Raise ValueError naming the first bad field (``prefix`` names the config it is nested in)."""
        try:
            self._validate()
        except ValueError as err:
            raise ValueError(f"{prefix}{err}") from None

    def _validate(self) -> None:
        may_be_zero = ("kl_coef", "sft_steps", "rl_steps", "post_sft_steps", "task_seed", "pretrain_seed")
        numbers = [f.name for f in dataclasses.fields(self) if type(getattr(self, f.name)) in (int, float)]
        require(
            self,
            non_negative=may_be_zero,
            positive=[n for n in numbers if n not in may_be_zero],
            at_least={"num_generations": 2},
            one_of={"pear_behavior": ("expert", "base")},
        )
        for n in numbers:
            if not math.isfinite(getattr(self, n)):
                raise ValueError(f"{n} must be finite, got {getattr(self, n)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd must be a multiple of n_head = {self.n_head}, got {self.n_embd}")
        if not self.track_samples <= self.eval_samples:
            raise ValueError(
                f"track_samples must be <= eval_samples = {self.eval_samples}, got {self.track_samples}"
            )
        shortest = self.n_numbers * len(str(self.max_number)) + self.n_numbers - 1  # numbers and operators
        if not self.max_completion_length >= shortest:
            raise ValueError(
                f"max_completion_length must be >= {shortest} (an expression using all {self.n_numbers} "
                f"numbers), got {self.max_completion_length}"
            )
        check_task_knobs(self.n_numbers, 1, self.max_number, self.max_target)
        if not self.methods:
            raise ValueError("methods must not be empty")
        for m in self.methods:
            Method.parse(m).token_level("the tiny transformer")  # ValueError naming the spec
        loss_type_reduction(self.loss_type)

    # derived --------------------------------------------------------------------------------
    @property
    def task_knobs(self) -> dict[str, int]:
        return {"n_numbers": self.n_numbers, "max_number": self.max_number, "max_target": self.max_target}

    @property
    def prompt_len(self) -> int:
        """P: bos + the longest compact prompt (prompts are left-padded to it)."""
        widest = " ".join([str(self.max_number)] * self.n_numbers)
        return 1 + len(widest) + 1 + len(str(self.max_target)) + 1

    @property
    def model_config(self) -> GPTConfig:
        return GPTConfig(
            vocab_size=CharTokenizer(ALPHABET).vocab_size,
            block_size=self.prompt_len + self.max_completion_length,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
        )


PRETRAIN_FIELDS = (
    "n_numbers",
    "max_number",
    "max_target",
    "max_completion_length",
    "n_layer",
    "n_head",
    "n_embd",
    "pretrain_texts",
    "pretrain_steps",
    "pretrain_batch",
    "pretrain_lr",
    "pretrain_seed",
    "task_seed",
    "n_eval_puzzles",
    "n_sft_puzzles",
    "n_rl_puzzles",
)
_CODE_VERSION = "tiny-base-v1"  # bump when pretraining code changes meaning
_KEY_NAMES = {"max_completion_length": "max_new_tokens"}  # the name at v1: cached bases stay valid


def pretrain_key(cfg: TinyConfig) -> str:
    """Hash of everything that determines the base model (the on-disk cache key)."""
    d = {_KEY_NAMES.get(k, k): getattr(cfg, k) for k in PRETRAIN_FIELDS}
    d |= {"version": _CODE_VERSION, "alphabet": ALPHABET}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def quick_config(**overrides) -> TinyConfig:
    """Seconds-long settings (``--quick``): the default model, short pretraining, few steps, 2 seeds."""
    base = dict(
        n_sft_puzzles=120,
        n_rl_puzzles=80,
        n_eval_puzzles=24,
        pretrain_texts=6000,
        pretrain_steps=400,
        pretrain_batch=64,
        methods=("none", "sft", "entropy_sft@0.1", "gift@3", "curio", "pear_token", "dft"),
        sft_steps=15,
        sft_batch=32,
        rl_steps=6,
        rl_prompts=8,
        num_generations=4,
        rl_eval_every=3,
        post_sft_steps=6,
        post_sft_eval_every=3,
        eval_samples=8,
        track_samples=2,
        seeds=2,
    )
    return TinyConfig(**(base | overrides))
