"""The tiny-transformer scale: base pretraining (cached), SFT with every method, GRPO, evaluation
and decoupling measurements on the make-target puzzles (``toybench.tasks.arith``)."""

from toybench.tiny.config import TinyConfig, pretrain_key, quick_config
from toybench.tiny.evaluate import evaluate, pass_ks, tracked_pass1
from toybench.tiny.model import GPTStack
from toybench.tiny.pipeline import Setup, prepare, run_method, run_seeds
from toybench.tiny.train import completion_nll, default_cache_dir, pretrain_base, run_grpo, run_sft

__all__ = [
    "GPTStack",
    "Setup",
    "TinyConfig",
    "completion_nll",
    "default_cache_dir",
    "evaluate",
    "pass_ks",
    "prepare",
    "pretrain_base",
    "pretrain_key",
    "quick_config",
    "run_grpo",
    "run_method",
    "run_seeds",
    "run_sft",
    "tracked_pass1",
]
