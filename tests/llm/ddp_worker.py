"""Worker for test_ddp: one SFT step under torchrun (gloo), rank 0 saves the parameters."""

import sys

import torch

torch.set_num_threads(1)

from llm.config import SFTConfig  # noqa: E402
from llm.sft import run_sft  # noqa: E402


def main(model: str, out: str, method: str) -> None:
    cfg = SFTConfig(
        model=model,
        device="cpu",
        out=out,
        n_train=8,
        n_heldout=2,
        steps=2,
        batch_size=4,
        eval_every=100,
        ckpt_every=100,
        prompt_style="compact",
        method=method,
        warmup=1,
    )
    run_sft(cfg)
    from llm import dist

    dist.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
