"""Test-suite settings: deterministic, offline, one torch thread per worker (2-core machines).

The default suite (``-m 'not slow and not gpu'``) hides CUDA so it runs the same on every machine;
a run that selects ``gpu`` tests (``pytest -m gpu``) keeps the GPU visible and asks cuBLAS for its
deterministic workspace, so resume == uninterrupted can be checked on CUDA too.
"""

import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402  (importing torch does not initialise CUDA; the first CUDA call does)

torch.set_num_threads(1)


def selects_gpu(markexpr: str) -> bool:
    """Whether a ``-m`` expression asks for ``gpu`` tests (``gpu``, ``gpu or slow``; not ``not gpu``)."""
    return re.search(r"(?<!not )\bgpu\b", markexpr or "") is not None


def pytest_configure(config):
    if selects_gpu(config.getoption("markexpr", "")):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
