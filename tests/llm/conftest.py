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


@pytest.fixture()
def common(tiny_dir, tmp_path):
    """Config kwargs for a run on the tiny model, CPU, quick budgets."""
    return dict(
        model=str(tiny_dir), device="cpu", quick=True, prompt_style="compact", out=str(tmp_path / "run")
    )
