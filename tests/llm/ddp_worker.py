"""Worker for test_ddp: SFT or GRPO steps under torchrun (gloo) or alone; rank 0 saves the parameters.

GRPO: each prompt's group is sampled from the model with a seed of its own (the prompt's tokens and
the step), so the samples do not depend on how the prompts are laid out over ranks; ranks then
differ from one process only in what DDP must get right (global advantages, normalisers, gradient
sum). Rewards: the sum of the response token ids mod 3 (varies within groups); 10-token budget, so
some completions end with an EOS and are trained on under mask_truncated_completions.
"""

import sys

import torch

torch.set_num_threads(1)

import llm.grpo as grpo_mod  # noqa: E402
from llm.config import GRPOConfig, SFTConfig  # noqa: E402
from llm.data import prompt_ids  # noqa: E402
from llm.sft import run_sft  # noqa: E402

COMMON = dict(
    device="cpu", n_train=8, n_heldout=2, steps=2, eval_every=100, ckpt_every=100, prompt_style="compact"
)


def per_prompt_generate(real, counter=[0]):  # noqa: B006 -- the step counter of this process
    def gen(model, tok, examples, n, *a, **k):
        counter[0] += 1
        out = []
        for ex in examples:
            ids = prompt_ids(tok, ex, False)
            torch.manual_seed(sum(ids) * 7919 + counter[0])
            out += real(model, tok, [ex], n, *a, **k)
        return out

    return gen


def main(model: str, out: str, mode: str) -> None:
    if mode.startswith("grpo"):
        grpo_mod.generate = per_prompt_generate(grpo_mod.generate)
        grpo_mod.group_rewards = lambda ex, groups, *_: torch.tensor(
            [[float(sum(r.response_ids) % 3) for r in g] for g in groups]
        )
        loss_type = mode.split(":")[1]
        cfg = GRPOConfig(
            model=model,
            out=out,
            **COMMON,
            prompts_per_step=2,
            num_generations=3,
            pass_k=2,
            max_completion_length=10,
            temperature=1.5,
            kl_coef=0.3,
            lr=1e-3,
            micro_batch_size=2,
            loss_type=loss_type,
            mask_truncated_completions=True,
        )
        grpo_mod.run_grpo(cfg)
    else:
        run_sft(SFTConfig(model=model, out=out, **COMMON, batch_size=4, method=mode, warmup=1))
    from llm import dist

    dist.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
