"""Shared fixtures: a tiny model built once per session (fast pretraining: mechanics, not quality)."""

from __future__ import annotations

import pytest
import torch

TINY_STEPS = 40  # pretraining steps of the test model (the CLI default is larger)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    torch.set_num_threads(1)
    from llm.tiny import TinySpec, build_tiny

    cache = tmp_path_factory.mktemp("tiny_cache")
    return build_tiny(cache, TinySpec(pretrain_steps=TINY_STEPS), verbose=False)


#: config kwargs every loop test on the tiny model starts from (CPU, compact prompts, no checkpoint
#: or probe before the end unless a test asks)
TINY_LOOP = dict(device="cpu", n_heldout=2, eval_every=100, ckpt_every=100, prompt_style="compact")
#: per loop: SFT on 8 examples; GRPO one step of 2 prompts x 3 samples of <= 6 tokens at T = 1.5
LOOP_DEFAULTS = {
    "sft": dict(n_train=8, eval_prompts=1, max_completion_length=8, warmup=1),
    "grpo": dict(
        steps=1, prompts_per_step=2, num_generations=3, pass_k=2, max_completion_length=6, temperature=1.5
    ),
}


@pytest.fixture()
def run_tiny(tiny_dir, tmp_path):
    """``run_tiny("sft" | "grpo", name, **kw) -> (model, record)``: one loop on a fresh copy of the
    tiny model with out = ``tmp_path / name``; ``kw`` overrides :data:`LOOP_DEFAULTS`."""
    from llm.config import GRPOConfig, SFTConfig
    from llm.grpo import run_grpo
    from llm.loading import load_model, load_tokenizer
    from llm.sft import run_sft

    def run(kind: str, name: str, **kw):
        config, loop = {"sft": (SFTConfig, run_sft), "grpo": (GRPOConfig, run_grpo)}[kind]
        cfg = dict(model=str(tiny_dir), out=str(tmp_path / name), **TINY_LOOP) | LOOP_DEFAULTS[kind] | kw
        model = load_model(str(tiny_dir), "cpu")
        return model, loop(config(**cfg), model=model, tok=load_tokenizer(str(tiny_dir)))

    return run


@pytest.fixture()
def common(tiny_dir, tmp_path):
    """Config kwargs for a run on the tiny model, CPU, quick budgets."""
    return dict(
        model=str(tiny_dir), device="cpu", quick=True, prompt_style="compact", out=str(tmp_path / "run")
    )
